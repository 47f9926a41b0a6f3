//! The online backup of a running node (`POST /admin/v1/backup`, `exchange-admin backup`).
//!
//! The database is copied with SQLite's `VACUUM INTO` on a read-only connection of its own: one
//! read transaction, so the copy is the database exactly as it was when the copy began, while the
//! group committer goes on committing beside it (WAL readers never block the writer). The copy
//! streams page by page. The complete attachment files are hard-linked into the backup when it is
//! on the node's file system (a complete attachment is verified and never changes, so a link is as
//! good as a copy and costs no space) and copied otherwise. Every file is private (0600) and
//! `fsync`ed, and `manifest.json`, with the node id, the time and the database's high-water marks,
//! is written last.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use exchange_wire::backup::{AttachmentsCopy, BACKUP_FORMAT, BackupManifest, DatabaseCopy};

use super::files::{self, Placed};
use super::manifest::{self, ATTACHMENTS, DATABASE};
use crate::relay::services::Services;
use crate::relay::{Engine, Refusal};
use crate::storage::sqlite::recovery::inspect_file;

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await.context("a backup task stopped")?
}

/// Checks that `folder` is a new or empty folder, and creates it (0700) if missing.
fn prepare_folder(folder: &Path) -> Result<(), Refusal> {
    if !folder.is_absolute() {
        return Err(Refusal::malformed(format!(
            "the backup folder {} is not an absolute path: the node writes it, on its own host (exchange-admin makes relative paths absolute)",
            folder.display()
        )));
    }
    match std::fs::read_dir(folder).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::new("conflict", 409, format!("{} is not empty: give a new folder for each backup", folder.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => files::create_private_dir(folder)
            .map_err(|e| Refusal::new("backup-failed", 500, format!("cannot create the backup folder {}: {e}", folder.display()))),
        Err(e) => Err(Refusal::new("backup-failed", 500, format!("cannot read the backup folder {}: {e}", folder.display()))),
    }
}

/// Places every complete attachment of `from` into the new folder `to`.
fn copy_attachments(from: &Path, to: &Path) -> std::io::Result<AttachmentsCopy> {
    files::create_private_dir(to)?;
    let mut copy = AttachmentsCopy { folder: ATTACHMENTS.into(), files: 0, bytes: 0, linked: 0, copied: 0 };
    let mut try_link = true;
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(copy),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| files::is_attachment_name(n)) else { continue };
        let size = match entry.metadata() {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => continue,
            // Removed by retention meanwhile: no message the copy holds needs it any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match files::link_or_copy(&entry.path(), &to.join(name), &mut try_link) {
            Ok(Placed::Linked) => copy.linked += 1,
            Ok(Placed::Copied) => copy.copied += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        copy.files += 1;
        copy.bytes += size;
    }
    files::sync_dir(to)?;
    Ok(copy)
}

impl Engine {
    /// Backs this node up into `out` (an absolute path on the node's host; new or empty), while it
    /// keeps working. One backup at a time. The backup runs to its end even if the caller goes away.
    pub async fn backup(self: &Arc<Self>, out: &str) -> Result<BackupManifest, Refusal> {
        let folder = PathBuf::from(out);
        let guard = self.recovery.running.clone().try_lock_owned().map_err(|_| {
            Refusal::new("conflict", 409, "a backup of this node is already running: wait for it to finish, then start another")
        })?;
        {
            let folder = folder.clone();
            tokio::task::spawn_blocking(move || prepare_folder(&folder))
                .await
                .map_err(|e| Refusal::new("backup-failed", 500, format!("the backup task stopped: {e}")))??;
        }
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let _one_at_a_time = guard;
            let result = engine.write_backup(folder.clone()).await;
            record_backup(&engine.services, &folder, &result).await;
            result
        });
        match task.await {
            Ok(Ok(manifest)) => Ok(manifest),
            Ok(Err(e)) => Err(Refusal { code: "backup-failed", message: format!("{e:#}"), status: 500, transient: true }),
            Err(e) => Err(Refusal { code: "backup-failed", message: format!("the backup task stopped: {e}"), status: 500, transient: true }),
        }
    }

    async fn write_backup(&self, folder: PathBuf) -> anyhow::Result<BackupManifest> {
        let db = folder.join(DATABASE);
        {
            let db = db.clone();
            blocking(move || files::create_private(&db).map(drop).with_context(|| format!("cannot create {}", db.display()))).await?;
        }
        let taken_at_ms = exchange_wire::now_ms();
        self.services.store.recovery().snapshot_into(&db).await.context("the copy of the database failed")?;
        let (bytes, sha256) = {
            let db = db.clone();
            blocking(move || {
                std::fs::File::open(&db)?.sync_all()?;
                Ok(files::sha256_file(&db)?)
            })
            .await
            .context("cannot make the database copy durable")?
        };
        let marks = inspect_file(&db, false).await.context("cannot read the database copy back")?;
        let from = self.recovery.data_dir.join("attachments");
        let to = folder.join(ATTACHMENTS);
        let attachments = blocking(move || Ok(copy_attachments(&from, &to)?)).await.context("cannot copy the attachment files")?;
        let manifest = BackupManifest {
            format: BACKUP_FORMAT,
            node: self.services.here.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            taken_at_ms,
            finished_at_ms: exchange_wire::now_ms(),
            folder: folder.display().to_string(),
            database: DatabaseCopy {
                file: DATABASE.into(),
                bytes,
                sha256,
                audit_last_seq: marks.audit_last_seq,
                audit_head_hash: hex::encode(&marks.audit_head_hash),
                messages: marks.messages,
                messages_last_seq: marks.messages_last_seq,
                inbox_last_seq: marks.inbox_last_seq,
                outbox_last_seq: marks.outbox_last_seq,
            },
            attachments,
        };
        let written = manifest.clone();
        blocking(move || {
            manifest::write(&folder, &written)?;
            files::sync_dir(&folder)?;
            if let Some(parent) = folder.parent() {
                files::sync_dir(parent)?;
            }
            Ok(())
        })
        .await
        .context("cannot write the manifest")?;
        Ok(manifest)
    }
}

/// The backup's metric, log line and audit entry.
async fn record_backup(services: &Services, folder: &Path, result: &anyhow::Result<BackupManifest>) {
    let (outcome, event, detail) = match result {
        Ok(m) => (
            "ok",
            "backup",
            format!(
                "to {}: database {} bytes (SHA-256 {}, audit seq {}), {} attachment files ({} linked, {} copied)",
                folder.display(),
                m.database.bytes,
                m.database.sha256,
                m.database.audit_last_seq,
                m.attachments.files,
                m.attachments.linked,
                m.attachments.copied
            ),
        ),
        Err(e) => ("failed", "backup-failed", format!("to {}: {e:#}", folder.display())),
    };
    services.metrics.backups.with_label_values(&[outcome]).inc();
    match result {
        Ok(_) => tracing::info!(folder = %folder.display(), "backup written"),
        Err(e) => tracing::error!(folder = %folder.display(), error = %format!("{e:#}"), "backup failed"),
    }
    if let Err(r) = services.admin_record(event, detail).await {
        tracing::error!(reason = %r.message, "cannot write the backup's audit entry");
    }
}
