//! The attachments part: its state here, its work in `attachments` (checks at ingress, receiving
//! chunks, sending to neighbours, retention) and `cut_through` (passing chunks on as they arrive).
//! Kept apart so the engine can hold the part without importing its work.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use exchange_wire::{Digest, NodeId};
use tokio::sync::watch;

use super::services::Services;
use super::signals::Links;
use crate::storage::attachments::{AttachmentError, AttachmentStore, Held};
use crate::storage::health::StorageHealth;

/// The attachments part: the attachment files, which neighbours hold which attachments and the
/// transfers under way, and the committed length of attachments being received (for chunks that
/// arrive ahead of their predecessor). Its work needs, beyond that, the shared services, the storage
/// health (chunks are refused while intake is closed) and the links (the peer to send a neighbour
/// its attachments by); the forwarders it sends for are handed in where a transfer starts.
pub struct Attachments {
    /// The attachment files (see `storage::attachments`).
    pub files: Arc<AttachmentStore>,
    pub(super) services: Arc<Services>,
    pub(super) health: Arc<StorageHealth>,
    pub(super) links: Arc<Links>,
    transfers: Mutex<Transfers>,
    progress: Progress,
}

/// Attachments known to be complete at a neighbour, and transfers running (by neighbour and SHA-256).
#[derive(Default)]
struct Transfers {
    done: HashSet<(NodeId, Digest)>,
    running: HashSet<(NodeId, Digest)>,
}

/// Where an attachment stands with a neighbour, for the forwarder.
pub(super) enum AtNeighbour {
    /// The neighbour holds it all.
    Held,
    /// A transfer was started for it now (the caller spawns it).
    Started,
    /// A transfer runs already.
    Running,
}

impl Attachments {
    pub fn new(files: AttachmentStore, services: Arc<Services>, health: Arc<StorageHealth>, links: Arc<Links>) -> Attachments {
        Attachments { files: Arc::new(files), services, health, links, transfers: Mutex::default(), progress: Progress::default() }
    }

    /// Where `sha256` stands with `hop`; claims the transfer when none runs.
    pub(super) fn at_neighbour(&self, hop: &NodeId, sha256: Digest) -> AtNeighbour {
        let mut state = self.transfers.lock().expect("attachment transfers lock");
        let key = (hop.clone(), sha256);
        if state.done.contains(&key) {
            AtNeighbour::Held
        } else if state.running.insert(key) {
            AtNeighbour::Started
        } else {
            AtNeighbour::Running
        }
    }

    /// The transfer of `sha256` to `hop` ended: the neighbour holds it (or refused it for good).
    pub(super) fn transfer_ended(&self, hop: &NodeId, sha256: Digest) {
        let mut state = self.transfers.lock().expect("attachment transfers lock");
        let key = (hop.clone(), sha256);
        state.running.remove(&key);
        state.done.insert(key);
    }

    /// The transfer of `sha256` to `hop` stopped before the neighbour held it all (the bytes stopped
    /// arriving here): the next one that is needed starts afresh and resumes.
    pub(super) fn transfer_abandoned(&self, hop: &NodeId, sha256: Digest) {
        self.transfers.lock().expect("attachment transfers lock").running.remove(&(hop.clone(), sha256));
    }

    /// Forgets that `hop` holds `sha256`.
    pub(super) fn forget(&self, hop: &NodeId, sha256: Digest) {
        self.transfers.lock().expect("attachment transfers lock").done.remove(&(hop.clone(), sha256));
    }

    /// Watches the committed length of an attachment being received.
    pub(super) fn progress(&self, sha256: Digest) -> watch::Receiver<u64> {
        self.progress.watch(sha256)
    }

    /// Forgets the watch of an attachment that is complete here once nobody waits on it (one made by a
    /// subscriber that came after the completion), so the map holds only attachments still arriving.
    pub(super) fn forget_progress(&self, sha256: Digest) {
        self.progress.forget(sha256)
    }

    /// Publishes an attachment's new committed length to chunks waiting for it.
    pub(super) fn committed(&self, sha256: Digest, held: &Result<Held, AttachmentError>) {
        self.progress.publish(sha256, held)
    }
}

/// The committed length of each attachment being received, as a watch per attachment.
///
/// Chunks are appended in order but their requests finish in any order: the task of one chunk may
/// publish its length after the task of the next published a longer one. The published length
/// therefore only grows; were it set back, a chunk waiting for that longer length would sleep until
/// its 30 s [`super::attachments`] reorder wait ran out (seen in benchmark runs: a chunk waited at
/// `offset` = 940 MiB with the watch at 939 MiB, although chunk 939 was on disk).
#[derive(Default)]
struct Progress(Mutex<HashMap<Digest, watch::Sender<u64>>>);

impl Progress {
    fn watch(&self, sha256: Digest) -> watch::Receiver<u64> {
        let mut map = self.0.lock().expect("attachment progress lock");
        map.entry(sha256).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    fn forget(&self, sha256: Digest) {
        let mut map = self.0.lock().expect("attachment progress lock");
        if map.get(&sha256).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(&sha256);
        }
    }

    fn publish(&self, sha256: Digest, held: &Result<Held, AttachmentError>) {
        let mut map = self.0.lock().expect("attachment progress lock");
        match held {
            Ok(Held::Partial(n)) => {
                let tx = map.entry(sha256).or_insert_with(|| watch::channel(0).0);
                tx.send_if_modified(|committed| {
                    let longer = *n > *committed;
                    if longer {
                        *committed = *n;
                    }
                    longer
                });
            }
            // Complete (nothing more to wait for) or refused (the sender offers again).
            _ => {
                if let Some(tx) = map.remove(&sha256) {
                    tx.send_replace(u64::MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Two chunks' tasks publish out of order (the later chunk's length first): a chunk waiting for
    /// the longer length is woken and stays woken, the length does not go back.
    #[tokio::test(flavor = "current_thread")]
    async fn the_committed_length_only_grows_when_chunks_publish_out_of_order() {
        let progress = Arc::new(Progress::default());
        let sha = Digest([7; 32]);
        let mut waiter = progress.watch(sha);
        let waiting = tokio::spawn(async move { waiter.wait_for(|&c| c >= 2 << 20).await.map(|c| *c) });
        tokio::task::yield_now().await;
        // Both publish before the waiting task runs again (one thread): it sees only the last value.
        progress.publish(sha, &Ok(Held::Partial(2 << 20)));
        progress.publish(sha, &Ok(Held::Partial(1 << 20)));
        let seen = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("the waiting chunk is woken").unwrap();
        assert_eq!(seen.unwrap(), 2 << 20);
        assert_eq!(*progress.watch(sha).borrow(), 2 << 20, "the length did not go back");
        // Completion ends every wait and forgets the attachment.
        let mut waiter = progress.watch(sha);
        progress.publish(sha, &Ok(Held::Complete));
        assert_eq!(*waiter.borrow_and_update(), u64::MAX);
        drop(waiter);
        assert_eq!(*progress.watch(sha).borrow(), 0, "a new watch after completion");
        progress.forget(sha);
        assert!(progress.0.lock().unwrap().is_empty(), "forgotten once nobody watches");
    }
}
