//! The backup folder's layout and its `manifest.json`, written last: a folder without a manifest is
//! a backup that did not finish, and is never restored.

use std::path::Path;

use anyhow::{Context as _, bail};
use exchange_wire::backup::{BACKUP_FORMAT, BackupManifest};

use super::files;

/// The manifest's file name inside a backup folder.
pub const MANIFEST: &str = "manifest.json";
/// The database copy's file name inside a backup folder.
pub const DATABASE: &str = "node.db";
/// The attachment files' folder name inside a backup folder.
pub const ATTACHMENTS: &str = "attachments";

/// Writes the manifest into `folder`, atomically and durably.
pub fn write(folder: &Path, manifest: &BackupManifest) -> std::io::Result<()> {
    files::write_json_atomic(&folder.join(MANIFEST), manifest)
}

/// Reads and checks the manifest of the backup folder `folder`.
pub fn read(folder: &Path) -> anyhow::Result<BackupManifest> {
    let path = folder.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} has no {MANIFEST}: it is not a backup folder, or the backup did not finish (the manifest is written last); \
             use a folder written by `exchange-admin backup`",
            folder.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let manifest: BackupManifest =
        serde_json::from_str(&text).with_context(|| format!("{} is not a backup manifest (was it edited?)", path.display()))?;
    if manifest.format != BACKUP_FORMAT {
        bail!(
            "{} is a backup of format {}; this build reads format {BACKUP_FORMAT}: restore it with the release that wrote it ({})",
            folder.display(),
            manifest.format,
            manifest.version
        );
    }
    Ok(manifest)
}
