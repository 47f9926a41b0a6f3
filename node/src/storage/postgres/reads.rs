//! The reads of the PostgreSQL store, and [`Store`] itself. Bulk reads are cut by bytes before any
//! payload is loaded, as on SQLite (`storage/sqlite/paging.rs`): first the keys with the sizes of
//! their parts (`octet_length` of an EXTERNAL value reads its TOAST pointer only), then the bodies of
//! the chosen rows, both in one REPEATABLE READ snapshot.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row};

use super::{PgStore, to_id};
use crate::network::protocol::PARCEL_OVERHEAD_BYTES;
use crate::storage::citations;
use crate::storage::gather;
use crate::storage::sqlite::paging::fitting;
use crate::storage::error::StorageError;
use crate::storage::jobs::*;
use crate::storage::model::*;
use crate::storage::store::*;

const INBOX_SELECT: &str = "SELECT i.seq, i.message_id, i.delivered_at_ms, i.state, m.header, m.signature, m.payload \
     FROM inbox i JOIN messages m ON m.id = i.message_id ";

const AUDIT_SELECT: &str = "SELECT seq, at_ms, category, message_id, event, unit, peer, detail, hash FROM audit_log ";

fn size(r: &PgRow, column: usize) -> usize {
    usize::try_from(r.get::<i64, _>(column)).unwrap_or(0)
}

fn inbox_record(r: PgRow) -> Result<InboxRecord, StorageError> {
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

fn event_record(r: PgRow) -> EventRecord {
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

impl PgStore {
    /// A read-only transaction that sees one snapshot for all its statements.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'_, Postgres>, StorageError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        Ok(tx)
    }

    async fn outbox_batch_read(&self, hop: &str, max_messages: usize, max_bytes: usize, skip: &BTreeSet<i64>, more_urgent_than: u8) -> Result<Vec<OutboxItem>, StorageError> {
        let mut tx = self.snapshot().await?;
        let candidates = sqlx::query(
            "SELECT o.seq, o.recipients, o.enqueued_at_ms, o.priority, \
                    (octet_length(m.header) + octet_length(m.signature) + octet_length(m.payload) + octet_length(o.recipients) \
                     + octet_length(m.hops))::BIGINT + $3 \
             FROM outbox o JOIN messages m ON m.seq = o.message_seq \
             WHERE o.next_hop = $1 AND o.dead_reason IS NULL AND o.priority < $5 AND o.seq <> ALL($4) ORDER BY o.priority, o.seq LIMIT $2",
        )
        .bind(hop)
        .bind(max_messages as i64)
        .bind(PARCEL_OVERHEAD_BYTES as i64)
        .bind(skip.iter().copied().collect::<Vec<i64>>())
        .bind(i64::from(more_urgent_than))
        .fetch_all(&mut *tx)
        .await?;
        let chosen = &candidates[..fitting(candidates.iter().map(|r| size(r, 4)), max_bytes)];
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        let seqs: Vec<i64> = chosen.iter().map(|r| r.get::<i64, _>(0)).collect();
        let mut bodies: std::collections::HashMap<i64, PgRow> = sqlx::query(
            "SELECT o.seq, o.message_id, m.header, m.signature, m.payload, m.hops, m.kind, m.sender \
             FROM outbox o JOIN messages m ON m.seq = o.message_seq WHERE o.seq = ANY($1)",
        )
        .bind(&seqs)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.get::<i64, _>(0), r))
        .collect();
        tx.commit().await?;
        let mut out = Vec::with_capacity(chosen.len());
        for c in chosen {
            let seq: i64 = c.get(0);
            let Some(b) = bodies.remove(&seq) else { continue };
            out.push(OutboxItem {
                seq,
                message_id: to_id(b.get(1))?,
                priority: u8::try_from(c.get::<i64, _>(3)).unwrap_or(u8::MAX),
                recipients: c.get(1),
                header: b.get(2),
                signature: b.get(3),
                payload: b.get(4),
                hops: b.get(5),
                kind: b.get(6),
                enqueued_at_ms: c.get(2),
                sender: b.get(7),
            });
        }
        Ok(out)
    }

    async fn inbox_read(&self, unit: &str, after: i64, limit: u32, max_bytes: usize) -> Result<Vec<InboxRecord>, StorageError> {
        let mut tx = self.snapshot().await?;
        let sizes = sqlx::query(
            "SELECT i.seq, (octet_length(m.header) + octet_length(m.signature) + octet_length(m.payload))::BIGINT \
             FROM inbox i JOIN messages m ON m.id = i.message_id WHERE i.unit = $1 AND i.seq > $2 ORDER BY i.seq LIMIT $3",
        )
        .bind(unit)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let n = fitting(sizes.iter().map(|r| size(r, 1)), max_bytes);
        let Some(last) = n.checked_sub(1).map(|i| sizes[i].get::<i64, _>(0)) else { return Ok(Vec::new()) };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{INBOX_SELECT} WHERE i.unit = $1 AND i.seq > $2 AND i.seq <= $3 ORDER BY i.seq")))
            .bind(unit)
            .bind(after)
            .bind(last)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.into_iter().map(inbox_record).collect()
    }
}

impl Store for PgStore {
    fn commit_parts<'a>(&'a self, jobs: &'a [WriteJob], cuts: &'a [usize], end_early: &'a (dyn Fn() -> bool + Send + Sync))
        -> BoxFuture<'a, Result<Vec<JobOutcome>, StorageError>> {
        self.watched(self.commit_jobs(jobs, cuts, end_early))
    }

    fn outbox_batch_skipping<'a>(&'a self, hop: &'a str, max_messages: usize, max_bytes: usize, skip: &'a BTreeSet<i64>, more_urgent_than: u8)
        -> BoxFuture<'a, Result<Vec<OutboxItem>, StorageError>> {
        self.watched(self.outbox_batch_read(hop, max_messages, max_bytes, skip, more_urgent_than))
    }

    fn inbox<'a>(&'a self, unit: &'a str, after: i64, limit: u32, max_bytes: usize) -> BoxFuture<'a, Result<Vec<InboxRecord>, StorageError>> {
        self.watched(self.inbox_read(unit, after, limit, max_bytes))
    }

    fn inbox_unsettled<'a>(&'a self, unit: &'a str, after: i64, limit: u32) -> BoxFuture<'a, Result<Vec<InboxHeader>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(
                "SELECT i.seq, i.message_id, m.header FROM inbox i JOIN messages m ON m.id = i.message_id \
                 WHERE i.unit = $1 AND i.state = 'delivered' AND i.seq > $2 ORDER BY i.seq LIMIT $3",
            )
            .bind(unit)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(|r| Ok(InboxHeader { seq: r.get(0), message_id: to_id(r.get(1))?, header: r.get(2) })).collect()
        })
    }

    fn inbox_entry<'a>(&'a self, unit: &'a str, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Option<InboxRecord>, StorageError>> {
        self.watched(async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{INBOX_SELECT} WHERE i.unit = $1 AND i.message_id = $2")))
                .bind(unit)
                .bind(id.as_slice())
                .fetch_optional(&self.pool)
                .await?;
            row.map(inbox_record).transpose()
        })
    }

    fn message<'a>(&'a self, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Option<StoredMessage>, StorageError>> {
        self.watched(async move {
            let row = sqlx::query("SELECT header, signature, payload, hops FROM messages WHERE id = $1")
                .bind(id.as_slice())
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|r| StoredMessage { header: r.get(0), signature: r.get(1), payload: r.get(2), hops: r.get(3) }))
        })
    }

    fn tracking<'a>(&'a self, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Vec<TrackingRecord>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(
                "SELECT recipient, state, node, at_ms, detail, receipt_id FROM tracking \
                 WHERE message_seq = (SELECT seq FROM messages WHERE id = $1) ORDER BY recipient",
            )
            .bind(id.as_slice())
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| TrackingRecord { recipient: r.get(0), state: r.get(1), node: r.get(2), at_ms: r.get(3), detail: r.get(4), receipt_id: r.get(5) })
                .collect())
        })
    }

    fn events<'a>(&'a self, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Vec<EventRecord>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                // As in the SQLite store: entries written while the message was held carry its
                // position, the others only its id; each half has its own index.
                "{AUDIT_SELECT} WHERE message_seq = (SELECT seq FROM messages WHERE id = $1) \
                 UNION ALL {AUDIT_SELECT} WHERE message_seq IS NULL AND message_id = $1 ORDER BY seq"
            )))
                .bind(id.as_slice())
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(event_record).collect())
        })
    }

    fn audit_page(&self, after: i64, limit: u32) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{AUDIT_SELECT} WHERE seq > $1 ORDER BY seq LIMIT $2")))
                .bind(after)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(event_record).collect())
        })
    }

    fn audit_verify(&self) -> BoxFuture<'_, Result<ChainCheck, StorageError>> {
        self.watched(gather::verify_chain(self))
    }

    fn queue_stats(&self) -> BoxFuture<'_, Result<Vec<QueueStat>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(
                "SELECT o.next_hop, COUNT(*) FILTER (WHERE o.dead_reason IS NULL), \
                        COALESCE(SUM(octet_length(m.payload)) FILTER (WHERE o.dead_reason IS NULL), 0)::BIGINT, \
                        MIN(o.enqueued_at_ms) FILTER (WHERE o.dead_reason IS NULL), COUNT(*) FILTER (WHERE o.dead_reason IS NOT NULL) \
                 FROM outbox o JOIN messages m ON m.seq = o.message_seq GROUP BY o.next_hop",
            )
            .fetch_all(&self.pool)
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
            .fetch_all(&self.pool)
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
            .fetch_all(&self.pool)
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

    fn open_queries(&self) -> BoxFuture<'_, Result<Vec<([u8; 32], Vec<u8>)>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(
                "SELECT DISTINCT m.id, m.header FROM tracking t JOIN messages m ON m.seq = t.message_seq \
                 WHERE t.state_rank IN (0, 1, 3) AND m.kind = 'query'",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(|r| Ok((to_id(r.get(0))?, r.get(1)))).collect()
        })
    }

    fn attachment_in_use<'a>(&'a self, sha256_hex: &'a str, before_ms: i64) -> BoxFuture<'a, Result<bool, StorageError>> {
        self.watched(async move {
            let Some(sha) = citations::digest_of_hex(sha256_hex) else { return Ok(false) };
            let used: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM cited_attachments c JOIN messages m ON m.id = c.message_id WHERE c.sha256 = $1 \
                 AND (m.received_at_ms >= $2 OR EXISTS (SELECT 1 FROM outbox o WHERE o.message_seq = m.seq) \
                      OR EXISTS (SELECT 1 FROM inbox i WHERE i.message_id = c.message_id)))",
            )
            .bind(sha.as_slice())
            .bind(before_ms)
            .fetch_one(&self.pool)
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
            .fetch_all(&self.pool)
            .await?;
            Ok(headers)
        })
    }

    fn inbox_last_seq<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<i64, StorageError>> {
        self.watched(async move {
            let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM inbox WHERE unit = $1").bind(unit).fetch_one(&self.pool).await?;
            Ok(last.unwrap_or(0))
        })
    }

    fn webhooks(&self) -> BoxFuture<'_, Result<Vec<WebhookRow>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query("SELECT unit, url, pushed_seq FROM webhooks ORDER BY unit").fetch_all(&self.pool).await?;
            Ok(rows.into_iter().map(|r| WebhookRow { unit: r.get(0), url: r.get(1), pushed_seq: r.get(2) }).collect())
        })
    }

    fn segments(&self) -> BoxFuture<'_, Result<Vec<SegmentRow>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query("SELECT owner, version, header, signature, payload FROM directory_segments ORDER BY owner")
                .fetch_all(&self.pool)
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
                .fetch_all(&self.pool)
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
