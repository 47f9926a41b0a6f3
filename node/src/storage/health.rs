//! Storage health: what the node knows about the disk under its data directory and about its
//! database, shared by the store (which reports every failure here), the ingress paths (which ask
//! whether new work may be taken), readiness and metrics.
//!
//! Three promises rest on it (docs/decisions.md, "Storage failure model"):
//! - **A full disk is a temporary refusal, never a loss.** New work (documents, queries, records,
//!   uploads) is refused while free space is below the reserve; what the node already holds keeps
//!   moving, because acknowledgements and receipts are still written. A ballast file of the reserve's
//!   size is kept in the data directory and released the moment a commit fails for lack of space, so
//!   there is room for them even when another process filled the disk. When space comes back the
//!   ballast is laid again and intake reopens on its own.
//! - **Corruption is never served.** Any read or write that meets a damaged database marks the
//!   node not ready until an operator acts (see docs/operations.md, "Recovering a damaged database").
//! - **Failures are visible**: free space, intake and faults are metrics with alert rules.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge};

use super::error::StorageError;

/// The ballast file's name in the data directory.
pub const BALLAST_FILE: &str = "reserve.ballast";

/// What kind of storage failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The disk (or SQLite's page limit) is full: temporary, clears when space comes back.
    Full,
    /// The database file is damaged (or is not a database): never clears on its own.
    Corrupt,
    /// The operating system failed a read or write.
    Io,
    /// Anything else (a busy lock, a failed constraint, a closed connection).
    Other,
}

impl Fault {
    pub fn label(self) -> &'static str {
        match self {
            Fault::Full => "full",
            Fault::Corrupt => "corrupt",
            Fault::Io => "io",
            Fault::Other => "other",
        }
    }

    /// Classifies a storage error by SQLite's primary result code or PostgreSQL's SQLSTATE.
    pub fn of(e: &StorageError) -> Fault {
        match e {
            // PostgreSQL reports five-character SQLSTATEs; SQLite's codes are numbers of at most four digits.
            StorageError::Database(sqlx::Error::Database(db)) if db.code().is_some_and(|c| c.len() == 5) => {
                match db.code().as_deref().unwrap_or_default() {
                    "53100" => Fault::Full,             // disk_full
                    "XX001" | "XX002" => Fault::Corrupt, // data_corrupted, index_corrupted
                    "58030" => Fault::Io,               // io_error
                    _ => Fault::Other,
                }
            }
            StorageError::Database(sqlx::Error::Database(db)) => {
                let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
                match code {
                    13 => Fault::Full,          // SQLITE_FULL
                    11 | 26 => Fault::Corrupt,  // SQLITE_CORRUPT, SQLITE_NOTADB
                    10 => Fault::Io,            // SQLITE_IOERR (extended codes carry the detail)
                    _ => Fault::Other,
                }
            }
            StorageError::Database(sqlx::Error::Io(_)) => Fault::Io,
            StorageError::Corrupt(_) | StorageError::LostCommits { .. } => Fault::Corrupt,
            _ => Fault::Other,
        }
    }
}

/// Metrics the health state keeps current.
pub struct HealthMetrics {
    pub free_bytes: IntGauge,
    pub reserve_bytes: IntGauge,
    /// 1 while new work is taken, 0 while it is refused for lack of space or a damaged database.
    pub intake_open: IntGauge,
    /// 0 once the database was found damaged.
    pub healthy: IntGauge,
    /// Storage faults by kind (`full`, `corrupt`, `io`, `other`).
    pub faults: IntCounterVec,
}

impl HealthMetrics {
    /// Metrics registered nowhere: for tools and tests that open a store outside a running node.
    pub fn unregistered() -> HealthMetrics {
        let gauge = |n: &str| IntGauge::new(n, n).expect("metric definition");
        HealthMetrics {
            free_bytes: gauge("free"),
            reserve_bytes: gauge("reserve"),
            intake_open: gauge("intake"),
            healthy: gauge("healthy"),
            faults: IntCounterVec::new(prometheus::Opts::new("faults", "faults"), &["kind"]).expect("metric definition"),
        }
    }
}

/// Why new work is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeClosed {
    LowSpace { free: u64, reserve: u64, dir: PathBuf },
    Damaged(String),
}

impl std::fmt::Display for IntakeClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntakeClosed::LowSpace { free, reserve, dir } => write!(
                f,
                "the node's storage at {} has {} free, below its reserve of {}: new messages are refused until space is freed \
                 there (the node resumes on its own within seconds); what it already holds still moves",
                dir.display(),
                mib(*free),
                mib(*reserve)
            ),
            IntakeClosed::Damaged(why) => write!(f, "the node's database is damaged ({why}); an operator must restore it"),
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The shared health state of one node's storage.
pub struct StorageHealth {
    dir: PathBuf,
    reserve: u64,
    free: AtomicU64,
    ballast_laid: AtomicBool,
    /// Set by a commit that failed for lack of space, cleared once space is back.
    full: AtomicBool,
    damaged: Mutex<Option<String>>,
    metrics: HealthMetrics,
}

impl StorageHealth {
    /// Health of the storage in `dir`, keeping `reserve` bytes back for what the node holds.
    pub fn new(dir: &Path, reserve: u64, metrics: HealthMetrics) -> StorageHealth {
        metrics.reserve_bytes.set(reserve as i64);
        metrics.healthy.set(1);
        // Every kind exported from the start, so rates and alerts see the first fault.
        for f in [Fault::Full, Fault::Corrupt, Fault::Io, Fault::Other] {
            metrics.faults.with_label_values(&[f.label()]);
        }
        let h = StorageHealth {
            dir: dir.to_path_buf(),
            reserve,
            free: AtomicU64::new(u64::MAX),
            ballast_laid: AtomicBool::new(dir.join(BALLAST_FILE).metadata().is_ok_and(|m| m.len() >= reserve)),
            full: AtomicBool::new(false),
            damaged: Mutex::new(None),
            metrics,
        };
        h.refresh();
        h
    }

    /// Records a failed storage operation; returns its kind. A full disk releases the ballast at once
    /// so the acknowledgements and receipts that follow have room.
    pub fn failed(&self, e: &StorageError) -> Fault {
        let fault = Fault::of(e);
        self.metrics.faults.with_label_values(&[fault.label()]).inc();
        match fault {
            Fault::Full => {
                if !self.full.swap(true, Ordering::SeqCst) {
                    tracing::error!(dir = %self.dir.display(), error = %e, "storage is full: refusing new messages, releasing the reserve for what the node holds");
                }
                self.release_ballast();
            }
            Fault::Corrupt => self.mark_damaged(&e.to_string()),
            Fault::Io | Fault::Other => {}
        }
        self.update_intake_gauge();
        fault
    }

    /// Marks the database damaged: the node stops taking work and reports not ready until restarted
    /// on a repaired or restored database.
    pub fn mark_damaged(&self, why: &str) {
        let mut d = self.damaged.lock().expect("health lock");
        if d.is_none() {
            tracing::error!(dir = %self.dir.display(), %why, "the database is damaged: refusing new work and reporting not ready; see docs/operations.md, 'Recovering a damaged database'");
            *d = Some(why.to_string());
            self.metrics.healthy.set(0);
        }
        drop(d);
        self.update_intake_gauge();
    }

    /// Why the database is damaged, if it is.
    pub fn damaged(&self) -> Option<String> {
        self.damaged.lock().expect("health lock").clone()
    }

    /// Whether new work (documents, queries, records, uploads) may be taken now.
    pub fn intake(&self) -> Result<(), IntakeClosed> {
        if let Some(why) = self.damaged() {
            return Err(IntakeClosed::Damaged(why));
        }
        let free = self.free.load(Ordering::SeqCst);
        if self.full.load(Ordering::SeqCst) || !self.ballast_laid.load(Ordering::SeqCst) || free < self.reserve {
            // Measured now, not at the last tick: the refusal names the space there is.
            return Err(IntakeClosed::LowSpace { free: self.measure().unwrap_or(free), reserve: self.reserve, dir: self.dir.clone() });
        }
        Ok(())
    }

    /// Free bytes on the data directory's filesystem, as last measured.
    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::SeqCst)
    }

    /// Measures free space, lays the ballast when there is room for it, and reopens intake when
    /// space is back. Called every second by [`StorageHealth::run`] (and once at start).
    pub fn refresh(&self) {
        let Some(free) = self.measure() else { return };
        self.free.store(free, Ordering::SeqCst);
        self.metrics.free_bytes.set(free.min(i64::MAX as u64) as i64);
        if !self.ballast_laid.load(Ordering::SeqCst) && free >= self.reserve.saturating_mul(2) {
            match lay_ballast(&self.dir.join(BALLAST_FILE), self.reserve) {
                Ok(()) => {
                    self.ballast_laid.store(true, Ordering::SeqCst);
                    tracing::info!(dir = %self.dir.display(), reserve = self.reserve, "storage reserve laid");
                }
                Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "cannot lay the storage reserve yet"),
            }
        }
        let free = self.measure().unwrap_or(free);
        self.free.store(free, Ordering::SeqCst);
        if self.ballast_laid.load(Ordering::SeqCst) && free >= self.reserve && self.full.swap(false, Ordering::SeqCst) {
            tracing::info!(dir = %self.dir.display(), free, "storage has space again: taking new messages");
        }
        self.update_intake_gauge();
    }

    /// Refreshes every second until `stop` fires.
    pub async fn run(self: std::sync::Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    let h = self.clone();
                    // statvfs and laying the ballast touch the disk: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || h.refresh()).await;
                }
            }
        }
    }

    fn release_ballast(&self) {
        if self.ballast_laid.swap(false, Ordering::SeqCst) {
            match std::fs::remove_file(self.dir.join(BALLAST_FILE)) {
                Ok(()) => tracing::warn!(dir = %self.dir.display(), reserve = self.reserve, "storage reserve released"),
                Err(e) => tracing::error!(dir = %self.dir.display(), error = %e, "cannot release the storage reserve"),
            }
        }
    }

    fn update_intake_gauge(&self) {
        self.metrics.intake_open.set(i64::from(self.intake_quick()));
    }

    fn intake_quick(&self) -> bool {
        self.damaged.lock().expect("health lock").is_none()
            && !self.full.load(Ordering::SeqCst)
            && self.ballast_laid.load(Ordering::SeqCst)
            && self.free.load(Ordering::SeqCst) >= self.reserve
    }

    fn measure(&self) -> Option<u64> {
        free_space(&self.dir).map_err(|e| tracing::warn!(dir = %self.dir.display(), error = %e, "cannot measure free space")).ok()
    }
}

/// Free bytes available to this process on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer for the call's duration.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// Writes the ballast: `size` bytes really allocated (zeros, not a sparse file) and made durable.
fn lay_ballast(path: &Path, size: u64) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("laying");
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        let chunk = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real SQLITE_FULL: an insert past the page limit of an in-memory database.
    async fn full_error() -> StorageError {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (b BLOB)").execute(&pool).await.unwrap();
        sqlx::query("PRAGMA max_page_count = 3").execute(&pool).await.unwrap();
        let e = sqlx::query("INSERT INTO t VALUES (zeroblob(100000))").execute(&pool).await.unwrap_err();
        StorageError::Database(e)
    }

    #[tokio::test]
    async fn ballast_is_laid_released_on_a_full_disk_and_laid_again() {
        let dir = tempfile::tempdir().unwrap();
        let h = StorageHealth::new(dir.path(), 1 << 20, HealthMetrics::unregistered());
        assert!(h.intake().is_ok(), "room for the reserve: intake open");
        assert_eq!(std::fs::metadata(dir.path().join(BALLAST_FILE)).unwrap().len(), 1 << 20);
        assert_eq!(h.failed(&full_error().await), Fault::Full);
        assert!(!dir.path().join(BALLAST_FILE).exists(), "the reserve is released for what the node holds");
        assert!(matches!(h.intake(), Err(IntakeClosed::LowSpace { .. })));
        assert_eq!(h.metrics.intake_open.get(), 0);
        h.refresh();
        assert!(h.intake().is_ok(), "space is back: the reserve is laid again and intake reopens");
        assert!(dir.path().join(BALLAST_FILE).exists());
        assert_eq!(h.metrics.intake_open.get(), 1);
    }

    #[test]
    fn corruption_closes_intake_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let h = StorageHealth::new(dir.path(), 1 << 20, HealthMetrics::unregistered());
        assert_eq!(h.failed(&StorageError::Corrupt("page 7 is not a b-tree page".into())), Fault::Corrupt);
        h.refresh();
        assert!(matches!(h.intake(), Err(IntakeClosed::Damaged(_))));
        assert_eq!(h.metrics.healthy.get(), 0);
    }
}
