//! The signed directory as operators see and change it (admin API): its segments and their
//! verification, nodes and units, registering a unit, rotating a unit's key, handing over the root key.

use serde::{Deserialize, Serialize};

use crate::address::{NodeId, UnitAddress};

/// One stored directory segment, as `GET /admin/v1/directory` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// `tree`, or the node id whose units the segment lists.
    pub owner: String,
    /// `node-tree` or `units`.
    pub kind: String,
    pub version: u64,
    /// The node whose key signed it.
    pub signer: NodeId,
    pub signed_at_ms: u64,
    /// Units listed (unit segments) or nodes listed (the tree).
    pub entries: u64,
}

/// `GET /admin/v1/directory`: what this node routes by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectoryView {
    /// Sum of all segment versions: equal on every node that holds the same directory.
    pub version: u64,
    /// The pinned root key (trust anchor).
    pub root_key: String,
    pub segments: Vec<SegmentInfo>,
}

/// One segment's check in `GET /admin/v1/directory:verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentCheck {
    pub owner: String,
    pub version: u64,
    pub ok: bool,
    pub detail: String,
}

/// `GET /admin/v1/directory:verify`: every stored segment re-verified against the root key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectoryVerification {
    pub ok: bool,
    pub checks: Vec<SegmentCheck>,
}

/// `GET /admin/v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodesResponse {
    pub nodes: Vec<crate::directory::NodeRecord>,
}

/// `GET /admin/v1/units?node=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitsResponse {
    pub units: Vec<crate::directory::UnitRecord>,
}

/// Body of `POST /admin/v1/units` (on the unit's home node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewUnit {
    pub address: UnitAddress,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub uscc: Option<String>,
    pub public_key: crate::keys::PublicKey,
}

/// Body of `POST /admin/v1/units/{node}/{unit}:rotate-key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotateKey {
    pub public_key: crate::keys::PublicKey,
    /// How long the old key stays valid beside the new one (0: it ends now).
    #[serde(default)]
    pub overlap_secs: u64,
    /// Revoke the old key now (stolen key): nothing created from now on verifies with it.
    #[serde(default)]
    pub revoke_old: bool,
}

/// Body of `POST /admin/v1/directory:hand-over-root`, at the root node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootHandoverRequest {
    /// The new root key: the public key of the key staged in `<key_file>.next` on the root node.
    pub public_key: crate::keys::PublicKey,
    /// How long the old root key stays the root node's key beside the new one (its libp2p identity
    /// accepted, what it signed before verifying).
    #[serde(default)]
    pub overlap_secs: u64,
}
