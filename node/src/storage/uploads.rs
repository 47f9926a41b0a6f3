//! Agencies' uploads: whose they are, how many and how large they may be, and how long an unfinished
//! one is kept.
//!
//! Each unit's unfinished uploads live in a folder of their own, `uploads/<unit tag>/`, one file per
//! attachment named `<sha256>.<declared size>.part`, so one unit can neither see nor disturb another's
//! and its quota is counted from a handful of files. When an upload completes and matches its
//! SHA-256, the bytes become the node's complete copy (see [`AttachmentStore::append_to`]) and an
//! empty marker `owners/<unit tag>/<sha256>` records that this unit uploaded them: a unit may cite an
//! attachment in a document only if it uploaded it, or received it in a document it may read (see
//! `relay::attachments`). The tag is the first 16 hex digits of the SHA-256 of the unit's address
//! (file names stay short and plain whatever the address).
//!
//! Markers are not part of a backup: after a restore, a unit re-uploads (sending the bytes again)
//! what it uploaded but had not yet cited.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use exchange_wire::Digest;
use sha2::{Digest as _, Sha256};

use super::attachments::{AttachmentError, AttachmentStore, Held};
pub use super::upload_limits::UploadLimits;

/// Why a unit may not start another upload now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error(
        "unit {unit} already has {open} unfinished uploads on this node, the most it may have (attachments.max_open_uploads_per_unit); finish them (PUT the rest of each file) or wait until unfinished uploads are removed, {ttl_secs} s after their last chunk (attachments.upload_ttl_secs)"
    )]
    TooMany { unit: String, open: usize, ttl_secs: u64 },
    #[error(
        "unit {unit} has unfinished uploads of {held} bytes on this node; another {size} bytes would pass its quota of {limit} bytes (attachments.max_upload_bytes_per_unit); finish them first or wait until unfinished uploads are removed, {ttl_secs} s after their last chunk (attachments.upload_ttl_secs)"
    )]
    TooManyBytes { unit: String, held: u64, size: u64, limit: u64, ttl_secs: u64 },
}

/// The file-name tag of a unit (see the module documentation).
fn tag(unit: &str) -> String {
    hex::encode(&Sha256::digest(unit.as_bytes())[..8])
}

/// One unit's unfinished upload found on disk.
struct Unfinished {
    digest: Digest,
    size: u64,
    path: PathBuf,
}

fn parse_upload_name(name: &str) -> Option<(Digest, u64)> {
    let rest = name.strip_suffix(".part")?;
    let (hex, size) = rest.split_once('.')?;
    Some((hex.parse().ok()?, size.parse().ok()?))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and its parent) if missing, durably.
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    if let Some(p) = dir.parent() {
        sync_dir(p)?;
        if let Some(pp) = p.parent() {
            sync_dir(pp)?;
        }
    }
    Ok(())
}

impl AttachmentStore {
    fn uploads_dir(&self, unit: &str) -> PathBuf {
        self.dir.join("uploads").join(tag(unit))
    }

    fn owner_marker(&self, unit: &str, digest: &Digest) -> PathBuf {
        self.dir.join("owners").join(tag(unit)).join(digest.to_hex())
    }

    fn unfinished(&self, unit: &str) -> std::io::Result<Vec<Unfinished>> {
        let dir = self.uploads_dir(unit);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            if let Some((digest, size)) = entry.file_name().to_str().and_then(parse_upload_name) {
                out.push(Unfinished { digest, size, path: entry.path() });
            }
        }
        Ok(out)
    }

    /// Whether `unit` uploaded the complete attachment `digest` here (all its bytes, verified).
    pub fn uploaded_by(&self, unit: &str, digest: &Digest) -> bool {
        self.owner_marker(unit, digest).exists()
    }

    /// How much of `digest` `unit`'s own unfinished upload holds, with its declared size; `None`
    /// when the unit has no unfinished upload of it.
    pub fn upload_held(&self, unit: &str, digest: &Digest) -> std::io::Result<Option<(u64, u64)>> {
        match self.unfinished(unit)?.into_iter().find(|u| u.digest == *digest) {
            Some(u) => Ok(Some((self.partial_held(&u.path)?, u.size))),
            None => Ok(None),
        }
    }

    /// Starts `unit`'s upload of `digest` (`size` bytes), within its quotas, unless it has one
    /// already: creates its (empty) file, which counts as open from now on.
    pub fn begin_upload(&self, unit: &str, digest: &Digest, size: u64) -> Result<Result<(), QuotaExceeded>, std::io::Error> {
        let open = self.unfinished(unit)?;
        if open.iter().any(|u| u.digest == *digest && u.size == size) {
            return Ok(Ok(()));
        }
        let limits = &self.upload_limits;
        let ttl_secs = limits.ttl.as_secs();
        if open.len() >= limits.max_open_per_unit {
            return Ok(Err(QuotaExceeded::TooMany { unit: unit.into(), open: open.len(), ttl_secs }));
        }
        let held: u64 = open.iter().map(|u| u.size).sum();
        if held.saturating_add(size) > limits.max_bytes_per_unit {
            return Ok(Err(QuotaExceeded::TooManyBytes { unit: unit.into(), held, size, limit: limits.max_bytes_per_unit, ttl_secs }));
        }
        let dir = self.uploads_dir(unit);
        ensure_dir(&dir)?;
        File::create(dir.join(format!("{}.{size}.part", digest.to_hex())))?;
        sync_dir(&dir)?;
        Ok(Ok(()))
    }

    /// Appends to `unit`'s upload of `digest` (started with [`AttachmentStore::begin_upload`]).
    /// On the last chunk the bytes are verified, become the complete attachment, and the unit is
    /// recorded as having uploaded them.
    pub fn append_upload(&self, unit: &str, digest: &Digest, size: u64, offset: u64, bytes: &[u8]) -> Result<Held, AttachmentError> {
        let part = self.uploads_dir(unit).join(format!("{}.{size}.part", digest.to_hex()));
        if !part.exists() {
            // Swept since it began (or never begun): the client starts again from 0.
            return Err(AttachmentError::WrongOffset { offset, committed: 0 });
        }
        let held = self.append_to(&part, digest, size, offset, bytes)?;
        if held == Held::Complete {
            let marker = self.owner_marker(unit, digest);
            let dir = marker.parent().expect("marker has a folder");
            ensure_dir(dir)?;
            File::create(&marker)?;
            sync_dir(dir)?;
        }
        Ok(held)
    }

    /// Removes every unfinished upload not written for `limits.ttl`, and the owner markers of
    /// attachments no longer held (and older than that). Returns how many uploads were removed.
    pub fn sweep_uploads(&self, now: SystemTime) -> std::io::Result<u64> {
        let before = now.checked_sub(self.upload_limits.ttl).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for unit_dir in subdirs(&self.dir.join("uploads"))? {
            for entry in fs::read_dir(&unit_dir)? {
                let path = entry?.path();
                if path.file_name().and_then(|n| n.to_str()).and_then(parse_upload_name).is_some()
                    && self.remove_partial_unused(&path, before)?
                {
                    removed += 1;
                }
            }
        }
        for unit_dir in subdirs(&self.dir.join("owners"))? {
            for entry in fs::read_dir(&unit_dir)? {
                let entry = entry?;
                let Some(digest) = entry.file_name().to_str().and_then(|n| n.parse::<Digest>().ok()) else { continue };
                if !self.complete_path(&digest).exists() && entry.metadata()?.modified()? < before {
                    fs::remove_file(entry.path())?;
                }
            }
        }
        Ok(removed)
    }
}

fn subdirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn store(dir: &Path, limits: UploadLimits) -> AttachmentStore {
        AttachmentStore::open(dir, limits).unwrap()
    }

    #[test]
    fn an_upload_belongs_to_its_unit_and_completes_into_the_shared_copy() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), UploadLimits::default());
        let d = exchange_wire::digest_payload(b"scan");
        assert_eq!(s.upload_held("a", &d).unwrap(), None);
        s.begin_upload("a", &d, 4).unwrap().unwrap();
        assert_eq!(s.upload_held("a", &d).unwrap(), Some((0, 4)));
        assert_eq!(s.upload_held("b", &d).unwrap(), None, "another unit sees nothing");
        assert_eq!(s.held(&d).unwrap(), Held::Partial(0), "a neighbour's view is separate");
        assert_eq!(s.append_upload("a", &d, 4, 0, b"scan").unwrap(), Held::Complete);
        assert!(s.uploaded_by("a", &d) && !s.uploaded_by("b", &d));
        assert_eq!(s.held(&d).unwrap(), Held::Complete);
        // Another unit proves it has the bytes by sending them; the shared copy is untouched.
        s.begin_upload("b", &d, 4).unwrap().unwrap();
        assert!(matches!(s.append_upload("b", &d, 4, 0, b"scam"), Err(AttachmentError::DigestMismatch { .. })));
        assert!(!s.uploaded_by("b", &d));
        s.begin_upload("b", &d, 4).unwrap().unwrap();
        assert_eq!(s.append_upload("b", &d, 4, 0, b"scan").unwrap(), Held::Complete);
        assert!(s.uploaded_by("b", &d));
    }

    #[test]
    fn quotas_bound_open_uploads_and_their_bytes_and_the_sweep_removes_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let limits = UploadLimits { max_open_per_unit: 2, max_bytes_per_unit: 100, ttl: Duration::from_secs(60) };
        let s = store(dir.path(), limits);
        let d = |n: u8| exchange_wire::digest_payload(&[n]);
        s.begin_upload("a", &d(1), 10).unwrap().unwrap();
        assert!(matches!(s.begin_upload("a", &d(2), 91).unwrap(), Err(QuotaExceeded::TooManyBytes { held: 10, .. })));
        s.begin_upload("a", &d(2), 90).unwrap().unwrap();
        assert!(matches!(s.begin_upload("a", &d(3), 1).unwrap(), Err(QuotaExceeded::TooMany { open: 2, .. })));
        s.begin_upload("b", &d(3), 1).unwrap().unwrap();
        assert_eq!(s.sweep_uploads(SystemTime::now()).unwrap(), 0, "young uploads stay");
        assert_eq!(s.sweep_uploads(SystemTime::now() + Duration::from_secs(61)).unwrap(), 3);
        s.begin_upload("a", &d(3), 1).unwrap().unwrap();
    }
}
