//! What follows a commit: forwarders and inbox long-polls are woken, deliveries counted, and the
//! work a commit leaves (subscription requests to decide, recalls to report) started. Also the
//! reports of decided recalls, sent after the commit that decided them and again at start-up.

use std::sync::Arc;

use exchange_wire::receipt::NodeReport;

use super::Engine;
use super::commit_done::CommitDone;
use super::custody::{self, Summary};
use super::sharing;
use crate::storage::WriteJob;

/// The sink the parts that commit outside the custody pipeline are given (see `commit_done`).
impl CommitDone for Arc<Engine> {
    fn committed(&self, summary: &Summary) {
        self.after_commit(summary);
    }

    fn backlog_left(&self) {
        self.start_backlogs();
    }
}

impl Engine {
    /// After a commit: wake forwarders, wake inbox long-polls, count.
    pub(crate) fn after_commit(self: &Arc<Self>, summary: &Summary) {
        for hop in &summary.next_hops {
            let signals = self.forwarder(hop);
            signals.work.notify_one();
            if summary.urgent_hops.contains(hop) {
                signals.urgent.notify_one();
            }
        }
        if !summary.delivered.is_empty() {
            self.inbox_changed();
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
            self.start_deciding_requests();
        }
        if summary.recalls > 0 {
            let engine = self.clone();
            self.tasks.spawn(async move { engine.report_recalls().await });
        }
    }

    /// Starts deciding the subscription requests that wait and that the catalog decides alone (the
    /// sharing part's work, in a task: it takes custody, and each commit comes back here).
    pub(crate) fn start_deciding_requests(self: &Arc<Self>) {
        let engine = self.clone();
        self.tasks.spawn(async move { engine.sharing.process_subscription_requests(&engine.services, &engine).await });
    }

    /// Starts sending what is left of granted backlogs (the sharing part's work, in a task).
    pub(crate) fn start_backlogs(self: &Arc<Self>) {
        let engine = self.clone();
        self.tasks.spawn(async move { sharing::backfill::send_backlogs(&engine.services, &engine.sharing, &engine).await });
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
            let signed = envelope.sign(&self.node_key());
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
