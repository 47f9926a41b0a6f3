//! PostgreSQL side of the reconciliation reads (the same as the SQLite store's,
//! `storage/sqlite/recovery.rs`). There is no online copy here: a PostgreSQL database is backed up
//! with PostgreSQL's own tools (`pg_dump`, base backups with WAL archiving; docs/operations.md), which
//! copy it consistently while the node writes.

use std::path::Path;

use futures::future::BoxFuture;
use sqlx::{Row, postgres::PgRow};

use super::{PgStore, to_id};
use crate::storage::error::StorageError;
use crate::storage::recovery::{ExchangedPage, ExchangedRow, HeldRow, RecoveryStore, RequeueCandidate};

/// How far before the window the audit scan starts (see the SQLite store).
const SCAN_SLACK_MS: i64 = 10 * 60 * 1000;

/// Most audit entries one page looks at (see the SQLite store).
const SCAN_ROWS: i64 = 200_000;

impl PgStore {
    /// The audit position just before the first entry recorded at or after `at_ms` (binary search
    /// over positions: O(log n) point reads instead of a scan of the whole log).
    async fn audit_seq_before(&self, at_ms: i64) -> Result<i64, StorageError> {
        let row = sqlx::query("SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM audit_log").fetch_one(&self.pool).await?;
        let (mut lo, mut hi): (i64, i64) = (row.get(0), row.get::<i64, _>(1) + 1);
        // Invariant: entries before `lo` are older than `at_ms`; the entry at or after `hi` is not.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at: Option<i64> = sqlx::query_scalar("SELECT at_ms FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT 1")
                .bind(mid)
                .fetch_optional(&self.pool)
                .await?;
            match at {
                Some(t) if t < at_ms => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok((lo - 1).max(0))
    }
}

impl RecoveryStore for PgStore {
    fn snapshot_into<'a>(&'a self, _out: &'a Path) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            Err(StorageError::Unsupported(
                "the online backup copies SQLite files; back up a PostgreSQL database with pg_dump or a base backup (docs/operations.md)",
            ))
        })
    }

    fn exchanged<'a>(
        &'a self,
        event: &'a str,
        peer: &'a str,
        window: (i64, i64),
        after: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<ExchangedPage, StorageError>> {
        Box::pin(async move {
            let (since, until) = window;
            let after = if after > 0 { after } else { self.audit_seq_before(since - SCAN_SLACK_MS).await? };
            let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_log").fetch_one(&self.pool).await?;
            let upper = after.saturating_add(SCAN_ROWS);
            let rows = sqlx::query(
                "SELECT a.seq, a.message_id, m.kind, a.at_ms FROM audit_log a LEFT JOIN messages m ON m.id = a.message_id \
                 WHERE a.seq > $1 AND a.seq <= $7 AND a.category = 'custody' AND a.event = $2 AND a.peer = $3 \
                 AND a.at_ms >= $4 AND a.at_ms < $5 AND a.message_id IS NOT NULL ORDER BY a.seq LIMIT $6",
            )
            .bind(after)
            .bind(event)
            .bind(peer)
            .bind(since)
            .bind(until)
            .bind(i64::from(limit))
            .bind(upper)
            .fetch_all(&self.pool)
            .await?;
            let full = rows.len() as u32 >= limit;
            let out = rows
                .into_iter()
                .map(|r| Ok(ExchangedRow { seq: r.get(0), message_id: to_id(r.get(1))?, kind: r.get(2), at_ms: r.get(3) }))
                .collect::<Result<Vec<_>, StorageError>>()?;
            let next = match out.last() {
                Some(r) if full => Some(r.seq),
                _ if upper < last => Some(upper),
                _ => None,
            };
            Ok(ExchangedPage { rows: out, next })
        })
    }

    fn held<'a>(&'a self, ids: &'a [[u8; 32]]) -> BoxFuture<'a, Result<Vec<HeldRow>, StorageError>> {
        Box::pin(async move {
            let list: Vec<Vec<u8>> = ids.iter().map(|id| id.to_vec()).collect();
            let rows = sqlx::query("SELECT id, received_at_ms FROM messages WHERE id = ANY($1)").bind(list).fetch_all(&self.pool).await?;
            rows.into_iter().map(|r| Ok(HeldRow { id: to_id(r.get(0))?, received_at_ms: r.get(1) })).collect()
        })
    }

    fn requeue_candidates<'a>(&'a self, ids: &'a [[u8; 32]], hop: &'a str)
        -> BoxFuture<'a, Result<Vec<RequeueCandidate>, StorageError>> {
        Box::pin(async move {
            let list: Vec<Vec<u8>> = ids.iter().map(|id| id.to_vec()).collect();
            let rows: Vec<PgRow> = sqlx::query(
                "SELECT m.id, m.header, octet_length(m.payload)::BIGINT, \
                 EXISTS (SELECT 1 FROM outbox o WHERE o.message_seq = m.seq AND o.next_hop = $2) FROM messages m WHERE m.id = ANY($1)",
            )
            .bind(list)
            .bind(hop)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(|r| Ok(RequeueCandidate { id: to_id(r.get(0))?, header: r.get(1), payload_len: r.get(2), queued: r.get(3) }))
                .collect()
        })
    }
}
