//! Backup, restore, and the reconciliation after a restore.
//!
//! * [`online`]: a consistent copy of a running node (database and attachment files) while writes
//!   go on, through the admin API (`exchange-admin backup --out DIR`).
//! * [`restore`]: `exchange-node restore --config C --from DIR` on a stopped node: checks the backup,
//!   moves the data it replaces aside (never deletes it), installs the backup and records that a
//!   reconciliation is due.
//! * [`report`]: the reconciliation's files; the reconciliation itself asks the neighbours over the
//!   network (`relay::reconcile`, answered by `relay::reconcile_answer`).
//! * [`manifest`], [`files`]: the backup folder's layout and durable file operations.
//!
//! Why not a plain file copy: a copy of a live SQLite database in WAL mode can mix pages from
//! before and after a commit. `VACUUM INTO` copies inside one read transaction instead, so the copy
//! is consistent, and WAL readers do not block the writer, so custody goes on during the backup.

pub mod files;
pub mod manifest;
pub mod online;
pub mod report;
pub mod restore;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Marker file in `data_dir` while a restore replaces the data: a node does not start on a
/// half-installed backup.
pub const RESTORE_MARKER: &str = "restore-in-progress";

/// What the engine keeps for backups and the reconciliation.
pub struct Recovery {
    /// The node's `data_dir`.
    pub data_dir: PathBuf,
    /// Held while a backup runs: one at a time.
    pub running: Arc<tokio::sync::Mutex<()>>,
}

impl Recovery {
    pub fn new(data_dir: &Path) -> Recovery {
        Recovery { data_dir: data_dir.to_path_buf(), running: Arc::new(tokio::sync::Mutex::new(())) }
    }
}

/// Refuses to start a node whose restore was interrupted (its data may be half moved).
pub fn refuse_interrupted_restore(data_dir: &Path) -> anyhow::Result<()> {
    let marker = data_dir.join(RESTORE_MARKER);
    if marker.exists() {
        anyhow::bail!(
            "a restore into {} was interrupted ({} exists): run `exchange-node restore` again with the same backup before starting the node; \
             the data it was replacing is in {}/before-restore-*",
            data_dir.display(),
            marker.display(),
            data_dir.display()
        );
    }
    Ok(())
}
