//! SQLite side of backup and reconciliation: `VACUUM INTO` on a read-only connection of its own for
//! the online copy, `PRAGMA integrity_check` and high-water marks of a copy, and the audit-log reads
//! a neighbour answers a restored node with.

use std::path::Path;

use futures::future::BoxFuture;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Sqlite, SqliteConnection};

use super::{ROWS_PER_STATEMENT, SqliteStore, to_id};
use crate::storage::error::StorageError;
use crate::storage::recovery::{ExchangedPage, ExchangedRow, FileMarks, HeldRow, RecoveryStore, RequeueCandidate};

/// How far before the window the audit scan starts: an entry's time is taken when its job is made,
/// and its position when it is committed, so times are in log order only up to the commit delay.
const SCAN_SLACK_MS: i64 = 10 * 60 * 1000;

/// Most audit entries one page looks at, so a page takes bounded time even when few entries in a
/// long stretch of the log name the asker (the next page goes on from where this one stopped).
const SCAN_ROWS: i64 = 200_000;

/// Opens a database file read-only on a connection of its own.
async fn open_read_only(path: &Path) -> Result<SqliteConnection, StorageError> {
    Ok(SqliteConnectOptions::new().filename(path).read_only(true).connect().await?)
}

/// Checks a database file (a backup's copy) with `PRAGMA integrity_check` when `check` is set, and
/// reads its high-water marks. A damaged file is [`StorageError::Corrupt`] with SQLite's findings.
pub async fn inspect_file(path: &Path, check: bool) -> Result<FileMarks, StorageError> {
    let mut conn = open_read_only(path).await?;
    if check {
        let findings: Vec<String> = match sqlx::query_scalar("PRAGMA integrity_check(20)").fetch_all(&mut conn).await {
            Ok(f) => f,
            // Damage bad enough that the check itself stops (SQLITE_CORRUPT, SQLITE_NOTADB).
            Err(sqlx::Error::Database(e)) => return Err(StorageError::Corrupt(e.message().to_string())),
            Err(e) => return Err(e.into()),
        };
        if findings != ["ok"] {
            return Err(StorageError::Corrupt(findings.join("; ")));
        }
    }
    let last = |table: &str| format!("SELECT COALESCE(MAX(seq), 0) FROM {table}");
    let mut marks = FileMarks::default();
    for (sql, slot) in [
        (last("audit_log"), &mut marks.audit_last_seq),
        (last("messages"), &mut marks.messages_last_seq),
        (last("inbox"), &mut marks.inbox_last_seq),
        (last("outbox"), &mut marks.outbox_last_seq),
        ("SELECT COUNT(*) FROM messages".to_string(), &mut marks.messages),
    ] {
        *slot = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await?;
    }
    // Absent from a database written before the commit mark existed: the migration starts it at 0.
    marks.commits = match sqlx::query_scalar("SELECT value FROM node_state WHERE key = 'commits'").fetch_optional(&mut conn).await {
        Ok(v) => v.unwrap_or(0),
        Err(sqlx::Error::Database(e)) if e.message().contains("no such table") => 0,
        Err(e) => return Err(e.into()),
    };
    marks.audit_head_hash = sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut conn)
        .await?
        .unwrap_or_default();
    conn.close().await?;
    Ok(marks)
}

impl SqliteStore {
    /// The audit position just before the first entry recorded at or after `at_ms` (binary search
    /// over positions: O(log n) point reads instead of a scan of the whole log).
    async fn audit_seq_before(&self, at_ms: i64) -> Result<i64, StorageError> {
        let row = sqlx::query("SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM audit_log").fetch_one(&self.readers).await?;
        let (mut lo, mut hi): (i64, i64) = (row.get(0), row.get::<i64, _>(1) + 1);
        // Invariant: entries before `lo` are older than `at_ms`; the entry at or after `hi` is not.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at: Option<i64> = sqlx::query_scalar("SELECT at_ms FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT 1")
                .bind(mid)
                .fetch_optional(&self.readers)
                .await?;
            match at {
                Some(t) if t < at_ms => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok((lo - 1).max(0))
    }
}

impl RecoveryStore for SqliteStore {
    fn snapshot_into<'a>(&'a self, out: &'a Path) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let mut conn = open_read_only(&self.path).await?;
            sqlx::query("VACUUM INTO $1").bind(out.to_string_lossy().into_owned()).execute(&mut conn).await?;
            conn.close().await?;
            Ok(())
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
            let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_log").fetch_one(&self.readers).await?;
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
            .fetch_all(&self.readers)
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
            let mut out = Vec::new();
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<Sqlite>::new("SELECT id, received_at_ms FROM messages WHERE id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(id.as_slice());
                }
                q.push(")");
                for r in q.build().fetch_all(&self.readers).await? {
                    out.push(HeldRow { id: to_id(r.get(0))?, received_at_ms: r.get(1) });
                }
            }
            Ok(out)
        })
    }

    fn requeue_candidates<'a>(&'a self, ids: &'a [[u8; 32]], hop: &'a str)
        -> BoxFuture<'a, Result<Vec<RequeueCandidate>, StorageError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "SELECT m.id, m.header, length(m.payload), EXISTS (SELECT 1 FROM outbox o WHERE o.message_seq = m.seq AND o.next_hop = ",
                );
                q.push_bind(hop);
                q.push(") FROM messages m WHERE m.id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(id.as_slice());
                }
                q.push(")");
                for r in q.build().fetch_all(&self.readers).await? {
                    out.push(RequeueCandidate { id: to_id(r.get(0))?, header: r.get(1), payload_len: r.get(2), queued: r.get(3) });
                }
            }
            Ok(out)
        })
    }
}
