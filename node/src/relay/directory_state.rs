//! The directory part's state: the signed directory segments this node holds, the configured parent
//! (the way into the network before the node tree is known) and the seeds of a new network's
//! directory. `directory_sync` holds what the engine does with it; kept apart so the engine can hold
//! this without importing `directory_sync`.

use tokio::sync::{Mutex, MutexGuard};

use crate::config::DirectoryConfig;
use crate::directory::segments::SegmentSet;
use crate::network::{Multiaddr, PeerId};

/// See the module documentation.
pub struct DirectorySync {
    segments: Mutex<SegmentSet>,
    parent_hint: Option<(PeerId, Vec<Multiaddr>)>,
    seeds: DirectoryConfig,
}

impl DirectorySync {
    pub fn new(seeds: DirectoryConfig, parent_hint: Option<(PeerId, Vec<Multiaddr>)>) -> DirectorySync {
        DirectorySync { segments: Mutex::new(SegmentSet::default()), parent_hint, seeds }
    }

    /// The segments held. Changes are serialised through this lock: hold it from reading the set
    /// to storing the change.
    pub async fn segments(&self) -> MutexGuard<'_, SegmentSet> {
        self.segments.lock().await
    }

    /// The configured parent's peer id and the addresses of its replicas (`parent_address`),
    /// absent on the root.
    pub fn parent_hint(&self) -> Option<&(PeerId, Vec<Multiaddr>)> {
        self.parent_hint.as_ref()
    }

    /// The seed files of a new network's directory (`[directory]`).
    pub fn seeds(&self) -> &DirectoryConfig {
        &self.seeds
    }
}
