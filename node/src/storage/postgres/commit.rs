//! The write transaction of the PostgreSQL store: the write lock, the lease check, dedupe against
//! held ids, every job's rows as multi-row statements, the recalls, the audit chain, the commit.

use std::collections::{HashMap, HashSet};

use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use super::admin::apply_admin;
use super::{PgStore, ROWS_PER_STATEMENT, WRITE_LOCK, sharing};
use crate::settlement::{self, Entry};
use crate::storage::citations;
use crate::storage::error::StorageError;
use crate::storage::gather::{Rows, SEQ_OF_MESSAGE, Settlements, custody_ids, settling_ids, tracked_ids, tracking_of_held};
use crate::storage::jobs::*;
use crate::storage::model::*;
use crate::storage::store::parts;

impl PgStore {
    /// The transaction itself: take the write lock, apply its parts one after another (ending
    /// early when `end_early` says so between two), count the commit, commit. Returns the outcomes
    /// of the jobs committed. A failure anywhere drops the transaction (rolled back) and is returned.
    pub(super) async fn commit_jobs(&self, jobs: &[WriteJob], cuts: &[usize], end_early: &(dyn Fn() -> bool + Send + Sync)) -> Result<Vec<JobOutcome>, StorageError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK).execute(&mut *tx).await?;
        if let Some(lease) = &self.lease {
            if let Err(e) = lease.check(&mut tx).await {
                self.health.mark_damaged("this replica lost its lease on the database: another replica is active; restart it as a standby");
                return Err(e);
            }
        }
        let mut outcomes = Vec::with_capacity(jobs.len());
        for (i, part) in parts(jobs, cuts).into_iter().enumerate() {
            if i > 0 && end_early() {
                break;
            }
            outcomes.extend(apply_part(&mut tx, part).await?);
        }
        sqlx::query("UPDATE node_state SET value = value + 1 WHERE key = 'commits'").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// One part of a transaction: dedupe against the ids held (earlier parts included), gather every
/// job's rows, write them as multi-row statements, append them to the audit chain.
async fn apply_part(tx: &mut Transaction<'_, Postgres>, jobs: &[WriteJob]) -> Result<Vec<JobOutcome>, StorageError> {
    let mut held = existing_ids(tx, &custody_ids(jobs)).await?;
    let mut settlements = Settlements::new(inbox_entries(tx, &settling_ids(jobs)).await?);
    let mut rows = Rows::default();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for j in jobs {
        let outcome = match j {
            WriteJob::Custody(c) => rows.take_custody(c, &mut held),
            WriteJob::SignFor { unit, message_id, state, receipt } => rows.take_settlement(&mut settlements, unit, message_id, state, receipt, &mut held),
            WriteJob::Record(r) => {
                apply_outbox_record(tx, r).await?;
                rows.add_record(r);
                JobOutcome::Stored
            }
            WriteJob::Admin { op, events } => {
                let n = apply_admin(tx, op).await?;
                rows.events.extend(events);
                JobOutcome::Affected(n)
            }
            WriteJob::Sharing(job) => {
                let outcome = sharing::apply_job(tx, job).await?;
                if matches!(outcome, JobOutcome::Stored | JobOutcome::Affected(_)) {
                    rows.add_shared(job, &mut held);
                }
                outcome
            }
            WriteJob::Probe { at_ms } => {
                sqlx::query("UPDATE node_state SET value = $1 WHERE key = 'probe'").bind(at_ms).execute(&mut **tx).await?;
                JobOutcome::Stored
            }
        };
        outcomes.push(outcome);
    }
    write_settlements(tx, &settlements.applied).await?;
    insert_rows(tx, &rows).await?;
    // After the inbox rows: a recall may arrive in the same batch as its document.
    apply_recalls(tx, &rows.recalls, &rows.recalls_reported).await?;
    sharing::apply_rows(tx, &rows.sharing).await?;
    append_audit(tx, &rows.events).await?;
    Ok(outcomes)
}

async fn existing_ids(tx: &mut Transaction<'_, Postgres>, ids: &[[u8; 32]]) -> Result<HashSet<[u8; 32]>, sqlx::Error> {
    Ok(positions(tx, ids).await?.into_keys().collect())
}

/// The position (`messages.seq`) of each of `ids` held, as this transaction sees them.
async fn positions(tx: &mut Transaction<'_, Postgres>, ids: &[[u8; 32]]) -> Result<HashMap<[u8; 32], i64>, sqlx::Error> {
    let mut held = HashMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT * 10) {
        let list: Vec<Vec<u8>> = chunk.iter().map(|id| id.to_vec()).collect();
        let found: Vec<(Vec<u8>, i64)> = sqlx::query_as("SELECT id, seq FROM messages WHERE id = ANY($1)").bind(list).fetch_all(&mut **tx).await?;
        held.extend(found.into_iter().filter_map(|(id, seq)| Some((<[u8; 32]>::try_from(id.as_slice()).ok()?, seq))));
    }
    Ok(held)
}

/// Tracking facts of one transaction folded to one per (message, recipient), as applying them one
/// after another would leave it: a fact replaces the one before only if it ranks higher, keeping the
/// earlier receipt id when it has none. PostgreSQL refuses an upsert that meets the same row twice in
/// one statement, so the batch is folded first; the upsert then applies the same rule against the
/// stored row.
fn fold_tracking<'a>(rows: &[(i64, &'a TrackingRow)]) -> Vec<(i64, TrackingRow, i64)> {
    let mut out: Vec<(i64, TrackingRow, i64)> = Vec::new();
    let mut at: HashMap<(i64, &'a str), usize> = HashMap::new();
    for &(seq, t) in rows {
        let rank = state_rank(t.state);
        match at.get(&(seq, t.recipient.as_str())) {
            Some(&i) => {
                if rank > out[i].2 {
                    let receipt = t.receipt_id.or(out[i].1.receipt_id);
                    out[i] = (seq, t.clone(), rank);
                    out[i].1.receipt_id = receipt;
                }
            }
            None => {
                at.insert((seq, t.recipient.as_str()), out.len());
                out.push((seq, t.clone(), rank));
            }
        }
    }
    out
}

/// The custody rows of one transaction, each table in statements of up to `ROWS_PER_STATEMENT`
/// values.
async fn insert_rows(tx: &mut Transaction<'_, Postgres>, rows: &Rows<'_>) -> Result<(), sqlx::Error> {
    insert_messages(tx, &rows.messages).await?;
    insert_citations(tx, &rows.messages).await?;
    insert_outbox(tx, &rows.outbox).await?;
    insert_inbox(tx, &rows.inbox).await?;
    // After the messages: a status may be about a message taken in this same transaction.
    upsert_tracking(tx, &rows.tracking).await
}

async fn insert_messages(tx: &mut Transaction<'_, Postgres>, messages: &[&MessageRow]) -> Result<(), sqlx::Error> {
    for chunk in messages.chunks(ROWS_PER_STATEMENT / 4) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO messages (id, header, signature, payload, kind, sender, priority, created_at_ms, received_at_ms, received_from, hops) ",
        );
        q.push_values(chunk, |mut b, m| {
            b.push_bind(m.id.as_slice())
                .push_bind(m.header.as_slice())
                .push_bind(m.signature.as_slice())
                .push_bind(m.payload.as_slice())
                .push_bind(m.kind.as_str())
                .push_bind(m.sender.as_str())
                .push_bind(m.priority as i64)
                .push_bind(m.created_at_ms)
                .push_bind(m.received_at_ms)
                .push_bind(m.received_from.as_deref())
                .push_bind(m.hops.as_str());
        });
        // The id check before the insert already left out held ids; this is the database enforcing it.
        q.push(" ON CONFLICT (id) DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// The attachments each new message cites.
async fn insert_citations(tx: &mut Transaction<'_, Postgres>, messages: &[&MessageRow]) -> Result<(), sqlx::Error> {
    let cited: Vec<([u8; 32], [u8; 32])> =
        messages.iter().flat_map(|m| citations::cited(&m.header).into_iter().map(|sha| (sha, m.id))).collect();
    for chunk in cited.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Postgres>::new("INSERT INTO cited_attachments (sha256, message_id) ");
        q.push_values(chunk, |mut b, (sha, id)| {
            b.push_bind(sha.as_slice()).push_bind(id.as_slice());
        });
        q.push(" ON CONFLICT (sha256, message_id) DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_outbox(tx: &mut Transaction<'_, Postgres>, outbox: &[&OutboxRow]) -> Result<(), sqlx::Error> {
    for chunk in outbox.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Postgres>::new("INSERT INTO outbox (message_seq, message_id, next_hop, recipients, priority, enqueued_at_ms) ");
        q.push_values(chunk, |mut b, o| {
            // A message not held makes the entry NULL and the commit fail: nothing is queued that
            // could not be sent.
            b.push(SEQ_OF_MESSAGE)
                .push_bind_unseparated(o.message_id.as_slice())
                .push_unseparated(")")
                .push_bind(o.message_id.as_slice())
                .push_bind(o.next_hop.as_str())
                .push_bind(o.recipients.as_str())
                .push_bind(o.priority as i64)
                .push_bind(o.enqueued_at_ms);
        });
        q.push(" ON CONFLICT (message_seq, next_hop) DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_inbox(tx: &mut Transaction<'_, Postgres>, inbox: &[&InboxRow]) -> Result<(), sqlx::Error> {
    for chunk in inbox.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Postgres>::new("INSERT INTO inbox (unit, message_id, delivered_at_ms, state) ");
        q.push_values(chunk, |mut b, i| {
            b.push_bind(i.unit.as_str()).push_bind(i.message_id.as_slice()).push_bind(i.delivered_at_ms).push_bind("delivered");
        });
        q.push(" ON CONFLICT (unit, message_id) DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Statuses move forward only: a row is replaced by one of a higher state rank.
async fn upsert_tracking(tx: &mut Transaction<'_, Postgres>, tracking: &[&TrackingRow]) -> Result<(), sqlx::Error> {
    let tracking = fold_tracking(&tracking_of_held(tracking, &positions(tx, &tracked_ids(tracking)).await?));
    for chunk in tracking.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO tracking (message_seq, message_id, recipient, state_rank, state, node, at_ms, detail, receipt_id) ",
        );
        q.push_values(chunk, |mut b, (seq, t, rank)| {
            b.push_bind(*seq)
                .push_bind(t.message_id.as_slice())
                .push_bind(t.recipient.as_str())
                .push_bind(*rank)
                .push_bind(t.state.as_str())
                .push_bind(t.node.as_str())
                .push_bind(t.at_ms)
                .push_bind(t.detail.as_deref())
                .push_bind(t.receipt_id.as_ref().map(|r| r.as_slice()));
        });
        q.push(
            " ON CONFLICT (message_seq, recipient) DO UPDATE SET state_rank = excluded.state_rank, \
             state = excluded.state, node = excluded.node, at_ms = excluded.at_ms, detail = excluded.detail, \
             receipt_id = COALESCE(excluded.receipt_id, tracking.receipt_id) \
             WHERE excluded.state_rank > tracking.state_rank",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Appends audit-log entries after the stored head, numbering and chaining each to the one before.
/// The head is read inside the write lock, so it is the head every other writer left.
async fn append_audit(tx: &mut Transaction<'_, Postgres>, events: &[&EventRow]) -> Result<(), StorageError> {
    if events.is_empty() {
        return Ok(());
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut **tx).await?;
    let (mut seq, mut hash) = match head {
        Some(r) => {
            let h: Vec<u8> = r.get(1);
            (r.get::<i64, _>(0), <[u8; 32]>::try_from(h.as_slice()).map_err(|_| StorageError::Corrupt("an audit hash is not 32 bytes".into()))?)
        }
        None => (0, [0; 32]),
    };
    let mut numbered = Vec::with_capacity(events.len());
    for e in events {
        seq += 1;
        hash = e.chain_hash(&hash);
        numbered.push((seq, *e, hash));
    }
    for chunk in numbered.chunks(ROWS_PER_STATEMENT / 2) {
        QueryBuilder::<Postgres>::new("INSERT INTO audit_log (seq, at_ms, category, message_id, message_seq, event, unit, peer, detail, hash) ")
            .push_values(chunk, |mut b, (seq, e, hash)| {
                let message_id = e.message_id.as_ref().map(|m| m.as_slice());
                b.push_bind(*seq)
                    .push_bind(e.at_ms)
                    .push_bind(e.category)
                    .push_bind(message_id)
                    .push(SEQ_OF_MESSAGE)
                    .push_bind_unseparated(message_id)
                    .push_unseparated(")")
                    .push_bind(e.event)
                    .push_bind(e.unit.as_deref())
                    .push_bind(e.peer.as_deref())
                    .push_bind(e.detail.as_deref())
                    .push_bind(hash.as_slice());
            })
            .build()
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn apply_outbox_record(tx: &mut Transaction<'_, Postgres>, r: &Record) -> Result<(), sqlx::Error> {
    if !r.outbox_done.is_empty() {
        sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)").bind(&r.outbox_done).execute(&mut **tx).await?;
    }
    for (seq, reason) in &r.outbox_dead {
        sqlx::query("UPDATE outbox SET dead_reason = $1, attempts = attempts + 1 WHERE seq = $2")
            .bind(reason.as_str())
            .bind(*seq)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Applies recalls as [`settlement::recall`] decides them, each with the inbox entry as this
/// transaction holds it (see the SQLite store: the same rule, the same order).
async fn apply_recalls(tx: &mut Transaction<'_, Postgres>, recalls: &[&RecallRow], reported: &[&[u8; 32]]) -> Result<(), sqlx::Error> {
    for r in recalls {
        let sender: Option<String> =
            sqlx::query_scalar("SELECT sender FROM messages WHERE id = $1").bind(r.message_id.as_slice()).fetch_optional(&mut **tx).await?;
        let held = inbox_entry_state(tx, &r.unit, &r.message_id).await?;
        let decision = settlement::recall(
            sender.as_deref(),
            &r.original_sender,
            held.as_ref().map(|(state, receipt)| Entry { state, receipt_id: receipt.as_deref() }),
        );
        if decision == settlement::Recall::Withdraw {
            sqlx::query(
                "INSERT INTO inbox (unit, message_id, delivered_at_ms, state) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (unit, message_id) DO UPDATE SET state = excluded.state",
            )
            .bind(r.unit.as_str())
            .bind(r.message_id.as_slice())
            .bind(r.at_ms)
            .bind(settlement::RECALLED)
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO recall_outcomes (recall_id, message_id, unit, outcome, original_sender, priority) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (recall_id, unit) DO NOTHING",
        )
        .bind(r.recall_id.as_slice())
        .bind(r.message_id.as_slice())
        .bind(r.unit.as_str())
        .bind(decision.outcome())
        .bind(r.original_sender.as_str())
        .bind(r.priority as i64)
        .execute(&mut **tx)
        .await?;
    }
    for id in reported {
        sqlx::query("UPDATE recall_outcomes SET reported = 1 WHERE recall_id = $1").bind(id.as_slice()).execute(&mut **tx).await?;
    }
    Ok(())
}

/// An inbox entry's state and settling receipt, as this transaction holds them.
async fn inbox_entry_state(tx: &mut Transaction<'_, Postgres>, unit: &str, message_id: &[u8; 32]) -> Result<Option<(String, Option<Vec<u8>>)>, sqlx::Error> {
    let row = sqlx::query("SELECT state, receipt_id FROM inbox WHERE unit = $1 AND message_id = $2")
        .bind(unit)
        .bind(message_id.as_slice())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Every inbox entry of `ids` (all units), as this transaction holds them, for [`Settlements`].
async fn inbox_entries(tx: &mut Transaction<'_, Postgres>, ids: &[[u8; 32]]) -> Result<Vec<(String, [u8; 32], String, Option<Vec<u8>>)>, sqlx::Error> {
    let mut entries = Vec::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT * 10) {
        let list: Vec<Vec<u8>> = chunk.iter().map(|id| id.to_vec()).collect();
        let found: Vec<(String, Vec<u8>, String, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT unit, message_id, state, receipt_id FROM inbox WHERE message_id = ANY($1)").bind(list).fetch_all(&mut **tx).await?;
        entries.extend(found.into_iter().filter_map(|(unit, id, state, receipt)| Some((unit, <[u8; 32]>::try_from(id.as_slice()).ok()?, state, receipt))));
    }
    Ok(entries)
}

/// Writes the settlements [`Settlements`] applied: each entry's new state and its receipt.
async fn write_settlements(tx: &mut Transaction<'_, Postgres>, applied: &[(String, [u8; 32], &'static str, [u8; 32])]) -> Result<(), sqlx::Error> {
    for chunk in applied.chunks(ROWS_PER_STATEMENT / 4) {
        let mut q = QueryBuilder::<Postgres>::new("UPDATE inbox SET state = settled.state, receipt_id = settled.receipt_id FROM (");
        q.push_values(chunk, |mut b, (unit, id, state, receipt)| {
            b.push_bind(unit.as_str()).push_bind(id.as_slice()).push_bind(*state).push_bind(receipt.as_slice());
        });
        q.push(") AS settled (unit, message_id, state, receipt_id) WHERE inbox.unit = settled.unit AND inbox.message_id = settled.message_id");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}
