//! Refused input, recorded: a metric, a log line and an audit entry for each refusal (a transient
//! refusal, the node's own trouble, is counted only). Every door of the engine reports here; it needs
//! only the metrics and the committer, so it is the shared services' work and any part may record.

use exchange_wire::{Kind, MessageId};

use super::refusal::Refusal;
use super::services::Services;
use crate::storage::{EventRow, Record, WriteJob};

/// A refused input, for the metric, the log and the audit entry.
pub struct Refused<'a> {
    pub id: Option<MessageId>,
    pub kind: Option<Kind>,
    pub refusal: &'a Refusal,
}

impl Services {
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
}
