//! The attachment store: attachment bytes as files under `<data_dir>/attachments/`, apart from the
//! custody database, so a 1 GiB scan never passes through a transaction or sits in memory.
//!
//! An attachment is written in chunks of [`CHUNK_BYTES`]; each append is made durable (`fsync`)
//! before it is acknowledged, so an interrupted transfer resumes from the last committed chunk. The
//! file grows as a partial file and is renamed to `<sha256>` once every byte is there and the SHA-256
//! matches: a complete attachment is verified and immutable. A document is taken into custody only
//! when all its attachments are complete here (see `relay::attachments`).
//!
//! Partial files: `<sha256>.part` for bytes from a neighbour, and one file per unit for an agency's
//! upload (see [`uploads`](super::uploads): owners, quotas and the sweep of abandoned uploads), so
//! one unit can neither see nor disturb another's unfinished upload. No file stays open between
//! chunks: each append opens the partial file, writes, syncs and closes it.
//!
//! All methods block on the file system: call them from `tokio::task::spawn_blocking`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use exchange_wire::Digest;
use sha2::{Digest as _, Sha256};

/// The unit of transfer and of durability: every append but the last is exactly this long.
pub const CHUNK_BYTES: u64 = 1024 * 1024;

/// How much of an attachment this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Every byte, verified against the digest.
    Complete,
    /// The first `n` bytes, durably (0: nothing yet).
    Partial(u64),
}

/// Why an append was not taken. Nothing beyond the last committed chunk was kept.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("this node holds the first {committed} bytes of the attachment; send the bytes from offset {committed}, not {offset}")]
    WrongOffset { offset: u64, committed: u64 },
    #[error("the attachment is declared as {size} bytes but more bytes were sent")]
    TooLong { size: u64 },
    #[error("the attachment is {size} bytes; this node accepts attachments up to {limit} bytes (limits.max_attachment_bytes)")]
    TooLarge { size: u64, limit: u64 },
    #[error(
        "a chunk must be {CHUNK_BYTES} bytes except the last one; this one is {len} bytes and ends at {end} of {size}"
    )]
    ShortChunk { len: u64, end: u64, size: u64 },
    #[error("the {size} bytes received do not have SHA-256 {digest}: the file is not the one described (altered or truncated); upload it again from the start")]
    DigestMismatch { digest: Digest, size: u64 },
    #[error("attachment storage failed: {0}")]
    Io(#[from] std::io::Error),
    /// New bytes are refused while storage is short of space or damaged (see `storage::health`).
    #[error("{0}")]
    IntakeClosed(crate::storage::health::IntakeClosed),
}

/// An attachment being written: its committed length and the digest of its committed bytes so far.
/// The file itself is not kept open (an abandoned upload must not hold a descriptor).
struct Growing {
    committed: u64,
    hasher: Sha256,
}

/// Attachment files of one node.
pub struct AttachmentStore {
    pub(super) dir: PathBuf,
    /// Files being written or removed, by path. The per-file lock serialises appends to the same file
    /// (from an agency and a neighbour at once, say) and a sweep; different files go in parallel.
    growing: Mutex<HashMap<PathBuf, Arc<Mutex<Option<Growing>>>>>,
    /// Quotas and lifetime of agencies' unfinished uploads.
    pub upload_limits: super::upload_limits::UploadLimits,
}

impl AttachmentStore {
    /// Opens (and creates) the store in `dir`.
    pub fn open(dir: &Path, upload_limits: super::upload_limits::UploadLimits) -> std::io::Result<AttachmentStore> {
        if !dir.is_dir() {
            fs::create_dir_all(dir)?;
            // Make the new folder's name durable before anything in it is acknowledged.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(AttachmentStore { dir: dir.to_path_buf(), growing: Mutex::new(HashMap::new()), upload_limits })
    }

    pub(super) fn complete_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.to_hex())
    }

    fn part_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.part", digest.to_hex()))
    }

    /// How much of `digest` is held: complete, or what a neighbour has sent so far.
    pub fn held(&self, digest: &Digest) -> std::io::Result<Held> {
        if self.complete_path(digest).exists() {
            return Ok(Held::Complete);
        }
        self.partial_held(&self.part_path(digest)).map(Held::Partial)
    }

    /// The committed length of the partial file `part` (0 when there is none).
    pub(super) fn partial_held(&self, part: &Path) -> std::io::Result<u64> {
        let slot = self.slot(part);
        let guard = slot.lock().expect("attachment lock");
        if let Some(g) = guard.as_ref() {
            return Ok(g.committed);
        }
        match fs::metadata(part) {
            Ok(m) => Ok(m.len() / CHUNK_BYTES * CHUNK_BYTES),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn slot(&self, path: &Path) -> Arc<Mutex<Option<Growing>>> {
        self.growing.lock().expect("attachments lock").entry(path.to_path_buf()).or_default().clone()
    }

    /// Forgets the lock of a file that is gone, so the map does not grow with every file ever seen.
    pub(super) fn forget_slot(&self, path: &Path) {
        let mut map = self.growing.lock().expect("attachments lock");
        if map.get(path).is_some_and(|slot| Arc::strong_count(slot) == 1) {
            map.remove(path);
        }
    }

    /// Appends `bytes` from a neighbour at `offset` to the attachment `digest` of `size` bytes,
    /// durably, and returns what is held afterwards. `offset` must be the committed length
    /// ([`Held::Partial`]); when the last byte arrives the digest is checked and the attachment
    /// becomes [`Held::Complete`] (on a mismatch the partial file is discarded).
    pub fn append(&self, digest: &Digest, size: u64, offset: u64, bytes: &[u8]) -> Result<Held, AttachmentError> {
        if self.complete_path(digest).exists() {
            return Ok(Held::Complete);
        }
        self.append_to(&self.part_path(digest), digest, size, offset, bytes)
    }

    /// Appends to the partial file `part` of `digest` (see [`AttachmentStore::append`]). When the
    /// last byte arrives and the digest matches, the file becomes the complete attachment (if a
    /// complete copy appeared meanwhile, the two are the same verified bytes and `part` is removed).
    pub(super) fn append_to(&self, part: &Path, digest: &Digest, size: u64, offset: u64, bytes: &[u8]) -> Result<Held, AttachmentError> {
        let slot = self.slot(part);
        let mut guard = slot.lock().expect("attachment lock");
        if guard.is_none() {
            *guard = Some(resume(&self.dir, part)?);
        }
        let g = guard.as_mut().expect("just set");
        if offset != g.committed {
            return Err(AttachmentError::WrongOffset { offset, committed: g.committed });
        }
        let end = offset + bytes.len() as u64;
        if end > size {
            return Err(AttachmentError::TooLong { size });
        }
        if end < size && bytes.len() as u64 != CHUNK_BYTES {
            return Err(AttachmentError::ShortChunk { len: bytes.len() as u64, end, size });
        }
        // Opened for this chunk only: an upload abandoned between chunks holds no descriptor.
        let written = OpenOptions::new().write(true).open(part).and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.write_all(bytes)?;
            f.sync_data()
        });
        if let Err(e) = written {
            // The file may hold part of this chunk: start again from what is known to be committed.
            *guard = None;
            return Err(e.into());
        }
        g.hasher.update(bytes);
        g.committed = end;
        if end < size {
            return Ok(Held::Partial(end));
        }
        let actual = Digest(g.hasher.clone().finalize().into());
        *guard = None;
        drop(guard);
        self.forget_slot(part);
        if actual != *digest {
            let _ = fs::remove_file(part);
            return Err(AttachmentError::DigestMismatch { digest: *digest, size });
        }
        if self.complete_path(digest).exists() {
            fs::remove_file(part)?;
        } else {
            fs::rename(part, self.complete_path(digest))?;
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(Held::Complete)
    }

    /// Removes the partial file `part` if it was not written since `before` (checked again under
    /// its lock, so an append in progress finishes first). Returns whether it was removed.
    pub(super) fn remove_partial_unused(&self, part: &Path, before: SystemTime) -> std::io::Result<bool> {
        let slot = self.slot(part);
        let mut guard = slot.lock().expect("attachment lock");
        let removed = match fs::metadata(part) {
            Ok(m) if m.modified()? < before => {
                *guard = None;
                fs::remove_file(part)?;
                true
            }
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *guard = None;
                false
            }
            Err(e) => return Err(e),
        };
        drop(guard);
        if removed {
            self.forget_slot(part);
        }
        Ok(removed)
    }

    /// Opens a complete attachment for reading, with its size; `None` if it is not complete here.
    pub fn open_complete(&self, digest: &Digest) -> std::io::Result<Option<(File, u64)>> {
        match File::open(self.complete_path(digest)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Marks a complete attachment as just used (its modification time), so a retention sweep
    /// running now does not take it for an old one.
    /// Fails with `NotFound` when a sweep removed the file first: the two are serialised by the
    /// attachment's lock, so a file is either marked before the sweep looks or gone after.
    pub fn touch(&self, digest: &Digest) -> std::io::Result<()> {
        let slot = self.slot(&self.complete_path(digest));
        let _guard = slot.lock().expect("attachment lock");
        File::options().write(true).open(self.complete_path(digest))?.set_modified(SystemTime::now())
    }

    /// Every attachment file held: its digest, whether it is complete, and when it was last written
    /// or used.
    pub fn files(&self) -> std::io::Result<Vec<(Digest, bool, SystemTime)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let (hex, complete) = match name.strip_suffix(".part") {
                Some(hex) => (hex.to_owned(), false),
                None => (name, true),
            };
            if let Ok(digest) = hex.parse::<Digest>() {
                out.push((digest, complete, entry.metadata()?.modified()?));
            }
        }
        Ok(out)
    }

    /// Removes an attachment file (complete, or the partial one) if it was not written or used
    /// since `before`; checked again here, just before removing. Returns whether it was removed.
    pub fn remove_unused(&self, digest: &Digest, complete: bool, before: SystemTime) -> std::io::Result<bool> {
        let path = if complete { self.complete_path(digest) } else { self.part_path(digest) };
        let slot = self.slot(&path);
        let mut guard = slot.lock().expect("attachment lock");
        match fs::metadata(&path) {
            Ok(m) if m.modified()? < before => {
                *guard = None;
                fs::remove_file(&path)?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads up to [`CHUNK_BYTES`] of a complete attachment from `offset`.
    pub fn read_chunk(&self, digest: &Digest, offset: u64) -> std::io::Result<Vec<u8>> {
        let (mut f, len) = self
            .open_complete(digest)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("attachment {digest} is not complete here")))?;
        let n = len.saturating_sub(offset).min(CHUNK_BYTES) as usize;
        let mut buf = vec![0u8; n];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut buf)?;
        Ok(buf)
    }
    /// Reads the chunk of `digest` (`size` bytes in all) that starts at `offset`, from the complete
    /// file, or from the partial file being received when its committed bytes cover the chunk: cut-
    /// through passes chunks on while the rest still arrives. The last chunk is read only from the
    /// complete file, so it leaves this node only after the whole file verified here. `Ok(None)`:
    /// not held that far yet.
    pub fn read_held_chunk(&self, digest: &Digest, size: u64, offset: u64) -> std::io::Result<Option<Vec<u8>>> {
        let want = size.saturating_sub(offset).min(CHUNK_BYTES);
        let complete = || match self.read_chunk(digest, offset) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        if let Some(bytes) = complete()? {
            return Ok(Some(bytes));
        }
        let part = self.part_path(digest);
        if offset + want >= size || self.partial_held(&part)? < offset + want {
            return Ok(None);
        }
        // Committed bytes are never rewritten: a later append, a resume or a failed write only
        // touches what lies past them. The file may have become complete (renamed) meanwhile.
        let mut f = match File::open(&part) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return complete(),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; want as usize];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut buf)?;
        Ok(Some(buf))
    }
}

/// Opens a partial file after a restart (or a failed write): drops any bytes past the last whole
/// chunk and digests what is kept, so the final check covers every byte. The file is closed again.
fn resume(dir: &Path, path: &Path) -> std::io::Result<Growing> {
    let created = !path.exists();
    let mut file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(path)?;
    if created {
        // A chunk's fsync makes its bytes durable, not the new file's name: without this, a
        // power cut could lose a file whose chunks were already acknowledged.
        File::open(path.parent().unwrap_or(dir))?.sync_all()?;
    }
    let committed = file.metadata()?.len() / CHUNK_BYTES * CHUNK_BYTES;
    file.set_len(committed)?;
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = committed;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(Growing { committed, hasher })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn written_in_chunks_resumed_after_a_restart_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(2 * CHUNK_BYTES as usize + 1000);
        let digest = exchange_wire::digest_payload(&data);
        let size = data.len() as u64;
        let c = CHUNK_BYTES as usize;
        {
            let store = AttachmentStore::open(dir.path(), Default::default()).unwrap();
            assert_eq!(store.held(&digest).unwrap(), Held::Partial(0));
            assert_eq!(store.append(&digest, size, 0, &data[..c]).unwrap(), Held::Partial(CHUNK_BYTES));
            assert!(matches!(store.append(&digest, size, 0, &data[..c]), Err(AttachmentError::WrongOffset { committed, .. }) if committed == CHUNK_BYTES));
            assert!(matches!(store.append(&digest, size, CHUNK_BYTES, &data[c..c + 10]), Err(AttachmentError::ShortChunk { .. })));
        }
        // A torn write past the last chunk (a crash mid-append) is dropped on reopening.
        let mut f = OpenOptions::new().append(true).open(dir.path().join(format!("{digest}.part"))).unwrap();
        f.write_all(&[0xFF; 777]).unwrap();
        let store = AttachmentStore::open(dir.path(), Default::default()).unwrap();
        assert_eq!(store.held(&digest).unwrap(), Held::Partial(CHUNK_BYTES));
        assert_eq!(store.append(&digest, size, CHUNK_BYTES, &data[c..2 * c]).unwrap(), Held::Partial(2 * CHUNK_BYTES));
        assert_eq!(store.append(&digest, size, 2 * CHUNK_BYTES, &data[2 * c..]).unwrap(), Held::Complete);
        assert_eq!(store.held(&digest).unwrap(), Held::Complete);
        assert_eq!(store.read_chunk(&digest, 2 * CHUNK_BYTES).unwrap(), &data[2 * c..]);
        assert_eq!(store.open_complete(&digest).unwrap().unwrap().1, size);
    }

    #[test]
    fn chunks_are_read_while_the_file_arrives_but_the_last_only_once_it_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = AttachmentStore::open(dir.path(), Default::default()).unwrap();
        let data = bytes(2 * CHUNK_BYTES as usize + 10);
        let (digest, size, c) = (exchange_wire::digest_payload(&data), data.len() as u64, CHUNK_BYTES as usize);
        assert_eq!(store.read_held_chunk(&digest, size, 0).unwrap(), None, "nothing held yet");
        store.append(&digest, size, 0, &data[..c]).unwrap();
        assert_eq!(store.read_held_chunk(&digest, size, 0).unwrap().as_deref(), Some(&data[..c]));
        assert_eq!(store.read_held_chunk(&digest, size, CHUNK_BYTES).unwrap(), None, "not committed yet");
        store.append(&digest, size, CHUNK_BYTES, &data[c..2 * c]).unwrap();
        assert_eq!(store.read_held_chunk(&digest, size, CHUNK_BYTES).unwrap().as_deref(), Some(&data[c..2 * c]));
        // A torn tail past the committed chunks (as after a crash) is not passed on.
        let mut f = OpenOptions::new().append(true).open(dir.path().join(format!("{digest}.part"))).unwrap();
        f.write_all(&data[2 * c..]).unwrap();
        assert_eq!(store.read_held_chunk(&digest, size, 2 * CHUNK_BYTES).unwrap(), None, "the last chunk waits for the verified file");
        let store = AttachmentStore::open(dir.path(), Default::default()).unwrap();
        assert_eq!(store.append(&digest, size, 2 * CHUNK_BYTES, &data[2 * c..]).unwrap(), Held::Complete);
        assert_eq!(store.read_held_chunk(&digest, size, 2 * CHUNK_BYTES).unwrap().as_deref(), Some(&data[2 * c..]));
        assert_eq!(store.read_held_chunk(&digest, size, 0).unwrap().as_deref(), Some(&data[..c]));
    }

    #[test]
    fn only_files_unused_since_the_cutoff_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = AttachmentStore::open(dir.path(), Default::default()).unwrap();
        let digest = exchange_wire::digest_payload(b"scan");
        store.append(&digest, 4, 0, b"scan").unwrap();
        let files = store.files().unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].1, "complete");
        let earlier = SystemTime::now() - std::time::Duration::from_secs(3600);
        assert!(!store.remove_unused(&digest, true, earlier).unwrap(), "used after the cutoff: kept");
        File::options().write(true).open(dir.path().join(digest.to_hex())).unwrap().set_modified(earlier - std::time::Duration::from_secs(60)).unwrap();
        store.touch(&digest).unwrap();
        assert!(!store.remove_unused(&digest, true, earlier).unwrap(), "touched: kept");
        File::options().write(true).open(dir.path().join(digest.to_hex())).unwrap().set_modified(earlier - std::time::Duration::from_secs(60)).unwrap();
        assert!(store.remove_unused(&digest, true, earlier).unwrap());
        assert_eq!(store.held(&digest).unwrap(), Held::Partial(0));
    }

    #[test]
    fn bytes_that_do_not_match_the_digest_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = AttachmentStore::open(dir.path(), Default::default()).unwrap();
        let digest = exchange_wire::digest_payload(b"the real scan");
        assert!(matches!(store.append(&digest, 13, 0, b"a forged scan"), Err(AttachmentError::DigestMismatch { .. })));
        assert_eq!(store.held(&digest).unwrap(), Held::Partial(0));
        assert!(matches!(store.append(&digest, 5, 0, b"too long"), Err(AttachmentError::TooLong { .. })));
        assert_eq!(store.append(&digest, 13, 0, b"the real scan").unwrap(), Held::Complete);
    }
}
