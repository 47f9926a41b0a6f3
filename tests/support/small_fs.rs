//! Small filesystems for disk-full tests: a tmpfs of a given size mounted over a node's data
//! directory (root only), filled up to the last byte on command and freed again. Unmounted on drop,
//! even when the test fails (lazily, so a process still holding a file cannot keep it mounted).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether this process runs as root (mounts, namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// A tmpfs mounted at a folder.
pub struct SmallFs {
    dir: PathBuf,
    filler: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `bytes` at `dir` (created if missing).
    pub fn mount(dir: &Path, bytes: u64) -> SmallFs {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={}k,mode=0700", bytes / 1024), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs at {} failed", dir.display());
        SmallFs { dir: dir.to_path_buf(), filler: dir.join("filler.bin") }
    }

    /// Writes a filler file until the filesystem has no byte left.
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.filler).expect("create the filler");
        let chunk = vec![0x5au8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {} failed: {e}", self.dir.display()),
            }
        }
        // The last partial chunks, down to single bytes.
        for size in [4096usize, 512, 1] {
            while f.write(&chunk[..size]).is_ok_and(|n| n > 0) {}
        }
    }

    /// Removes the filler: the space is back.
    pub fn free(&self) {
        std::fs::remove_file(&self.filler).expect("remove the filler");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
