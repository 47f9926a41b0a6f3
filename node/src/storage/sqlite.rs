//! SQLite (WAL) implementation of [`Store`]: one writer connection fed by the group committer, a
//! separate pool of readers. Multi-row `INSERT … VALUES` statements carry a whole batch: on SQLite the
//! cost is per statement, not per row.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::error::StorageError;
use super::store::{EventRecord, InboxRecord};
use crate::tasks::Tasks;

/// Rows per multi-row statement, well under SQLite's bound on bound variables.
const ROWS_PER_STATEMENT: usize = 400;

mod admin;
mod citations;
mod commit;
mod integrity;
pub(crate) mod mark;
pub(crate) mod paging;
mod reads;
pub mod recovery;
#[cfg(test)]
mod schema_upgrade;
mod sharing;

use super::health::StorageHealth;

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
#[derive(Clone)]
pub struct OpenCheck {
    /// Time budget of `PRAGMA quick_check` at open; what is left runs in the background after start.
    pub budget: Duration,
    /// The owner of that background check: stopping these tasks stops it (a read; nothing is lost).
    pub tasks: Tasks,
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
        // default cache. Together they stay well within a node's memory budget. The WAL is
        // checkpointed into the database every 16,384 pages (64 MiB) rather than SQLite's 1,000: a
        // group commit rewrites hundreds of index pages keyed by random message ids, and pages
        // rewritten by many commits then reach the database file once per checkpoint, not once
        // per commit (a third less written per document, docs/performance.md). It is cut back to
        // 64 MiB after checkpoints, so a burst does not keep its disk space for good.
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
                    .pragma("journal_size_limit", "67108864")
                    .pragma("wal_autocheckpoint", "16384"),
            )
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
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
        let store = SqliteStore { path: path.to_path_buf(), writer, readers, chain_head: std::sync::Mutex::new(head), mark, health };
        // Before the node writes anything else (it touches no audit entry, so the head above holds).
        store.backfill_citations().await?;
        if unfinished {
            check.tasks.spawn(integrity::finish(store.readers.clone(), store.health.clone(), store.path.clone()));
        }
        Ok(store)
    }

    /// Opens a database outside a running node (tools, tests): no space reserve, metrics registered
    /// nowhere, the whole file checked.
    pub async fn open_standalone(path: &Path) -> Result<SqliteStore, StorageError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let health = Arc::new(StorageHealth::new(dir, 0, super::health::HealthMetrics::unregistered()));
        SqliteStore::open(path, health, OpenCheck { budget: Duration::from_secs(3600), tasks: Tasks::new() }).await
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

