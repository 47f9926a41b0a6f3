//! FUSE inode numbers for paths of the backing directory.
//!
//! The kernel names files by inode number; the backing directory by path. Numbers are handed out
//! on first sight of a path and follow it through renames. Hard links are not supported (the tool
//! refuses to make them), so one path has one number. Numbers are never reused within a mount.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The root directory's inode number, fixed by FUSE.
pub const ROOT: u64 = 1;

/// Paths are relative to the backing directory; the root is the empty path.
#[derive(Debug)]
pub struct Inodes {
    paths: HashMap<u64, PathBuf>,
    numbers: HashMap<PathBuf, u64>,
    next: u64,
}

impl Inodes {
    pub fn new() -> Inodes {
        let mut inodes = Inodes { paths: HashMap::new(), numbers: HashMap::new(), next: ROOT + 1 };
        inodes.paths.insert(ROOT, PathBuf::new());
        inodes.numbers.insert(PathBuf::new(), ROOT);
        inodes
    }

    /// The path of an inode, if it still has one (an unlinked file that is still open has none).
    pub fn path(&self, ino: u64) -> Option<&Path> {
        self.paths.get(&ino).map(PathBuf::as_path)
    }

    /// The number of `path`, handing out a new one on first sight.
    pub fn number(&mut self, path: &Path) -> u64 {
        if let Some(&ino) = self.numbers.get(path) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.paths.insert(ino, path.to_path_buf());
        self.numbers.insert(path.to_path_buf(), ino);
        ino
    }

    /// Forgets the path (after unlink or rmdir); returns the inode that had it.
    pub fn remove(&mut self, path: &Path) -> Option<u64> {
        let ino = self.numbers.remove(path)?;
        self.paths.remove(&ino);
        Some(ino)
    }

    /// Moves `from` (and everything under it) to `to`; returns the inode `to` replaced, if any.
    pub fn rename(&mut self, from: &Path, to: &Path) -> Option<u64> {
        let replaced = self.remove(to);
        let moved: Vec<(u64, PathBuf)> = self
            .paths
            .iter()
            .filter_map(|(&ino, p)| p.strip_prefix(from).ok().map(|rest| (ino, if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) })))
            .collect();
        for (ino, new) in moved {
            let old = self.paths.insert(ino, new.clone()).expect("listed above");
            self.numbers.remove(&old);
            self.numbers.insert(new, ino);
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_renames_of_files_and_directories() {
        let mut t = Inodes::new();
        let dir = t.number(Path::new("a"));
        let file = t.number(Path::new("a/f"));
        let other = t.number(Path::new("b"));
        assert_eq!(t.number(Path::new("a/f")), file);
        assert_eq!(t.rename(Path::new("a"), Path::new("b")), Some(other));
        assert_eq!(t.path(dir), Some(Path::new("b")));
        assert_eq!(t.path(file), Some(Path::new("b/f")));
        assert_eq!(t.path(other), None);
        assert_eq!(t.number(Path::new("b/f")), file);
        assert_eq!(t.remove(Path::new("b/f")), Some(file));
        assert_ne!(t.number(Path::new("b/f")), file, "numbers are not reused");
        assert_eq!(t.path(ROOT), Some(Path::new("")));
    }

    #[test]
    fn a_rename_does_not_touch_siblings_sharing_a_prefix() {
        let mut t = Inodes::new();
        let ab = t.number(Path::new("ab"));
        t.number(Path::new("a"));
        t.rename(Path::new("a"), Path::new("c"));
        assert_eq!(t.path(ab), Some(Path::new("ab")));
    }
}
