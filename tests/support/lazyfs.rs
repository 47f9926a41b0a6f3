//! A directory on the `exchange-lazyfs` test filesystem, whose unsynced writes a test can throw
//! away as a power cut would.
//!
//! [`LazyMount::power_cut`] kills the filesystem process (every byte written but not fsynced dies
//! with it), lazily unmounts (so the kernel's page cache of the mount goes too) and mounts a fresh
//! instance over the same backing directory: what is seen afterwards is exactly what was fsynced.
//! Kill the processes using the mount first (kill -9: a power cut stops everything at once).
//! Dropping a `LazyMount` kills the process and unmounts, also while a failed test unwinds.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Why power-cut tests cannot run on this machine, if they cannot: mounting needs root and /dev/fuse.
pub fn unsupported() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (no FUSE in this kernel or container)".into());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("not running as root (mounting the test filesystem needs root)".into());
    }
    None
}

/// A running `exchange-lazyfs` mount of `backing` at `mountpoint`.
pub struct LazyMount {
    backing: PathBuf,
    mountpoint: PathBuf,
    child: Option<Child>,
}

impl LazyMount {
    /// Creates both directories if needed and mounts.
    pub fn new(backing: &Path, mountpoint: &Path) -> anyhow::Result<LazyMount> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let mut mount = LazyMount { backing: backing.canonicalize()?, mountpoint: mountpoint.canonicalize()?, child: None };
        mount.mount()?;
        Ok(mount)
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory: what survives a power cut.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Drops every unsynced byte and mounts afresh over what was fsynced.
    pub fn power_cut(&mut self) -> anyhow::Result<()> {
        self.kill_and_unmount()?;
        self.mount()
    }

    fn mount(&mut self) -> anyhow::Result<()> {
        let binary = crate::bin_dir().join("exchange-lazyfs");
        let mut child = Command::new(&binary)
            .arg(&self.backing)
            .arg(&self.mountpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        // It prints one line once the mount answers; wait for it with a deadline.
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        self.child = Some(child);
        if line.trim() != "mounted" {
            let _ = self.kill_and_unmount();
            bail!("exchange-lazyfs did not mount {} on {} (see its error above)", self.backing.display(), self.mountpoint.display());
        }
        Ok(())
    }

    fn kill_and_unmount(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.mountpoint) {
            // Lazy: detaches now even if something still has a file open in it.
            let status = Command::new("umount").arg("--lazy").arg(&self.mountpoint).status().context("cannot run umount")?;
            if !status.success() || is_mounted(&self.mountpoint) {
                bail!("umount --lazy {} failed ({status})", self.mountpoint.display());
            }
        }
        Ok(())
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        if let Err(e) = self.kill_and_unmount() {
            eprintln!("warning: {e}");
        }
    }
}

/// Whether a filesystem is mounted exactly at `path` (canonical, without spaces).
fn is_mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table.lines().any(|l| l.split(' ').nth(4) == path.to_str())
}
