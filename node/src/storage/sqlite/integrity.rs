//! Checking a database file for damage before the node uses it.
//!
//! The checks run on an inspection connection of their own that never checkpoints on close: if they
//! fail, the files are left exactly as found (a checkpoint would write the shortened history of a
//! damaged WAL into the database and delete the evidence), and the node refuses to start.
//!
//! `PRAGMA quick_check` reads every page and checks the b-tree structure (not index contents against
//! tables, which `integrity_check` adds at several times the cost). On this machine kind it reads
//! some hundreds of MB a second, so a node of a few GiB is checked in seconds at start. A very large
//! file must not hold a restart for minutes, though: the check runs under a time budget
//! (`storage.open_check_secs`), and whatever it had no time for is checked again in full in the
//! background right after start, on a read connection; damage found there marks the node not ready.
//! Row contents are not covered by quick_check: message bytes are covered by their content-derived
//! ids and signatures, which every node checks again before it hands a message on or delivers it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection, SqlitePool};

use crate::storage::error::StorageError;
use crate::storage::health::StorageHealth;

/// What the inspection of an existing database found (when it found no damage).
pub struct Inspection {
    /// The check ran out of its time budget before the end (nothing wrong found so far).
    pub unfinished: bool,
    /// Committed write transactions the database holds (see `mark`).
    pub commits: u64,
}

/// Checks the existing database at `options` within `budget`, without changing it.
pub async fn inspect(options: &SqliteConnectOptions, budget: Duration) -> Result<Inspection, StorageError> {
    let mut conn = options.connect().await?;
    {
        let mut handle = conn.lock_handle().await?;
        // SAFETY: a live, locked connection; NO_CKPT_ON_CLOSE takes an int and a nullable out-pointer.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_db_config(
                handle.as_raw_handle().as_ptr(),
                libsqlite3_sys::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                1,
                std::ptr::null_mut::<i32>(),
            )
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            return Err(StorageError::Corrupt(format!("cannot open the database without checkpointing it (SQLite code {rc})")));
        }
    }
    let result = check(&mut conn, budget).await;
    let _ = conn.close().await;
    result
}

async fn check(conn: &mut SqliteConnection, budget: Duration) -> Result<Inspection, StorageError> {
    let unfinished = quick_check(conn, budget).await?;
    let has_state: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'node_state')")
        .fetch_one(&mut *conn)
        .await?;
    let commits: i64 = if has_state {
        sqlx::query_scalar("SELECT value FROM node_state WHERE key = 'commits'").fetch_optional(&mut *conn).await?.unwrap_or(0)
    } else {
        0
    };
    Ok(Inspection { unfinished, commits: commits as u64 })
}

/// Runs `quick_check` within `budget`. Returns `Ok(true)` when the budget ran out before the end
/// (nothing wrong found so far), `Ok(false)` when the whole file checked clean, and an error naming
/// the damage otherwise.
async fn quick_check(conn: &mut SqliteConnection, budget: Duration) -> Result<bool, StorageError> {
    let out_of_time = Arc::new(AtomicBool::new(false));
    {
        let started = Instant::now();
        let flag = out_of_time.clone();
        // Called every 10,000 virtual-machine steps; returning false interrupts the check.
        conn.lock_handle().await?.set_progress_handler(10_000, move || {
            let over = started.elapsed() > budget;
            if over {
                flag.store(true, Ordering::SeqCst);
            }
            !over
        });
    }
    let result = sqlx::query_scalar::<_, String>("PRAGMA quick_check(20)").fetch_all(&mut *conn).await;
    conn.lock_handle().await?.remove_progress_handler();
    match result {
        _ if out_of_time.load(Ordering::SeqCst) => Ok(true),
        Ok(lines) => verdict(lines).map(|()| false),
        Err(e) => Err(damage(&e.to_string())),
    }
}

/// Checks the rest of the file after start, when the check at open ran out of its budget; damage
/// found marks the node not ready. Run by the owner given in [`super::OpenCheck::tasks`].
pub async fn finish(readers: SqlitePool, health: Arc<StorageHealth>, path: PathBuf) {
    tracing::warn!(db = %path.display(), "the database check at open ran out of time; checking the rest in the background");
    let result = match sqlx::query_scalar::<_, String>("PRAGMA quick_check(20)").fetch_all(&readers).await {
        Ok(lines) => verdict(lines),
        Err(e) => Err(damage(&e.to_string())),
    };
    match result {
        Ok(()) => tracing::info!(db = %path.display(), "background database check: no damage"),
        Err(e) => {
            health.failed(&e);
        }
    }
}

fn verdict(lines: Vec<String>) -> Result<(), StorageError> {
    if lines.len() == 1 && lines[0] == "ok" {
        return Ok(());
    }
    Err(damage(&lines.join("; ")))
}

fn damage(what: &str) -> StorageError {
    StorageError::Corrupt(format!("the database failed its integrity check: {what}"))
}
