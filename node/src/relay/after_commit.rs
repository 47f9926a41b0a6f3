//! What follows a commit: forwarders and inbox long-polls are woken, deliveries counted, and the
//! work a commit leaves for other parts (subscription requests to decide, backlogs to send, recalls
//! to report) queued as follow-ups. The forwarding part does it, as the custody pipeline's [`CommitDone`]; the engine
//! only runs the follow-ups, since they belong to other parts.
//!
//! Also the reports of decided recalls, sent after the commit that decided them and again at
//! start-up: which reports to send is a plain function ([`recall_reports`]); the engine holds the
//! lock that has each decided recall reported once, and commits them.

use std::collections::BTreeMap;
use std::sync::Arc;

use exchange_wire::receipt::{NodeReport, RecallOutcome, RecallReport};
use exchange_wire::{Digest, Priority};

use super::Engine;
use super::commit_done::{CommitDone, FollowUp};
use super::custody::{self, Context, Summary};
use super::forwarder::Forwarders;
use super::sharing;
use crate::storage::{RecallOutcomeRow, WriteJob};

/// The custody pipeline's sink: every part that commits tells the forwarders (see `commit_done`).
impl CommitDone for Arc<Forwarders> {
    /// After a commit: wake forwarders, wake inbox long-polls, count, queue the follow-ups.
    fn committed(&self, summary: &Summary) {
        for hop in &summary.next_hops {
            let signals = self.forwarder(hop);
            signals.work.notify_one();
            if summary.urgent_hops.contains(hop) {
                signals.urgent.notify_one();
            }
        }
        let services = &self.services;
        if !summary.delivered.is_empty() {
            services.inbox_changed();
        }
        let metrics = &services.metrics;
        for k in &summary.delivered {
            metrics.delivered.with_label_values(&[k.as_str()]).inc();
        }
        for ms in &summary.latencies_ms {
            metrics.delivery_latency.observe(*ms as f64 / 1000.0);
        }
        for t in &summary.receipts_returned {
            metrics.receipts.with_label_values(&[t.as_str(), "returned"]).inc();
        }
        if summary.answers > 0 {
            metrics.queries.with_label_values(&["answered"]).inc_by(summary.answers as u64);
        }
        for topic in &summary.data_delivered {
            metrics.data_delivered.with_label_values(&[topic.as_str()]).inc();
        }
        if summary.sharing_requests > 0 {
            self.follow_ups.send(FollowUp::SubscriptionRequests);
        }
        if summary.recalls > 0 {
            self.follow_ups.send(FollowUp::Recalls);
        }
    }

    fn backlog_left(&self) {
        self.follow_ups.send(FollowUp::Backlogs);
    }
}

impl Engine {
    /// After a commit the engine made itself (data sharing's publishing and decisions): the same as
    /// after any other (see the forwarders' [`CommitDone`]).
    pub(crate) fn after_commit(&self, summary: &Summary) {
        self.forwarders.committed(summary);
    }

    /// Runs the follow-ups that commits leave, each in a task of its own as it comes, for as long as
    /// the node runs. Started once, at start-up.
    pub(super) async fn run_follow_ups(self: Arc<Self>) {
        let Some(mut queue) = self.forwarders.follow_ups.take() else { return };
        while let Some(follow_up) = queue.recv().await {
            match follow_up {
                FollowUp::SubscriptionRequests => self.start_deciding_requests(),
                FollowUp::Backlogs => self.start_backlogs(),
                FollowUp::Recalls => {
                    let engine = self.clone();
                    self.services.tasks.spawn(async move { engine.report_recalls().await })
                }
            }
        }
    }

    /// Starts deciding the subscription requests that wait and that the catalog decides alone (the
    /// sharing part's work, in a task: it takes custody, and each commit goes to the forwarders).
    pub(crate) fn start_deciding_requests(self: &Arc<Self>) {
        let engine = self.clone();
        self.services.tasks.spawn(async move { engine.sharing.process_subscription_requests(&engine.services, &engine.forwarders).await });
    }

    /// Starts sending what is left of granted backlogs (the sharing part's work, in a task).
    pub(crate) fn start_backlogs(self: &Arc<Self>) {
        let engine = self.clone();
        self.services.tasks.spawn(async move { sharing::backfill::send_backlogs(&engine.services, &engine.sharing, &engine.forwarders).await });
    }

    /// Sends the senders of recalled documents this node's signed report on every recall decided
    /// here and not yet reported. Runs after each commit that decided recalls, and at start-up (a
    /// crash between the decision and its report loses nothing).
    pub(crate) async fn report_recalls(&self) {
        let _one_at_a_time = self.recall_reports.lock().await;
        let rows = match self.services.store.unreported_recalls().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read decided recalls");
                return;
            }
        };
        let dir = self.services.dir.current();
        let (jobs, summaries) = recall_reports(&self.services.context(&dir), rows);
        if jobs.is_empty() {
            return;
        }
        match self.services.committer.commit(jobs).await {
            Ok(_) => {
                for s in &summaries {
                    self.after_commit(s);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot store recall reports; retried at the next recall or restart"),
        }
    }
}

/// The reports of the decided recalls `rows` (one per recall, signed by this node, routed to the
/// recalled document's sender), each marking its recall reported in the same commit, with what
/// their commit sets off.
pub(crate) fn recall_reports(ctx: &Context, rows: Vec<RecallOutcomeRow>) -> (Vec<WriteJob>, Vec<Summary>) {
    let mut by_recall: BTreeMap<[u8; 32], Vec<RecallOutcomeRow>> = BTreeMap::new();
    for r in rows {
        by_recall.entry(r.recall_id).or_default().push(r);
    }
    let mut jobs = Vec::new();
    let mut summaries = Vec::new();
    for (recall_id, rows) in by_recall {
        let Some(first) = rows.first() else { continue };
        let (Ok(sender), Ok(priority)) = (first.original_sender.parse(), priority_of(first.priority)) else { continue };
        let report = RecallReport {
            recall_id: Digest(recall_id),
            message_id: Digest(first.message_id),
            node: ctx.here.clone(),
            outcomes: rows.iter().filter_map(|r| Some(RecallOutcome { unit: r.unit.parse().ok()?, outcome: r.outcome.clone() })).collect(),
        };
        let (envelope, payload) = report.envelope(sender, priority);
        let signed = envelope.sign(&ctx.node_key);
        let recipients = vec![signed.envelope.to[0].clone()];
        match custody::take(ctx, custody::Incoming { signed, payload, recipients, from: None, hops: vec![] }) {
            Ok((mut c, s)) => {
                c.recalls_reported.push(recall_id);
                jobs.push(WriteJob::Custody(c));
                summaries.push(s);
            }
            Err(r) => tracing::warn!(reason = %r.message, "cannot route a recall report"),
        }
    }
    (jobs, summaries)
}

/// The priority with queue rank `rank`.
fn priority_of(rank: u8) -> Result<Priority, ()> {
    match rank {
        0 => Ok(Priority::Urgent),
        1 => Ok(Priority::Express),
        2 => Ok(Priority::Routine),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{test_key, test_tree};
    use exchange_wire::{Envelope, Kind, NodeId};

    fn row(recall: u8, unit: &str, outcome: &str, priority: u8) -> RecallOutcomeRow {
        RecallOutcomeRow {
            recall_id: [recall; 32],
            message_id: [recall + 100; 32],
            unit: unit.into(),
            outcome: outcome.into(),
            original_sender: "gz.yuexiu/liurong-street".into(),
            priority,
        }
    }

    /// At 海珠, two recalls decided: one report each, signed by this node, naming every outcome of
    /// its recall, on its way to the sender's node and marking its recall reported in the same
    /// commit. A row with a priority no queue has is left alone.
    #[test]
    fn one_signed_report_per_recall_goes_toward_the_sender_and_marks_it_reported() {
        let (dir, here, key) = (test_tree(), "gz.haizhu".parse::<NodeId>().unwrap(), test_key(4));
        let ctx = Context { here: &here, dir: &dir, node_key: key.clone(), now_ms: 1_000 };
        let rows = vec![
            row(1, "gz.haizhu/civil-affairs", "recalled", 1),
            row(2, "gz.haizhu/civil-affairs", "already-signed-for", 0),
            row(1, "gz.haizhu/chigang-street", "recalled", 1),
            row(3, "gz.haizhu/chigang-street", "recalled", 9),
        ];
        let (jobs, summaries) = recall_reports(&ctx, rows);
        assert_eq!((jobs.len(), summaries.len()), (2, 2));
        for (job, (recall, outcomes)) in jobs.iter().zip([(1u8, 2usize), (2, 1)]) {
            let WriteJob::Custody(c) = job else { panic!("a recall report is taken into custody") };
            assert_eq!(c.recalls_reported, vec![[recall; 32]]);
            assert_eq!(c.outbox.len(), 1);
            assert_eq!(c.outbox[0].next_hop, "gz", "toward the sender's node");
            let m = c.message.as_ref().expect("the report itself");
            let env = Envelope::from_canonical_bytes(&m.header).unwrap();
            assert_eq!(env.kind, Kind::DeliveryReport);
            assert_eq!(env.to, vec!["gz.yuexiu/liurong-street".parse().unwrap()]);
            let report = RecallReport::from_envelope(&env, &m.payload).unwrap();
            assert_eq!((report.recall_id, report.node.clone(), report.outcomes.len()), (Digest([recall; 32]), here.clone(), outcomes));
        }
        assert!(summaries.iter().all(|s| s.next_hops.iter().map(|h| h.as_str()).eq(["gz"])));
    }
}
