//! Prometheus metrics, all prefixed `exchange_`. One registry per node, rendered at `/metrics`.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// Messages this node took custody of, by kind and by source (`agency` or `peer`).
    pub accepted: IntCounterVec,
    /// Messages a neighbour acknowledged, by peer node.
    pub forwarded: IntCounterVec,
    /// Messages placed in inboxes here, by kind.
    pub delivered: IntCounterVec,
    /// Refused input, by reason code.
    pub rejected: IntCounterVec,
    /// Receipts recorded, by type and by where (`issued` here by a recipient, `returned` to a sender here).
    pub receipts: IntCounterVec,
    /// Live outbox entries per next hop.
    pub outbox_depth: IntGaugeVec,
    /// 1 while the link to a neighbour is up.
    pub peer_up: IntGaugeVec,
    /// Creation (signing) to inbox delivery, measured at the delivering node.
    pub delivery_latency: Histogram,
    /// Group-commit transactions: duration and jobs per transaction.
    pub commit_seconds: Histogram,
    pub commit_jobs: Histogram,
    /// Failed sends to a neighbour, by peer.
    pub send_failures: IntCounterVec,
    /// Signature checks that failed, by where (`agency`, `peer`).
    pub signature_failures: IntCounterVec,
    pub build_info: IntGaugeVec,
}

impl Metrics {
    pub fn new(node: &str) -> Metrics {
        let registry = Registry::new_custom(None, Some([("node".to_string(), node.to_string())].into())).expect("registry");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("metric");
            registry.register(Box::new(h.clone())).expect("register");
            h
        };
        let latency = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        let m = Metrics {
            accepted: counter("exchange_messages_accepted_total", "Messages taken into custody.", &["kind", "source"]),
            forwarded: counter("exchange_messages_forwarded_total", "Messages acknowledged by the next hop.", &["peer"]),
            delivered: counter("exchange_messages_delivered_total", "Messages delivered into inboxes on this node.", &["kind"]),
            rejected: counter("exchange_messages_rejected_total", "Refused input, by reason.", &["reason"]),
            receipts: counter("exchange_receipts_total", "Receipts recorded, by type and direction.", &["type", "direction"]),
            outbox_depth: gauge("exchange_outbox_depth", "Outbox entries waiting for a next hop.", &["peer"]),
            peer_up: gauge("exchange_peer_up", "1 while the link to a neighbour node is up.", &["peer"]),
            delivery_latency: histogram(
                "exchange_delivery_latency_seconds",
                "From envelope creation to inbox delivery, at the delivering node.",
                latency.clone(),
            ),
            commit_seconds: histogram("exchange_storage_commit_seconds", "Duration of one group commit.", latency),
            commit_jobs: histogram(
                "exchange_storage_commit_jobs",
                "Write jobs folded into one group commit.",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
            send_failures: counter("exchange_send_failures_total", "Batches a neighbour did not acknowledge.", &["peer"]),
            signature_failures: counter("exchange_signature_failures_total", "Signatures that did not verify.", &["source"]),
            build_info: gauge("exchange_build_info", "Build of this node.", &["version"]),
            registry,
        };
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("encode metrics");
        String::from_utf8(buf).expect("metrics are UTF-8")
    }
}

