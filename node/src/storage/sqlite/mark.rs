//! The commit mark: the number of committed write transactions, kept both inside the database
//! (`node_state.commits`, incremented in every transaction) and in a small file beside it
//! (`node.db.mark`), written after each commit is durable.
//!
//! SQLite cannot tell a WAL whose tail was lost (truncated, or a frame whose checksum no longer
//! matches after a bit flip: SQLite stops reading there) from a WAL that simply ended: it opens the
//! shorter history without a word. The mark can tell: if the database holds fewer commits than the
//! file says, acknowledged transactions are gone, and the node refuses to start rather than serve a
//! past it has forgotten (docs/operations.md says how to recover). The mark may lag the database (a
//! crash between the commit and the mark's write), never lead it.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::error::StorageError;

/// The mark file of one database.
#[derive(Clone)]
pub struct CommitMark {
    path: PathBuf,
    file: Arc<File>,
}

/// The mark file's path for the database at `db`.
pub fn mark_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".mark");
    PathBuf::from(p)
}

impl CommitMark {
    /// Opens (creating, 0600) the mark beside `db`.
    pub fn open(db: &Path) -> Result<CommitMark, StorageError> {
        let path = mark_path(db);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StorageError::Corrupt(format!("cannot open the commit mark {}: {e}", path.display())))?;
        Ok(CommitMark { path, file: Arc::new(file) })
    }

    /// The count the file holds (0 for a new file).
    pub fn read(&self) -> Result<u64, StorageError> {
        let mut buf = [0u8; 8];
        match self.file.read_exact_at(&mut buf, 0) {
            Ok(()) => Ok(u64::from_be_bytes(buf)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(StorageError::Corrupt(format!("cannot read the commit mark {}: {e}", self.path.display()))),
        }
    }

    /// Refuses a database that holds fewer commits than the mark.
    pub fn check(&self, in_database: u64) -> Result<(), StorageError> {
        let marked = self.read()?;
        if in_database < marked {
            return Err(StorageError::LostCommits { marked, in_database, mark: self.path.clone() });
        }
        Ok(())
    }

    /// Records `commits` durably (8 bytes at offset 0, then fdatasync).
    pub fn write(&self, commits: u64) -> std::io::Result<()> {
        self.file.write_all_at(&commits.to_be_bytes(), 0)?;
        self.file.sync_data()
    }

    /// Sets the mark to what a database holds, e.g. after an operator restored an older copy and
    /// accepted what it lacks (`exchange-node restore`).
    pub fn reset(db: &Path, commits: u64) -> Result<(), StorageError> {
        let m = CommitMark::open(db)?;
        m.write(commits).map_err(|e| StorageError::Corrupt(format!("cannot write the commit mark {}: {e}", m.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_behind_its_mark_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("node.db");
        let m = CommitMark::open(&db).unwrap();
        assert_eq!(m.read().unwrap(), 0);
        m.check(0).unwrap();
        m.write(41).unwrap();
        let again = CommitMark::open(&db).unwrap();
        assert_eq!(again.read().unwrap(), 41);
        again.check(41).unwrap();
        again.check(45).unwrap();
        let err = again.check(40).unwrap_err().to_string();
        assert!(err.contains("41") && err.contains("40"), "{err}");
    }
}
