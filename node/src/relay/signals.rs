//! The forwarding part's state: the wake-ups of each forwarder (new work, the link coming back, the
//! turn of attachment transfers), one per neighbour, and what the node knows about each link. The
//! forwarder (`forwarder`) waits on its signals; the engine wakes them after a commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exchange_wire::NodeId;

use crate::directory::Directory;
use crate::network::PeerId;
use tokio::sync::Notify;

/// Wake-up signals for one forwarder.
#[derive(Default)]
pub struct Signals {
    /// New outbox entries were committed for this neighbour (or an attachment reached it).
    pub work: Notify,
    /// An entry more urgent than routine (特急, 加急) was committed for this neighbour: it may go
    /// beyond a full window.
    pub urgent: Notify,
    /// The link to this neighbour came up.
    pub link_up: Notify,
    /// Held by the routine (平件) attachment transfer to this neighbour that has its turn: one at a
    /// time.
    pub attachment_turn: tokio::sync::Mutex<()>,
    /// The same for attachments of 特急 and 加急 documents: they never wait behind a routine transfer
    /// (a 1 GiB scan takes minutes), they share the link with it.
    pub urgent_attachment_turn: tokio::sync::Mutex<()>,
}

/// What the node knows about a neighbour link.
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    pub connected: bool,
    /// The libp2p identity the neighbour's link came up with: during a key rotation's overlap, its old
    /// or its new one (see `Engine::peer_for`).
    pub link_peer: Option<PeerId>,
    pub last_seen_ms: Option<u64>,
    pub rtt: Option<Duration>,
}

/// The forwarders (their signals, by neighbour) and the state of each neighbour link.
#[derive(Default)]
pub struct Links {
    forwarders: Mutex<HashMap<NodeId, Arc<Signals>>>,
    peers: Mutex<HashMap<NodeId, PeerState>>,
}

impl Links {
    /// The signals of `hop`'s forwarder; on first use, `start` starts the forwarder with them.
    pub fn forwarder(&self, hop: &NodeId, start: impl FnOnce(Arc<Signals>)) -> Arc<Signals> {
        let mut map = self.forwarders.lock().expect("forwarders lock");
        map.entry(hop.clone())
            .or_insert_with(|| {
                let signals = Arc::new(Signals::default());
                start(signals.clone());
                signals
            })
            .clone()
    }

    /// Forwarders running.
    pub fn forwarders(&self) -> usize {
        self.forwarders.lock().expect("forwarders lock").len()
    }

    /// Every forwarder retries now, whatever its backoff. Returns how many were woken.
    pub fn wake_all(&self) -> usize {
        let map = self.forwarders.lock().expect("forwarders lock");
        for s in map.values() {
            s.link_up.notify_one();
            s.work.notify_one();
        }
        map.len()
    }

    /// Starts keeping the state of the link to `id`; returns whether it is new.
    pub fn watch(&self, id: &NodeId) -> bool {
        let mut peers = self.peers.lock().expect("peers lock");
        let new = !peers.contains_key(id);
        peers.entry(id.clone()).or_default();
        new
    }

    /// Records the link to `id` up (or down).
    pub fn mark(&self, id: &NodeId, up: bool) {
        let mut peers = self.peers.lock().expect("peers lock");
        let state = peers.entry(id.clone()).or_default();
        state.connected = up;
        if up {
            state.last_seen_ms = Some(exchange_wire::now_ms());
        }
    }

    /// Records which identity the link to `id` is up with (`up`), or that the link with `peer` went
    /// down (a link with another identity of the same neighbour may still be up).
    pub fn set_link_peer(&self, id: &NodeId, peer: PeerId, up: bool) {
        let mut peers = self.peers.lock().expect("peers lock");
        let state = peers.entry(id.clone()).or_default();
        match up {
            true => state.link_peer = Some(peer),
            false if state.link_peer == Some(peer) => state.link_peer = None,
            false => {}
        }
    }

    /// Records the round-trip time of the link to `id`.
    pub fn set_rtt(&self, id: &NodeId, rtt: Duration) {
        self.peers.lock().expect("peers lock").entry(id.clone()).or_default().rtt = Some(rtt);
    }

    /// The state of the link to `id` (not connected, never seen, when unknown).
    pub fn peer(&self, id: &NodeId) -> PeerState {
        self.peers.lock().expect("peers lock").get(id).cloned().unwrap_or_default()
    }
}

/// The libp2p identity to reach neighbour `id` by: the one its link is up with, while the
/// directory still admits it (during a key rotation's overlap the neighbour may not have taken its
/// new key yet), else the identity of its current key. A function of the directory and the links,
/// so every part that reaches neighbours (forwarders, attachment transfers, the operators' trace,
/// reconciliation) finds the same peer.
pub(crate) fn peer_for(dir: &Directory, links: &Links, id: &NodeId) -> Option<PeerId> {
    let node = dir.node(id)?;
    let state = links.peer(id);
    let linked = state.link_peer.filter(|_| state.connected);
    Some(linked.filter(|p| node.peer_ids_at(exchange_wire::now_ms()).contains(p)).unwrap_or(node.peer_id))
}
