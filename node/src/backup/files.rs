//! Durable file operations for backups and restores: private files (0600) and folders (0700),
//! `fsync` of files and of the folders that name them, streamed copies with their SHA-256, and hard
//! links where source and destination share a file system.
//!
//! Everything here streams through a fixed buffer: a 1 GiB attachment or a 20 GiB database never
//! sits in memory. All functions block: call them from `spawn_blocking` in async code.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// Read and copy buffer.
const BUFFER: usize = 1024 * 1024;

/// Creates a new file readable and writable by the node's user only; fails if it exists.
pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

/// Creates a folder (and its missing parents) accessible to the node's user only.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Makes the entries of folder `path` (files created, renamed or linked in it) durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Size and SHA-256 (lower-case hex) of a file, read in a stream.
pub fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((total, hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Copies `src` to a new private file `dst`, durably, returning the size and SHA-256 of what was
/// written.
pub fn copy_hashing(src: &Path, dst: &Path) -> io::Result<(u64, String)> {
    let mut from = File::open(src)?;
    let mut to = create_private(dst)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
    to.sync_all()?;
    Ok((total, hex::encode(hasher.finalize())))
}

/// Writes `value` as JSON to `path` atomically and durably: a private temporary file, `fsync`,
/// rename over `path`, `fsync` of the folder. A reader sees the old file or the new one, whole.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let folder = path.parent().ok_or_else(|| io::Error::other("a file path needs a folder"))?;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = create_private(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(value).map_err(io::Error::other)?)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(folder)
}

/// How a file was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Linked,
    Copied,
}

/// Places an immutable file `src` at `dst`: a hard link while `try_link` holds (it is cleared the
/// first time source and destination turn out to be on different file systems), a durable private
/// copy otherwise.
pub fn link_or_copy(src: &Path, dst: &Path, try_link: &mut bool) -> io::Result<Placed> {
    if *try_link {
        match fs::hard_link(src, dst) {
            Ok(()) => return Ok(Placed::Linked),
            Err(e) if matches!(e.kind(), io::ErrorKind::CrossesDevices | io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported) => {
                *try_link = false;
            }
            Err(e) => return Err(e),
        }
    }
    copy_hashing(src, dst)?;
    Ok(Placed::Copied)
}

/// Whether `name` is a complete attachment file: its SHA-256 in lower-case hex (partial uploads
/// end in `.part`).
pub fn is_attachment_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_are_private_and_hashed_and_links_fall_back_to_copies() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        fs::write(&src, b"abc").unwrap();
        let (n, digest) = copy_hashing(&src, &dir.path().join("b")).unwrap();
        assert_eq!((n, digest.as_str()), (3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        assert_eq!(fs::metadata(dir.path().join("b")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(sha256_file(&src).unwrap(), (n, digest.clone()));
        let mut try_link = true;
        assert_eq!(link_or_copy(&src, &dir.path().join("c"), &mut try_link).unwrap(), Placed::Linked);
        let mut try_link = false;
        assert_eq!(link_or_copy(&src, &dir.path().join("d"), &mut try_link).unwrap(), Placed::Copied);
        write_json_atomic(&dir.path().join("m.json"), &serde_json::json!({"k": 1})).unwrap();
        assert!(fs::read_to_string(dir.path().join("m.json")).unwrap().contains("\"k\": 1"));
        assert!(is_attachment_name(&digest) && !is_attachment_name(&format!("{digest}.part")));
    }
}
