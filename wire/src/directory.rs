//! Directory segments: the signed facts every node routes and verifies by.
//!
//! * The **node tree** lists every node (id, parent, tier, public key, addresses) and is signed by
//!   the root node, whose key every node pins in its configuration (the trust anchor).
//! * Each node signs the **unit segment** of the units it hosts (address, name, kind, unified social
//!   credit code, public keys with validity windows, status).
//!
//! A segment travels as an ordinary signed envelope of kind `directory-segment` from
//! `<node>/_node` to itself, its JSON as the payload, so it is verified with the same code and byte
//! layout as every message (`docs/protocol.md`). Segments are versioned: a node keeps only the
//! newest version of each and refuses an older one.

use serde::{Deserialize, Serialize};

use crate::address::{NodeId, UnitAddress};
use crate::envelope::{Envelope, EnvelopeError, Kind, Priority, SignedEnvelope};
use crate::keys::PublicKey;

/// Metadata key: `node-tree` or `units`.
pub const META_SEGMENT_TYPE: &str = "segment.type";
/// Metadata key: the segment's version, in decimal.
pub const META_SEGMENT_VERSION: &str = "segment.version";

/// A node as the tree lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tier: String,
    #[serde(default)]
    pub parent: Option<NodeId>,
    /// The node's current key: it signs as `<node>/_node`, signs the node's unit segment, and is its
    /// libp2p identity.
    pub public_key: PublicKey,
    /// libp2p multiaddresses where the node listens.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Keys the node had before `public_key`, newest last. During a rotation's overlap (until
    /// `not_after_ms`) an earlier key still verifies and is still accepted as the node's libp2p
    /// identity, so nothing the node signed or sent just before the change is lost; after it only
    /// what was signed before the window closed verifies. A key with `revoked_at_ms` (compromised)
    /// verifies nothing signed at or after that time and is refused on the links at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_keys: Vec<KeyRecord>,
}

impl NodeRecord {
    /// The keys that may have signed as this node at every one of the times `at_ms`: the current key,
    /// and each previous key whose window covers them. A revoked node key verifies nothing at all,
    /// whatever time it claims (a compromised key can claim any time); a compromised key is never the
    /// current one, since the root revokes it by rotating the node to a new key.
    pub fn keys_valid_at(&self, at_ms: &[u64]) -> Vec<PublicKey> {
        let mut keys = vec![self.public_key];
        keys.extend(
            self.previous_keys
                .iter()
                .filter(|k| k.public_key != self.public_key && k.revoked_at_ms.is_none() && at_ms.iter().all(|t| k.valid_at(*t)))
                .map(|k| k.public_key),
        );
        keys
    }

    /// Every key the node ever had, current first.
    pub fn all_keys(&self) -> impl Iterator<Item = &PublicKey> {
        std::iter::once(&self.public_key).chain(self.previous_keys.iter().map(|k| &k.public_key))
    }
}

/// The node tree, signed by the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTree {
    pub version: u64,
    pub nodes: Vec<NodeRecord>,
}

/// Whether a unit may send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitStatus {
    Active,
    /// Temporarily barred: submissions from it and new messages to it are refused at ingress.
    Suspended,
    /// Gone for good: as suspended, and its keys no longer verify anything signed after revocation.
    Revoked,
}

/// One public key of a unit, with its validity window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub public_key: PublicKey,
    /// Valid from (inclusive).
    pub not_before_ms: u64,
    /// Valid until (exclusive); `None`: no end.
    #[serde(default)]
    pub not_after_ms: Option<u64>,
    /// Revoked at: nothing signed (created) at or after this time verifies with the key.
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
}

impl KeyRecord {
    /// Whether the key was good for an envelope created at `at_ms`.
    pub fn valid_at(&self, at_ms: u64) -> bool {
        at_ms >= self.not_before_ms
            && self.not_after_ms.is_none_or(|end| at_ms < end)
            && self.revoked_at_ms.is_none_or(|r| at_ms < r)
    }
}

/// A unit as its node's segment lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub address: UnitAddress,
    #[serde(default)]
    pub name: String,
    /// department, bureau, street-office, ...
    #[serde(default)]
    pub kind: String,
    /// 统一社会信用代码, when the unit has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uscc: Option<String>,
    pub status: UnitStatus,
    pub keys: Vec<KeyRecord>,
}

/// The units one node hosts, signed by that node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitSegment {
    pub node: NodeId,
    pub version: u64,
    pub units: Vec<UnitRecord>,
}

/// The root key handed over: the statement, signed by the old root key, that the network's trust
/// anchor is now `new_key`. A node that pins `old_key` checks the signature against it, then pins
/// `new_key` (persistently) and from then on takes node trees and catalogs signed by the new key
/// only. Handovers chain: the `version` of the n-th handover of a network is n, so a node that was
/// away follows every step from the key it pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootHandover {
    pub version: u64,
    pub old_key: PublicKey,
    pub new_key: PublicKey,
}

/// Any kind of segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Tree(NodeTree),
    Units(UnitSegment),
    /// The data-sharing catalog, signed by the root like the tree (`segment.type = catalog`).
    Catalog(crate::sharing::Catalog),
    /// A root key handover, signed by the old root key (`segment.type = root-handover`).
    RootHandover(RootHandover),
}

impl Segment {
    pub fn version(&self) -> u64 {
        match self {
            Segment::Tree(t) => t.version,
            Segment::Units(u) => u.version,
            Segment::Catalog(c) => c.version,
            Segment::RootHandover(h) => h.version,
        }
    }

    /// `tree`, or the node id whose units it lists.
    pub fn owner(&self) -> String {
        match self {
            Segment::Tree(_) => "tree".into(),
            Segment::Units(u) => u.node.to_string(),
            Segment::Catalog(_) => "catalog".into(),
            Segment::RootHandover(h) => format!("root-handover-{}", h.version),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Segment::Tree(_) => "node-tree",
            Segment::Units(_) => "units",
            Segment::Catalog(_) => "catalog",
            Segment::RootHandover(_) => "root-handover",
        }
    }

    /// The segment as an envelope from `signer` (the node whose key signs it) plus its payload.
    pub fn envelope(&self, signer: &NodeId) -> (Envelope, Vec<u8>) {
        let payload = match self {
            Segment::Tree(t) => serde_json::to_vec(t),
            Segment::Units(u) => serde_json::to_vec(u),
            Segment::Catalog(c) => serde_json::to_vec(c),
            Segment::RootHandover(h) => serde_json::to_vec(h),
        }
        .expect("segments serialise");
        let me = UnitAddress::of_node(signer);
        let mut e = Envelope::new(Kind::DirectorySegment, me.clone(), vec![me], vec![], Priority::Urgent, &payload);
        e.metadata.insert(META_SEGMENT_TYPE.into(), self.type_name().into());
        e.metadata.insert(META_SEGMENT_VERSION.into(), self.version().to_string());
        (e, payload)
    }

    /// Reads a segment from its envelope and payload, checking that they agree. The signature is the
    /// caller's to check (against the root key or the owning node's key).
    pub fn from_envelope(signed: &SignedEnvelope, payload: &[u8]) -> Result<Segment, EnvelopeError> {
        let bad = |m: String| EnvelopeError::Malformed(format!("directory segment: {m}"));
        let e = &signed.envelope;
        if e.kind != Kind::DirectorySegment {
            return Err(bad("envelope kind is not directory-segment".into()));
        }
        e.check_payload(payload)?;
        let segment = match e.metadata.get(META_SEGMENT_TYPE).map(String::as_str) {
            Some("node-tree") => Segment::Tree(serde_json::from_slice(payload).map_err(|x| bad(x.to_string()))?),
            Some("units") => Segment::Units(serde_json::from_slice(payload).map_err(|x| bad(x.to_string()))?),
            Some("catalog") => Segment::Catalog(serde_json::from_slice(payload).map_err(|x| bad(x.to_string()))?),
            Some("root-handover") => Segment::RootHandover(serde_json::from_slice(payload).map_err(|x| bad(x.to_string()))?),
            other => return Err(bad(format!("unknown segment.type {other:?}"))),
        };
        if e.metadata.get(META_SEGMENT_VERSION) != Some(&segment.version().to_string()) {
            return Err(bad("segment.version does not match the payload".into()));
        }
        if !e.sender.is_node() {
            return Err(bad(format!("signed by {}, not by a node", e.sender)));
        }
        if let Segment::Units(u) = &segment
            && UnitAddress::of_node(&u.node) != e.sender {
                return Err(bad(format!("units of {} signed by {}", u.node, e.sender)));
            }
        Ok(segment)
    }
}
