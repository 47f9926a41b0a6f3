//! What every store does the same way around its SQL: gathering the rows of a group commit from its
//! jobs, and re-computing the audit chain. Kept out of the engines so that SQLite and PostgreSQL
//! cannot drift apart on these rules.

use std::collections::{HashMap, HashSet};

use futures::future::BoxFuture;

use super::error::StorageError;
use super::jobs::*;
use super::model::*;
use super::store::*;
use crate::settlement::{self, Entry, Settlement};

fn collect_ids(c: &Custody, out: &mut Vec<[u8; 32]>) {
    if let Some(m) = &c.message {
        out.push(m.id);
    }
    for f in &c.follow_ups {
        collect_ids(f, out);
    }
}

/// The ids of the messages `jobs` take custody of (documents, 签收 receipts, their follow-ups), to
/// dedupe them against those held.
pub(crate) fn custody_ids(jobs: &[WriteJob]) -> Vec<[u8; 32]> {
    let mut ids = Vec::new();
    for j in jobs {
        if let WriteJob::Custody(c) | WriteJob::SignFor { receipt: c, .. } = j {
            collect_ids(c, &mut ids);
        }
    }
    ids
}

/// The local position (`messages.seq`) of the message whose id is bound next, to be closed by `)`;
/// NULL when it is not held. Indexes are keyed by this position, which grows with arrival, rather
/// than by the random id (see node/migrations/sqlite/0012_local_keys.sql). Both engines write it so.
pub(crate) const SEQ_OF_MESSAGE: &str = "(SELECT seq FROM messages WHERE id = ";

/// Rows gathered from all jobs of one transaction.
#[derive(Default)]
pub(crate) struct Rows<'a> {
    pub messages: Vec<&'a MessageRow>,
    pub outbox: Vec<&'a OutboxRow>,
    pub inbox: Vec<&'a InboxRow>,
    pub tracking: Vec<&'a TrackingRow>,
    pub events: Vec<&'a EventRow>,
    pub recalls: Vec<&'a RecallRow>,
    pub recalls_reported: Vec<&'a [u8; 32]>,
    pub sharing: Vec<&'a SharingRow>,
}

impl<'a> Rows<'a> {
    /// Adds a custody job unless its id is held already; returns whether it was added.
    pub fn add_custody(&mut self, c: &'a Custody, held: &mut HashSet<[u8; 32]>) -> bool {
        if let Some(m) = &c.message {
            if !held.insert(m.id) {
                return false;
            }
            self.messages.push(m);
        }
        self.outbox.extend(&c.outbox);
        self.inbox.extend(&c.inbox);
        self.tracking.extend(&c.tracking);
        self.events.extend(&c.events);
        self.recalls.extend(&c.recalls);
        self.recalls_reported.extend(&c.recalls_reported);
        self.sharing.extend(&c.sharing);
        for f in &c.follow_ups {
            self.add_custody(f, held);
        }
        true
    }

    /// A custody job's outcome: stored, or a duplicate of an id held.
    pub fn take_custody(&mut self, c: &'a Custody, held: &mut HashSet<[u8; 32]>) -> JobOutcome {
        if self.add_custody(c, held) { JobOutcome::Stored } else { JobOutcome::Duplicate }
    }

    /// A 签收 or 退回 job's outcome: decided by `settlements`; when it applies, its receipt is taken
    /// into custody.
    pub fn take_settlement(
        &mut self,
        settlements: &mut Settlements,
        unit: &str,
        message_id: &[u8; 32],
        state: &'static str,
        receipt: &'a Custody,
        held: &mut HashSet<[u8; 32]>,
    ) -> JobOutcome {
        let receipt_id = receipt.message.as_ref().map(|m| m.id).unwrap_or([0; 32]);
        match settlements.settle(unit, message_id, state, &receipt_id) {
            None => {
                self.add_custody(receipt, held);
                JobOutcome::Stored
            }
            Some(o) => o,
        }
    }

    /// Adds the follow-up rows of a base-data sharing job that was stored: the messages it delivers
    /// and its audit entries.
    pub fn add_shared(&mut self, job: &'a SharingJob, held: &mut HashSet<[u8; 32]>) {
        let (messages, events): (Vec<&'a Custody>, &'a [EventRow]) = match job {
            SharingJob::Publish { delivery, events, .. } => (delivery.iter().map(|c| &**c).collect(), events),
            SharingJob::Decide { messages, events, .. } => (messages.iter().collect(), events),
            SharingJob::Backfill { messages, .. } => (messages.iter().collect(), &[]),
            SharingJob::Ack { events, .. } => (Vec::new(), events),
        };
        for c in messages {
            self.add_custody(c, held);
        }
        self.events.extend(events);
    }

    pub fn add_record(&mut self, r: &'a Record) {
        self.tracking.extend(&r.tracking);
        self.events.extend(&r.events);
    }
}


/// Status facts of one transaction about messages held here, each with its message's position
/// (`positions`: id → `messages.seq`, read inside the transaction after its messages were written).
/// Status is kept at the sender's node for what its units sent, so the message is held; a fact
/// about any other (a report reaching a node restored from an older backup, a neighbour in error)
/// has no status to move and is left out, with a warning, rather than failing the whole commit.
pub(crate) fn tracking_of_held<'a>(rows: &[&'a TrackingRow], positions: &HashMap<[u8; 32], i64>) -> Vec<(i64, &'a TrackingRow)> {
    rows.iter()
        .filter_map(|t| match positions.get(&t.message_id) {
            Some(&seq) => Some((seq, *t)),
            None => {
                tracing::warn!(message = %hex::encode(t.message_id), recipient = %t.recipient, state = t.state.as_str(), "status of a message not held here: not recorded");
                None
            }
        })
        .collect()
}

/// The distinct message ids of `rows`, to look their positions up.
pub(crate) fn tracked_ids(rows: &[&TrackingRow]) -> Vec<[u8; 32]> {
    let mut ids: Vec<[u8; 32]> = rows.iter().map(|t| t.message_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The 签收 and 退回 of one transaction, decided by [`settlement::settle`] against the inbox entries
/// as the transaction holds them. The entries they name are read in one statement before the jobs
/// are taken in order (`settling_ids`, then [`Settlements::new`]); each decision updates the entry
/// held here, so a second settlement of one entry in the same transaction sees the first, as the
/// single writer orders them. The engine then writes [`Settlements::applied`] as one statement: a
/// statement per 签收 cost a round trip to the database each, which made the recipient's node the
/// slowest writer of the network (docs/performance.md).
pub(crate) struct Settlements {
    /// (unit, message id) → (state, settling receipt id).
    entries: HashMap<(String, [u8; 32]), (String, Option<Vec<u8>>)>,
    /// The entries settled by this transaction, in order: (unit, message id, new state, receipt id).
    pub applied: Vec<(String, [u8; 32], &'static str, [u8; 32])>,
}

/// The distinct message ids the 签收 and 退回 among `jobs` name, to read their inbox entries.
pub(crate) fn settling_ids(jobs: &[WriteJob]) -> Vec<[u8; 32]> {
    let mut ids: Vec<[u8; 32]> = jobs
        .iter()
        .filter_map(|j| match j {
            WriteJob::SignFor { message_id, .. } => Some(*message_id),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl Settlements {
    /// `held`: every inbox entry of the ids from [`settling_ids`], as (unit, message id, state,
    /// receipt id); entries of other units of the same message may be among them.
    pub fn new(held: impl IntoIterator<Item = (String, [u8; 32], String, Option<Vec<u8>>)>) -> Settlements {
        let entries = held.into_iter().map(|(unit, id, state, receipt)| ((unit, id), (state, receipt))).collect();
        Settlements { entries, applied: Vec::new() }
    }

    /// Decides a 签收 or 退回 (`state`) of `message_id` in `unit`'s inbox with `receipt_id`: `None`
    /// when it applies (and is recorded in `applied`), otherwise the outcome to answer.
    pub fn settle(&mut self, unit: &str, message_id: &[u8; 32], state: &'static str, receipt_id: &[u8; 32]) -> Option<JobOutcome> {
        let key = (unit.to_string(), *message_id);
        let held = self.entries.get(&key);
        let entry = held.map(|(state, receipt)| Entry { state, receipt_id: receipt.as_deref() });
        match settlement::settle(entry, unit, message_id, receipt_id) {
            Settlement::Apply => {
                self.entries.insert(key, (state.to_string(), Some(receipt_id.to_vec())));
                self.applied.push((unit.to_string(), *message_id, state, *receipt_id));
                None
            }
            Settlement::Duplicate => Some(JobOutcome::Duplicate),
            Settlement::Conflict(why) => Some(JobOutcome::Conflict(why)),
        }
    }
}

/// Re-computes the whole audit chain of `store`, a page at a time. Positions must follow each other
/// without gaps (both stores number entries so): a gap is reported as deleted entries.
pub(crate) fn verify_chain(store: &dyn Store) -> BoxFuture<'_, Result<ChainCheck, StorageError>> {
    Box::pin(async move {
        let mut check = ChainCheck { entries: 0, head_seq: 0, head_hash: [0; 32], first_break: None };
        let mut prev_seq = 0i64;
        loop {
            let page = store.audit_page(prev_seq, 5000).await?;
            if page.is_empty() {
                return Ok(check);
            }
            for e in page {
                check.entries += 1;
                if check.first_break.is_none() {
                    if e.seq != prev_seq + 1 {
                        check.first_break =
                            Some((e.seq, format!("entries {} to {} are missing: deleted from the log", prev_seq + 1, e.seq - 1)));
                    } else if let Some(why) = chain_mismatch(&e, &check.head_hash) {
                        check.first_break = Some((e.seq, why));
                    }
                }
                prev_seq = e.seq;
                check.head_seq = e.seq;
                check.head_hash = <[u8; 32]>::try_from(e.hash.as_slice()).unwrap_or([0; 32]);
            }
        }
    })
}

/// Why entry `e` does not follow from the previous hash, if it does not.
fn chain_mismatch(e: &EventRecord, prev: &[u8; 32]) -> Option<String> {
    let message_id = match e.message_id.as_deref().map(<[u8; 32]>::try_from) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return Some("its message id is not 32 bytes: the entry was altered".into()),
    };
    // The static strings of a live entry are owned here; leak-free by hashing through a borrowed row.
    let row = EventRow {
        at_ms: e.at_ms,
        category: "",
        message_id,
        event: "",
        unit: e.unit.clone(),
        peer: e.peer.clone(),
        detail: e.detail.clone(),
    };
    let expected = row.chain_hash_with(prev, &e.category, &e.event);
    (expected.as_slice() != e.hash.as_slice())
        .then(|| "its hash does not follow from its content and the previous entry: this entry (or the one before it) was altered, or an entry was removed".to_string())
}


#[cfg(test)]
mod tests {
    use exchange_wire::api::RecipientState;

    use super::*;

    fn fact(id: u8, recipient: &str) -> TrackingRow {
        TrackingRow {
            message_id: [id; 32],
            recipient: recipient.into(),
            state: RecipientState::Delivered,
            node: "gz.haizhu".into(),
            at_ms: 1,
            detail: None,
            receipt_id: None,
        }
    }

    #[test]
    fn status_is_kept_only_for_messages_held_here() {
        let (a, b, c) = (fact(1, "gz.haizhu/civil-affairs"), fact(2, "gz.haizhu/civil-affairs"), fact(1, "gz.tianhe/x"));
        let rows = [&a, &b, &c];
        let positions = HashMap::from([([1u8; 32], 41i64)]);
        let kept: Vec<(i64, &str)> = tracking_of_held(&rows, &positions).into_iter().map(|(seq, t)| (seq, t.recipient.as_str())).collect();
        assert_eq!(kept, [(41, "gz.haizhu/civil-affairs"), (41, "gz.tianhe/x")]);
        assert_eq!(tracked_ids(&rows), [[1u8; 32], [2u8; 32]]);
    }

    #[test]
    fn settlements_of_one_transaction_see_each_other_in_order() {
        let unit = "gz.haizhu/civil-affairs";
        let held = [
            (unit.to_string(), [1u8; 32], settlement::DELIVERED.to_string(), None),
            ("gz.haizhu/finance".to_string(), [1u8; 32], settlement::DELIVERED.to_string(), None),
            (unit.to_string(), [2u8; 32], settlement::SIGNED_FOR.to_string(), Some(vec![9u8; 32])),
        ];
        let mut s = Settlements::new(held);
        // The first 签收 of an entry applies; a 退回 of it later in the same transaction meets it.
        assert_eq!(s.settle(unit, &[1; 32], settlement::SIGNED_FOR, &[7; 32]), None);
        assert!(matches!(s.settle(unit, &[1; 32], settlement::RETURNED, &[8; 32]), Some(JobOutcome::Conflict(_))));
        // The same receipt again is a duplicate, not a conflict.
        assert_eq!(s.settle(unit, &[1; 32], settlement::SIGNED_FOR, &[7; 32]), Some(JobOutcome::Duplicate));
        // Another unit's entry of the same message is its own.
        assert_eq!(s.settle("gz.haizhu/finance", &[1; 32], settlement::RETURNED, &[6; 32]), None);
        // Settled before this transaction; and not in the inbox at all.
        assert_eq!(s.settle(unit, &[2; 32], settlement::SIGNED_FOR, &[9; 32]), Some(JobOutcome::Duplicate));
        assert!(matches!(s.settle(unit, &[3; 32], settlement::SIGNED_FOR, &[5; 32]), Some(JobOutcome::Conflict(_))));
        let applied: Vec<(&str, u8, &str)> = s.applied.iter().map(|(u, id, state, _)| (u.as_str(), id[0], *state)).collect();
        assert_eq!(applied, [(unit, 1, settlement::SIGNED_FOR), ("gz.haizhu/finance", 1, settlement::RETURNED)]);
    }
}
