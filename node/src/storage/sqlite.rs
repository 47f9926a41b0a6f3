//! SQLite (WAL) implementation of [`Store`]: one writer connection fed by the group committer, a
//! separate pool of readers. Multi-row `INSERT … VALUES` statements carry a whole batch: on SQLite the
//! cost is per statement, not per row.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::*;

/// Rows per multi-row statement, well under SQLite's bound on bound variables.
const ROWS_PER_STATEMENT: usize = 400;

mod integrity;
pub(crate) mod mark;
pub(crate) mod paging;
pub mod recovery;
mod sharing;

use super::citations;
use super::gather::{self, Rows, collect_ids};
use super::health::StorageHealth;
use crate::retention;
use crate::settlement::{self, Entry, Settlement};

/// The embedded store.
pub struct SqliteStore {
    path: PathBuf,
    writer: SqlitePool,
    readers: SqlitePool,
    /// Hash of the last audit-log entry; only the committer writes, so this is the chain's head.
    chain_head: std::sync::Mutex<[u8; 32]>,
    /// The commit count beside the database (see `mark`).
    mark: mark::CommitMark,
    health: Arc<StorageHealth>,
}

/// How the database is checked when it is opened.
#[derive(Debug, Clone, Copy)]
pub struct OpenCheck {
    /// Time budget of `PRAGMA quick_check` at open; what is left runs in the background after start.
    pub budget: Duration,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, in WAL mode: checks it (see [`OpenCheck`]
    /// and `mark`), then runs the embedded migrations. A damaged file is refused with an error that
    /// names it; the node does not start on it.
    pub async fn open(path: &Path, health: Arc<StorageHealth>, check: OpenCheck) -> Result<SqliteStore, StorageError> {
        let base = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before anything is acknowledged, even across a power cut.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(false);
        // Checked before anything writes to the files: a refused database is left exactly as found.
        let mark = mark::CommitMark::open(path)?;
        let unfinished = if path.exists() {
            let found = integrity::inspect(&base, check.budget).await?;
            mark.check(found.commits)?;
            found.unfinished
        } else {
            // No database but a mark that counts commits: the file was destroyed or moved away.
            mark.check(0)?;
            false
        };
        // The writer keeps the indexes it updates in memory (32 MiB page cache); readers use the
        // default cache. Together they stay well within a node's memory budget. The WAL is cut back
        // to 64 MiB after checkpoints, so a burst does not keep its disk space for good.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .pragma("cache_size", "-32768")
                    .pragma("temp_store", "memory")
                    .pragma("journal_size_limit", "67108864"),
            )
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        backfill_citations(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(base.read_only(true))
            .await?;
        let head: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&writer)
            .await?;
        let head = match head {
            Some(h) => <[u8; 32]>::try_from(h.as_slice()).map_err(|_| StorageError::Corrupt("an audit hash is not 32 bytes".into()))?,
            None => [0; 32],
        };
        if unfinished {
            integrity::finish_in_background(readers.clone(), health.clone(), path.to_path_buf());
        }
        Ok(SqliteStore { path: path.to_path_buf(), writer, readers, chain_head: std::sync::Mutex::new(head), mark, health })
    }

    /// Opens a database outside a running node (tools, tests): no space reserve, metrics registered
    /// nowhere, the whole file checked.
    pub async fn open_standalone(path: &Path) -> Result<SqliteStore, StorageError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let health = Arc::new(StorageHealth::new(dir, 0, super::health::HealthMetrics::unregistered()));
        SqliteStore::open(path, health, OpenCheck { budget: Duration::from_secs(3600) }).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a storage operation, reporting its failure to the health state (a damaged page met by any
    /// read marks the node not ready).
    fn watched<'a, T: Send + 'a>(
        &'a self,
        op: impl std::future::Future<Output = Result<T, StorageError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, StorageError>> {
        Box::pin(async move {
            let result = op.await;
            if let Err(e) = &result {
                self.health.failed(e);
            }
            result
        })
    }

    /// Applies `jobs` in one transaction on the writer connection. After any failure the connection
    /// is closed (SQLite rolls back whatever it still had open) and a fresh one is opened for the next
    /// transaction: a failed `COMMIT` can leave a transaction open, and later transactions on that
    /// connection would only nest inside it as savepoints and never become durable.
    async fn commit_jobs(&self, jobs: &[WriteJob]) -> Result<Vec<JobOutcome>, StorageError> {
        let mut conn = self.writer.acquire().await?;
        if !writer_in_autocommit(&mut conn).await? {
            tracing::error!("the storage writer was left inside a transaction; reopening it");
            conn.close().await?;
            conn = self.writer.acquire().await?;
            if !writer_in_autocommit(&mut conn).await? {
                return Err(StorageError::Corrupt("a fresh writer connection is inside a transaction".into()));
            }
        }
        match self.apply_jobs(&mut conn, jobs).await {
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
}

impl SqliteStore {
    /// The transaction itself: dedupe against held ids, gather every job's rows, write them as
    /// multi-row statements, append the audit chain, count the commit. Returns the outcomes and the
    /// new commit count.
    async fn apply_jobs(&self, conn: &mut sqlx::pool::PoolConnection<Sqlite>, jobs: &[WriteJob]) -> Result<(Vec<JobOutcome>, u64), StorageError> {
        let mut tx = sqlx::Connection::begin(&mut **conn).await?;
        let mut ids = Vec::new();
        for j in jobs {
            match j {
                WriteJob::Custody(c) | WriteJob::SignFor { receipt: c, .. } => collect_ids(c, &mut ids),
                WriteJob::Record(_) | WriteJob::Admin { .. } | WriteJob::Sharing(_) | WriteJob::Probe { .. } => {}
            }
        }
        let mut held = existing_ids(&mut tx, &ids).await?;
        let mut rows = Rows::default();
        let mut outcomes = Vec::with_capacity(jobs.len());
        for j in jobs {
            let outcome = match j {
                WriteJob::Custody(c) => {
                    if rows.add_custody(c, &mut held) { JobOutcome::Stored } else { JobOutcome::Duplicate }
                }
                WriteJob::SignFor { unit, message_id, state, receipt } => {
                    let receipt_id = receipt.message.as_ref().map(|m| m.id).unwrap_or([0; 32]);
                    match sign_for(&mut tx, unit, message_id, state, &receipt_id).await? {
                        None => {
                            rows.add_custody(receipt, &mut held);
                            JobOutcome::Stored
                        }
                        Some(o) => o,
                    }
                }
                WriteJob::Record(r) => {
                    apply_outbox_record(&mut tx, r).await?;
                    rows.add_record(r);
                    JobOutcome::Stored
                }
                WriteJob::Admin { op, events } => {
                    let n = apply_admin(&mut tx, op).await?;
                    rows.events.extend(events);
                    JobOutcome::Affected(n)
                }
                WriteJob::Sharing(job) => {
                    let outcome = sharing::apply_job(&mut tx, job).await?;
                    if matches!(outcome, JobOutcome::Stored | JobOutcome::Affected(_)) {
                        let (messages, events) = sharing::job_parts(job);
                        for c in messages {
                            rows.add_custody(c, &mut held);
                        }
                        rows.events.extend(events);
                    }
                    outcome
                }
                WriteJob::Probe { at_ms } => {
                    sqlx::query("UPDATE node_state SET value = $1 WHERE key = 'probe'").bind(at_ms).execute(&mut *tx).await?;
                    JobOutcome::Stored
                }
            };
            outcomes.push(outcome);
        }
        insert_rows(&mut tx, &rows).await?;
        // After the inbox rows: a recall may arrive in the same batch as its document.
        apply_recalls(&mut tx, &rows.recalls, &rows.recalls_reported).await?;
        sharing::apply_rows(&mut tx, &rows.sharing).await?;
        let head = *self.chain_head.lock().expect("chain head lock");
        let new_head = append_audit(&mut tx, &rows.events, head).await?;
        let commits: i64 = sqlx::query_scalar("UPDATE node_state SET value = value + 1 WHERE key = 'commits' RETURNING value")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        *self.chain_head.lock().expect("chain head lock") = new_head;
        Ok((outcomes, commits as u64))
    }
}

/// Whether the writer connection is outside any transaction (SQLite's autocommit mode).
async fn writer_in_autocommit(conn: &mut sqlx::pool::PoolConnection<Sqlite>) -> Result<bool, StorageError> {
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is a live connection, locked for the duration of this call.
    Ok(unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) } != 0)
}

async fn existing_ids(tx: &mut Transaction<'_, Sqlite>, ids: &[[u8; 32]]) -> Result<HashSet<[u8; 32]>, sqlx::Error> {
    let mut held = HashSet::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT id FROM messages WHERE id IN (");
        let mut sep = q.separated(", ");
        for id in chunk {
            sep.push_bind(id.as_slice());
        }
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            let id: Vec<u8> = row.get(0);
            if let Ok(id) = <[u8; 32]>::try_from(id.as_slice()) {
                held.insert(id);
            }
        }
    }
    Ok(held)
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
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO outbox (message_id, next_hop, recipients, priority, enqueued_at_ms) ");
        q.push_values(chunk, |mut b, o| {
            b.push_bind(o.message_id.as_slice())
                .push_bind(o.next_hop.as_str())
                .push_bind(o.recipients.as_str())
                .push_bind(o.priority as i64)
                .push_bind(o.enqueued_at_ms);
        });
        q.push(" ON CONFLICT (message_id, next_hop) DO NOTHING");
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
    for chunk in rows.tracking.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO tracking (message_id, recipient, state_rank, state, node, at_ms, detail, receipt_id) ",
        );
        q.push_values(chunk, |mut b, t| {
            b.push_bind(t.message_id.as_slice())
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
            " ON CONFLICT (message_id, recipient) DO UPDATE SET state_rank = excluded.state_rank, \
             state = excluded.state, node = excluded.node, at_ms = excluded.at_ms, detail = excluded.detail, \
             receipt_id = COALESCE(excluded.receipt_id, tracking.receipt_id) \
             WHERE excluded.state_rank > tracking.state_rank",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Records which attachments messages cite (`(sha256, message id)` pairs); a pair held already is
/// kept as it is.
async fn insert_citations(tx: &mut Transaction<'_, Sqlite>, cited: &[([u8; 32], [u8; 32])]) -> Result<(), sqlx::Error> {
    for chunk in cited.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO cited_attachments (sha256, message_id) ");
        q.push_values(chunk, |mut b, (sha, id)| {
            b.push_bind(sha.as_slice()).push_bind(id.as_slice());
        });
        q.push(" ON CONFLICT (sha256, message_id) DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Records the citations of messages stored before `cited_attachments` existed (migration 0011), a
/// page per transaction so a large database does not hold one huge transaction; resumes where an
/// interrupted run stopped. Runs at open, before the node writes anything else.
async fn backfill_citations(writer: &SqlitePool) -> Result<(), StorageError> {
    const PAGE: i64 = 500;
    loop {
        let mut tx = writer.begin().await?;
        let done: i64 = sqlx::query_scalar("SELECT value FROM node_state WHERE key = 'citations_backfill'").fetch_one(&mut *tx).await?;
        if done < 0 {
            return Ok(());
        }
        let page = sqlx::query("SELECT seq, id, header FROM messages WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(done)
            .bind(PAGE)
            .fetch_all(&mut *tx)
            .await?;
        let mut cited = Vec::new();
        let mut last = -1;
        for r in &page {
            last = r.get(0);
            let id = to_id(r.get(1))?;
            let header: Vec<u8> = r.get(2);
            cited.extend(citations::cited(&header).into_iter().map(|sha| (sha, id)));
        }
        insert_citations(&mut tx, &cited).await?;
        sqlx::query("UPDATE node_state SET value = $1 WHERE key = 'citations_backfill'").bind(last).execute(&mut *tx).await?;
        tx.commit().await?;
        if page.is_empty() {
            return Ok(());
        }
    }
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
        QueryBuilder::<Sqlite>::new("INSERT INTO audit_log (at_ms, category, message_id, event, unit, peer, detail, hash) ")
            .push_values(chunk, |mut b, (e, hash)| {
                b.push_bind(e.at_ms)
                    .push_bind(e.category)
                    .push_bind(e.message_id.as_ref().map(|m| m.as_slice()))
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

/// `WHERE seq IN (...)` for a selection, or nothing for all.
fn push_selection(q: &mut QueryBuilder<Sqlite>, seqs: &Option<Vec<i64>>) {
    if let Some(seqs) = seqs {
        q.push(" AND seq IN (");
        let mut sep = q.separated(", ");
        for s in seqs {
            sep.push_bind(*s);
        }
        sep.push_unseparated(")");
    }
}

async fn apply_admin(tx: &mut Transaction<'_, Sqlite>, op: &AdminOp) -> Result<u64, sqlx::Error> {
    Ok(match op {
        AdminOp::PutSegment(seg) => sqlx::query(
            "INSERT INTO directory_segments (owner, version, header, signature, payload, stored_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (owner) DO UPDATE SET version = excluded.version, header = excluded.header, signature = excluded.signature, \
             payload = excluded.payload, stored_at_ms = excluded.stored_at_ms WHERE excluded.version > directory_segments.version",
        )
        .bind(seg.owner.as_str())
        .bind(seg.version)
        .bind(seg.header.as_slice())
        .bind(seg.signature.as_slice())
        .bind(seg.payload.as_slice())
        .bind(exchange_wire::now_ms() as i64)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        AdminOp::IssueToken(t) => sqlx::query(
            "INSERT INTO unit_tokens (id, hash, unit, label, issued_at_ms, revoked_at_ms) VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(t.id.as_str())
        .bind(t.hash.as_slice())
        .bind(t.unit.as_str())
        .bind(t.label.as_str())
        .bind(t.issued_at_ms)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        AdminOp::RevokeToken { id, at_ms } => sqlx::query("UPDATE unit_tokens SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL")
            .bind(*at_ms)
            .bind(id.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected(),
        AdminOp::SetWebhook { unit, url, from_seq, restart } => sqlx::query(
            "INSERT INTO webhooks (unit, url, registered_at_ms, pushed_seq) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (unit) DO UPDATE SET url = excluded.url, registered_at_ms = excluded.registered_at_ms, \
             pushed_seq = CASE WHEN $5 THEN excluded.pushed_seq ELSE webhooks.pushed_seq END",
        )
        .bind(unit.as_str())
        .bind(url.as_str())
        .bind(exchange_wire::now_ms() as i64)
        .bind(*from_seq)
        .bind(*restart)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        AdminOp::RemoveWebhook { unit } => {
            sqlx::query("DELETE FROM webhooks WHERE unit = $1").bind(unit.as_str()).execute(&mut **tx).await?.rows_affected()
        }
        AdminOp::AdvanceWebhook { unit, seq } => sqlx::query("UPDATE webhooks SET pushed_seq = $1 WHERE unit = $2 AND pushed_seq < $1")
            .bind(*seq)
            .bind(unit.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected(),
        AdminOp::ResendDead(seqs) => {
            let mut q = QueryBuilder::<Sqlite>::new("UPDATE outbox SET dead_reason = NULL, attempts = 0 WHERE dead_reason IS NOT NULL");
            push_selection(&mut q, seqs);
            q.build().execute(&mut **tx).await?.rows_affected()
        }
        AdminOp::PurgeDead(seqs) => {
            let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM outbox WHERE dead_reason IS NOT NULL");
            push_selection(&mut q, seqs);
            q.build().execute(&mut **tx).await?.rows_affected()
        }
        AdminOp::Retention { before_ms } => apply_retention(tx, *before_ms).await?,
    })
}

/// A purge as the [`retention`] rules decide it: settled inbox entries first, then the payloads
/// nothing needs any more. The id rows stay, so a late re-send is still recognised as a duplicate.
async fn apply_retention(tx: &mut Transaction<'_, Sqlite>, before_ms: i64) -> Result<u64, sqlx::Error> {
    let entries = sqlx::query("SELECT seq, state, delivered_at_ms FROM inbox WHERE delivered_at_ms < $1").bind(before_ms).fetch_all(&mut **tx).await?;
    let retired: Vec<i64> = entries
        .iter()
        .filter(|r| retention::retires_entry(retention::InboxEntry { state: r.get(1), delivered_at_ms: r.get(2) }, before_ms))
        .map(|r| r.get(0))
        .collect();
    for_keys_in_chunks(tx, "DELETE FROM inbox WHERE seq IN (", &retired).await?;
    let held = sqlx::query(
        // Uncorrelated `IN` subqueries: each list is built once, not scanned per message.
        "SELECT seq, received_at_ms, id IN (SELECT message_id FROM outbox), id IN (SELECT message_id FROM inbox) \
         FROM messages WHERE received_at_ms < $1 AND length(payload) > 0",
    )
    .bind(before_ms)
    .fetch_all(&mut **tx)
    .await?;
    let dropped: Vec<i64> = held
        .iter()
        .filter(|r| retention::drops_payload(retention::HeldMessage { received_at_ms: r.get(1), in_outbox: r.get(2), in_inbox: r.get(3) }, before_ms))
        .map(|r| r.get(0))
        .collect();
    for_keys_in_chunks(tx, "UPDATE messages SET payload = x'' WHERE seq IN (", &dropped).await?;
    Ok((retired.len() + dropped.len()) as u64)
}

/// Runs `statement` (ending in `IN (`) for `keys`, a statement per [`ROWS_PER_STATEMENT`] keys.
async fn for_keys_in_chunks(tx: &mut Transaction<'_, Sqlite>, statement: &str, keys: &[i64]) -> Result<(), sqlx::Error> {
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(statement);
        let mut sep = q.separated(", ");
        for k in chunk {
            sep.push_bind(*k);
        }
        q.push(")");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// A 签收 or 退回 as [`settlement::settle`] decides it; `Ok(None)` when it applied, `Ok(Some(outcome))`
/// when it did not.
async fn sign_for(
    tx: &mut Transaction<'_, Sqlite>,
    unit: &str,
    message_id: &[u8; 32],
    state: &str,
    receipt_id: &[u8; 32],
) -> Result<Option<JobOutcome>, sqlx::Error> {
    let held = inbox_entry_state(tx, unit, message_id).await?;
    let entry = held.as_ref().map(|(state, receipt)| Entry { state, receipt_id: receipt.as_deref() });
    Ok(match settlement::settle(entry, unit, message_id, receipt_id) {
        Settlement::Apply => {
            sqlx::query("UPDATE inbox SET state = $1, receipt_id = $2 WHERE unit = $3 AND message_id = $4")
                .bind(state)
                .bind(receipt_id.as_slice())
                .bind(unit)
                .bind(message_id.as_slice())
                .execute(&mut **tx)
                .await?;
            None
        }
        Settlement::Duplicate => Some(JobOutcome::Duplicate),
        Settlement::Conflict(why) => Some(JobOutcome::Conflict(why)),
    })
}

fn to_id(v: Vec<u8>) -> Result<[u8; 32], StorageError> {
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| StorageError::Corrupt("a message id is not 32 bytes".into()))
}

fn inbox_record(r: sqlx::sqlite::SqliteRow) -> Result<InboxRecord, StorageError> {
    Ok(InboxRecord {
        seq: r.get(0),
        message_id: to_id(r.get(1))?,
        delivered_at_ms: r.get(2),
        state: r.get(3),
        header: r.get(4),
        signature: r.get(5),
        payload: r.get(6),
    })
}

const AUDIT_SELECT: &str = "SELECT seq, at_ms, category, message_id, event, unit, peer, detail, hash FROM audit_log ";

fn event_record(r: sqlx::sqlite::SqliteRow) -> EventRecord {
    EventRecord {
        seq: r.get(0),
        at_ms: r.get(1),
        category: r.get(2),
        message_id: r.get(3),
        event: r.get(4),
        unit: r.get(5),
        peer: r.get(6),
        detail: r.get(7),
        hash: r.get(8),
    }
}

const INBOX_SELECT: &str = "SELECT i.seq, i.message_id, i.delivered_at_ms, i.state, m.header, m.signature, m.payload \
     FROM inbox i JOIN messages m ON m.id = i.message_id ";

impl Store for SqliteStore {
    fn commit<'a>(&'a self, jobs: &'a [WriteJob]) -> BoxFuture<'a, Result<Vec<JobOutcome>, StorageError>> {
        self.watched(self.commit_jobs(jobs))
    }

    fn outbox_batch<'a>(&'a self, hop: &'a str, max_messages: usize, max_bytes: usize)
        -> BoxFuture<'a, Result<Vec<OutboxItem>, StorageError>> {
        self.watched(paging::outbox_batch(&self.readers, hop, max_messages, max_bytes))
    }

    fn inbox<'a>(&'a self, unit: &'a str, after: i64, limit: u32, max_bytes: usize) -> BoxFuture<'a, Result<Vec<InboxRecord>, StorageError>> {
        self.watched(paging::inbox(&self.readers, unit, after, limit, max_bytes))
    }

    fn inbox_unsettled<'a>(&'a self, unit: &'a str, after: i64, limit: u32) -> BoxFuture<'a, Result<Vec<InboxHeader>, StorageError>> {
        self.watched(paging::inbox_unsettled(&self.readers, unit, after, limit))
    }

    fn inbox_entry<'a>(&'a self, unit: &'a str, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Option<InboxRecord>, StorageError>> {
        self.watched(async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{INBOX_SELECT} WHERE i.unit = $1 AND i.message_id = $2")))
                .bind(unit)
                .bind(id.as_slice())
                .fetch_optional(&self.readers)
                .await?;
            row.map(inbox_record).transpose()
        })
    }

    fn message<'a>(&'a self, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Option<StoredMessage>, StorageError>> {
        self.watched(async move {
            let row = sqlx::query("SELECT header, signature, payload, hops FROM messages WHERE id = $1")
                .bind(id.as_slice())
                .fetch_optional(&self.readers)
                .await?;
            Ok(row.map(|r| StoredMessage { header: r.get(0), signature: r.get(1), payload: r.get(2), hops: r.get(3) }))
        })
    }

    fn tracking<'a>(&'a self, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Vec<TrackingRecord>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(
                "SELECT recipient, state, node, at_ms, detail, receipt_id FROM tracking WHERE message_id = $1 ORDER BY recipient",
            )
            .bind(id.as_slice())
            .fetch_all(&self.readers)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| TrackingRecord {
                    recipient: r.get(0),
                    state: r.get(1),
                    node: r.get(2),
                    at_ms: r.get(3),
                    detail: r.get(4),
                    receipt_id: r.get(5),
                })
                .collect())
        })
    }

    fn events<'a>(&'a self, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Vec<EventRecord>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{AUDIT_SELECT} WHERE message_id = $1 ORDER BY seq")))
                .bind(id.as_slice())
                .fetch_all(&self.readers)
                .await?;
            Ok(rows.into_iter().map(event_record).collect())
        })
    }

    fn audit_page(&self, after: i64, limit: u32) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{AUDIT_SELECT} WHERE seq > $1 ORDER BY seq LIMIT $2")))
                .bind(after)
                .bind(limit as i64)
                .fetch_all(&self.readers)
                .await?;
            Ok(rows.into_iter().map(event_record).collect())
        })
    }

    fn audit_verify(&self) -> BoxFuture<'_, Result<ChainCheck, StorageError>> {
        self.watched(gather::verify_chain(self))
    }

    fn queue_stats(&self) -> BoxFuture<'_, Result<Vec<QueueStat>, StorageError>> {
        self.watched(async move {
            // The sizes are taken row by row first (MATERIALIZED): grouped directly, SQLite would copy
            // every payload into its GROUP BY sorter to take its length there (gigabytes, each second).
            let rows = sqlx::query(
                "WITH r AS MATERIALIZED (SELECT o.next_hop AS hop, o.dead_reason IS NULL AS live, length(m.payload) AS bytes, \
                        o.enqueued_at_ms AS at FROM outbox o JOIN messages m ON m.id = o.message_id) \
                 SELECT hop, SUM(live), COALESCE(SUM(CASE WHEN live THEN bytes ELSE 0 END), 0), MIN(CASE WHEN live THEN at END), \
                        SUM(NOT live) \
                 FROM r GROUP BY hop",
            )
            .fetch_all(&self.readers)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| QueueStat { hop: r.get(0), depth: r.get(1), bytes: r.get(2), oldest_enqueued_ms: r.get(3), dead: r.get(4) })
                .collect())
        })
    }

    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetterRecord>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(
                "SELECT seq, message_id, next_hop, recipients, dead_reason, enqueued_at_ms, attempts FROM outbox \
                 WHERE dead_reason IS NOT NULL ORDER BY seq",
            )
            .fetch_all(&self.readers)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| DeadLetterRecord {
                    seq: r.get(0),
                    message_id: r.get(1),
                    hop: r.get(2),
                    recipients: r.get(3),
                    reason: r.get(4),
                    enqueued_at_ms: r.get(5),
                    attempts: r.get(6),
                })
                .collect())
        })
    }

    fn unreported_recalls(&self) -> BoxFuture<'_, Result<Vec<RecallOutcomeRow>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(
                "SELECT recall_id, message_id, unit, outcome, original_sender, priority FROM recall_outcomes WHERE reported = 0 ORDER BY recall_id, unit",
            )
            .fetch_all(&self.readers)
            .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(RecallOutcomeRow {
                        recall_id: to_id(r.get(0))?,
                        message_id: to_id(r.get(1))?,
                        unit: r.get(2),
                        outcome: r.get(3),
                        original_sender: r.get(4),
                        priority: r.get::<i64, _>(5) as u8,
                    })
                })
                .collect()
        })
    }

    fn attachment_in_use<'a>(&'a self, sha256_hex: &'a str, before_ms: i64) -> BoxFuture<'a, Result<bool, StorageError>> {
        self.watched(async move {
            let Some(sha) = citations::digest_of_hex(sha256_hex) else { return Ok(false) };
            let used: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM cited_attachments c JOIN messages m ON m.id = c.message_id WHERE c.sha256 = $1 \
                 AND (m.received_at_ms >= $2 OR EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = c.message_id) \
                      OR EXISTS (SELECT 1 FROM inbox i WHERE i.message_id = c.message_id)))",
            )
            .bind(sha.as_slice())
            .bind(before_ms)
            .fetch_one(&self.readers)
            .await?;
            Ok(used)
        })
    }

    fn documents_readable_by<'a>(&'a self, sha256_hex: &'a str, unit: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<Vec<u8>>, StorageError>> {
        self.watched(async move {
            let Some(sha) = citations::digest_of_hex(sha256_hex) else { return Ok(Vec::new()) };
            let headers = sqlx::query_scalar(
                "SELECT m.header FROM cited_attachments c JOIN messages m ON m.id = c.message_id \
                 WHERE c.sha256 = $1 AND m.kind = 'document' \
                 AND (m.sender = $2 OR EXISTS (SELECT 1 FROM inbox i WHERE i.message_id = m.id AND i.unit = $2 AND i.state != 'recalled')) \
                 ORDER BY m.seq DESC LIMIT $3",
            )
            .bind(sha.as_slice())
            .bind(unit)
            .bind(limit as i64)
            .fetch_all(&self.readers)
            .await?;
            Ok(headers)
        })
    }

    fn open_queries(&self) -> BoxFuture<'_, Result<Vec<([u8; 32], Vec<u8>)>, StorageError>> {
        self.watched(async move {
            // Ranks 0, 1 and 3: accepted, in transit, delivered (failed and settled are outcomes).
            let rows = sqlx::query(
                "SELECT DISTINCT m.id, m.header FROM tracking t JOIN messages m ON m.id = t.message_id \
                 WHERE t.state_rank IN (0, 1, 3) AND m.kind = 'query'",
            )
            .fetch_all(&self.readers)
            .await?;
            rows.into_iter().map(|r| Ok((to_id(r.get(0))?, r.get(1)))).collect()
        })
    }

    fn inbox_last_seq<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<i64, StorageError>> {
        self.watched(async move {
            let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM inbox WHERE unit = $1").bind(unit).fetch_one(&self.readers).await?;
            Ok(last.unwrap_or(0))
        })
    }

    fn webhooks(&self) -> BoxFuture<'_, Result<Vec<WebhookRow>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query("SELECT unit, url, pushed_seq FROM webhooks ORDER BY unit").fetch_all(&self.readers).await?;
            Ok(rows.into_iter().map(|r| WebhookRow { unit: r.get(0), url: r.get(1), pushed_seq: r.get(2) }).collect())
        })
    }

    fn segments(&self) -> BoxFuture<'_, Result<Vec<SegmentRow>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query("SELECT owner, version, header, signature, payload FROM directory_segments ORDER BY owner")
                .fetch_all(&self.readers)
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| SegmentRow { owner: r.get(0), version: r.get(1), header: r.get(2), signature: r.get(3), payload: r.get(4) })
                .collect())
        })
    }

    fn tokens(&self) -> BoxFuture<'_, Result<Vec<TokenRow>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query("SELECT id, hash, unit, label, issued_at_ms, revoked_at_ms FROM unit_tokens ORDER BY issued_at_ms")
                .fetch_all(&self.readers)
                .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(TokenRow {
                        id: r.get(0),
                        hash: to_id(r.get(1))?,
                        unit: r.get(2),
                        label: r.get(3),
                        issued_at_ms: r.get(4),
                        revoked_at_ms: r.get(5),
                    })
                })
                .collect()
        })
    }

    fn sharing(&self) -> &dyn crate::storage::sharing::SharingStore {
        self
    }

    fn recovery(&self) -> &dyn crate::storage::recovery::RecoveryStore {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

#[cfg(test)]
mod citation_backfill {
    use super::*;

    /// A database written before `cited_attachments` existed: its messages are recorded when the node
    /// opens it, so attachments they cite are still found (not dropped as unused).
    #[tokio::test]
    async fn messages_stored_before_the_table_are_recorded_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let sha = [0x42; 32];
        let hex = exchange_wire::Digest(sha).to_hex();
        {
            let store = SqliteStore::open_standalone(&path).await.unwrap();
            let mut doc = crate::storage::conformance::document(1, 2, None, &[crate::storage::conformance::UNIT_A], 10);
            let mut env = exchange_wire::Envelope::new(
                exchange_wire::Kind::Document,
                "gz.yuexiu/liurong-street".parse().unwrap(),
                vec![crate::storage::conformance::UNIT_A.parse().unwrap()],
                vec![],
                exchange_wire::Priority::Routine,
                b"x",
            );
            let a = exchange_wire::document::Attachment { name: "a.pdf".into(), media_type: "application/pdf".into(), size: 1, sha256: exchange_wire::Digest(sha) };
            a.describe(1, &mut env.metadata);
            doc.message.as_mut().unwrap().header = env.canonical_bytes();
            store.commit(&[WriteJob::Custody(doc)]).await.unwrap();
            assert!(store.attachment_in_use(&hex, 100).await.unwrap());
            // As the database was before migration 0011: no citations, the back-fill not begun.
            sqlx::query("DELETE FROM cited_attachments").execute(&store.writer).await.unwrap();
            sqlx::query("UPDATE node_state SET value = 0 WHERE key = 'citations_backfill'").execute(&store.writer).await.unwrap();
            assert!(!store.attachment_in_use(&hex, 100).await.unwrap(), "nothing recorded");
        }
        let store = SqliteStore::open_standalone(&path).await.unwrap();
        assert!(store.attachment_in_use(&hex, 100).await.unwrap(), "recorded at open");
        assert_eq!(store.documents_readable_by(&hex, crate::storage::conformance::UNIT_A, 10).await.unwrap().len(), 1);
        let done: i64 = sqlx::query_scalar("SELECT value FROM node_state WHERE key = 'citations_backfill'").fetch_one(&store.writer).await.unwrap();
        assert_eq!(done, -1, "done, and not repeated at the next open");
    }
}
