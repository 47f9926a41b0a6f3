//! The relay engine: custody of messages from agencies and neighbours, delivery into inboxes,
//! receipts, and the forwarders that carry the outbox to neighbours.
//!
//! Every path follows one rule: verify, decide (plain functions in [`custody`]), commit through the
//! group committer, and only then acknowledge, wake forwarders and count. The engine's work is split
//! by who asks: [`ingress`] (agencies and neighbours handing messages over), [`reads`] (status,
//! inboxes, events) and [`operations`] (operators). Beside documents: [`attachments`] (large files
//! in chunks), [`asking`] (queries, 查询核验, answered by a deadline) and [`sharing`] (base-data
//! publish/subscribe).

pub mod access;
pub mod asking;
pub mod attachment_state;
pub mod attachments;
pub mod batching;
pub mod checkpoint_files;
pub mod checkpoints;
pub mod committer;
pub mod custody;
pub mod deadlines;
pub mod directory_state;
pub mod directory_sync;
pub mod forwarder;
pub mod handover;
pub mod ingress;
pub mod operations;
pub mod push;
pub mod reads;
pub mod reconcile;
pub mod reconcile_answer;
pub mod refusal;
pub mod signals;
pub mod sharing;
pub mod tokens;
pub mod webhook_target;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use exchange_wire::receipt::NodeReport;
use exchange_wire::{Kind, MessageId, NodeId, PublicKey};
use crate::network::{Multiaddr, PeerId};
use tokio::sync::watch;

use crate::config::{Limits, NodeConfig, RelayConfig};
use crate::directory::{Directory, DirectoryHandle};
use crate::metrics::Metrics;
use crate::network;
use crate::storage::health::StorageHealth;
use crate::storage::{EventRow, Record, Store, WriteJob};
use committer::Committer;
use custody::{Context, Summary};
pub use refusal::Refusal;
pub use signals::PeerState;


/// Everything the node's tasks share.
pub struct Engine {
    pub here: NodeId,
    pub dir: DirectoryHandle,
    pub store: Arc<dyn Store>,
    /// Free space, intake and damage of the storage (see `storage::health`).
    pub health: Arc<StorageHealth>,
    pub committer: Committer,
    pub metrics: Arc<Metrics>,
    pub net: network::Client,
    pub limits: Limits,
    pub relay_cfg: RelayConfig,
    /// Upper bound on an inbox long-poll.
    pub api_max_wait_ms: u64,
    pub peer_id: PeerId,
    pub started_at_ms: u64,
    /// The pinned root key: the trust anchor of the directory.
    pub root_key: PublicKey,
    /// The directory segments held, the configured parent, the seeds (see [`directory_sync`]).
    pub directory_sync: directory_state::DirectorySync,
    /// Unit tokens and the access policy (see [`access`]).
    pub access: tokens::Access,
    /// Webhooks: where they may point, the pushers running (see [`push`]).
    pub webhooks: webhook_target::Webhooks,
    node_key: SigningKey,
    /// The forwarders (one per neighbour) and the state of each link (see [`forwarder`]).
    pub links: signals::Links,
    /// Deadlines of the queries asked here that have no outcome yet (see [`asking`]).
    deadlines: deadlines::Deadlines,
    /// Attachment files and their transfers (see [`attachments`]).
    pub attachments: attachment_state::Attachments,
    /// Audit checkpoints held here (this node's at the root, its children's) (see [`checkpoints`]).
    pub checkpoints: checkpoint_files::CheckpointFiles,
    /// Serialises recall reporting, so each decided recall is reported once.
    recall_reports: tokio::sync::Mutex<()>,
    /// Bumped after every commit that put something into an inbox (long-poll wake-up).
    inbox_changes: watch::Sender<u64>,
    /// Data sharing: the catalog in force, the numbering lock (see [`sharing`]).
    pub sharing: sharing::Sharing,
    /// Backups and the reconciliation after a restore (see `backup`).
    pub(crate) recovery: crate::backup::Recovery,
    /// The engine's background tasks (forwarders, pushers, answers to neighbours, periodic jobs),
    /// stopped together at shutdown.
    pub tasks: crate::tasks::Tasks,
}

/// A refused input, for the metric, the log and the audit entry.
pub struct Refused<'a> {
    pub id: Option<MessageId>,
    pub kind: Option<Kind>,
    pub refusal: &'a Refusal,
}

impl Engine {
    /// `parent_hint` is the configured parent's peer id and address (`parent_address`).
    pub fn new(
        cfg: &NodeConfig,
        store: Arc<dyn Store>,
        health: Arc<StorageHealth>,
        metrics: Arc<Metrics>,
        net: network::Client,
        node_key: SigningKey,
        parent_hint: Option<(PeerId, Multiaddr)>,
    ) -> anyhow::Result<Arc<Engine>> {
        let attachments = crate::storage::attachments::AttachmentStore::open(&cfg.attachments_dir(), cfg.attachments.upload_limits()).map_err(|e| {
            anyhow::anyhow!("cannot open the attachment store {}: {e}", cfg.attachments_dir().display())
        })?;
        let committer = Committer::spawn(store.clone(), metrics.clone(), cfg.relay.commit_max_requests);
        let peer_id = crate::directory::peer_id_of(&exchange_wire::PublicKey(node_key.verifying_key()));
        Ok(Arc::new(Engine {
            here: cfg.node_id.clone(),
            dir: DirectoryHandle::new(Directory::default()),
            store,
            health,
            committer,
            metrics,
            net,
            limits: cfg.limits.clone(),
            relay_cfg: cfg.relay.clone(),
            api_max_wait_ms: cfg.api.max_wait_ms,
            peer_id,
            started_at_ms: exchange_wire::now_ms(),
            root_key: cfg.root_key,
            directory_sync: directory_state::DirectorySync::new(cfg.directory.clone(), parent_hint),
            access: tokens::Access::new(cfg.api.require_auth, cfg.policy.clone()),
            webhooks: webhook_target::Webhooks::new(webhook_target::WebhookTargets::new(cfg.api.webhooks_to_loopback, &cfg.push)?),
            node_key,
            links: signals::Links::default(),
            recall_reports: tokio::sync::Mutex::new(()),
            inbox_changes: watch::channel(0).0,
            attachments: attachment_state::Attachments::new(attachments),
            checkpoints: checkpoint_files::CheckpointFiles::new(&cfg.data_dir, std::time::Duration::from_secs(cfg.audit.checkpoint_secs)),
            deadlines: deadlines::Deadlines::default(),
            sharing: sharing::Sharing::default(),
            recovery: crate::backup::Recovery::new(&cfg.data_dir),
            tasks: crate::tasks::Tasks::new(),
        }))
    }

    /// Loads the directory and tokens, starts forwarders for every neighbour and every hop with
    /// queued work, and starts refreshing the queue gauges.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        for op in ["commit", "read"] {
            self.metrics.storage_errors.with_label_values(&[op]).inc_by(0);
        }
        for source in ["agency", "peer"] {
            self.metrics.signature_failures.with_label_values(&[source]).inc_by(0);
        }
        for outcome in ["ok", "failed"] {
            self.metrics.webhook_pushes.with_label_values(&[outcome]).inc_by(0);
        }
        for outcome in ["answered", "timed-out"] {
            self.metrics.queries.with_label_values(&[outcome]).inc_by(0);
        }
        for direction in ["inbound", "outbound"] {
            self.metrics.connections_refused.with_label_values(&[direction]).inc_by(0);
        }
        for decision in ["granted", "refused"] {
            self.metrics.subscription_decisions.with_label_values(&[decision]).inc_by(0);
        }
        self.load_tokens().await?;
        self.load_directory().await?;
        for q in self.store.queue_stats().await? {
            if let Ok(id) = q.hop.parse() {
                self.forwarder(&id).work.notify_one();
            }
        }
        let engine = self.clone();
        self.tasks.spawn(async move { engine.refresh_queue_gauges().await });
        let engine = self.clone();
        self.tasks.spawn(async move { engine.report_recalls().await });
        self.start_pushers().await?;
        let engine = self.clone();
        self.tasks.spawn(async move { engine.process_subscription_requests().await });
        let engine = self.clone();
        self.tasks.spawn(async move { engine.send_backlogs().await });
        self.tasks.spawn(self.clone().resynchronise_directory(Duration::from_secs(30)));
        self.tasks.spawn(self.clone().watch_query_deadlines());
        self.tasks.spawn(self.clone().sweep_uploads_forever());
        Ok(())
    }

    /// Keeps a link with neighbour `id`: its forwarder, its peer state and its metric series (zeros
    /// from the start, so dashboards and alerts see zeros, not gaps).
    fn watch_neighbour(self: &Arc<Self>, id: &NodeId) {
        let new = self.links.watch(id);
        self.forwarder(id);
        if new {
            let peer = [id.as_str()];
            self.metrics.peer_up.with_label_values(&peer).set(0);
            self.metrics.send_failures.with_label_values(&peer).inc_by(0);
            self.metrics.batch_splits.with_label_values(&peer).inc_by(0);
            self.metrics.attachment_bytes_sent.with_label_values(&peer).inc_by(0);
            self.metrics.attachment_bytes_received.with_label_values(&peer).inc_by(0);
            self.metrics.attachment_resumes.with_label_values(&peer).inc_by(0);
            self.metrics.dead_letters_total.with_label_values(&peer).inc_by(0);
            self.metrics.hop_latency.with_label_values(&peer);
            for g in [&self.metrics.outbox_depth, &self.metrics.outbox_bytes, &self.metrics.dead_letters] {
                g.with_label_values(&peer).set(0);
            }
            self.metrics.outbox_oldest_age.with_label_values(&peer).set(0.0);
        }
    }

    /// Keeps the outbox gauges true to storage (once a second).
    async fn refresh_queue_gauges(self: Arc<Self>) {
        let mut known: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let stats = match self.store.queue_stats().await {
                Ok(s) => s,
                Err(e) => {
                    self.metrics.storage_errors.with_label_values(&["read"]).inc();
                    tracing::error!(error = %e, "cannot read outbox statistics");
                    continue;
                }
            };
            let now = exchange_wire::now_ms() as i64;
            let mut seen = HashSet::new();
            for q in &stats {
                let hop = q.hop.as_str();
                self.metrics.outbox_depth.with_label_values(&[hop]).set(q.depth);
                self.metrics.outbox_bytes.with_label_values(&[hop]).set(q.bytes);
                let age = q.oldest_enqueued_ms.map(|t| (now - t).max(0) as f64 / 1000.0).unwrap_or(0.0);
                self.metrics.outbox_oldest_age.with_label_values(&[hop]).set(age);
                self.metrics.dead_letters.with_label_values(&[hop]).set(q.dead);
                seen.insert(q.hop.clone());
            }
            for gone in known.difference(&seen) {
                for g in [&self.metrics.outbox_depth, &self.metrics.outbox_bytes, &self.metrics.dead_letters] {
                    g.with_label_values(&[gone.as_str()]).set(0);
                }
                self.metrics.outbox_oldest_age.with_label_values(&[gone.as_str()]).set(0.0);
            }
            known = seen;
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
                self.metrics.connections_refused.with_label_values(&[if *inbound { "inbound" } else { "outbound" }]).inc();
                tracing::warn!(peer = ?peer, inbound, "connection refused: the peer is not a node of the directory");
                return;
            }
        };
        let node = self.dir.current().node_by_peer(&peer).map(|n| n.id.clone());
        if let Some(node) = &node {
            if let E::PeerRtt(_, rtt) = &event {
                self.links.set_rtt(node, *rtt);
                self.metrics.peer_rtt.with_label_values(&[node.as_str()]).set(rtt.as_secs_f64());
            }
            // Anything heard from a peer means its link is up.
            self.mark_link(node, !matches!(event, E::PeerDown(_)));
        }
        match event {
            E::Inbound { peer, request, channel } => {
                let engine = self.clone();
                self.tasks.spawn(async move { engine.inbound(peer, request, channel).await });
            }
            E::Trace { peer, request, channel } => {
                let engine = self.clone();
                self.tasks.spawn(async move { engine.answer_trace(peer, request, channel).await });
            }
            E::Directory { peer, request, channel } => {
                let engine = self.clone();
                self.tasks.spawn(async move { engine.answer_directory(peer, request, channel).await });
            }
            E::Attachment { peer, request, channel } => {
                self.tasks.spawn(self.clone().answer_attachment(peer, request, channel));
            }
            E::Reconcile { peer, request, channel } => {
                self.tasks.spawn(self.clone().answer_reconcile(peer, request, channel));
            }
            E::Checkpoint { peer, request, channel } => {
                self.tasks.spawn(self.clone().answer_checkpoint(peer, request, channel));
            }
            E::PeerUp(_) => {
                let engine = self.clone();
                self.tasks.spawn(async move { engine.push_all_segments(peer).await });
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
        self.metrics.peer_up.with_label_values(&[node.as_str()]).set(up as i64);
    }

    fn context<'a>(&'a self, dir: &'a Directory) -> Context<'a> {
        Context { here: &self.here, dir, node_key: &self.node_key, now_ms: exchange_wire::now_ms() }
    }

    /// Records refusals: a metric, a log line and an audit entry for each. `source` is `agency` or the
    /// neighbour's node id (or peer id when it is not in the directory).
    pub(crate) async fn refused(&self, source: &str, refusals: &[Refused<'_>]) {
        if refusals.is_empty() {
            return;
        }
        let now = exchange_wire::now_ms() as i64;
        let mut events = Vec::new();
        for r in refusals {
            let kind = r.kind.map(|k| k.as_str()).unwrap_or("unknown");
            self.metrics.rejected.with_label_values(&[r.refusal.code, kind]).inc();
            if r.refusal.code == "bad-signature" {
                let from = if source == "agency" { "agency" } else { "peer" };
                self.metrics.signature_failures.with_label_values(&[from]).inc();
            }
            if r.refusal.transient {
                // Not bad input but the node's own trouble (storage full, say): counted, and logged
                // where the trouble is, not written once per request into a log that may have no room.
                tracing::debug!(%source, code = r.refusal.code, "refused for now");
                continue;
            }
            tracing::warn!(%source, code = r.refusal.code, message = ?r.id.map(|i| i.to_hex()), reason = %r.refusal.message, "refused");
            events.push(EventRow {
                at_ms: now,
                category: "refusal",
                message_id: r.id.map(|i| i.0),
                event: r.refusal.code,
                unit: None,
                peer: (source != "agency").then(|| source.to_string()),
                detail: Some(r.refusal.message.clone()),
            });
        }
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.committer.commit(vec![WriteJob::Record(Record { events, ..Default::default() })]).await {
            self.metrics.storage_errors.with_label_values(&["commit"]).inc();
            tracing::error!(error = %e, "cannot write audit entries for refused input");
        }
    }

    /// Records one refused API request (malformed body, bad path, oversized request).
    pub async fn refused_input(&self, r: &Refusal) {
        self.refused("agency", &[Refused { id: None, kind: None, refusal: r }]).await;
    }

    /// After a commit: wake forwarders, wake inbox long-polls, count.
    pub(crate) fn after_commit(self: &Arc<Self>, summary: &Summary) {
        for hop in &summary.next_hops {
            self.forwarder(hop).work.notify_one();
        }
        if !summary.delivered.is_empty() {
            self.inbox_changes.send_modify(|v| *v += 1);
        }
        for k in &summary.delivered {
            self.metrics.delivered.with_label_values(&[k.as_str()]).inc();
        }
        for ms in &summary.latencies_ms {
            self.metrics.delivery_latency.observe(*ms as f64 / 1000.0);
        }
        for t in &summary.receipts_returned {
            self.metrics.receipts.with_label_values(&[t.as_str(), "returned"]).inc();
        }
        if summary.answers > 0 {
            self.metrics.queries.with_label_values(&["answered"]).inc_by(summary.answers as u64);
        }
        for topic in &summary.data_delivered {
            self.metrics.data_delivered.with_label_values(&[topic.as_str()]).inc();
        }
        if summary.sharing_requests > 0 {
            let engine = self.clone();
            self.tasks.spawn(async move { engine.process_subscription_requests().await });
        }
        if summary.recalls > 0 {
            let engine = self.clone();
            self.tasks.spawn(async move { engine.report_recalls().await });
        }
    }

    /// Sends the senders of recalled documents this node's signed report on every recall decided
    /// here and not yet reported. Runs after each commit that decided recalls, and at start-up (a
    /// crash between the decision and its report loses nothing).
    pub(crate) async fn report_recalls(self: &Arc<Self>) {
        let _one_at_a_time = self.recall_reports.lock().await;
        let rows = match self.store.unreported_recalls().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read decided recalls");
                return;
            }
        };
        let mut by_recall: std::collections::BTreeMap<[u8; 32], Vec<crate::storage::RecallOutcomeRow>> = Default::default();
        for r in rows {
            by_recall.entry(r.recall_id).or_default().push(r);
        }
        let dir = self.dir.current();
        let ctx = self.context(&dir);
        let mut jobs = Vec::new();
        let mut summaries = Vec::new();
        for (recall_id, rows) in by_recall {
            let Some(first) = rows.first() else { continue };
            let (Ok(sender), Ok(priority)) = (first.original_sender.parse(), priority_of(first.priority)) else { continue };
            let report = exchange_wire::receipt::RecallReport {
                recall_id: exchange_wire::Digest(recall_id),
                message_id: exchange_wire::Digest(first.message_id),
                node: self.here.clone(),
                outcomes: rows
                    .iter()
                    .filter_map(|r| Some(exchange_wire::receipt::RecallOutcome { unit: r.unit.parse().ok()?, outcome: r.outcome.clone() }))
                    .collect(),
            };
            let (envelope, payload) = report.envelope(sender, priority);
            let signed = envelope.sign(&self.node_key);
            let recipients = vec![signed.envelope.to[0].clone()];
            match custody::take(&ctx, custody::Incoming { signed, payload, recipients, from: None, hops: vec![] }) {
                Ok((mut c, s)) => {
                    c.recalls_reported.push(recall_id);
                    jobs.push(WriteJob::Custody(c));
                    summaries.push(s);
                }
                Err(r) => tracing::warn!(reason = %r.message, "cannot route a recall report"),
            }
        }
        if jobs.is_empty() {
            return;
        }
        match self.committer.commit(jobs).await {
            Ok(_) => {
                for s in &summaries {
                    self.after_commit(s);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot store recall reports; retried at the next recall or restart"),
        }
    }


}

/// The priority with queue rank `rank`.
fn priority_of(rank: u8) -> Result<exchange_wire::Priority, ()> {
    match rank {
        0 => Ok(exchange_wire::Priority::Urgent),
        1 => Ok(exchange_wire::Priority::Express),
        2 => Ok(exchange_wire::Priority::Routine),
        _ => Err(()),
    }
}
