//! The node-keys part's state: the key this node signs with and the libp2p identity it gives, the
//! root key it trusts, and what a rotation needs. Every part signs or verifies with these, so they
//! are read through short locks and replaced only by `node_keys` (a rotation taken, a root handover
//! followed).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

use ed25519_dalek::SigningKey;
use exchange_wire::PublicKey;

use crate::network::PeerId;

/// The node's keys and the root key it trusts.
pub struct NodeKeys {
    /// The node's signing key, replaced when the node takes a new key.
    pub(super) node_key: RwLock<SigningKey>,
    /// This node's libp2p identity (its node key's), replaced with it.
    pub(super) peer_id: RwLock<PeerId>,
    /// The root key in the configuration: the trust anchor the node started from.
    pub(super) configured_root_key: PublicKey,
    /// The root key pinned now: the configured one, followed through the root handovers held (see
    /// `directory::segments::SegmentSet::root_key`).
    pub(super) pinned_root_key: RwLock<PublicKey>,
    /// The node's key file; `<key_file>.next` is a key staged for a rotation.
    pub(super) key_file: PathBuf,
    /// Serialises changes of this node's key.
    pub(super) key_change: tokio::sync::Mutex<()>,
    /// Wakes the node-key watcher after a new tree.
    pub(super) key_check: tokio::sync::Notify,
    /// When a link from each earlier node key was last audited.
    pub(super) earlier_key_audits: Mutex<HashMap<PeerId, u64>>,
}

impl NodeKeys {
    pub fn new(node_key: SigningKey, configured_root_key: PublicKey, key_file: PathBuf) -> NodeKeys {
        let peer_id = crate::directory::peer_id_of(&PublicKey(node_key.verifying_key()));
        NodeKeys {
            node_key: RwLock::new(node_key),
            peer_id: RwLock::new(peer_id),
            configured_root_key,
            pinned_root_key: RwLock::new(configured_root_key),
            key_file,
            key_change: tokio::sync::Mutex::new(()),
            key_check: tokio::sync::Notify::new(),
            earlier_key_audits: Mutex::new(HashMap::new()),
        }
    }

    /// Where a key staged for the next rotation waits: `<key_file>.next`.
    pub fn next_key_file(&self) -> PathBuf {
        let mut name = self.key_file.clone().into_os_string();
        name.push(".next");
        PathBuf::from(name)
    }

    /// A new tree came: look at once whether it lists a new key for this node (the engine's
    /// `watch_node_keys` does the work, so that taking a tree never waits on it).
    pub(crate) fn check_now(&self) {
        self.key_check.notify_one();
    }

    /// The root key in the configuration.
    pub fn configured_root_key(&self) -> &PublicKey {
        &self.configured_root_key
    }
}
