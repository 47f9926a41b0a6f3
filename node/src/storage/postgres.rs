//! PostgreSQL implementation of [`Store`], chosen with `storage.url = "postgres://…"`: for sites that
//! run their important systems on PostgreSQL (replication, base backups, failover they already
//! operate). The tables are those of the SQLite store (`migrations/postgres`); the rules are the same
//! Rust functions (`settlement`, `retention`), called inside the transaction.
//!
//! **Ordering.** Every write transaction takes one transaction-scoped advisory lock
//! ([`WRITE_LOCK`]) before it reads or writes anything, and holds it until it commits or rolls back.
//! Within one node the group committer is the only writer already; the lock makes the same true for
//! every process writing this database (a second replica, a tool), so:
//! - duplicates are decided against everything committed before (the id check, then
//!   `INSERT … ON CONFLICT DO NOTHING` as the enforcement);
//! - sequence positions (inbox, outbox, messages) are taken and become visible in the same order:
//!   a transaction that took a lower position has committed before the next one takes any, so a
//!   reader paging "after position N" never misses a row that commits later below N. Gaps left by
//!   rolled-back transactions are harmless to such cursors;
//! - the audit chain is numbered here, head + 1, read inside the lock: no gaps, no fork.
//!
//! **Acknowledgement.** [`Store::commit`] returns `Ok` only after PostgreSQL confirmed the `COMMIT`;
//! any error (including a connection lost during `COMMIT`, whose outcome is unknown) is returned
//! as an error and nothing is acknowledged: the sender retries, and the retry is recognised by id.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use super::*;

pub mod lease;
mod reads;
mod recovery;
pub mod scratch;
mod sharing;

use super::citations;
use super::gather::{Rows, collect_ids};
use super::health::StorageHealth;
use crate::retention;
use crate::settlement::{self, Entry, Settlement};

/// Rows per multi-row statement (PostgreSQL allows 65,535 bound values per statement).
const ROWS_PER_STATEMENT: usize = 400;

/// The advisory lock every write transaction holds (an arbitrary constant: "GOVX" in ASCII).
pub const WRITE_LOCK: i64 = 0x474F_5658;

/// The PostgreSQL store: one pool, shared by the committer and the reads.
pub struct PgStore {
    pool: PgPool,
    health: Arc<StorageHealth>,
    /// The lease of an active replica (see `lease`); `None` for tools and tests that write without one.
    lease: Option<lease::Lease>,
}

impl PgStore {
    /// Connects to `url` and runs the PostgreSQL migrations.
    /// Without a lease: for tools and tests (a running node uses [`PgStore::open_active`]).
    pub async fn open(url: &str, health: Arc<StorageHealth>) -> Result<PgStore, StorageError> {
        let pool = PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(30)).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool, health, lease: None })
    }

    /// Waits until this replica holds the database's lease (returning at once when no other replica
    /// does), then opens the store; every write is fenced by the lease from then on (see `lease`).
    pub async fn open_active(url: &str, health: Arc<StorageHealth>) -> Result<PgStore, StorageError> {
        let lease = lease::Lease::acquire(url, health.clone()).await?;
        PgStore::open_leased(url, health, lease).await
    }

    /// Opens the store for the replica holding `lease` (see [`crate::replica`]).
    pub async fn open_leased(url: &str, health: Arc<StorageHealth>, lease: lease::Lease) -> Result<PgStore, StorageError> {
        let mut store = PgStore::open(url, health).await?;
        store.lease = Some(lease);
        Ok(store)
    }

    /// Opens a database outside a running node (tools, tests): metrics registered nowhere.
    pub async fn open_standalone(url: &str) -> Result<PgStore, StorageError> {
        let health = Arc::new(StorageHealth::new(&std::env::temp_dir(), 0, super::health::HealthMetrics::unregistered()));
        PgStore::open(url, health).await
    }

    /// The connection pool (tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs a storage operation, reporting its failure to the health state.
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

    /// The transaction itself: take the write lock, dedupe against held ids, gather every job's rows,
    /// write them as multi-row statements, append the audit chain, count the commit, commit. A
    /// failure anywhere drops the transaction (rolled back) and is returned.
    async fn commit_jobs(&self, jobs: &[WriteJob]) -> Result<Vec<JobOutcome>, StorageError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK).execute(&mut *tx).await?;
        if let Some(lease) = &self.lease {
            if let Err(e) = lease.check(&mut tx).await {
                self.health.mark_damaged("this replica lost its lease on the database: another replica is active; restart it as a standby");
                return Err(e);
            }
        }
        let mut ids = Vec::new();
        for j in jobs {
            if let WriteJob::Custody(c) | WriteJob::SignFor { receipt: c, .. } = j {
                collect_ids(c, &mut ids);
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
        append_audit(&mut tx, &rows.events).await?;
        sqlx::query("UPDATE node_state SET value = value + 1 WHERE key = 'commits'").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(outcomes)
    }
}

async fn existing_ids(tx: &mut Transaction<'_, Postgres>, ids: &[[u8; 32]]) -> Result<HashSet<[u8; 32]>, sqlx::Error> {
    let mut held = HashSet::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT * 10) {
        let list: Vec<Vec<u8>> = chunk.iter().map(|id| id.to_vec()).collect();
        let found: Vec<Vec<u8>> = sqlx::query_scalar("SELECT id FROM messages WHERE id = ANY($1)").bind(list).fetch_all(&mut **tx).await?;
        held.extend(found.iter().filter_map(|id| <[u8; 32]>::try_from(id.as_slice()).ok()));
    }
    Ok(held)
}

/// Tracking facts of one transaction folded to one per (message, recipient), as applying them one
/// after another would leave it: a fact replaces the one before only if it ranks higher, keeping the
/// earlier receipt id when it has none. PostgreSQL refuses an upsert that meets the same row twice in
/// one statement, so the batch is folded first; the upsert then applies the same rule against the
/// stored row.
fn fold_tracking<'a>(rows: &[&'a TrackingRow]) -> Vec<(TrackingRow, i64)> {
    let mut out: Vec<(TrackingRow, i64)> = Vec::new();
    let mut at: std::collections::HashMap<(&'a [u8; 32], &'a str), usize> = std::collections::HashMap::new();
    for t in rows {
        let rank = state_rank(t.state);
        match at.get(&(&t.message_id, t.recipient.as_str())) {
            Some(&i) => {
                if rank > out[i].1 {
                    let receipt = t.receipt_id.or(out[i].0.receipt_id);
                    out[i] = ((*t).clone(), rank);
                    out[i].0.receipt_id = receipt;
                }
            }
            None => {
                at.insert((&t.message_id, t.recipient.as_str()), out.len());
                out.push(((*t).clone(), rank));
            }
        }
    }
    out
}

async fn insert_rows(tx: &mut Transaction<'_, Postgres>, rows: &Rows<'_>) -> Result<(), sqlx::Error> {
    for chunk in rows.messages.chunks(ROWS_PER_STATEMENT / 4) {
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
        // The id check above already left out held ids; this is the database enforcing it.
        q.push(" ON CONFLICT (id) DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    let cited: Vec<([u8; 32], [u8; 32])> =
        rows.messages.iter().flat_map(|m| citations::cited(&m.header).into_iter().map(|sha| (sha, m.id))).collect();
    for chunk in cited.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Postgres>::new("INSERT INTO cited_attachments (sha256, message_id) ");
        q.push_values(chunk, |mut b, (sha, id)| {
            b.push_bind(sha.as_slice()).push_bind(id.as_slice());
        });
        q.push(" ON CONFLICT (sha256, message_id) DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    for chunk in rows.outbox.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Postgres>::new("INSERT INTO outbox (message_id, next_hop, recipients, priority, enqueued_at_ms) ");
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
        let mut q = QueryBuilder::<Postgres>::new("INSERT INTO inbox (unit, message_id, delivered_at_ms, state) ");
        q.push_values(chunk, |mut b, i| {
            b.push_bind(i.unit.as_str()).push_bind(i.message_id.as_slice()).push_bind(i.delivered_at_ms).push_bind("delivered");
        });
        q.push(" ON CONFLICT (unit, message_id) DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    let tracking = fold_tracking(&rows.tracking);
    for chunk in tracking.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO tracking (message_id, recipient, state_rank, state, node, at_ms, detail, receipt_id) ",
        );
        q.push_values(chunk, |mut b, (t, rank)| {
            b.push_bind(t.message_id.as_slice())
                .push_bind(t.recipient.as_str())
                .push_bind(*rank)
                .push_bind(t.state.as_str())
                .push_bind(t.node.as_str())
                .push_bind(t.at_ms)
                .push_bind(t.detail.as_deref())
                .push_bind(t.receipt_id.as_ref().map(|r| r.as_slice()));
        });
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
        QueryBuilder::<Postgres>::new("INSERT INTO audit_log (seq, at_ms, category, message_id, event, unit, peer, detail, hash) ")
            .push_values(chunk, |mut b, (seq, e, hash)| {
                b.push_bind(*seq)
                    .push_bind(e.at_ms)
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

/// A 签收 or 退回 as [`settlement::settle`] decides it; `Ok(None)` when it applied.
async fn sign_for(
    tx: &mut Transaction<'_, Postgres>,
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

/// `AND seq = ANY(...)` for a selection, or nothing for all.
fn push_selection(q: &mut QueryBuilder<Postgres>, seqs: &Option<Vec<i64>>) {
    if let Some(seqs) = seqs {
        q.push(" AND seq = ANY(");
        q.push_bind(seqs.clone());
        q.push(")");
    }
}

async fn apply_admin(tx: &mut Transaction<'_, Postgres>, op: &AdminOp) -> Result<u64, sqlx::Error> {
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
        AdminOp::IssueToken(t) => {
            sqlx::query("INSERT INTO unit_tokens (id, hash, unit, label, issued_at_ms, revoked_at_ms) VALUES ($1, $2, $3, $4, $5, NULL)")
                .bind(t.id.as_str())
                .bind(t.hash.as_slice())
                .bind(t.unit.as_str())
                .bind(t.label.as_str())
                .bind(t.issued_at_ms)
                .execute(&mut **tx)
                .await?
                .rows_affected()
        }
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
            let mut q = QueryBuilder::<Postgres>::new("UPDATE outbox SET dead_reason = NULL, attempts = 0 WHERE dead_reason IS NOT NULL");
            push_selection(&mut q, seqs);
            q.build().execute(&mut **tx).await?.rows_affected()
        }
        AdminOp::PurgeDead(seqs) => {
            let mut q = QueryBuilder::<Postgres>::new("DELETE FROM outbox WHERE dead_reason IS NOT NULL");
            push_selection(&mut q, seqs);
            q.build().execute(&mut **tx).await?.rows_affected()
        }
        AdminOp::Retention { before_ms } => apply_retention(tx, *before_ms).await?,
    })
}

/// A purge as the [`retention`] rules decide it (see the SQLite store).
async fn apply_retention(tx: &mut Transaction<'_, Postgres>, before_ms: i64) -> Result<u64, sqlx::Error> {
    let entries = sqlx::query("SELECT seq, state, delivered_at_ms FROM inbox WHERE delivered_at_ms < $1").bind(before_ms).fetch_all(&mut **tx).await?;
    let retired: Vec<i64> = entries
        .iter()
        .filter(|r| retention::retires_entry(retention::InboxEntry { state: r.get(1), delivered_at_ms: r.get(2) }, before_ms))
        .map(|r| r.get(0))
        .collect();
    if !retired.is_empty() {
        sqlx::query("DELETE FROM inbox WHERE seq = ANY($1)").bind(&retired).execute(&mut **tx).await?;
    }
    let held = sqlx::query(
        "SELECT m.seq, m.received_at_ms, EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id), \
         EXISTS (SELECT 1 FROM inbox i WHERE i.message_id = m.id) \
         FROM messages m WHERE m.received_at_ms < $1 AND octet_length(m.payload) > 0",
    )
    .bind(before_ms)
    .fetch_all(&mut **tx)
    .await?;
    let dropped: Vec<i64> = held
        .iter()
        .filter(|r| retention::drops_payload(retention::HeldMessage { received_at_ms: r.get(1), in_outbox: r.get(2), in_inbox: r.get(3) }, before_ms))
        .map(|r| r.get(0))
        .collect();
    if !dropped.is_empty() {
        sqlx::query("UPDATE messages SET payload = ''::bytea WHERE seq = ANY($1)").bind(&dropped).execute(&mut **tx).await?;
    }
    Ok((retired.len() + dropped.len()) as u64)
}

fn to_id(v: Vec<u8>) -> Result<[u8; 32], StorageError> {
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| StorageError::Corrupt("a message id is not 32 bytes".into()))
}

#[cfg(test)]
mod tests {
    use super::scratch::ScratchDatabase;
    use super::*;
    use crate::storage::conformance::{UNIT_A, document};

    /// Two stores on one database (two replicas, or a replica and a tool) writing at the same time:
    /// the write lock keeps the audit chain one unbroken, gapless chain, and inbox positions in the
    /// order the entries became visible, so a reader paging after any position misses nothing.
    #[tokio::test]
    async fn concurrent_writers_keep_one_chain_and_ordered_positions() {
        let db = ScratchDatabase::create().await;
        let a = PgStore::open_standalone(&db.url).await.unwrap();
        let b = PgStore::open_standalone(&db.url).await.unwrap();
        async fn write(store: &PgStore, base: u8) {
            for n in 0..40u8 {
                let mut doc = document(base + n, 2, None, &[UNIT_A], 1);
                let id = {
                    let m = doc.message.as_mut().unwrap();
                    m.id[1] = base;
                    m.id
                };
                for i in &mut doc.inbox {
                    i.message_id = id;
                }
                store.commit(&[WriteJob::Custody(doc)]).await.unwrap();
            }
        }
        // A reader follows the inbox while both write: what it has seen is never overtaken below.
        let reader = async {
            let mut after = 0;
            let mut seen = 0;
            for _ in 0..400 {
                let page = a.inbox(UNIT_A, after, 1000, usize::MAX).await.unwrap();
                if let Some(last) = page.last() {
                    after = last.seq;
                }
                seen += page.len();
                if seen == 80 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            seen
        };
        let ((), (), _) = tokio::join!(write(&a, 0), write(&b, 100), reader);
        let all = a.inbox(UNIT_A, 0, 1000, usize::MAX).await.unwrap();
        assert_eq!(all.len(), 80, "every entry of both writers");
        let check = b.audit_verify().await.unwrap();
        assert_eq!(check.entries, 80);
        assert_eq!(check.first_break, None, "one chain, no gaps, no fork");
        let mut after = 0;
        let mut paged = 0;
        loop {
            let page = a.inbox(UNIT_A, after, 7, usize::MAX).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            paged += page.len();
        }
        assert_eq!(paged, 80);
    }

    /// A failed transaction is not acknowledged, and its sequence values leave gaps that neither
    /// paging nor the audit chain notice.
    #[tokio::test]
    async fn a_rolled_back_transaction_leaves_harmless_gaps() {
        let db = ScratchDatabase::create().await;
        let store = PgStore::open_standalone(&db.url).await.unwrap();
        store.commit(&[WriteJob::Custody(document(1, 2, None, &[UNIT_A], 1))]).await.unwrap();
        // A topic record numbered twice fails the whole transaction, after the inbox row took its seq.
        let log = |record: u8| crate::storage::sharing::TopicLogRow {
            topic: "person.death".into(),
            seq: 1,
            record_id: [record; 32],
            subject: "s".into(),
            publisher: "gz.yuexiu/civil-affairs".into(),
            published_at_ms: 1,
            header: vec![],
            signature: vec![],
            payload: vec![],
        };
        let publish = |record: u8| WriteJob::Sharing(crate::storage::sharing::SharingJob::Publish { log: log(record), delivery: None, events: vec![] });
        store.commit(&[publish(50)]).await.unwrap();
        let failed = store.commit(&[WriteJob::Custody(document(2, 2, None, &[UNIT_A], 1)), publish(51)]).await;
        assert!(failed.is_err(), "the duplicate topic position fails the transaction");
        assert!(store.message(&[2; 32]).await.unwrap().is_none(), "nothing of it was committed");
        // A transaction that took an inbox position and rolled back (as one failing later would).
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query("INSERT INTO inbox (unit, message_id, delivered_at_ms, state) VALUES ($1, $2, 1, 'delivered')")
            .bind(UNIT_A)
            .bind([9u8; 32].as_slice())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        store.commit(&[WriteJob::Custody(document(3, 2, None, &[UNIT_A], 1))]).await.unwrap();
        let page = store.inbox(UNIT_A, 0, 10, usize::MAX).await.unwrap();
        let ids: Vec<u8> = page.iter().map(|r| r.message_id[0]).collect();
        assert_eq!(ids, vec![1, 3]);
        assert!(page[1].seq > page[0].seq + 1, "the rolled-back position is a gap");
        assert_eq!(store.inbox(UNIT_A, page[0].seq, 10, usize::MAX).await.unwrap().len(), 1);
        let check = store.audit_verify().await.unwrap();
        assert_eq!((check.entries, check.first_break), (2, None), "the audit chain has no gap");
    }
}

#[cfg(test)]
mod lease_tests {
    use super::scratch::ScratchDatabase;
    use super::*;
    use crate::storage::conformance::{UNIT_A, document};
    use sqlx::Connection;

    /// Two replicas over one database: the second waits while the first holds the lease, takes over
    /// when the first's lease session ends (a death, or a pause the server timed out), and the first,
    /// still running, can no longer write: its commit fails and nothing of it is stored.
    #[tokio::test]
    async fn one_active_replica_and_the_old_one_is_fenced() {
        let db = ScratchDatabase::create().await;
        let first = PgStore::open_active(&db.url, Arc::new(StorageHealth::new(&std::env::temp_dir(), 0, super::super::health::HealthMetrics::unregistered())))
            .await
            .unwrap();
        first.commit(&[WriteJob::Custody(document(1, 2, None, &[UNIT_A], 1))]).await.unwrap();
        let standby_health = Arc::new(StorageHealth::new(&std::env::temp_dir(), 0, super::super::health::HealthMetrics::unregistered()));
        let url = db.url.clone();
        let mut standby = tokio::spawn(async move { PgStore::open_active(&url, standby_health).await });
        assert!(
            tokio::time::timeout(lease::RETRY * 4, &mut standby).await.is_err(),
            "the standby waits while the first replica holds the lease"
        );
        // The first replica's lease session ends (as when the server times out a paused process).
        let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let pid = first.lease.as_ref().unwrap().pid;
        let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&mut admin).await.unwrap();
        assert!(ended);
        let second = tokio::time::timeout(Duration::from_secs(10), standby).await.expect("the standby takes over within seconds").unwrap().unwrap();
        let fenced = first.commit(&[WriteJob::Custody(document(2, 2, None, &[UNIT_A], 1))]).await;
        assert!(matches!(fenced, Err(StorageError::Fenced)), "the old replica is fenced: {fenced:?}");
        assert!(first.health.damaged().is_some(), "and stops taking work");
        second.commit(&[WriteJob::Custody(document(3, 2, None, &[UNIT_A], 1))]).await.unwrap();
        let held: Vec<u8> = second.inbox(UNIT_A, 0, 10, usize::MAX).await.unwrap().iter().map(|r| r.message_id[0]).collect();
        assert_eq!(held, vec![1, 3], "nothing the fenced replica tried was written");
        assert_eq!(second.audit_verify().await.unwrap().first_break, None);
    }
}
