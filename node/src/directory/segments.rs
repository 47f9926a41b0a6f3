//! The rules for directory segments, as plain functions: which segment a node accepts, which it
//! refuses and why, how a node makes a new version of its own segment, and the seed files that
//! start a network.
//!
//! * The node tree must verify against the pinned root key, and the tree must make that key's node
//!   its root.
//! * A root handover must be signed by the pinned root key; once taken, the key it names is pinned
//!   (see [`SegmentSet::root_key`]).
//! * A unit segment must be signed by a key the tree lists for its node that was valid when the
//!   segment was signed: the current key, or an earlier one within its overlap, never a revoked one.
//! * A segment replaces the one held only if its version is higher. The same version with other
//!   content is a conflict: both were signed by the same key, so the signer is misbehaving.

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::SigningKey;
use exchange_wire::directory::{KeyRecord, NodeRecord, NodeTree, RootHandover, Segment, UnitRecord, UnitSegment, UnitStatus};
use exchange_wire::{NodeId, PublicKey, SignedEnvelope, UnitAddress};
use serde::Deserialize;

use super::Directory;

/// A segment with the exact signed bytes it arrived in, so it can be passed on unchanged.
#[derive(Debug, Clone)]
pub struct Held {
    pub segment: Segment,
    pub signed: SignedEnvelope,
    pub payload: Vec<u8>,
}

/// Why a segment was refused. `code` labels the metric and the audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRefusal {
    pub code: &'static str,
    pub reason: String,
}

/// The node tree: signed by the pinned root key, rooted at that key's node, and a tree.
fn check_tree(root_key: &PublicKey, signed: &SignedEnvelope, tree: &NodeTree) -> Result<(), SegmentRefusal> {
    signed
        .verify(&root_key.0)
        .map_err(|_| refuse("segment-signature", "the node tree is not signed by the root key this node pins"))?;
    let root = tree.nodes.iter().find(|n| n.parent.is_none());
    if root.map(|r| r.public_key) != Some(*root_key) {
        return Err(refuse("malformed-segment", "the node tree's root is not the node of the pinned root key"));
    }
    Directory::build(Some(tree), std::iter::empty()).map_err(|e| refuse("malformed-segment", format!("node tree: {e}")))?;
    Ok(())
}

/// The catalog: signed by the pinned root key, every schema compiling.
fn check_catalog(root_key: &PublicKey, signed: &SignedEnvelope, catalog: &exchange_wire::sharing::Catalog) -> Result<(), SegmentRefusal> {
    signed
        .verify(&root_key.0)
        .map_err(|_| refuse("segment-signature", "the catalog is not signed by the root key this node pins"))?;
    // Every schema must compile here too, so no node holds a topic it cannot validate.
    crate::sharing::CompiledCatalog::compile(catalog).map_err(|e| refuse("malformed-segment", format!("catalog: {e}")))?;
    Ok(())
}

fn refuse(code: &'static str, reason: impl Into<String>) -> SegmentRefusal {
    SegmentRefusal { code, reason: reason.into() }
}

/// What to do with an incoming segment that passed every check.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than what is held: store it, apply it, pass it on.
    Newer,
    /// Exactly what is held already.
    Known,
}

/// Every segment a node holds: the newest version of each.
#[derive(Debug, Clone, Default)]
pub struct SegmentSet {
    pub tree: Option<Held>,
    pub units: BTreeMap<NodeId, Held>,
    /// The data-sharing catalog, signed by the root.
    pub catalog: Option<Held>,
    /// Root key handovers, by version.
    pub handovers: BTreeMap<u64, Held>,
}

impl SegmentSet {
    pub fn tree(&self) -> Option<&NodeTree> {
        match &self.tree {
            Some(Held { segment: Segment::Tree(t), .. }) => Some(t),
            _ => None,
        }
    }

    pub fn unit_segment(&self, node: &NodeId) -> Option<&UnitSegment> {
        match self.units.get(node) {
            Some(Held { segment: Segment::Units(u), .. }) => Some(u),
            _ => None,
        }
    }

    /// The directory these segments make.
    pub fn directory(&self) -> Result<Directory, String> {
        Directory::build(self.tree(), self.units.values().filter_map(|h| match &h.segment {
            Segment::Units(u) => Some(u),
            Segment::Tree(_) | Segment::Catalog(_) | Segment::RootHandover(_) => None,
        }))
    }

    pub fn catalog(&self) -> Option<&exchange_wire::sharing::Catalog> {
        match &self.catalog {
            Some(Held { segment: Segment::Catalog(c), .. }) => Some(c),
            _ => None,
        }
    }

    /// Every held segment in the order a node that knows nothing can take them: root handovers
    /// first (in order), then the tree, the unit segments, the catalog last.
    pub fn all(&self) -> impl Iterator<Item = &Held> {
        self.handovers.values().chain(self.tree.iter()).chain(self.units.values()).chain(self.catalog.iter())
    }

    /// The root key in force: the `configured` one (the trust anchor in the node's configuration),
    /// followed through every held handover that starts from it, in order.
    pub fn root_key(&self, configured: &PublicKey) -> PublicKey {
        let mut key = *configured;
        for h in self.handovers.values() {
            if let Segment::RootHandover(r) = &h.segment
                && r.old_key == key {
                    key = r.new_key;
                }
        }
        key
    }

    fn held(&self, segment: &Segment) -> Option<&Held> {
        match segment {
            Segment::Tree(_) => self.tree.as_ref(),
            Segment::Units(u) => self.units.get(&u.node),
            Segment::Catalog(_) => self.catalog.as_ref(),
            Segment::RootHandover(h) => self.handovers.get(&h.version),
        }
    }

    /// Checks an incoming segment against the root key and what is held.
    pub fn check(&self, root_key: &PublicKey, signed: &SignedEnvelope, payload: &[u8]) -> Result<(Segment, Verdict), SegmentRefusal> {
        let segment = Segment::from_envelope(signed, payload).map_err(|e| refuse("malformed-segment", e.to_string()))?;
        match &segment {
            Segment::Tree(tree) => check_tree(root_key, signed, tree)?,
            Segment::Units(units) => self.check_units(signed, units)?,
            Segment::Catalog(catalog) => check_catalog(root_key, signed, catalog)?,
            Segment::RootHandover(h) => self.check_handover(root_key, signed, h)?,
        }
        let verdict = self.against_held(signed, &segment)?;
        Ok((segment, verdict))
    }

    /// A node's units: signed by a key of that node (in the tree held) valid when they were
    /// signed, and only its own units, each once.
    fn check_units(&self, signed: &SignedEnvelope, units: &UnitSegment) -> Result<(), SegmentRefusal> {
        let tree = self.tree().ok_or_else(|| refuse("unknown-node", "no node tree yet to check unit segments against"))?;
        let node = tree
            .nodes
            .iter()
            .find(|n| n.id == units.node)
            .ok_or_else(|| refuse("unknown-node", format!("node {} is not in the node tree", units.node)))?;
        let keys = node.keys_valid_at(&[signed.envelope.created_at_ms]);
        if !keys.iter().any(|k| signed.verify(&k.0).is_ok()) {
            let revoked = node.previous_keys.iter().any(|k| k.revoked_at_ms.is_some() && signed.verify(&k.public_key.0).is_ok());
            return Err(if revoked {
                refuse("key-revoked", format!("the units of {} are signed with a node key the root revoked", units.node))
            } else {
                refuse("segment-signature", format!("the units of {} are not signed by a key of that node valid when they were signed", units.node))
            });
        }
        if let Some(u) = units.units.iter().find(|u| u.address.node_part() != units.node.as_str() || u.address.is_node()) {
            return Err(refuse("foreign-unit", format!("node {} lists unit {}, which is not its own", units.node, u.address)));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(u) = units.units.iter().find(|u| !seen.insert(&u.address)) {
            return Err(refuse("malformed-segment", format!("node {} lists unit {} twice", units.node, u.address)));
        }
        Ok(())
    }

    /// A root handover not held yet: from the pinned root key, signed by it, to another key, and
    /// newer than every handover held.
    fn check_handover(&self, root_key: &PublicKey, signed: &SignedEnvelope, h: &RootHandover) -> Result<(), SegmentRefusal> {
        // One already held is judged against it (known or conflicting), whatever key it came from.
        if self.handovers.get(&h.version).is_none() {
            if h.old_key != *root_key {
                return Err(refuse(
                    "segment-signature",
                    format!("root handover {} starts from key {}, not from the root key {} this node pins", h.version, h.old_key, root_key),
                ));
            }
            signed
                .verify(&root_key.0)
                .map_err(|_| refuse("segment-signature", "the root handover is not signed by the root key this node pins"))?;
            if h.new_key == h.old_key {
                return Err(refuse("malformed-segment", "the root handover names the same key twice"));
            }
            if let Some(last) = self.handovers.keys().next_back()
                && h.version <= *last {
                    return Err(refuse("stale-segment", format!("root handover {} is older than handover {last} held", h.version)));
                }
        }
        Ok(())
    }

    /// Whether a segment that passed its checks is one held already, or newer than the one held.
    fn against_held(&self, signed: &SignedEnvelope, segment: &Segment) -> Result<Verdict, SegmentRefusal> {
        match self.held(segment) {
            // The same content signed again (a node that lost its database re-signs its seed) is
            // the same segment.
            Some(h) if h.signed.id == signed.id || h.segment == *segment => Ok(Verdict::Known),
            Some(h) if h.segment.version() > segment.version() => Err(refuse(
                "stale-segment",
                format!("version {} of {} is older than the version {} held", segment.version(), segment.owner(), h.segment.version()),
            )),
            Some(h) if h.segment.version() == segment.version() => Err(refuse(
                "conflicting-segment",
                format!("a different version {} of {} is already held: its signer issued two", segment.version(), segment.owner()),
            )),
            _ => Ok(Verdict::Newer),
        }
    }

    /// Takes a segment that passed [`Self::check`] as [`Verdict::Newer`].
    pub fn insert(&mut self, held: Held) {
        match &held.segment {
            Segment::Tree(_) => self.tree = Some(held),
            Segment::Units(u) => {
                self.units.insert(u.node.clone(), held);
            }
            Segment::Catalog(_) => self.catalog = Some(held),
            Segment::RootHandover(h) => {
                self.handovers.insert(h.version, held);
            }
        }
    }
}

/// Signs `segment` as `signer` with `key`.
pub fn sign(segment: Segment, signer: &NodeId, key: &SigningKey) -> Held {
    let (envelope, payload) = segment.envelope(signer);
    Held { segment, signed: envelope.sign(key), payload }
}

/// A tree seed file: the nodes of a new network, signed by the root on its first start.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TreeSeed {
    #[serde(rename = "node")]
    nodes: Vec<NodeRecord>,
}

/// A units seed file: the units a node hosts when it first starts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitsSeed {
    #[serde(default, rename = "unit")]
    units: Vec<SeedUnit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedUnit {
    address: UnitAddress,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    uscc: Option<String>,
    public_key: PublicKey,
}

fn read_seed(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read seed file {}: {e}", path.display()))
}

/// Reads a tree seed file (`[[node]]` entries) as version 1 of the node tree.
pub fn tree_from_seed(path: &Path) -> Result<NodeTree, String> {
    let seed: TreeSeed = toml::from_str(&read_seed(path)?).map_err(|e| format!("tree seed {}: {e}", path.display()))?;
    let tree = NodeTree { version: 1, nodes: seed.nodes };
    Directory::build(Some(&tree), std::iter::empty()).map_err(|e| format!("tree seed {}: {e}", path.display()))?;
    Ok(tree)
}

/// Reads a units seed file (`[[unit]]` entries) as version 1 of `node`'s unit segment.
pub fn units_from_seed(path: &Path, node: &NodeId) -> Result<UnitSegment, String> {
    let seed: UnitsSeed = toml::from_str(&read_seed(path)?).map_err(|e| format!("units seed {}: {e}", path.display()))?;
    let mut units = Vec::with_capacity(seed.units.len());
    for u in seed.units {
        if u.address.node_part() != node.as_str() {
            return Err(format!("units seed {}: unit {} is not hosted by node {node}", path.display(), u.address));
        }
        units.push(UnitRecord {
            address: u.address,
            name: u.name,
            kind: u.kind,
            uscc: u.uscc,
            status: UnitStatus::Active,
            keys: vec![KeyRecord { public_key: u.public_key, not_before_ms: 0, not_after_ms: None, revoked_at_ms: None }],
        });
    }
    Ok(UnitSegment { node: node.clone(), version: 1, units })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{test_key, test_segments};

    fn root() -> NodeId {
        "gd".parse().unwrap()
    }

    fn signed_set() -> (SegmentSet, PublicKey) {
        let (tree, units) = test_segments();
        let mut set = SegmentSet::default();
        set.insert(sign(Segment::Tree(tree), &root(), &test_key(1)));
        let seeds = [("gd", 1), ("gz", 2), ("gz.yuexiu", 3), ("gz.haizhu", 4)];
        for u in units {
            let seed = seeds.iter().find(|(n, _)| *n == u.node.as_str()).unwrap().1;
            let node = u.node.clone();
            set.insert(sign(Segment::Units(u), &node, &test_key(seed)));
        }
        (set, PublicKey(test_key(1).verifying_key()))
    }

    #[test]
    fn a_newer_tree_from_the_root_is_taken_an_older_or_forged_one_is_not() {
        let (set, root_key) = signed_set();
        let mut tree = set.tree().unwrap().clone();
        tree.version = 2;
        let newer = sign(Segment::Tree(tree.clone()), &root(), &test_key(1));
        assert_eq!(set.check(&root_key, &newer.signed, &newer.payload).unwrap().1, Verdict::Newer);
        let same = set.tree.clone().unwrap();
        assert_eq!(set.check(&root_key, &same.signed, &same.payload).unwrap().1, Verdict::Known);

        // Signed by the city's key instead of the root's.
        let forged = sign(Segment::Tree(tree.clone()), &root(), &test_key(2));
        assert_eq!(set.check(&root_key, &forged.signed, &forged.payload).unwrap_err().code, "segment-signature");

        let mut set2 = set.clone();
        set2.insert(newer);
        let old = set.tree.clone().unwrap();
        assert_eq!(set2.check(&root_key, &old.signed, &old.payload).unwrap_err().code, "stale-segment");
        tree.nodes.pop();
        let conflicting = sign(Segment::Tree(tree), &root(), &test_key(1));
        assert_eq!(set2.check(&root_key, &conflicting.signed, &conflicting.payload).unwrap_err().code, "conflicting-segment");
    }

    #[test]
    fn unit_segments_must_come_from_their_own_node() {
        let (set, root_key) = signed_set();
        let mut haizhu = set.unit_segment(&"gz.haizhu".parse().unwrap()).unwrap().clone();
        haizhu.version = 2;
        let by_yuexiu = sign(Segment::Units(haizhu.clone()), &"gz.haizhu".parse().unwrap(), &test_key(3));
        assert_eq!(set.check(&root_key, &by_yuexiu.signed, &by_yuexiu.payload).unwrap_err().code, "segment-signature");
        let mut grab = haizhu.clone();
        grab.units.push(UnitRecord {
            address: "gz/civil-affairs".parse().unwrap(),
            name: String::new(),
            kind: String::new(),
            uscc: None,
            status: UnitStatus::Active,
            keys: vec![],
        });
        let grabbed = sign(Segment::Units(grab), &"gz.haizhu".parse().unwrap(), &test_key(4));
        assert_eq!(set.check(&root_key, &grabbed.signed, &grabbed.payload).unwrap_err().code, "foreign-unit");
        let good = sign(Segment::Units(haizhu), &"gz.haizhu".parse().unwrap(), &test_key(4));
        assert_eq!(set.check(&root_key, &good.signed, &good.payload).unwrap().1, Verdict::Newer);
        assert_eq!(set.directory().unwrap().version(), 1 + 4);
    }

    /// The tree of `set` with `gz.haizhu` rotated to the key of seed 40, the old key (seed 4) kept
    /// until `not_after_ms` or revoked at `revoked_at_ms`.
    fn rotated(set: &SegmentSet, not_after_ms: Option<u64>, revoked_at_ms: Option<u64>) -> SegmentSet {
        let mut tree = set.tree().unwrap().clone();
        tree.version += 1;
        let n = tree.nodes.iter_mut().find(|n| n.id.as_str() == "gz.haizhu").unwrap();
        n.previous_keys.push(KeyRecord { public_key: n.public_key, not_before_ms: 0, not_after_ms, revoked_at_ms });
        n.public_key = PublicKey(test_key(40).verifying_key());
        let mut set = set.clone();
        set.insert(sign(Segment::Tree(tree), &root(), &test_key(1)));
        set
    }

    fn haizhu_units_signed_at(set: &SegmentSet, at_ms: u64, seed: u8) -> Held {
        let mut units = set.unit_segment(&"gz.haizhu".parse().unwrap()).unwrap().clone();
        units.version += 1;
        let (mut envelope, payload) = Segment::Units(units.clone()).envelope(&"gz.haizhu".parse().unwrap());
        envelope.created_at_ms = at_ms;
        Held { segment: Segment::Units(units), signed: envelope.sign(&test_key(seed)), payload }
    }

    #[test]
    fn after_a_rotation_the_old_node_key_verifies_what_it_signed_before_the_overlap_ended() {
        let (set, root_key) = signed_set();
        let end = exchange_wire::now_ms() + 60_000;
        let set = rotated(&set, Some(end), None);
        for (at, seed, ok) in [(end - 1, 4, true), (end, 4, false), (end + 5, 40, true), (0, 40, true)] {
            let h = haizhu_units_signed_at(&set, at, seed);
            let result = set.check(&root_key, &h.signed, &h.payload);
            assert_eq!(result.is_ok(), ok, "signed at {at} with seed {seed}: {result:?}");
            if !ok {
                assert_eq!(result.unwrap_err().code, "segment-signature");
            }
        }
        let dir = set.directory().unwrap();
        let haizhu: UnitAddress = "gz.haizhu/_node".parse().unwrap();
        assert_eq!(dir.signing_keys(&haizhu, &[end - 1]).len(), 2, "both keys during the overlap");
        assert_eq!(dir.signing_keys(&haizhu, &[end]), vec![PublicKey(test_key(40).verifying_key())]);
        let old_peer = crate::directory::peer_id_of(&PublicKey(test_key(4).verifying_key()));
        assert_eq!(dir.node_by_peer_at(&old_peer, end - 1).map(|n| n.id.as_str()), Some("gz.haizhu"));
        assert!(dir.node_by_peer_at(&old_peer, end).is_none(), "the old identity is refused after the overlap");
        assert_eq!(dir.next_key_expiry(0), Some(end));
    }

    #[test]
    fn a_revoked_node_key_verifies_nothing_whatever_time_it_claims() {
        let (set, root_key) = signed_set();
        let now = exchange_wire::now_ms();
        let set = rotated(&set, Some(now), Some(now));
        let backdated = haizhu_units_signed_at(&set, 1, 4);
        assert_eq!(set.check(&root_key, &backdated.signed, &backdated.payload).unwrap_err().code, "key-revoked");
        let dir = set.directory().unwrap();
        assert!(dir.signing_keys(&"gz.haizhu/_node".parse().unwrap(), &[1]).iter().all(|k| k.0 != test_key(4).verifying_key()));
        assert!(dir.signed_with_revoked_node_key(&backdated.signed));
        let old_peer = crate::directory::peer_id_of(&PublicKey(test_key(4).verifying_key()));
        assert!(dir.node_by_peer_at(&old_peer, 0).is_none());
        assert_eq!(dir.node_by_earlier_key(&old_peer).map(|n| n.to_string()), Some("gz.haizhu".into()));
    }

    #[test]
    fn a_root_handover_moves_the_pinned_key_and_only_the_pinned_key_can_sign_one() {
        let (mut set, root_key) = signed_set();
        let new_root = PublicKey(test_key(50).verifying_key());
        let handover = |version, old: PublicKey, new: PublicKey, seed| {
            sign(Segment::RootHandover(exchange_wire::directory::RootHandover { version, old_key: old, new_key: new }), &root(), &test_key(seed))
        };
        // Signed by another key than the pinned one, or naming another old key: refused.
        let forged = handover(1, root_key, new_root, 2);
        assert_eq!(set.check(&root_key, &forged.signed, &forged.payload).unwrap_err().code, "segment-signature");
        let elsewhere = handover(1, PublicKey(test_key(2).verifying_key()), new_root, 2);
        assert_eq!(set.check(&root_key, &elsewhere.signed, &elsewhere.payload).unwrap_err().code, "segment-signature");

        let good = handover(1, root_key, new_root, 1);
        assert_eq!(set.check(&root_key, &good.signed, &good.payload).unwrap().1, Verdict::Newer);
        set.insert(good.clone());
        let pinned = set.root_key(&root_key);
        assert_eq!(pinned, new_root);
        assert_eq!(set.check(&pinned, &good.signed, &good.payload).unwrap().1, Verdict::Known, "held: known, whoever pins what");
        // A second handover with the same version from the old key again: conflicting.
        let again = handover(1, root_key, PublicKey(test_key(51).verifying_key()), 1);
        assert_eq!(set.check(&pinned, &again.signed, &again.payload).unwrap_err().code, "conflicting-segment");

        // The tree: now only the new key signs it, and it must make the new key's node the root.
        let mut tree = set.tree().unwrap().clone();
        tree.version += 1;
        tree.nodes[0].previous_keys.push(KeyRecord { public_key: root_key, not_before_ms: 0, not_after_ms: Some(1), revoked_at_ms: None });
        tree.nodes[0].public_key = new_root;
        let by_old = sign(Segment::Tree(tree.clone()), &root(), &test_key(1));
        assert_eq!(set.check(&pinned, &by_old.signed, &by_old.payload).unwrap_err().code, "segment-signature");
        let by_new = sign(Segment::Tree(tree), &root(), &test_key(50));
        assert_eq!(set.check(&pinned, &by_new.signed, &by_new.payload).unwrap().1, Verdict::Newer);
        // A chain: the next handover starts from the new key.
        let second = handover(2, new_root, PublicKey(test_key(52).verifying_key()), 50);
        assert_eq!(set.check(&pinned, &second.signed, &second.payload).unwrap().1, Verdict::Newer);
        set.insert(second);
        assert_eq!(set.root_key(&root_key), PublicKey(test_key(52).verifying_key()));
        assert_eq!(set.all().next().unwrap().segment.owner(), "root-handover-1", "handovers go first");
    }
}
