//! Answering a neighbour restored from a backup (`/gov-exchange/reconcile/1`): which messages this
//! node handed to it, or received from it, in a time window (read from the custody entries of the
//! audit log), and queuing again for it the messages it asks for.
//!
//! A re-queued message is routed again from its signed header, as ingress does, keeping the
//! recipients whose next hop is the asker; it is carried by the ordinary forwarder, and since ids
//! are content-derived every node downstream recognises a copy it already holds. Only the parent and
//! the children of this node may ask, and each learns only about its own link.

use std::sync::Arc;

use exchange_wire::{Envelope, NodeId};
use crate::network::PeerId;
use crate::network::Reply;

use super::Engine;
use super::custody::event;
use super::services::Services;
use crate::directory::Directory;
use crate::network::reconcile::{Direction, Exchanged, PAGE, ReconcileRequest, ReconcileResponse, ResendOutcome};
use crate::routing::{self, NextHop};
use crate::storage::recovery::RequeueCandidate;
use crate::storage::{Custody, OutboxRow, WriteJob};

/// What stays the engine's: waking the asker's forwarder (the links are not this part's; the
/// forwarder may have to be started), then answering.
impl Engine {
    /// Answers a restored neighbour's request (refused unless it comes from the parent or a child).
    pub(crate) async fn answer_reconcile(self: Arc<Self>, peer: PeerId, request: ReconcileRequest, channel: Reply<ReconcileResponse>) {
        let (response, requeued_for) = answer(&self.services, &peer, request).await;
        if let Some(asker) = requeued_for {
            self.forwarder(&asker).work.notify_one();
        }
        self.services.net.respond_reconcile(channel, response).await;
    }
}

/// The answer to `peer`'s request and, when messages were queued again, the neighbour whose
/// forwarder must be woken to carry them.
async fn answer(s: &Services, peer: &PeerId, request: ReconcileRequest) -> (ReconcileResponse, Option<NodeId>) {
    let dir = s.dir.current();
    let asker = dir.node_by_peer(peer).map(|n| n.id.clone()).filter(|id| dir.neighbours(&s.here).iter().any(|n| &n.id == id));
    match asker {
        None => {
            tracing::warn!(%peer, "refused a reconciliation request from a node that is neither parent nor child");
            (ReconcileResponse::Refused { reason: format!("only the parent or a child of {} may ask it to reconcile", s.here) }, None)
        }
        Some(asker) => match request {
            ReconcileRequest::List { direction, since_ms, until_ms, after, limit } => {
                (list_exchanged(s, &asker, direction, (since_ms, until_ms), after, limit).await, None)
            }
            ReconcileRequest::Resend { ids } if ids.len() > PAGE as usize => {
                (ReconcileResponse::Refused { reason: format!("at most {PAGE} ids per request") }, None)
            }
            ReconcileRequest::Resend { ids } => {
                let (response, requeued) = requeue_for(s, &asker, ids).await;
                (response, (requeued > 0).then_some(asker))
            }
        },
    }
}

/// One page of the messages this node handed to `asker` (or received from it) in the window.
async fn list_exchanged(s: &Services, asker: &NodeId, direction: Direction, window: (u64, u64), after: i64, limit: u32) -> ReconcileResponse {
    let event = match direction {
        Direction::ToAsker => "forwarded",
        Direction::FromAsker => "received",
    };
    let window = (window.0.min(i64::MAX as u64) as i64, window.1.min(i64::MAX as u64) as i64);
    match s.store.recovery().exchanged(event, asker.as_str(), window, after, limit.clamp(1, PAGE)).await {
        Ok(page) => ReconcileResponse::Listed {
            items: page
                .rows
                .into_iter()
                .map(|r| Exchanged { id: r.message_id.to_vec(), kind: r.kind.unwrap_or_default(), at_ms: r.at_ms.max(0) as u64 })
                .collect(),
            next: page.next,
        },
        Err(e) => {
            s.metrics.storage_errors.with_label_values(&["read"]).inc();
            tracing::error!(error = %e, %asker, "cannot list handovers for a reconciliation");
            ReconcileResponse::Refused { reason: "storage: the handovers could not be read; ask again later".into() }
        }
    }
}

/// Queues again for `asker` the messages it asks for, in one commit; returns how many were queued
/// (the engine wakes the asker's forwarder when some were).
async fn requeue_for(s: &Services, asker: &NodeId, ids: Vec<serde_bytes::ByteBuf>) -> (ReconcileResponse, u64) {
    let ids: Vec<Option<[u8; 32]>> = ids.iter().map(|b| <[u8; 32]>::try_from(b.as_slice()).ok()).collect();
    let wanted: Vec<[u8; 32]> = ids.iter().flatten().copied().collect();
    let found = match s.store.recovery().requeue_candidates(&wanted, asker.as_str()).await {
        Ok(f) => f,
        Err(e) => {
            s.metrics.storage_errors.with_label_values(&["read"]).inc();
            tracing::error!(error = %e, %asker, "cannot read messages to queue again");
            return (ReconcileResponse::Refused { reason: "storage: the messages could not be read; ask again later".into() }, 0);
        }
    };
    let dir = s.dir.current();
    let now = exchange_wire::now_ms();
    let mut custody = Custody::default();
    let outcomes: Vec<ResendOutcome> = ids
        .iter()
        .map(|id| {
            let Some(id) = id else { return gone("not a message id") };
            let Some(c) = found.iter().find(|c| &c.id == id) else { return gone("not held here") };
            if c.queued {
                return ResendOutcome::Queued;
            }
            match route_again(&s.here, &dir, asker, c) {
                Ok(row) => {
                    custody.outbox.push(row);
                    let why = "queued again for a neighbour restored from a backup".to_string();
                    custody.events.push(event(*id, now, "requeued", None, Some(asker), Some(why)));
                    ResendOutcome::Requeued
                }
                Err(reason) => gone(&reason),
            }
        })
        .collect();
    let requeued = custody.outbox.len() as u64;
    if requeued > 0 {
        if let Err(e) = s.committer.commit(vec![WriteJob::Custody(custody)]).await {
            s.metrics.storage_errors.with_label_values(&["commit"]).inc();
            tracing::error!(error = %e, %asker, "cannot queue messages again for a restored neighbour");
            return (ReconcileResponse::Refused { reason: "storage: the messages could not be queued; ask again later".into() }, 0);
        }
        s.metrics.reconciliation.with_label_values(&["requeued"]).inc_by(requeued);
        tracing::info!(%asker, requeued, "queued messages again for a neighbour restored from a backup");
    }
    (ReconcileResponse::Resent { outcomes }, requeued)
}

/// The outbox entry that carries `c` to `asker` again: the recipients of its header whose next hop
/// from `here` is the asker.
fn route_again(here: &NodeId, dir: &Directory, asker: &NodeId, c: &RequeueCandidate) -> Result<OutboxRow, String> {
    let env = Envelope::from_canonical_bytes(&c.header).map_err(|e| format!("its stored header does not parse: {e}"))?;
    if c.payload_len == 0 && env.payload_size > 0 {
        return Err("its payload was removed by retention here".into());
    }
    let via_asker: Vec<_> = env
        .recipients()
        .filter(|r| {
            dir.home_of(r)
                .and_then(|home| routing::next_hop(dir, here, &home).ok())
                .is_some_and(|hop| hop == NextHop::Node(asker.clone()))
        })
        .cloned()
        .collect();
    if via_asker.is_empty() {
        return Err(format!("none of its recipients is reached through {asker} any more"));
    }
    Ok(OutboxRow {
        message_id: c.id,
        next_hop: asker.to_string(),
        recipients: serde_json::to_string(&via_asker).expect("addresses serialise"),
        priority: env.priority.rank(),
        enqueued_at_ms: exchange_wire::now_ms() as i64,
    })
}

fn gone(reason: &str) -> ResendOutcome {
    ResendOutcome::Gone { reason: reason.to_string() }
}
