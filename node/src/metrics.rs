//! Prometheus metrics, all prefixed `exchange_` and labelled with the node id. One registry per node,
//! rendered at `/metrics`. `docs/metrics.md` documents every series; `deploy/` builds on them.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// Messages this node took custody of, by kind and by source (`agency` or `peer`).
    pub accepted: IntCounterVec,
    /// Messages a neighbour acknowledged, by peer node and kind.
    pub forwarded: IntCounterVec,
    /// Messages placed in inboxes here, by kind.
    pub delivered: IntCounterVec,
    /// Refused input, by reason code and kind (`unknown` when the envelope did not decode).
    pub rejected: IntCounterVec,
    /// Receipts recorded, by type and direction (`issued` here by a recipient, `returned` to a sender here).
    pub receipts: IntCounterVec,
    /// Live outbox entries, payload bytes and age of the oldest entry, per next hop.
    pub outbox_depth: IntGaugeVec,
    pub outbox_bytes: IntGaugeVec,
    pub outbox_oldest_age: GaugeVec,
    /// Dead letters (entries a neighbour refused for good) per next hop, and how many were made.
    pub dead_letters: IntGaugeVec,
    pub dead_letters_total: IntCounterVec,
    /// 1 while the link to a neighbour is up; last ping round trip.
    pub peer_up: IntGaugeVec,
    pub peer_rtt: GaugeVec,
    /// Creation (signing) to inbox delivery, measured at the delivering node.
    pub delivery_latency: Histogram,
    /// Entering this node's outbox to the neighbour's acknowledgement, per next hop.
    pub hop_latency: HistogramVec,
    /// Group-commit transactions: duration and jobs per transaction; storage failures.
    pub commit_seconds: Histogram,
    pub commit_jobs: Histogram,
    /// Routine transactions that ended early for urgent work (see `relay::committer`).
    pub commits_ended_early: IntCounter,
    pub storage_errors: IntCounterVec,
    /// Free space under the data directory, the reserve kept back, whether new work is taken, whether
    /// the database is undamaged, and storage faults by kind (see `storage::health`).
    pub storage_free_bytes: IntGauge,
    pub storage_reserve_bytes: IntGauge,
    pub storage_intake_open: IntGauge,
    pub storage_healthy: IntGauge,
    pub storage_faults: IntCounterVec,
    /// Batches a neighbour did not acknowledge, by peer.
    pub send_failures: IntCounterVec,
    /// Times a forwarder halved its batch because the neighbour refused one as too large or the
    /// handover broke off, by peer.
    pub batch_splits: IntCounterVec,
    /// Signatures that did not verify, by where (`agency`, `peer`).
    pub signature_failures: IntCounterVec,
    /// Version of the directory in force.
    pub directory_version: IntGauge,
    /// Directory segments refused, by reason.
    pub directory_rejections: IntCounterVec,
    /// Connections refused because the peer is not a node of the directory.
    pub connections_refused: IntCounterVec,
    /// HTTP connections closed by the node before or without an answer, by listener and reason
    /// (`max-connections`, `max-connections-per-client`, `header-timeout`, `tls-handshake`).
    pub http_connections_closed: IntCounterVec,
    /// HTTP connections open, by listener (`agency`, `admin`).
    pub http_connections_open: IntGaugeVec,
    /// HTTP requests refused by the listener's bounds, by listener and reason (`busy`, `request-timeout`).
    pub http_requests_refused: IntCounterVec,
    /// Webhook pushes, by outcome (`ok`, `failed`).
    pub webhook_pushes: IntCounterVec,
    /// Outcomes of queries asked from this node (`answered`, `timed-out`).
    pub queries: IntCounterVec,
    /// Attachment bytes sent to a neighbour, by peer.
    pub attachment_bytes_sent: IntCounterVec,
    /// Attachment bytes committed here, by source (a peer, or `agency`).
    pub attachment_bytes_received: IntCounterVec,
    /// Attachment transfers to a neighbour that resumed from its last committed chunk, by peer.
    pub attachment_resumes: IntCounterVec,
    /// Attachment transfers to a neighbour started before this node held the document they belong
    /// to (cut-through: passed on while the file still arrives), by peer.
    pub attachment_cut_through: IntCounterVec,
    /// Agencies' unfinished uploads removed after `attachments.upload_ttl_secs` without a chunk.
    pub attachment_uploads_swept: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub start_time: Gauge,
    /// Base-data records published here (numbered into a topic log), by topic.
    pub data_published: IntCounterVec,
    /// Base-data records delivered into subscribers' streams here, by topic.
    pub data_delivered: IntCounterVec,
    /// Subscription requests decided here, by decision (`granted`, `refused`).
    pub subscription_decisions: IntCounterVec,
    /// Version of the data-sharing catalog in force (0: none).
    pub catalog_version: IntGauge,
    /// Admin API requests refused at its doors (browser origin, foreign host, no or wrong operator
    /// token, not JSON), by reason.
    pub admin_refusals: IntCounterVec,
    /// Agency API requests refused for want of a valid unit token (`no-token`, `bad-token`: unknown
    /// or revoked), before any handler runs.
    pub agency_refusals: IntCounterVec,
    /// Audit checkpoints, by outcome: `handed` (this node's, kept by its parent or, at the root,
    /// itself), `refused` (this node's, not kept), `unreachable` (the holder could not be asked),
    /// `mismatch` (the log differs from the held checkpoint: signing stopped), `stored` and
    /// `refused-from-child` (a child's, at its parent).
    pub audit_checkpoints: IntCounterVec,
    /// Online backups taken, by outcome (`ok`, `failed`).
    pub backups: IntCounterVec,
    /// Messages reconciled after a restore, by outcome: `recovered`, `passed-on`, `held`,
    /// `unrecoverable` at the restored node; `requeued` at a neighbour that queued them again.
    pub reconciliation: IntCounterVec,
    /// 1 while this process is the active replica of its node (always, on SQLite), 0 while it waits
    /// as a standby for the lease on the shared PostgreSQL database, or after it lost the lease.
    pub replica_active: IntGauge,
    /// Lease changes seen by this replica, by change (`acquired`, `lost`).
    pub lease_changes: IntCounterVec,
}

impl Metrics {
    // Long but flat, one series a line: split by area, it would need a struct per area and a new
    // path at every `metrics.X` in the node.
    pub fn new(node: &str) -> Metrics {
        let registry = Registry::new_custom(None, Some([("node".to_string(), node.to_string())].into())).expect("registry");
        macro_rules! register {
            ($m:expr) => {{
                let m = $m.expect("metric definition");
                registry.register(Box::new(m.clone())).expect("register metric");
                m
            }};
        }
        let counter = |name: &str, help: &str, labels: &[&str]| register!(IntCounterVec::new(Opts::new(name, help), labels));
        let int_gauge = |name: &str, help: &str, labels: &[&str]| register!(IntGaugeVec::new(Opts::new(name, help), labels));
        let gauge = |name: &str, help: &str, labels: &[&str]| register!(GaugeVec::new(Opts::new(name, help), labels));
        let latency = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
        let m = Metrics {
            accepted: counter("exchange_messages_accepted_total", "Messages taken into custody.", &["kind", "source"]),
            forwarded: counter("exchange_messages_forwarded_total", "Messages acknowledged by the next hop.", &["peer", "kind"]),
            delivered: counter("exchange_messages_delivered_total", "Messages delivered into inboxes on this node.", &["kind"]),
            rejected: counter("exchange_messages_rejected_total", "Refused input, by reason and kind.", &["reason", "kind"]),
            receipts: counter("exchange_receipts_total", "Receipts recorded, by type and direction.", &["type", "direction"]),
            outbox_depth: int_gauge("exchange_outbox_depth", "Outbox entries waiting for a next hop.", &["peer"]),
            outbox_bytes: int_gauge("exchange_outbox_bytes", "Payload bytes waiting for a next hop.", &["peer"]),
            outbox_oldest_age: gauge(
                "exchange_outbox_oldest_age_seconds",
                "Age of the oldest outbox entry waiting for a next hop (0 when empty).",
                &["peer"],
            ),
            dead_letters: int_gauge("exchange_dead_letters", "Outbox entries a next hop refused for good, kept for operators.", &["peer"]),
            dead_letters_total: counter("exchange_dead_letters_total", "Messages a next hop refused for good.", &["peer"]),
            peer_up: int_gauge("exchange_peer_up", "1 while the link to a neighbour node is up.", &["peer"]),
            peer_rtt: gauge("exchange_peer_rtt_seconds", "Last ping round-trip time to a neighbour.", &["peer"]),
            delivery_latency: register!(Histogram::with_opts(
                HistogramOpts::new("exchange_delivery_latency_seconds", "From envelope creation to inbox delivery, at the delivering node.")
                    .buckets(latency.clone())
            )),
            hop_latency: register!(HistogramVec::new(
                HistogramOpts::new("exchange_hop_latency_seconds", "From entering this node's outbox to the next hop's acknowledgement.")
                    .buckets(latency.clone()),
                &["peer"]
            )),
            commit_seconds: register!(Histogram::with_opts(
                HistogramOpts::new("exchange_storage_commit_seconds", "Duration of one group commit.").buckets(latency)
            )),
            commit_jobs: register!(Histogram::with_opts(
                HistogramOpts::new("exchange_storage_commit_jobs", "Write jobs folded into one group commit.")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0])
            )),
            commits_ended_early: register!(IntCounter::new(
                "exchange_storage_commits_ended_early_total",
                "Routine group commits that ended after a part, before all their jobs, because urgent (特急, 加急) work was waiting."
            )),
            storage_errors: counter("exchange_storage_errors_total", "Storage operations that failed.", &["operation"]),
            storage_free_bytes: register!(IntGauge::new(
                "exchange_storage_free_bytes",
                "Free bytes on the filesystem holding the data directory."
            )),
            storage_reserve_bytes: register!(IntGauge::new(
                "exchange_storage_reserve_bytes",
                "Space kept back for what the node holds; new messages are refused below it."
            )),
            storage_intake_open: register!(IntGauge::new(
                "exchange_storage_intake_open",
                "1 while new messages are taken; 0 while refused for lack of space or a damaged database."
            )),
            storage_healthy: register!(IntGauge::new("exchange_storage_healthy", "0 once the database was found damaged.")),
            storage_faults: counter("exchange_storage_faults_total", "Storage failures, by kind (full, corrupt, io, other).", &["kind"]),
            send_failures: counter("exchange_send_failures_total", "Batches a neighbour did not acknowledge.", &["peer"]),
            batch_splits: counter(
                "exchange_batch_splits_total",
                "Times a forwarder halved its batch (refused as too large, or the handover broke off).",
                &["peer"],
            ),
            signature_failures: counter("exchange_signature_failures_total", "Signatures that did not verify.", &["source"]),
            directory_version: register!(IntGauge::new("exchange_directory_version", "Version of the directory in force.")),
            directory_rejections: counter("exchange_directory_rejections_total", "Directory segments refused, by reason.", &["reason"]),
            webhook_pushes: counter("exchange_webhook_pushes_total", "Webhook pushes, by outcome.", &["outcome"]),
            queries: counter("exchange_queries_total", "Outcomes of queries asked from this node's units.", &["outcome"]),
            attachment_bytes_sent: counter("exchange_attachment_bytes_sent_total", "Attachment bytes sent to a neighbour.", &["peer"]),
            attachment_bytes_received: counter(
                "exchange_attachment_bytes_received_total",
                "Attachment bytes committed here, by source (a peer, or agency).",
                &["source"],
            ),
            attachment_resumes: counter(
                "exchange_attachment_resumes_total",
                "Attachment transfers to a neighbour that resumed from its last committed chunk.",
                &["peer"],
            ),
            attachment_cut_through: counter(
                "exchange_attachment_cut_through_total",
                "Attachment transfers to a neighbour started before this node held their document, passing chunks on as they arrive.",
                &["peer"],
            ),
            attachment_uploads_swept: counter(
                "exchange_attachment_uploads_swept_total",
                "Unfinished attachment uploads removed after attachments.upload_ttl_secs without a new chunk.",
                &[],
            ),
            connections_refused: counter(
                "exchange_connections_refused_total",
                "Connections refused because the peer is not a node of the directory.",
                &["direction"],
            ),
            http_connections_closed: counter(
                "exchange_http_connections_closed_total",
                "HTTP connections the node closed before or without an answer, by listener and reason.",
                &["listener", "reason"],
            ),
            http_connections_open: int_gauge("exchange_http_connections_open", "HTTP connections open, by listener.", &["listener"]),
            http_requests_refused: counter(
                "exchange_http_requests_refused_total",
                "HTTP requests refused by the listener's bounds, by listener and reason.",
                &["listener", "reason"],
            ),
            build_info: int_gauge("exchange_build_info", "Build of this node (always 1).", &["version"]),
            start_time: register!(Gauge::new("exchange_start_time_seconds", "When this node process started (Unix time).")),
            data_published: counter("exchange_data_published_total", "Base-data records published here, by topic.", &["topic"]),
            data_delivered: counter("exchange_data_delivered_total", "Base-data records delivered to subscribers here, by topic.", &["topic"]),
            subscription_decisions: counter("exchange_subscription_decisions_total", "Subscription requests decided here.", &["decision"]),
            catalog_version: register!(IntGauge::new("exchange_catalog_version", "Version of the data-sharing catalog in force.")),
            admin_refusals: counter(
                "exchange_admin_refusals_total",
                "Admin API requests refused before reaching a handler, by reason (origin, host, no-token, bad-token, content-type).",
                &["reason"],
            ),
            agency_refusals: counter(
                "exchange_agency_refusals_total",
                "Agency API requests refused for want of a valid unit token, by reason (no-token, bad-token).",
                &["reason"],
            ),
            audit_checkpoints: counter(
                "exchange_audit_checkpoints_total",
                "Signed audit checkpoints, by outcome (handed, refused, unreachable, mismatch; stored, refused-from-child at a parent).",
                &["outcome"],
            ),
            backups: counter("exchange_backups_total", "Online backups taken, by outcome.", &["outcome"]),
            reconciliation: counter(
                "exchange_reconciliation_messages_total",
                "Messages reconciled after a restore from a backup, by outcome.",
                &["outcome"],
            ),
            replica_active: register!(IntGauge::new(
                "exchange_replica_active",
                "1 while this process is the active replica of its node, 0 while it waits as a standby or after it lost the lease."
            )),
            lease_changes: counter("exchange_lease_changes_total", "Lease changes seen by this replica, by change (acquired, lost).", &["change"]),
            registry,
        };
        m.set_initial_values();
        m
    }

    /// The build, the start time, and zeros for every label known from the start.
    fn set_initial_values(&self) {
        self.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Every reason exported from the start, at 0, so an alert on a rise needs no absent() case.
        for reason in ["origin", "host", "no-token", "bad-token", "content-type"] {
            self.admin_refusals.with_label_values(&[reason]);
        }
        self.start_time.set(exchange_wire::now_ms() as f64 / 1000.0);
        // Zeros from the start, so alerts and dashboards see zeros, not gaps.
        for outcome in ["ok", "failed"] {
            self.backups.with_label_values(&[outcome]).inc_by(0);
        }
        for outcome in ["handed", "refused", "unreachable", "mismatch", "stored", "refused-from-child"] {
            self.audit_checkpoints.with_label_values(&[outcome]).inc_by(0);
        }
        for outcome in ["recovered", "passed-on", "held", "unrecoverable", "requeued"] {
            self.reconciliation.with_label_values(&[outcome]).inc_by(0);
        }
        for change in ["acquired", "lost"] {
            self.lease_changes.with_label_values(&[change]).inc_by(0);
        }
    }

    /// The metrics the storage health state keeps current.
    pub fn storage_health(&self) -> crate::storage::health::HealthMetrics {
        crate::storage::health::HealthMetrics {
            free_bytes: self.storage_free_bytes.clone(),
            reserve_bytes: self.storage_reserve_bytes.clone(),
            intake_open: self.storage_intake_open.clone(),
            healthy: self.storage_healthy.clone(),
            faults: self.storage_faults.clone(),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("encode metrics");
        String::from_utf8(buf).expect("metrics are UTF-8")
    }
}
