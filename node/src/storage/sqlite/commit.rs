//! The write transaction of the SQLite store: one writer connection, dedupe against held ids,
//! every job's rows as multi-row statements, the recalls, the audit chain, the commit mark.

use std::collections::{HashMap, HashSet};

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::admin::{apply_admin, for_keys_in_chunks};
use super::citations::insert_citations;
use super::{ROWS_PER_STATEMENT, SqliteStore, sharing};
use crate::settlement::{self, Entry};
use crate::storage::citations;
use crate::storage::error::StorageError;
use crate::storage::gather::{Rows, SEQ_OF_MESSAGE, Settlements, custody_ids, settling_ids, tracked_ids, tracking_of_held};
use crate::storage::jobs::*;
use crate::storage::model::*;
use crate::storage::store::parts;

impl SqliteStore {
    /// Applies `jobs` in one transaction on the writer connection. After any failure the connection
    /// is closed (SQLite rolls back whatever it still had open) and a fresh one is opened for the next
    /// transaction: a failed `COMMIT` can leave a transaction open, and later transactions on that
    /// connection would only nest inside it as savepoints and never become durable.
    pub(super) async fn commit_jobs(&self, jobs: &[WriteJob], cuts: &[usize], end_early: &(dyn Fn() -> bool + Send + Sync)) -> Result<Vec<JobOutcome>, StorageError> {
        let mut conn = self.writer.acquire().await?;
        if !writer_in_autocommit(&mut conn).await? {
            tracing::error!("the storage writer was left inside a transaction; reopening it");
            conn.close().await?;
            conn = self.writer.acquire().await?;
            if !writer_in_autocommit(&mut conn).await? {
                return Err(StorageError::Corrupt("a fresh writer connection is inside a transaction".into()));
            }
        }
        match self.apply_jobs(&mut conn, jobs, cuts, end_early).await {
            Ok((outcomes, commits)) => {
                // The mark may lag the database (a crash right here), never lead it: it is written
                // only after the commit is durable.
                let mark = self.mark.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || mark.write(commits)).await.map_err(std::io::Error::other).and_then(|r| r) {
                    tracing::warn!(error = %e, "cannot update the commit mark beside the database");
                }
                Ok(outcomes)
            }
            Err(e) => {
                if let Err(close) = conn.close().await {
                    tracing::error!(error = %close, "closing the storage writer after a failed commit failed");
                }
                Err(e)
            }
        }
    }

    /// The transaction itself: its parts one after another (ending early when `end_early` says so
    /// between two), then the commit count, then the commit. Returns the outcomes of the jobs
    /// committed and the new commit count.
    async fn apply_jobs(&self, conn: &mut sqlx::pool::PoolConnection<Sqlite>, jobs: &[WriteJob], cuts: &[usize], end_early: &(dyn Fn() -> bool + Send + Sync))
        -> Result<(Vec<JobOutcome>, u64), StorageError> {
        let mut tx = sqlx::Connection::begin(&mut **conn).await?;
        let mut head = *self.chain_head.lock().expect("chain head lock");
        let mut outcomes = Vec::with_capacity(jobs.len());
        for (i, part) in parts(jobs, cuts).into_iter().enumerate() {
            if i > 0 && end_early() {
                break;
            }
            outcomes.extend(apply_part(&mut tx, part, &mut head).await?);
        }
        let commits: i64 = sqlx::query_scalar("UPDATE node_state SET value = value + 1 WHERE key = 'commits' RETURNING value")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        *self.chain_head.lock().expect("chain head lock") = head;
        Ok((outcomes, commits as u64))
    }
}

/// One part of a transaction: dedupe against the ids held (earlier parts included), gather every
/// job's rows, write them as multi-row statements, append them to the audit chain at `head`.
async fn apply_part(tx: &mut Transaction<'_, Sqlite>, jobs: &[WriteJob], head: &mut [u8; 32]) -> Result<Vec<JobOutcome>, StorageError> {
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
    *head = append_audit(tx, &rows.events, *head).await?;
    Ok(outcomes)
}

/// Whether the writer connection is outside any transaction (SQLite's autocommit mode).
async fn writer_in_autocommit(conn: &mut sqlx::pool::PoolConnection<Sqlite>) -> Result<bool, StorageError> {
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is a live connection, locked for the duration of this call.
    Ok(unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) } != 0)
}

async fn existing_ids(tx: &mut Transaction<'_, Sqlite>, ids: &[[u8; 32]]) -> Result<HashSet<[u8; 32]>, sqlx::Error> {
    Ok(positions(tx, ids).await?.into_keys().collect())
}

/// The position (`messages.seq`) of each of `ids` held, as this transaction sees them.
async fn positions(tx: &mut Transaction<'_, Sqlite>, ids: &[[u8; 32]]) -> Result<HashMap<[u8; 32], i64>, sqlx::Error> {
    let mut held = HashMap::new();
    for row in rows_with_ids(tx, "SELECT id, seq FROM messages WHERE id IN (", ids).await? {
        let id: Vec<u8> = row.get(0);
        if let Ok(id) = <[u8; 32]>::try_from(id.as_slice()) {
            held.insert(id, row.get(1));
        }
    }
    Ok(held)
}

/// The rows `select` (a query ending in `IN (`) finds for `ids`, a statement per chunk of them.
async fn rows_with_ids(tx: &mut Transaction<'_, Sqlite>, select: &str, ids: &[[u8; 32]]) -> Result<Vec<SqliteRow>, sqlx::Error> {
    let mut rows = Vec::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(select);
        let mut sep = q.separated(", ");
        for id in chunk {
            sep.push_bind(id.as_slice());
        }
        q.push(")");
        rows.extend(q.build().fetch_all(&mut **tx).await?);
    }
    Ok(rows)
}

async fn insert_rows(tx: &mut Transaction<'_, Sqlite>, rows: &Rows<'_>) -> Result<(), sqlx::Error> {
    for chunk in rows.messages.chunks(ROWS_PER_STATEMENT / 4) {
        QueryBuilder::<Sqlite>::new(
            "INSERT INTO messages (id, header, signature, payload, kind, sender, priority, created_at_ms, received_at_ms, received_from, hops) ",
        )
        .push_values(chunk, |mut b, m| {
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
        })
        .build()
        .execute(&mut **tx)
        .await?;
    }
    let cited: Vec<([u8; 32], [u8; 32])> =
        rows.messages.iter().flat_map(|m| citations::cited(&m.header).into_iter().map(|sha| (sha, m.id))).collect();
    insert_citations(tx, &cited).await?;
    for chunk in rows.outbox.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO outbox (message_seq, message_id, next_hop, recipients, priority, enqueued_at_ms) ");
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
    for chunk in rows.inbox.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO inbox (unit, message_id, delivered_at_ms, state) ");
        q.push_values(chunk, |mut b, i| {
            b.push_bind(i.unit.as_str()).push_bind(i.message_id.as_slice()).push_bind(i.delivered_at_ms).push_bind("delivered");
        });
        q.push(" ON CONFLICT (unit, message_id) DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    // After the messages: a status may be about a message taken in this same transaction.
    let tracking = tracking_of_held(&rows.tracking, &positions(tx, &tracked_ids(&rows.tracking)).await?);
    for chunk in tracking.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO tracking (message_seq, message_id, recipient, state_rank, state, node, at_ms, detail, receipt_id) ",
        );
        q.push_values(chunk, |mut b, (seq, t)| {
            b.push_bind(*seq)
                .push_bind(t.message_id.as_slice())
                .push_bind(t.recipient.as_str())
                .push_bind(state_rank(t.state))
                .push_bind(t.state.as_str())
                .push_bind(t.node.as_str())
                .push_bind(t.at_ms)
                .push_bind(t.detail.as_deref())
                .push_bind(t.receipt_id.as_ref().map(|r| r.as_slice()));
        });
        // `WHERE true` keeps SQLite's parser from reading ON CONFLICT as a join constraint.
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

/// Appends audit-log entries, chaining each to the one before; returns the new head hash.
async fn append_audit(tx: &mut Transaction<'_, Sqlite>, events: &[&EventRow], mut head: [u8; 32]) -> Result<[u8; 32], sqlx::Error> {
    let hashes: Vec<[u8; 32]> = events
        .iter()
        .map(|e| {
            head = e.chain_hash(&head);
            head
        })
        .collect();
    let rows: Vec<(&&EventRow, &[u8; 32])> = events.iter().zip(&hashes).collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT / 2) {
        QueryBuilder::<Sqlite>::new("INSERT INTO audit_log (at_ms, category, message_id, message_seq, event, unit, peer, detail, hash) ")
            .push_values(chunk, |mut b, (e, hash)| {
                let message_id = e.message_id.as_ref().map(|m| m.as_slice());
                b.push_bind(e.at_ms)
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
    Ok(head)
}

async fn apply_outbox_record(tx: &mut Transaction<'_, Sqlite>, r: &Record) -> Result<(), sqlx::Error> {
    for_keys_in_chunks(tx, "DELETE FROM outbox WHERE seq IN (", &r.outbox_done).await?;
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
/// transaction holds it, so the outcome agrees with every 签收 or 退回 ordered before it by the
/// single writer.
async fn apply_recalls(tx: &mut Transaction<'_, Sqlite>, recalls: &[&RecallRow], reported: &[&[u8; 32]]) -> Result<(), sqlx::Error> {
    for r in recalls {
        let sender: Option<String> = sqlx::query_scalar("SELECT sender FROM messages WHERE id = $1")
            .bind(r.message_id.as_slice())
            .fetch_optional(&mut **tx)
            .await?;
        let held = inbox_entry_state(tx, &r.unit, &r.message_id).await?;
        let decision = settlement::recall(sender.as_deref(), &r.original_sender, held.as_ref().map(|(state, receipt)| Entry { state, receipt_id: receipt.as_deref() }));
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
async fn inbox_entry_state(tx: &mut Transaction<'_, Sqlite>, unit: &str, message_id: &[u8; 32]) -> Result<Option<(String, Option<Vec<u8>>)>, sqlx::Error> {
    let row = sqlx::query("SELECT state, receipt_id FROM inbox WHERE unit = $1 AND message_id = $2")
        .bind(unit)
        .bind(message_id.as_slice())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Every inbox entry of `ids` (all units), as this transaction holds them: (unit, message id, state,
/// settling receipt id), for [`Settlements`].
async fn inbox_entries(tx: &mut Transaction<'_, Sqlite>, ids: &[[u8; 32]]) -> Result<Vec<(String, [u8; 32], String, Option<Vec<u8>>)>, sqlx::Error> {
    let rows = rows_with_ids(tx, "SELECT unit, message_id, state, receipt_id FROM inbox WHERE message_id IN (", ids).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let id: Vec<u8> = row.get(1);
            Some((row.get(0), <[u8; 32]>::try_from(id.as_slice()).ok()?, row.get(2), row.get(3)))
        })
        .collect())
}

/// Writes the settlements [`Settlements`] applied: each entry's new state and its receipt.
async fn write_settlements(tx: &mut Transaction<'_, Sqlite>, applied: &[(String, [u8; 32], &'static str, [u8; 32])]) -> Result<(), sqlx::Error> {
    for chunk in applied.chunks(ROWS_PER_STATEMENT / 4) {
        let mut q = QueryBuilder::<Sqlite>::new("WITH settled (unit, message_id, state, receipt_id) AS (");
        q.push_values(chunk, |mut b, (unit, id, state, receipt)| {
            b.push_bind(unit.as_str()).push_bind(id.as_slice()).push_bind(*state).push_bind(receipt.as_slice());
        });
        q.push(
            ") UPDATE inbox SET state = settled.state, receipt_id = settled.receipt_id FROM settled \
             WHERE inbox.unit = settled.unit AND inbox.message_id = settled.message_id",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;
    use crate::storage::Store;

    fn probe(at_ms: i64) -> WriteJob {
        WriteJob::Probe { at_ms }
    }

    async fn durable_probe(path: &Path) -> i64 {
        use sqlx::ConnectOptions;
        let mut fresh = SqliteConnectOptions::new().filename(path).read_only(true).connect().await.unwrap();
        sqlx::query_scalar("SELECT value FROM node_state WHERE key = 'probe'").fetch_one(&mut fresh).await.unwrap()
    }

    /// A `COMMIT` that fails leaves SQLite's transaction open (here: a deferred foreign key, the
    /// same as a disk that fills while the WAL is written). The next transaction must not nest inside
    /// it as a savepoint that only looks committed: the store finds the writer outside autocommit,
    /// reopens it, and what it reports committed is durable, as a fresh connection sees.
    #[tokio::test]
    async fn a_commit_after_a_failed_commit_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let store = SqliteStore::open_standalone(&path).await.unwrap();
        store.commit(&[probe(1)]).await.unwrap();
        {
            let mut conn = store.writer.acquire().await.unwrap();
            sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await.unwrap();
            sqlx::query("CREATE TABLE parent (id INTEGER PRIMARY KEY)").execute(&mut *conn).await.unwrap();
            sqlx::query("CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
                .execute(&mut *conn)
                .await
                .unwrap();
            let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
            sqlx::query("INSERT INTO child VALUES (42)").execute(&mut *tx).await.unwrap();
            assert!(tx.commit().await.is_err(), "the deferred constraint fails the COMMIT");
        }
        store.commit(&[probe(2)]).await.unwrap();
        assert_eq!(durable_probe(&path).await, 2, "what the store reported committed is durable");

        // A transaction begun behind sqlx's back (a raw BEGIN whose ROLLBACK never ran, as a cancelled
        // readiness probe once left): the store must not limp on a writer that refuses every BEGIN.
        {
            let mut conn = store.writer.acquire().await.unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.unwrap();
        }
        store.commit(&[probe(3)]).await.expect("the writer is reopened, not left inside the stray transaction");
        assert_eq!(durable_probe(&path).await, 3);
    }
}
