//! What every store does the same way around its SQL: gathering the rows of a group commit from its
//! jobs, and re-computing the audit chain. Kept out of the engines so that SQLite and PostgreSQL
//! cannot drift apart on these rules.

use std::collections::{HashMap, HashSet};

use futures::future::BoxFuture;

use super::error::StorageError;
use super::jobs::*;
use super::model::*;
use super::store::*;

pub(crate) fn collect_ids(c: &Custody, out: &mut Vec<[u8; 32]>) {
    if let Some(m) = &c.message {
        out.push(m.id);
    }
    for f in &c.follow_ups {
        collect_ids(f, out);
    }
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
}
