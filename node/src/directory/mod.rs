//! The directory: which nodes exist and how they form a tree, which units each node hosts, and the
//! public keys of both, with their validity.
//!
//! The directory is made of signed segments ([`segments`]): the node tree signed by the root, and one
//! unit segment per node signed by that node. The rest of the node reads it only through
//! [`DirectoryHandle::current`], an immutable snapshot rebuilt whenever a newer segment is accepted.

pub mod segments;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use exchange_wire::directory::{KeyRecord, NodeRecord, NodeTree, UnitSegment, UnitStatus};
use exchange_wire::{NodeId, PublicKey, UnitAddress};
use crate::network::PeerId;

/// A node as the directory lists it.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    pub id: NodeId,
    pub name: String,
    pub tier: String,
    pub parent: Option<NodeId>,
    pub public_key: PublicKey,
    pub peer_id: PeerId,
    /// libp2p multiaddresses where the node listens.
    pub addresses: Vec<crate::network::Multiaddr>,
    /// Keys the node had before `public_key` (see [`NodeRecord::previous_keys`]).
    pub previous_keys: Vec<KeyRecord>,
}

impl NodeEntry {
    /// The libp2p identities the node may use at `now_ms`: its current key's, and those of earlier
    /// keys still in their overlap and not revoked.
    pub fn peer_ids_at(&self, now_ms: u64) -> Vec<PeerId> {
        let mut ids = vec![self.peer_id];
        ids.extend(self.previous_keys.iter().filter(|k| k.revoked_at_ms.is_none() && k.valid_at(now_ms)).map(|k| peer_id_of(&k.public_key)));
        ids
    }
}

/// A unit (agency system) as the directory lists it.
#[derive(Debug, Clone)]
pub struct UnitEntry {
    pub address: UnitAddress,
    pub name: String,
    pub kind: String,
    /// The node that hosts the unit's inbox.
    pub home: NodeId,
    pub status: UnitStatus,
    /// Keys the unit signs with, with their validity windows.
    pub keys: Vec<KeyRecord>,
}

/// An immutable snapshot of the directory.
#[derive(Debug, Default)]
pub struct Directory {
    version: u64,
    tree_version: u64,
    /// Version of each node's unit segment.
    unit_versions: HashMap<NodeId, u64>,
    nodes: HashMap<NodeId, NodeEntry>,
    units: HashMap<UnitAddress, UnitEntry>,
    by_peer: HashMap<PeerId, NodeId>,
    /// The libp2p identities of nodes' earlier keys, which identify the node only within their
    /// overlap (see [`Directory::node_by_peer`]).
    by_retired_peer: HashMap<PeerId, NodeId>,
    /// The node records as the tree lists them.
    records: HashMap<NodeId, NodeRecord>,
}

/// The libp2p peer id that belongs to an ed25519 node key.
pub fn peer_id_of(key: &PublicKey) -> PeerId {
    crate::network::peer_id_of(key)
}

impl Directory {
    /// Builds the snapshot from the node tree and the unit segments. Unit segments of nodes the tree
    /// does not list are ignored (they come back into force if the node is listed again). Its
    /// version is the sum of the segments' versions, so it rises with every accepted change and is
    /// equal on nodes that hold the same segments.
    pub fn build<'a>(tree: Option<&NodeTree>, units: impl IntoIterator<Item = &'a UnitSegment>) -> Result<Directory, String> {
        let mut dir = Directory::default();
        let Some(tree) = tree else { return Ok(dir) };
        dir.version = tree.version;
        dir.tree_version = tree.version;
        for n in &tree.nodes {
            let addresses = n
                .addresses
                .iter()
                .map(|a| a.parse().map_err(|e| format!("node {}: address {a:?}: {e}", n.id)))
                .collect::<Result<Vec<_>, _>>()?;
            let peer_id = peer_id_of(&n.public_key);
            if dir.by_peer.insert(peer_id, n.id.clone()).is_some() {
                return Err(format!("node {}: its key is also another node's key", n.id));
            }
            for k in n.previous_keys.iter().filter(|k| k.public_key != n.public_key) {
                let earlier = peer_id_of(&k.public_key);
                if dir.by_peer.contains_key(&earlier) || dir.by_retired_peer.insert(earlier, n.id.clone()).is_some() {
                    return Err(format!("node {}: its earlier key {} is also another node's key", n.id, k.public_key));
                }
            }
            dir.records.insert(n.id.clone(), n.clone());
            let entry = NodeEntry {
                id: n.id.clone(),
                name: n.name.clone(),
                tier: n.tier.clone(),
                parent: n.parent.clone(),
                public_key: n.public_key,
                peer_id,
                addresses,
                previous_keys: n.previous_keys.clone(),
            };
            if dir.nodes.insert(n.id.clone(), entry).is_some() {
                return Err(format!("node {} is listed twice", n.id));
            }
        }
        for n in dir.nodes.values() {
            if let Some(p) = &n.parent
                && !dir.nodes.contains_key(p) {
                    return Err(format!("node {} names parent {p}, which is not listed", n.id));
                }
            if dir.ancestors(&n.id).count() > 64 {
                return Err(format!("node {} has a parent cycle or a tree deeper than 64", n.id));
            }
        }
        if let Some((peer, id)) = dir.by_retired_peer.iter().find(|(p, _)| dir.by_peer.contains_key(p)) {
            return Err(format!("node {id}: its earlier key {peer} is also another node's key"));
        }
        if dir.nodes.values().filter(|n| n.parent.is_none()).count() != 1 {
            return Err("the tree must have exactly one root (one node without a parent)".into());
        }
        for seg in units {
            if !dir.nodes.contains_key(&seg.node) {
                continue;
            }
            dir.version += seg.version;
            dir.unit_versions.insert(seg.node.clone(), seg.version);
            for u in &seg.units {
                if u.address.node_part() != seg.node.as_str() || u.address.is_node() {
                    return Err(format!("unit {} cannot be listed by node {}", u.address, seg.node));
                }
                let entry = UnitEntry {
                    address: u.address.clone(),
                    name: u.name.clone(),
                    kind: u.kind.clone(),
                    home: seg.node.clone(),
                    status: u.status,
                    keys: u.keys.clone(),
                };
                if dir.units.insert(u.address.clone(), entry).is_some() {
                    return Err(format!("unit {} is listed twice", u.address));
                }
            }
        }
        Ok(dir)
    }

    /// The directory's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The version of the segment that lists `address`'s keys: the node tree for `<node>/_node`,
    /// else the unit segment of the unit's node (0 when none is held).
    pub fn key_segment_version(&self, address: &UnitAddress) -> u64 {
        if address.is_node() {
            return self.tree_version;
        }
        address.node_part().parse().ok().and_then(|n: NodeId| self.unit_versions.get(&n).copied()).unwrap_or(0)
    }

    /// The root of the tree, if a tree is known.
    pub fn root(&self) -> Option<&NodeEntry> {
        self.nodes.values().find(|n| n.parent.is_none())
    }

    /// The nodes whose parent is `id`.
    pub fn children(&self, id: &NodeId) -> Vec<&NodeEntry> {
        let mut c: Vec<&NodeEntry> = self.nodes.values().filter(|n| n.parent.as_ref() == Some(id)).collect();
        c.sort_by(|a, b| a.id.cmp(&b.id));
        c
    }

    pub fn node(&self, id: &NodeId) -> Option<&NodeEntry> {
        self.nodes.get(id)
    }

    pub fn unit(&self, address: &UnitAddress) -> Option<&UnitEntry> {
        self.units.get(address)
    }

    pub fn units(&self) -> impl Iterator<Item = &UnitEntry> {
        self.units.values()
    }

    /// The node a libp2p peer is: by its current key, or by an earlier key while that key is in its
    /// overlap and not revoked (a neighbour that has not yet restarted its links with the new key).
    pub fn node_by_peer(&self, peer: &PeerId) -> Option<&NodeEntry> {
        self.node_by_peer_at(peer, exchange_wire::now_ms())
    }

    /// [`Self::node_by_peer`] at time `now_ms`.
    pub fn node_by_peer_at(&self, peer: &PeerId, now_ms: u64) -> Option<&NodeEntry> {
        if let Some(n) = self.by_peer.get(peer).and_then(|id| self.nodes.get(id)) {
            return Some(n);
        }
        let n = self.by_retired_peer.get(peer).and_then(|id| self.nodes.get(id))?;
        n.peer_ids_at(now_ms).contains(peer).then_some(n)
    }

    /// The node whose earlier key (rotated away, maybe revoked) has the libp2p identity `peer`.
    pub fn node_by_earlier_key(&self, peer: &PeerId) -> Option<NodeId> {
        self.by_retired_peer.get(peer).cloned()
    }

    /// The earliest time after `now_ms` at which an earlier node key's overlap ends: the allow list
    /// must be rebuilt then.
    pub fn next_key_expiry(&self, now_ms: u64) -> Option<u64> {
        self.nodes
            .values()
            .flat_map(|n| n.previous_keys.iter())
            .filter(|k| k.revoked_at_ms.is_none())
            .filter_map(|k| k.not_after_ms)
            .filter(|t| *t > now_ms)
            .min()
    }

    /// Whether `signed` comes from a node (`<node>/_node`) and verifies with a key of that node the
    /// root revoked: refused as `key-revoked`, whatever time it claims.
    pub fn signed_with_revoked_node_key(&self, signed: &exchange_wire::SignedEnvelope) -> bool {
        let sender = &signed.envelope.sender;
        let Some(n) = sender.is_node().then(|| sender.node_part().parse::<NodeId>().ok()).flatten().and_then(|id| self.records.get(&id)) else {
            return false;
        };
        n.previous_keys.iter().any(|k| k.revoked_at_ms.is_some() && signed.verify(&k.public_key.0).is_ok())
    }

    /// The node record `id` as the tree lists it.
    pub fn node_record(&self, id: &NodeId) -> Option<&NodeRecord> {
        self.records.get(id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeEntry> {
        self.nodes.values()
    }

    /// The home node of an address: for a unit, the node hosting it; for `<node>/_node`, that node.
    pub fn home_of(&self, address: &UnitAddress) -> Option<NodeId> {
        if address.is_node() {
            let id: NodeId = address.node_part().parse().ok()?;
            return self.nodes.contains_key(&id).then_some(id);
        }
        self.units.get(address).map(|u| u.home.clone())
    }

    /// Whether `address` may send and receive now (a listed node, or an active unit).
    pub fn is_active(&self, address: &UnitAddress) -> bool {
        address.is_node() && self.home_of(address).is_some()
            || self.units.get(address).is_some_and(|u| u.status == UnitStatus::Active)
    }

    /// The keys that may have signed as `address` at every one of the times `at_ms`: a unit's keys
    /// whose validity window covers those times (and that were not revoked before them), or for
    /// `<node>/_node` the node's current key and its earlier keys still in their window (never a
    /// revoked one). With no times, every key the unit ever had (every unrevoked one of a node).
    pub fn signing_keys(&self, address: &UnitAddress, at_ms: &[u64]) -> Vec<PublicKey> {
        if address.is_node() {
            let id: Option<NodeId> = address.node_part().parse().ok();
            return id.and_then(|id| self.records.get(&id)).map(|n| n.keys_valid_at(at_ms)).unwrap_or_default();
        }
        self.units
            .get(address)
            .map(|u| u.keys.iter().filter(|k| at_ms.iter().all(|t| k.valid_at(*t))).map(|k| k.public_key).collect())
            .unwrap_or_default()
    }

    /// `id`, its parent, its parent's parent, ... up to the root (bounded against cycles).
    pub fn ancestors<'a>(&'a self, id: &'a NodeId) -> impl Iterator<Item = &'a NodeId> + 'a {
        let mut next = self.nodes.get(id).map(|n| &n.id);
        let mut steps = 0;
        std::iter::from_fn(move || {
            let cur = next?;
            steps += 1;
            if steps > 65 {
                return None;
            }
            next = self.nodes.get(cur).and_then(|n| n.parent.as_ref());
            Some(cur)
        })
    }

    /// The nodes `id` keeps a link with: its parent and its children.
    pub fn neighbours(&self, id: &NodeId) -> Vec<&NodeEntry> {
        self.nodes
            .values()
            .filter(|n| n.parent.as_ref() == Some(id) || self.nodes.get(id).and_then(|me| me.parent.as_ref()) == Some(&n.id))
            .collect()
    }
}

/// Shared access to the current directory snapshot; a new snapshot replaces the old one atomically.
#[derive(Clone)]
pub struct DirectoryHandle(Arc<RwLock<Arc<Directory>>>);

impl DirectoryHandle {
    pub fn new(dir: Directory) -> Self {
        DirectoryHandle(Arc::new(RwLock::new(Arc::new(dir))))
    }

    /// The snapshot in force now.
    pub fn current(&self) -> Arc<Directory> {
        self.0.read().expect("directory lock").clone()
    }

    /// Replaces the snapshot.
    pub fn replace(&self, dir: Directory) {
        *self.0.write().expect("directory lock") = Arc::new(dir);
    }
}

/// A three-level test tree: province `gd` → city `gz` → districts `gz.yuexiu`, `gz.haizhu`, with units
/// on each. Node and unit keys come from fixed seeds: [`test_key`] gives the secret key of each.
#[cfg(test)]
pub(crate) fn test_tree() -> Directory {
    let (tree, units) = test_segments();
    Directory::build(Some(&tree), &units).unwrap()
}

/// The segments behind [`test_tree`].
#[cfg(test)]
pub(crate) fn test_segments() -> (NodeTree, Vec<UnitSegment>) {
    let key = |seed: u8| PublicKey(test_key(seed).verifying_key());
    let node = |id: &str, parent: Option<&str>, seed: u8| exchange_wire::directory::NodeRecord {
        id: id.parse().unwrap(),
        name: String::new(),
        tier: String::new(),
        parent: parent.map(|p| p.parse().unwrap()),
        public_key: key(seed),
        addresses: vec![],
        previous_keys: vec![],
    };
    let tree = NodeTree {
        version: 1,
        nodes: vec![node("gd", None, 1), node("gz", Some("gd"), 2), node("gz.yuexiu", Some("gz"), 3), node("gz.haizhu", Some("gz"), 4)],
    };
    let unit = |address: &str, seed: u8| exchange_wire::directory::UnitRecord {
        address: address.parse().unwrap(),
        name: String::new(),
        kind: String::new(),
        uscc: None,
        status: UnitStatus::Active,
        keys: vec![KeyRecord { public_key: key(seed), not_before_ms: 0, not_after_ms: None, revoked_at_ms: None }],
    };
    let seg = |node: &str, units: Vec<exchange_wire::directory::UnitRecord>| UnitSegment { node: node.parse().unwrap(), version: 1, units };
    let units = vec![
        seg("gd", vec![unit("gd/gov", 5)]),
        seg("gz", vec![unit("gz/civil-affairs", 6)]),
        seg("gz.yuexiu", vec![unit("gz.yuexiu/liurong-street", 7)]),
        seg("gz.haizhu", vec![unit("gz.haizhu/civil-affairs", 8), unit("gz.haizhu/chigang-street", 9)]),
    ];
    (tree, units)
}

/// The secret key behind seed `seed` of [`test_tree`]: nodes gd=1, gz=2, gz.yuexiu=3, gz.haizhu=4;
/// units gd/gov=5, gz/civil-affairs=6, liurong-street=7, haizhu civil-affairs=8, chigang-street=9.
#[cfg(test)]
pub(crate) fn test_key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}
