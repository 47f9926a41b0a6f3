//! The directory: which nodes exist and how they form a tree, which units each node hosts, and the
//! public keys of both.
//!
//! The rest of the node reads the directory only through [`DirectoryHandle::current`], an immutable
//! snapshot, so the source can change without touching routing or custody: today a static TOML file
//! shared by all nodes, later signed segments propagated along the tree.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use exchange_wire::{NodeId, PublicKey, UnitAddress};
use libp2p::PeerId;
use serde::Deserialize;

/// Why a directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read directory {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("directory {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
}

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
    pub addresses: Vec<libp2p::Multiaddr>,
}

/// A unit (agency system) as the directory lists it.
#[derive(Debug, Clone)]
pub struct UnitEntry {
    pub address: UnitAddress,
    pub name: String,
    pub kind: String,
    /// The node that hosts the unit's inbox.
    pub home: NodeId,
    /// Keys the unit may sign with.
    pub keys: Vec<PublicKey>,
}

/// An immutable snapshot of the directory.
#[derive(Debug, Default)]
pub struct Directory {
    version: u64,
    nodes: HashMap<NodeId, NodeEntry>,
    units: HashMap<UnitAddress, UnitEntry>,
    by_peer: HashMap<PeerId, NodeId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDirectory {
    /// Raised by the operator on every change.
    #[serde(default)]
    version: u64,
    #[serde(default, rename = "node")]
    nodes: Vec<FileNode>,
    #[serde(default, rename = "unit")]
    units: Vec<FileUnit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    id: NodeId,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tier: String,
    parent: Option<NodeId>,
    public_key: PublicKey,
    #[serde(default)]
    addresses: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUnit {
    address: UnitAddress,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    public_key: PublicKey,
}

/// The libp2p peer id that belongs to an ed25519 node key.
pub fn peer_id_of(key: &PublicKey) -> PeerId {
    let pk = libp2p::identity::ed25519::PublicKey::try_from_bytes(key.0.as_bytes()).expect("valid ed25519 key");
    libp2p::identity::PublicKey::from(pk).to_peer_id()
}

impl Directory {
    /// Loads the static directory file.
    pub fn load_file(path: &Path) -> Result<Directory, DirectoryError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| DirectoryError::Read { path: shown.clone(), source: e })?;
        Self::from_toml(&text).map_err(|reason| DirectoryError::Invalid { path: shown, reason })
    }

    /// Parses and checks a directory in the static file format.
    pub fn from_toml(text: &str) -> Result<Directory, String> {
        let file: FileDirectory = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut dir = Directory { version: file.version, ..Directory::default() };
        for n in file.nodes {
            let addresses = n
                .addresses
                .iter()
                .map(|a| a.parse().map_err(|e| format!("node {}: address {a:?}: {e}", n.id)))
                .collect::<Result<Vec<_>, _>>()?;
            let peer_id = peer_id_of(&n.public_key);
            if dir.by_peer.insert(peer_id, n.id.clone()).is_some() {
                return Err(format!("node {}: its key is also another node's key", n.id));
            }
            let entry = NodeEntry { id: n.id.clone(), name: n.name, tier: n.tier, parent: n.parent, public_key: n.public_key, peer_id, addresses };
            if dir.nodes.insert(n.id.clone(), entry).is_some() {
                return Err(format!("node {} is listed twice", n.id));
            }
        }
        for n in dir.nodes.values() {
            if let Some(p) = &n.parent {
                if !dir.nodes.contains_key(p) {
                    return Err(format!("node {} names parent {p}, which is not listed", n.id));
                }
            }
            if dir.ancestors(&n.id).count() > 64 {
                return Err(format!("node {} has a parent cycle or a tree deeper than 64", n.id));
            }
        }
        for u in file.units {
            let home: NodeId = u.address.node_part().parse().map_err(|e| format!("unit {}: {e}", u.address))?;
            if !dir.nodes.contains_key(&home) {
                return Err(format!("unit {} belongs to node {home}, which is not listed", u.address));
            }
            if u.address.is_node() {
                return Err(format!("unit {}: the unit id _node is reserved for nodes", u.address));
            }
            let entry = UnitEntry { address: u.address.clone(), name: u.name, kind: u.kind, home, keys: vec![u.public_key] };
            if dir.units.insert(u.address.clone(), entry).is_some() {
                return Err(format!("unit {} is listed twice", u.address));
            }
        }
        Ok(dir)
    }

    /// The directory's version.
    pub fn version(&self) -> u64 {
        self.version
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

    pub fn node_by_peer(&self, peer: &PeerId) -> Option<&NodeEntry> {
        self.by_peer.get(peer).and_then(|id| self.nodes.get(id))
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

    /// The keys that may sign as `address`: a unit's keys, or a node's key for `<node>/_node`.
    pub fn signing_keys(&self, address: &UnitAddress) -> Vec<PublicKey> {
        if address.is_node() {
            let id: Option<NodeId> = address.node_part().parse().ok();
            return id.and_then(|id| self.nodes.get(&id)).map(|n| vec![n.public_key]).unwrap_or_default();
        }
        self.units.get(address).map(|u| u.keys.clone()).unwrap_or_default()
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
    let key = |seed: u8| PublicKey(test_key(seed).verifying_key());
    let text = format!(
        r#"
        [[node]]
        id = "gd"
        public_key = "{}"
        [[node]]
        id = "gz"
        parent = "gd"
        public_key = "{}"
        [[node]]
        id = "gz.yuexiu"
        parent = "gz"
        public_key = "{}"
        [[node]]
        id = "gz.haizhu"
        parent = "gz"
        public_key = "{}"
        [[unit]]
        address = "gd/gov"
        public_key = "{}"
        [[unit]]
        address = "gz/civil-affairs"
        public_key = "{}"
        [[unit]]
        address = "gz.yuexiu/liurong-street"
        public_key = "{}"
        [[unit]]
        address = "gz.haizhu/civil-affairs"
        public_key = "{}"
        [[unit]]
        address = "gz.haizhu/chigang-street"
        public_key = "{}"
        "#,
        key(1), key(2), key(3), key(4), key(5), key(6), key(7), key(8), key(9)
    );
    Directory::from_toml(&text).unwrap()
}

/// The secret key behind seed `seed` of [`test_tree`]: nodes gd=1, gz=2, gz.yuexiu=3, gz.haizhu=4;
/// units gd/gov=5, gz/civil-affairs=6, liurong-street=7, haizhu civil-affairs=8, chigang-street=9.
#[cfg(test)]
pub(crate) fn test_key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}
