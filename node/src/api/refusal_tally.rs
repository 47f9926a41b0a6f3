//! Refusals before authentication, counted at once and audited in aggregate.
//!
//! A request refused before anyone is authenticated (no token, a wrong one, a browser at the admin
//! API) costs its sender nothing, so it must cost the node little too: a counter increment and a
//! place in an in-memory tally, never one synced audit row queued ahead of custody commits in the
//! committer. Every interval the tally is written as one audit entry per source address and reason,
//! with the count. The admin API's doors (`admin_doors`) and the agency API's token check
//! (`agency::Caller`) each keep one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntCounterVec;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::storage::{EventRow, Record, WriteJob};

/// Past this many (source, reason) pairs in one interval, new sources are counted under "other
/// sources": the tally's memory is bounded whatever the number of attacking addresses.
const MAX_SOURCES: usize = 1024;

/// One API's tally of refusals not yet audited.
pub struct RefusalTally {
    /// Which API, in audit details and logs (`admin API`, `agency API`).
    api: &'static str,
    /// The audit event name (`admin-refused`, `agency-refused`).
    event: &'static str,
    /// The metric counted per refusal, labelled by reason.
    counter: IntCounterVec,
    every: Duration,
    /// (source address, reason) → (count, first seen, ms).
    tally: Mutex<HashMap<(String, &'static str), (u64, i64)>>,
}

impl RefusalTally {
    /// A tally for `api`, counting in `counter` (label `reason`; `reasons` are exported at 0 from
    /// the start) and audited as `event` every `every`.
    pub fn new(api: &'static str, event: &'static str, counter: IntCounterVec, reasons: &[&str], every: Duration) -> Arc<RefusalTally> {
        for reason in reasons {
            counter.with_label_values(&[reason]).inc_by(0);
        }
        Arc::new(RefusalTally { api, event, counter, every: every.max(Duration::from_secs(1)), tally: Mutex::new(HashMap::new()) })
    }

    /// Counts a refusal from `source` (an IP address, or `unknown`), to be audited at the end of the
    /// interval.
    pub fn note(&self, source: String, reason: &'static str) {
        self.counter.with_label_values(&[reason]).inc();
        let now = exchange_wire::now_ms() as i64;
        let mut tally = self.tally.lock().expect("tally lock");
        let source = if tally.len() >= MAX_SOURCES && !tally.contains_key(&(source.clone(), reason)) { "other sources".into() } else { source };
        tally.entry((source, reason)).or_insert((0, now)).0 += 1;
    }

    /// Writes one audit entry per source and reason for the refusals since the last call.
    async fn flush(&self, engine: &AppState) {
        let taken: Vec<_> = std::mem::take(&mut *self.tally.lock().expect("tally lock")).into_iter().collect();
        if taken.is_empty() {
            return;
        }
        let now = exchange_wire::now_ms() as i64;
        let events = taken
            .into_iter()
            .map(|((source, reason), (count, first))| {
                tracing::warn!(api = self.api, %source, reason, count, "requests refused before authentication");
                EventRow {
                    at_ms: now,
                    category: "refusal",
                    message_id: None,
                    event: self.event,
                    unit: None,
                    peer: None,
                    detail: Some(format!("{count} {} request(s) from {source} refused ({reason}) in the {} ms before", self.api, now - first)),
                }
            })
            .collect();
        if let Err(e) = engine.services.committer.commit(vec![WriteJob::Record(Record { events, ..Default::default() })]).await {
            engine.services.metrics.storage_errors.with_label_values(&["commit"]).inc();
            tracing::error!(api = self.api, error = %e, "cannot write audit entries for refused requests");
        }
    }

    /// Audits the tally every interval until `stop`, then once more.
    pub async fn audit(self: Arc<Self>, engine: AppState, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.flush(&engine).await,
                _ = stop.cancelled() => break,
            }
        }
        self.flush(&engine).await;
    }
}
