//! `exchange-lazyfs BACKING_DIR MOUNTPOINT`: mounts BACKING_DIR at MOUNTPOINT through a filesystem
//! that keeps written file data in memory until the file is fsynced (the LazyFS technique Jepsen
//! uses to test crash consistency; see [`fs`] for exactly what is lazy and what is not).
//!
//! A power cut is: kill -9 the program using the mount, kill -9 this process (every unsynced byte
//! is gone with it), lazily unmount (`fusermount3 -uz` or `umount -l`, which also drops the
//! kernel's page cache of the mount), and mount a fresh instance over the same backing directory:
//! what is seen then is exactly what was fsynced. The tests' `LazyMount` does all of that.
//!
//! It prints `mounted` on standard output once the mount is ready, then serves until it is
//! unmounted or killed. Mounting needs root (or `fusermount3` from Debian's `fuse3`) and /dev/fuse.

mod fs;
mod inodes;
mod overlay;

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use fuser::{Config, MountOption, Session};

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [backing, mountpoint] = args.as_slice() else {
        bail!("usage: exchange-lazyfs BACKING_DIR MOUNTPOINT");
    };
    let filesystem = fs::LazyFs::new(backing).with_context(|| format!("cannot use {} as the backing directory", backing.display()))?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("lazyfs:{}", backing.display())),
        MountOption::Subtype("exchange-lazyfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    let session = Session::new(filesystem, mountpoint, &config)
        .with_context(|| format!("cannot mount on {} (needs root or fusermount3, and /dev/fuse)", mountpoint.display()))?;
    let mut out = std::io::stdout();
    writeln!(out, "mounted")?;
    out.flush()?;
    session.run().context("serving the mount")
}
