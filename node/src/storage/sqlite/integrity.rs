//! Checking a database file for damage when it is opened.
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

use sqlx::SqlitePool;

use crate::storage::StorageError;
use crate::storage::health::StorageHealth;

/// Runs `quick_check` within `budget`. Returns `Ok(true)` when the budget ran out before the end
/// (nothing wrong found so far), `Ok(false)` when the whole file checked clean, and an error naming
/// the damage otherwise.
pub async fn quick_check(pool: &SqlitePool, budget: Duration) -> Result<bool, StorageError> {
    let mut conn = pool.acquire().await?;
    let out_of_time = Arc::new(AtomicBool::new(false));
    {
        let started = Instant::now();
        let flag = out_of_time.clone();
        let mut handle = conn.lock_handle().await?;
        // Called every 10,000 virtual-machine steps; returning false interrupts the check.
        handle.set_progress_handler(10_000, move || {
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

/// Checks the whole file in the background; damage marks the node not ready.
pub fn finish_in_background(readers: SqlitePool, health: Arc<StorageHealth>, path: PathBuf) {
    tracing::warn!(db = %path.display(), "the database check at open ran out of time; checking the rest in the background");
    tokio::spawn(async move {
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
    });
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
