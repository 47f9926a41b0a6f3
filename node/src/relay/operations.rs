//! What operators ask of a node: its status, links, queues, a message's trace across the network,
//! dead letters, retries, retention, the audit chain and readiness. Every change is recorded in the
//! audit log in the same transaction as the change itself.
//!
//! The operations part ([`Operations`]) is given the services and exactly the other handles it
//! reads: the links (peer state, waking the forwarders), the storage health and the start time.
//! It holds no state of its own, so it is a view the engine lends for one request
//! ([`Engine::operations`]). The two actions that also need another part's work (retention sweeps
//! the attachments part's files; audit verify asks the checkpoints part) stay on the engine, which
//! hands that work in.

use std::collections::BTreeSet;
use std::future::Future;

use exchange_wire::api::{
    AdminActionResponse, AuditBreak, AuditEntry, AuditPage, AuditVerification, Check, CheckpointCheck, CustodyEvent, DeadLetter,
    DeadLetterSelection, NodeStatus, PeerInfo, QueueInfo, Readiness, TraceResponse,
};
use exchange_wire::{Digest, MessageId, NodeId};
use crate::network::PeerId;
use crate::network::Reply;

use super::signals::peer_for;
use super::reads::events;
use super::services::Services;
use super::signals::Links;
use super::{Engine, Refusal};
use crate::network::protocol::{TraceRequest, TraceResponse as WireTrace};
use crate::storage::health::StorageHealth;
use crate::storage::{AdminOp, EventRow, JobOutcome, Record, StorageError, WriteJob};

/// The operations part: the services and exactly the handles operators' actions read beyond them.
pub struct Operations<'a> {
    pub services: &'a Services,
    /// Link state (peers, readiness, trace routing) and the forwarders to wake (retry, resend).
    pub links: &'a Links,
    /// Intake and free space, for readiness.
    pub health: &'a StorageHealth,
    /// For status's uptime.
    pub started_at_ms: u64,
}

/// What stays the engine's: lending the view, and the two actions that need another part's work.
impl Engine {
    /// The operations part, over this engine's services, links and storage health.
    pub fn operations(&self) -> Operations<'_> {
        Operations { services: &self.services, links: &self.links, health: &self.health, started_at_ms: self.started_at_ms }
    }

    /// `exchange-admin purge --older-than DAYS`: the operations part purges and records; the
    /// attachments part sweeps the files no longer needed.
    pub async fn retention_purge(&self, days: u32) -> Result<AdminActionResponse, Refusal> {
        self.operations().retention_purge(days, |before_ms| self.attachments.sweep_attachments(before_ms)).await
    }

    /// `exchange-admin audit verify`: the chain here, and the checkpoints part's comparison.
    pub async fn audit_verify(&self) -> Result<AuditVerification, Refusal> {
        self.operations().audit_verify(self.checkpoint_check()).await
    }
}

impl Operations<'_> {
    /// `exchange-admin status`.
    pub fn node_status(&self) -> NodeStatus {
        let dir = self.services.dir.current();
        let me = dir.node(&self.services.here);
        let now = exchange_wire::now_ms();
        NodeStatus {
            node: self.services.here.clone(),
            name: me.map(|n| n.name.clone()).unwrap_or_default(),
            tier: me.map(|n| n.tier.clone()).unwrap_or_default(),
            parent: me.and_then(|n| n.parent.clone()),
            children: dir.children(&self.services.here).into_iter().map(|n| n.id.clone()).collect(),
            peer_id: self.services.peer_id().to_string(),
            directory_version: dir.version(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_ms: self.started_at_ms,
            uptime_secs: now.saturating_sub(self.started_at_ms) / 1000,
        }
    }

    /// `exchange-admin peers`: parent and children with their link state.
    pub fn peer_infos(&self) -> Vec<PeerInfo> {
        let dir = self.services.dir.current();
        let parent = dir.node(&self.services.here).and_then(|n| n.parent.clone());
        let mut out: Vec<PeerInfo> = dir
            .neighbours(&self.services.here)
            .into_iter()
            .map(|n| {
                let state = self.links.peer(&n.id);
                PeerInfo {
                    node: n.id.clone(),
                    role: if Some(&n.id) == parent.as_ref() { "parent" } else { "child" }.into(),
                    peer_id: n.peer_id.to_string(),
                    connected: state.connected,
                    last_seen_ms: state.last_seen_ms,
                    rtt_ms: state.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    addresses: n.addresses.iter().map(|a| a.to_string()).collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| (a.role != "parent", &a.node).cmp(&(b.role != "parent", &b.node)));
        out
    }

    /// `exchange-admin queues`: every next hop with waiting work or dead letters, and every neighbour.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, Refusal> {
        let now = exchange_wire::now_ms() as i64;
        let mut out: Vec<QueueInfo> = self
            .services.store
            .queue_stats()
            .await?
            .into_iter()
            .filter_map(|q| {
                Some(QueueInfo {
                    peer: q.hop.parse().ok()?,
                    depth: q.depth.max(0) as u64,
                    bytes: q.bytes.max(0) as u64,
                    oldest_age_ms: q.oldest_enqueued_ms.map(|t| (now - t).max(0) as u64),
                    dead_letters: q.dead.max(0) as u64,
                })
            })
            .collect();
        for n in self.services.dir.current().neighbours(&self.services.here) {
            if !out.iter().any(|q| q.peer == n.id) {
                out.push(QueueInfo { peer: n.id.clone(), depth: 0, bytes: 0, oldest_age_ms: None, dead_letters: 0 });
            }
        }
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        Ok(out)
    }

    /// `exchange-admin trace`: this node's events for a message and, following the message from
    /// neighbour to neighbour, those of every node it crossed.
    pub async fn trace(&self, id: &MessageId) -> Result<TraceResponse, Refusal> {
        let (mut events, unreachable) = self.gather_trace(id, None).await?;
        fold_reported_hops(&mut events);
        events.sort_by_key(|e| e.at_ms);
        let nodes: BTreeSet<NodeId> = events.iter().map(|e| e.node.clone()).collect();
        let unreachable: BTreeSet<NodeId> = unreachable.into_iter().collect();
        Ok(TraceResponse { id: *id, events, nodes: nodes.into_iter().collect(), unreachable: unreachable.into_iter().collect() })
    }

    /// Local events plus those of the neighbours the message came from or went to (except `asker`).
    async fn gather_trace(&self, id: &MessageId, asker: Option<&NodeId>) -> Result<(Vec<CustodyEvent>, Vec<NodeId>), Refusal> {
        let mut events = events(self.services, id).await?;
        let onward: BTreeSet<NodeId> = events
            .iter()
            .filter(|e| matches!(e.event.as_str(), "received" | "forwarded" | "failed"))
            .filter_map(|e| e.peer.clone())
            .filter(|p| Some(p) != asker && p != &self.services.here)
            .collect();
        let mut unreachable = Vec::new();

        for node in onward {
            let Some(peer) = peer_for(&self.services.dir.current(), self.links, &node) else {
                unreachable.push(node);
                continue;
            };
            match self.services.net.trace(peer, TraceRequest { message_id: id.0.to_vec() }).await {
                Ok(r) => {
                    events.extend(r.events);
                    unreachable.extend(r.unreachable);
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "cannot ask a neighbour for its part of a trace");
                    unreachable.push(node);
                }
            }
        }
        Ok((events, unreachable))
    }

    /// Answers a neighbour's trace request (and asks onward, away from the asker).
    pub(crate) async fn answer_trace(self, peer: PeerId, request: TraceRequest, channel: Reply<WireTrace>) {
        let asker = self.services.dir.current().node_by_peer(&peer).map(|n| n.id.clone());
        let response = match <[u8; 32]>::try_from(request.message_id.as_slice()) {
            Ok(id) => match self.gather_trace(&Digest(id), asker.as_ref()).await {
                Ok((events, unreachable)) => WireTrace { events, unreachable },
                Err(_) => WireTrace { events: vec![], unreachable: vec![self.services.here.clone()] },
            },
            Err(_) => WireTrace { events: vec![], unreachable: vec![] },
        };
        self.services.net.respond_trace(channel, response).await;
    }

    /// `exchange-admin dead-letters list`.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, Refusal> {
        Ok(self
            .services.store
            .dead_letters()
            .await?
            .into_iter()
            .filter_map(|d| {
                Some(DeadLetter {
                    seq: d.seq,
                    message_id: Digest(d.message_id.as_slice().try_into().ok()?),
                    peer: d.hop.parse().ok()?,
                    recipients: serde_json::from_str(&d.recipients).unwrap_or_default(),
                    reason: d.reason,
                    enqueued_at_ms: d.enqueued_at_ms.max(0) as u64,
                    attempts: d.attempts.max(0) as u64,
                })
            })
            .collect())
    }

    /// `exchange-admin dead-letters resend`: back into their queues, retried at once.
    pub async fn resend_dead_letters(&self, sel: &DeadLetterSelection) -> Result<AdminActionResponse, Refusal> {
        let (seqs, what) = selection(sel)?;
        let n = self.services.admin_action(Some(AdminOp::ResendDead(seqs)), "dead-letters-resend", what).await?;
        self.links.wake_all();
        Ok(AdminActionResponse { affected: n, message: format!("{n} dead letters queued again") })
    }

    /// `exchange-admin dead-letters purge`: deleted for good.
    pub async fn purge_dead_letters(&self, sel: &DeadLetterSelection) -> Result<AdminActionResponse, Refusal> {
        let (seqs, what) = selection(sel)?;
        let n = self.services.admin_action(Some(AdminOp::PurgeDead(seqs)), "dead-letters-purge", what).await?;
        Ok(AdminActionResponse { affected: n, message: format!("{n} dead letters purged") })
    }

    /// `exchange-admin retry`: every forwarder retries now, whatever its backoff.
    pub async fn retry_now(&self) -> Result<AdminActionResponse, Refusal> {
        let n = self.links.forwarders();
        self.services.admin_action(None, "retry", format!("{n} forwarders woken")).await?;
        self.links.wake_all();
        Ok(AdminActionResponse { affected: n as u64, message: format!("{n} forwarders retrying now") })
    }

    /// `exchange-admin purge --older-than DAYS`: settled entries and payloads, then (`sweep`, given
    /// the cut-off) the attachment files no longer needed.
    pub async fn retention_purge<F, Fut>(&self, days: u32, sweep: F) -> Result<AdminActionResponse, Refusal>
    where
        F: FnOnce(i64) -> Fut,
        Fut: Future<Output = Result<u64, StorageError>>,
    {
        if days == 0 {
            return Err(Refusal::malformed("older_than_days must be at least 1"));
        }
        let before_ms = exchange_wire::now_ms() as i64 - i64::from(days) * 86_400_000;
        let n = self.services.admin_action(Some(AdminOp::Retention { before_ms }), "retention-purge", format!("older than {days} days")).await?;
        // After the payloads: attachments of what was just purged are no longer needed either.
        let files = sweep(before_ms).await?;
        tracing::info!(entries = n, attachment_files = files, days, "retention purge done");
        Ok(AdminActionResponse {
            affected: n + files,
            message: format!(
                "{n} settled inbox entries and payloads and {files} attachment files older than {days} days removed; ids and the audit log are kept"
            ),
        })
    }

    /// `exchange-admin audit export`: a page of the audit log.
    pub async fn audit_page(&self, after: i64, limit: u32) -> Result<AuditPage, Refusal> {
        let rows = self.services.store.audit_page(after, limit.clamp(1, 10_000)).await?;
        let next_after = rows.last().map(|r| r.seq).unwrap_or(after);
        let entries = rows
            .into_iter()
            .map(|r| AuditEntry {
                seq: r.seq,
                at_ms: r.at_ms.max(0) as u64,
                category: r.category,
                message_id: r.message_id.and_then(|m| <[u8; 32]>::try_from(m.as_slice()).ok()).map(Digest),
                event: r.event,
                unit: r.unit,
                peer: r.peer,
                detail: r.detail,
                hash: hex::encode(&r.hash),
            })
            .collect();
        Ok(AuditPage { entries, next_after })
    }

    /// `exchange-admin audit verify`: the chain, then (`checkpoint`) its comparison with the latest
    /// checkpoint held.
    pub async fn audit_verify(&self, checkpoint: impl Future<Output = Result<CheckpointCheck, StorageError>>) -> Result<AuditVerification, Refusal> {
        let c = self.services.store.audit_verify().await?;
        let checkpoint = checkpoint.await?;
        Ok(AuditVerification {
            ok: c.first_break.is_none() && checkpoint.ok,
            entries: c.entries,
            head_seq: c.head_seq,
            head_hash: hex::encode(c.head_hash),
            first_break: c.first_break.map(|(seq, reason)| AuditBreak { seq, reason }),
            checkpoint: Some(checkpoint),
        })
    }

    /// The storage part of readiness: a real write through the group committer (the path every
    /// custody write takes, so a stuck or dead writer shows), the database undamaged, and room for
    /// new work.
    async fn storage_check(&self) -> Check {
        let probe = self.services.committer.commit(vec![WriteJob::Probe { at_ms: exchange_wire::now_ms() as i64 }]);
        let written = match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("the database does not take writes: {e}")),
            Err(_) => Err("a write through the storage writer did not finish within 5 s".to_string()),
        };
        let detail = match (written, self.health.intake()) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(closed)) => Err(closed.to_string()),
            (Ok(()), Ok(())) => Ok(format!("database takes writes; {} MiB free", self.health.free_bytes() / (1024 * 1024))),
        };
        Check { name: "storage".into(), ok: detail.is_ok(), detail: detail.unwrap_or_else(|e| e) }
    }

    /// `/readyz`: storage takes writes, the parent link is up (if there is a parent), the directory
    /// is loaded.
    pub async fn readiness(&self) -> Readiness {
        let mut checks = Vec::new();
        checks.push(self.storage_check().await);
        let dir = self.services.dir.current();
        match dir.node(&self.services.here).map(|n| n.parent.clone()) {
            // Not listed: whether it has a parent is unknown, and it is not the root either.
            None => checks.push(Check {
                name: "parent".into(),
                ok: false,
                detail: "unknown: the directory does not list this node, so neither its parent nor its place is known".into(),
            }),
            Some(Some(parent)) => {
                let up = self.links.peer(&parent).connected;
                checks.push(Check {
                    name: "parent".into(),
                    ok: up,
                    detail: if up { format!("link to {parent} is up") } else { format!("no link to parent {parent}; messages up the tree wait") },
                });
            }
            Some(None) => checks.push(Check { name: "parent".into(), ok: true, detail: "root node: no parent".into() }),
        }
        let listed = dir.node(&self.services.here).is_some();
        checks.push(Check {
            name: "directory".into(),
            ok: listed,
            detail: if listed {
                format!("directory version {} lists this node", dir.version())
            } else {
                "the directory does not list this node".into()
            },
        });
        Readiness { ready: checks.iter().all(|c| c.ok), checks }
    }
}
/// Which dead letters an operator's selection names, and how the audit log says so.
fn selection(sel: &DeadLetterSelection) -> Result<(Option<Vec<i64>>, String), Refusal> {
    match (sel.all, sel.seqs.is_empty()) {
        (true, true) => Ok((None, "all".into())),
        (false, false) => Ok((Some(sel.seqs.clone()), format!("seqs {:?}", sel.seqs))),
        (true, false) => Err(Refusal::malformed("give either all or a list of seqs, not both")),
        (false, true) => Err(Refusal::malformed("give the dead letters to act on (seqs), or all: true")),
    }
}

/// The sender's node records a `hop` event for every hop a delivery report names, so a trace that
/// also holds those nodes' own events would show each hop twice (and once more per further report).
/// Keep a `hop` row only for a node whose own events are missing (it could not be asked), once.
fn fold_reported_hops(events: &mut Vec<CustodyEvent>) {
    let answered: BTreeSet<NodeId> = events.iter().filter(|e| e.event != "hop").map(|e| e.node.clone()).collect();
    let mut seen = BTreeSet::new();
    events.retain(|e| match (e.event.as_str(), &e.peer) {
        ("hop", Some(hop)) => !answered.contains(hop) && seen.insert(hop.clone()),
        _ => true,
    });
}

/// Recording an operator's change is shared work: besides the operations here, directory changes,
/// the catalog and the reconciliation record through it, and it needs only the committer and the
/// metrics.
impl Services {
    /// Runs an admin action on stored state (if any) and records it in the audit log, in one
    /// transaction.
    async fn admin_action(&self, op: Option<AdminOp>, event: &'static str, detail: String) -> Result<u64, Refusal> {
        let row = EventRow {
            at_ms: exchange_wire::now_ms() as i64,
            category: "admin",
            message_id: None,
            event,
            unit: None,
            peer: None,
            detail: Some(detail),
        };
        let job = match op {
            Some(op) => WriteJob::Admin { op, events: vec![row] },
            None => WriteJob::Record(Record { events: vec![row], ..Default::default() }),
        };
        match self.committer.commit(vec![job]).await {
            Ok(outcomes) => match outcomes.first() {
                Some(JobOutcome::Affected(n)) => Ok(*n),
                _ => Ok(0),
            },
            Err(e) => {
                self.metrics.storage_errors.with_label_values(&["commit"]).inc();
                tracing::error!(error = %e, "admin action failed");
                Err(Refusal { code: "storage", message: "the node could not apply the change; nothing changed".into(), status: 503, transient: true })
            }
        }
    }

    /// Records an operator's action that changed nothing else in storage.
    pub(crate) async fn admin_record(&self, event: &'static str, detail: String) -> Result<(), Refusal> {
        self.admin_action(None, event, detail).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node: &str, event: &str, peer: Option<&str>, at_ms: u64) -> CustodyEvent {
        CustodyEvent { node: node.parse().unwrap(), at_ms, event: event.into(), unit: None, peer: peer.map(|p| p.parse().unwrap()), detail: None }
    }

    #[test]
    fn a_trace_shows_each_hop_once() {
        let mut events = vec![
            event("gz.yuexiu", "accepted", None, 1),
            event("gz.yuexiu", "forwarded", Some("gz"), 3),
            event("gz", "received", Some("gz.yuexiu"), 2),
            // Two delivery reports (recipients at gz and at gz.haizhu) both name the hops.
            event("gz.yuexiu", "hop", Some("gz.yuexiu"), 1),
            event("gz.yuexiu", "hop", Some("gz"), 2),
            event("gz.yuexiu", "hop", Some("gz.yuexiu"), 1),
            event("gz.yuexiu", "hop", Some("gz"), 2),
            event("gz.yuexiu", "hop", Some("gz.haizhu"), 4),
            event("gz.yuexiu", "hop", Some("gz.haizhu"), 4),
        ];
        fold_reported_hops(&mut events);
        let hops: Vec<_> = events.iter().filter(|e| e.event == "hop").map(|e| e.peer.as_ref().unwrap().to_string()).collect();
        // gz.yuexiu and gz answered with their own events; gz.haizhu could not be asked: one row for it.
        assert_eq!(hops, ["gz.haizhu"]);
        assert_eq!(events.len(), 4);
    }
}
