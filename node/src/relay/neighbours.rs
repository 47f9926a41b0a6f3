//! The engine's side of the neighbour links: what the network reports (batches, traces, segments,
//! attachments, reconciliation and checkpoint requests, links going up or down, round-trip times),
//! each handed to the part that answers it; and the per-neighbour state and gauges.

use std::sync::Arc;

use exchange_wire::NodeId;

use super::Engine;
use super::signals::peer_for;
use crate::network::{self, PeerId};

impl Engine {
    /// Keeps a link with neighbour `id`: its forwarder, its peer state and its metric series (zeros
    /// from the start, so dashboards and alerts see zeros, not gaps).
    pub(super) fn watch_neighbour(self: &Arc<Self>, id: &NodeId) {
        let new = self.links.watch(id);
        self.forwarder(id);
        if new {
            let peer = [id.as_str()];
            let m = &self.services.metrics;
            m.peer_up.with_label_values(&peer).set(0);
            m.send_failures.with_label_values(&peer).inc_by(0);
            m.batch_splits.with_label_values(&peer).inc_by(0);
            m.attachment_bytes_sent.with_label_values(&peer).inc_by(0);
            m.attachment_bytes_received.with_label_values(&peer).inc_by(0);
            m.attachment_resumes.with_label_values(&peer).inc_by(0);
            m.attachment_cut_through.with_label_values(&peer).inc_by(0);
            m.dead_letters_total.with_label_values(&peer).inc_by(0);
            m.hop_latency.with_label_values(&peer);
            for g in [&m.outbox_depth, &m.outbox_bytes, &m.dead_letters] {
                g.with_label_values(&peer).set(0);
            }
            m.outbox_oldest_age.with_label_values(&peer).set(0.0);
        }
    }

    /// Reacts to the network: inbound batches and traces, links going up or down, pings.
    pub async fn on_network_event(self: &Arc<Self>, event: network::NetworkEvent) {
        use network::NetworkEvent as E;
        let peer = match &event {
            E::Inbound { peer, .. }
            | E::Trace { peer, .. }
            | E::Directory { peer, .. }
            | E::Attachment { peer, .. }
            | E::Reconcile { peer, .. }
            | E::Checkpoint { peer, .. }
            | E::PeerUp(peer)
            | E::PeerDown(peer)
            | E::PeerRtt(peer, _) => *peer,
            E::Refused { peer, inbound } => {
                self.services.metrics.connections_refused.with_label_values(&[if *inbound { "inbound" } else { "outbound" }]).inc();
                tracing::warn!(peer = ?peer, inbound, "connection refused: the peer is not a node of the directory");
                if let Some(peer) = peer {
                    self.services.keys.refused_earlier_key(&self.services, peer).await;
                }
                return;
            }
        };
        let node = self.services.dir.current().node_by_peer(&peer).map(|n| n.id.clone());
        if let Some(node) = &node {
            if let E::PeerRtt(_, rtt) = &event {
                self.links.set_rtt(node, *rtt);
                self.services.metrics.peer_rtt.with_label_values(&[node.as_str()]).set(rtt.as_secs_f64());
            }
            // Anything heard from a peer means its link is up, with that identity.
            let up = !matches!(event, E::PeerDown(_));
            self.mark_link(node, up);
            self.links.set_link_peer(node, peer, up);
        }
        match event {
            E::Inbound { peer, request, channel } => {
                let engine = self.clone();
                self.services.tasks.spawn(async move { engine.ingress().inbound(peer, request, channel).await });
            }
            E::Trace { peer, request, channel } => {
                let engine = self.clone();
                self.services.tasks.spawn(async move { engine.operations().answer_trace(peer, request, channel).await });
            }
            E::Directory { peer, request, channel } => {
                let engine = self.clone();
                self.services.tasks.spawn(async move { engine.answer_directory(peer, request, channel).await });
            }
            E::Attachment { peer, request, channel } => {
                let engine = self.clone();
                let forwarder = move |hop: &NodeId| engine.forwarder(hop);
                self.services.tasks.spawn(self.attachments.clone().answer_attachment(peer, request, channel, forwarder));
            }
            E::Reconcile { peer, request, channel } => {
                self.services.tasks.spawn(self.clone().answer_reconcile(peer, request, channel));
            }
            E::Checkpoint { peer, request, channel } => {
                self.services.tasks.spawn(self.clone().answer_checkpoint(peer, request, channel));
            }
            E::PeerUp(_) => {
                let engine = self.clone();
                self.services.tasks.spawn(async move { engine.push_all_segments(peer).await });
                if let Some(node) = node {
                    self.forwarder(&node).link_up.notify_one();
                }
            }
            E::PeerDown(_) => {}
            E::PeerRtt(..) | E::Refused { .. } => {}
        }
    }

    /// Records that the link to neighbour `node` is up (or down): peer state and `exchange_peer_up`.
    pub(crate) fn mark_link(&self, node: &NodeId, up: bool) {
        self.links.mark(node, up);
        self.services.metrics.peer_up.with_label_values(&[node.as_str()]).set(up as i64);
    }

    /// The signals of neighbour `hop`'s forwarder, starting it on first use (see
    /// [`Forwarders::forwarder`](super::forwarder::Forwarders::forwarder)).
    pub(crate) fn forwarder(&self, hop: &NodeId) -> Arc<super::signals::Signals> {
        self.forwarders.forwarder(hop)
    }

    /// The libp2p identity to reach neighbour `id` by: the one its link is up with, while the
    /// directory still admits it (during a key rotation's overlap the neighbour may not have taken its
    /// new key yet), else the identity of its current key.
    pub(crate) fn peer_for(&self, id: &NodeId) -> Option<PeerId> {
        peer_for(&self.services.dir.current(), &self.links, id)
    }
}
