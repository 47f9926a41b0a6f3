//! `exchange-node restore --config C --from DIR`: puts a backup in place of a node's data, the node
//! being stopped.
//!
//! Nothing is touched until the backup has passed every check: it is a backup of this node (the
//! manifest's node id), its database copy has the SHA-256 the manifest names and passes SQLite's
//! `PRAGMA integrity_check`, and every attachment file's content has the SHA-256 that is its name.
//! Then the data it replaces (database, WAL, commit mark, attachments, an earlier reconciliation) is moved aside
//! into `data_dir/before-restore-<time>/`, never deleted; the backup is installed (the database
//! copied, its commit mark set to the commits the copy holds, attachments hard-linked or copied); and
//! a reconciliation is recorded as due, from the
//! backup's time: the node runs it at its next start. A marker file makes a node refuse to start on
//! a restore that was interrupted half-way.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use exchange_wire::backup::BackupManifest;

use super::files::{self, Placed};
use super::manifest::{self, ATTACHMENTS};
use super::report::{self, Due};
use super::RESTORE_MARKER;
use crate::config::NodeConfig;
use crate::storage::StorageError;
use crate::storage::sqlite::mark::CommitMark;
use crate::storage::sqlite::recovery::inspect_file;

/// What the restore moves aside: everything the node keeps in `data_dir` that the backup replaces.
const REPLACED: [&str; 6] = ["node.db", "node.db-wal", "node.db-shm", "node.db.mark", "attachments", report::FOLDER];

/// Runs the restore and prints what it did.
pub fn run(config: &Path, from: &Path) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(config)?;
    let from = from.canonicalize().with_context(|| format!("cannot open the backup folder {}", from.display()))?;
    let manifest = manifest::read(&from).map_err(|e| anyhow::anyhow!("{e:#} (nothing was changed)"))?;
    if manifest.node != cfg.node_id {
        bail!(
            "{} is a backup of node {}, but {} configures node {}: restore a backup of node {} (nothing was changed)",
            from.display(),
            manifest.node,
            config.display(),
            cfg.node_id,
            cfg.node_id
        );
    }
    ensure_stopped(&cfg)?;
    let data_dir = &cfg.data_dir;
    files::create_private_dir(data_dir).with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let staged = data_dir.join("node.db.restoring");
    let checked = check_backup(&from, &manifest, &staged);
    if checked.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    let (attachments, commits) = checked?;

    let marker = data_dir.join(RESTORE_MARKER);
    files::write_json_atomic(&marker, &serde_json::json!({ "from": from.display().to_string(), "at_ms": exchange_wire::now_ms() }))?;
    let aside = move_aside(data_dir)?;
    std::fs::rename(&staged, cfg.database_path()).context("cannot install the database copy")?;
    // The old mark counts the commits of the data moved aside; the restored database holds fewer,
    // knowingly. From here on the mark guards the restored history.
    CommitMark::reset(&cfg.database_path(), commits.max(0) as u64).context("cannot set the commit mark of the restored database")?;
    let (linked, copied) = install_attachments(&from.join(ATTACHMENTS), &cfg.attachments_dir(), &attachments)?;
    let restored_at_ms = exchange_wire::now_ms();
    report::write_due(
        data_dir,
        &Due {
            node: cfg.node_id.clone(),
            backup_folder: from.display().to_string(),
            backup_taken_at_ms: manifest.taken_at_ms,
            restored_at_ms,
            previous_data: aside.display().to_string(),
            first_start_ms: None,
        },
    )?;
    files::sync_dir(data_dir)?;
    std::fs::remove_file(&marker)?;
    files::sync_dir(data_dir)?;

    println!("restored node {} from {}", cfg.node_id, from.display());
    println!("  backup taken     {} UTC", exchange_wire::time::format_utc_ms(manifest.taken_at_ms));
    println!("  database         {} ({} bytes, {} messages, audit seq {})", cfg.database_path().display(), manifest.database.bytes, manifest.database.messages, manifest.database.audit_last_seq);
    println!("  attachments      {} files ({linked} linked, {copied} copied)", attachments.len());
    println!("  previous data    {} (moved aside, not deleted)", aside.display());
    println!("next: start the node; it reconciles with its parent and children (see `exchange-admin reconcile`)");
    Ok(())
}

/// A restore replaces files a running node has open: refuse while its listeners are bound.
/// Refuses unless the node's API and admin ports are free (the node is stopped).
pub fn ensure_stopped(cfg: &NodeConfig) -> anyhow::Result<()> {
    for (what, addr) in [("admin.listen", cfg.admin.listen), ("api.listen", cfg.api.listen)] {
        if let Err(e) = std::net::TcpListener::bind(addr)
            && e.kind() == std::io::ErrorKind::AddrInUse
        {
            bail!("{addr} ({what}) is in use: node {} seems to be running; stop it first (nothing was changed)", cfg.node_id);
        }
    }
    Ok(())
}

/// Checks the backup and stages its database at `staged`; returns the attachment file names and the
/// commits the database holds.
fn check_backup(from: &Path, manifest: &BackupManifest, staged: &Path) -> anyhow::Result<(Vec<String>, i64)> {
    let _ = std::fs::remove_file(staged);
    let db = from.join(&manifest.database.file);
    let (bytes, sha256) = files::copy_hashing(&db, staged).with_context(|| format!("cannot copy {}", db.display()))?;
    if sha256 != manifest.database.sha256 || bytes != manifest.database.bytes {
        bail!(
            "{} is damaged: it has {bytes} bytes with SHA-256 {sha256}, but the manifest says {} bytes with SHA-256 {}; \
             restore from another backup (nothing was changed)",
            db.display(),
            manifest.database.bytes,
            manifest.database.sha256
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let commits = match rt.block_on(inspect_file(staged, true)) {
        Ok(marks) => marks.commits,
        Err(StorageError::Corrupt(findings)) => bail!(
            "{} fails SQLite's integrity check ({findings}); restore from another backup (nothing was changed)",
            db.display()
        ),
        Err(e) => bail!("{} cannot be read as a database ({e}); restore from another backup (nothing was changed)", db.display()),
    };
    let mut names = Vec::new();
    let folder = from.join(ATTACHMENTS);
    if folder.exists() {
        for entry in std::fs::read_dir(&folder).with_context(|| format!("cannot read {}", folder.display()))? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().filter(|n| files::is_attachment_name(n)).map(str::to_string) else { continue };
            let (_, digest) = files::sha256_file(&entry.path())?;
            if digest != name {
                bail!(
                    "attachment file {} is damaged (its content has SHA-256 {digest}); restore from another backup, or remove that file \
                     from the backup folder to restore without it (a neighbour or the sender can send it again) (nothing was changed)",
                    entry.path().display()
                );
            }
            names.push(name);
        }
    }
    Ok((names, commits))
}

/// Moves what the backup replaces into a new `before-restore-<time>` folder in `data_dir`.
fn move_aside(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let stamp = exchange_wire::time::format_utc_ms(exchange_wire::now_ms()).replace([' ', ':'], "").replace('-', "");
    let mut aside = data_dir.join(format!("before-restore-{stamp}Z"));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = data_dir.join(format!("before-restore-{stamp}Z-{n}"));
    }
    files::create_private_dir(&aside).with_context(|| format!("cannot create {}", aside.display()))?;
    for name in REPLACED {
        let path = data_dir.join(name);
        if path.exists() {
            std::fs::rename(&path, aside.join(name)).with_context(|| format!("cannot move {} aside", path.display()))?;
        }
    }
    files::sync_dir(&aside)?;
    files::sync_dir(data_dir)?;
    Ok(aside)
}

/// Places the checked attachment files into the node's (new) attachment folder.
fn install_attachments(from: &Path, to: &Path, names: &[String]) -> anyhow::Result<(u64, u64)> {
    files::create_private_dir(to)?;
    let (mut linked, mut copied, mut try_link) = (0, 0, true);
    for name in names {
        match files::link_or_copy(&from.join(name), &to.join(name), &mut try_link).with_context(|| format!("cannot install attachment {name}"))? {
            Placed::Linked => linked += 1,
            Placed::Copied => copied += 1,
        }
    }
    files::sync_dir(to)?;
    Ok((linked, copied))
}
