//! The reads of the SQLite store (the [`Store`] trait apart from `commit`), on the reader pool.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use sqlx::Row;

use super::{AUDIT_SELECT, INBOX_SELECT, SqliteStore, event_record, inbox_record, paging, to_id};
use crate::storage::citations;
use crate::storage::error::StorageError;
use crate::storage::gather;
use crate::storage::jobs::*;
use crate::storage::model::*;
use crate::storage::store::*;

impl Store for SqliteStore {
    fn commit_parts<'a>(&'a self, jobs: &'a [WriteJob], cuts: &'a [usize], end_early: &'a (dyn Fn() -> bool + Send + Sync))
        -> BoxFuture<'a, Result<Vec<JobOutcome>, StorageError>> {
        self.watched(self.commit_jobs(jobs, cuts, end_early))
    }

    fn outbox_batch_skipping<'a>(&'a self, hop: &'a str, max_messages: usize, max_bytes: usize, skip: &'a BTreeSet<i64>, more_urgent_than: u8)
        -> BoxFuture<'a, Result<Vec<OutboxItem>, StorageError>> {
        self.watched(paging::outbox_batch(&self.readers, hop, max_messages, max_bytes, skip, more_urgent_than))
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
                "SELECT recipient, state, node, at_ms, detail, receipt_id FROM tracking \
                 WHERE message_seq = (SELECT seq FROM messages WHERE id = $1) ORDER BY recipient",
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
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                // Entries written while the message was held carry its position; the others (before
                // it arrived, or about one never held) only its id. Each half has its own index.
                "{AUDIT_SELECT} WHERE message_seq = (SELECT seq FROM messages WHERE id = $1) \
                 UNION ALL {AUDIT_SELECT} WHERE message_seq IS NULL AND message_id = $1 ORDER BY seq"
            )))
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
                        o.enqueued_at_ms AS at FROM outbox o JOIN messages m ON m.seq = o.message_seq) \
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
                 AND (m.received_at_ms >= $2 OR EXISTS (SELECT 1 FROM outbox o WHERE o.message_seq = m.seq) \
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
                "SELECT DISTINCT m.id, m.header FROM tracking t JOIN messages m ON m.seq = t.message_seq \
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
