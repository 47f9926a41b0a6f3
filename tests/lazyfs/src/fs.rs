//! The FUSE filesystem: a backing directory passed through, except that file data is durable only
//! once fsynced.
//!
//! - **File data** (writes, truncation, extension) is held in memory per file ([`Overlay`]) and
//!   reaches the backing file only on `fsync`/`fdatasync` of that file (or a write through an
//!   `O_SYNC`/`O_DSYNC` descriptor), which writes the merge and fsyncs the backing file. Reads and
//!   sizes see the unsynced data. Killing the process loses every unsynced byte: a power cut.
//! - **Metadata** (create, mkdir, unlink, rmdir, rename, chmod, chown) goes straight to the backing
//!   directory, so it survives a power cut even without an fsync of the directory: this tool finds
//!   data that was acknowledged before it was fsynced, not missing directory fsyncs. `fsyncdir`
//!   fsyncs the backing directory. A file created and written but never fsynced comes back empty.
//! - Not supported: hard links, symlink creation, device nodes, extended attributes, setting times
//!   (accepted and ignored). Locks are left to the kernel (local to this machine, which is all a
//!   single SQLite process needs); shared `mmap` works through the kernel's page cache (SQLite's
//!   `-shm`), whose written-back pages are unsynced data like any other.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    Request, TimeOrNow, WriteFlags,
};

use crate::inodes::{Inodes, ROOT};
use crate::overlay::{Overlay, read_full_at};

/// How long the kernel may cache attributes and names: every change goes through this mount, so
/// the kernel's view cannot go stale behind its back.
const TTL: Duration = Duration::from_secs(1);

type Result<T> = std::result::Result<T, Errno>;

/// The filesystem over one backing directory.
pub struct LazyFs {
    root: PathBuf,
    state: Mutex<State>,
}

struct State {
    inodes: Inodes,
    /// Unsynced data, per inode.
    overlays: HashMap<u64, Overlay>,
    /// Open files: a read-write descriptor of the backing file each, so any of them can write back.
    handles: HashMap<u64, Handle>,
    next_handle: u64,
}

struct Handle {
    ino: u64,
    file: File,
}

impl LazyFs {
    pub fn new(root: &Path) -> std::io::Result<LazyFs> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(std::io::Error::other(format!("{} is not a directory", root.display())));
        }
        let state = State { inodes: Inodes::new(), overlays: HashMap::new(), handles: HashMap::new(), next_handle: 1 };
        Ok(LazyFs { root, state: Mutex::new(state) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }
}

impl State {
    fn path(&self, ino: u64) -> Result<PathBuf> {
        self.inodes.path(ino).map(Path::to_path_buf).ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    fn handle(&self, fh: FileHandle) -> Result<&Handle> {
        self.handles.get(&fh.0).ok_or(Errno::EBADF)
    }

    fn is_open(&self, ino: u64) -> bool {
        self.handles.values().any(|h| h.ino == ino)
    }

    /// Drops the unsynced data of an inode that lost its name, unless it is still open.
    fn forget_if_gone(&mut self, ino: Option<u64>) {
        if let Some(ino) = ino
            && self.inodes.path(ino).is_none()
            && !self.is_open(ino)
        {
            self.overlays.remove(&ino);
        }
    }

    fn add_handle(&mut self, ino: u64, file: File) -> FileHandle {
        let fh = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(fh, Handle { ino, file });
        FileHandle(fh)
    }

    /// Writes an inode's unsynced data to its backing file and fsyncs that file.
    fn sync(&mut self, ino: u64, file: &File, datasync: bool) -> Result<()> {
        if let Some(overlay) = self.overlays.remove(&ino)
            && let Err(e) = overlay.write_back(file)
        {
            self.overlays.insert(ino, overlay);
            return Err(e.into());
        }
        if datasync { file.sync_data() } else { file.sync_all() }.map_err(Errno::from)
    }
}

fn attr(ino: u64, md: &Metadata, overlay: Option<&Overlay>) -> FileAttr {
    let time = |secs: i64, nanos: i64| UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos as u32);
    let size = overlay.map_or(md.len(), Overlay::size);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: if overlay.is_some() { size.div_ceil(512) } else { md.blocks() },
        atime: time(md.atime(), md.atime_nsec()),
        mtime: time(md.mtime(), md.mtime_nsec()),
        ctime: time(md.ctime(), md.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(md.file_type()).unwrap_or(FileType::RegularFile),
        perm: (md.mode() & 0o7777) as u16,
        nlink: md.nlink() as u32,
        uid: md.uid(),
        gid: md.gid(),
        rdev: md.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

impl LazyFs {
    /// Attributes of an inode: from its path, or from an open descriptor once it has no name.
    fn getattr_of(&self, st: &State, ino: u64) -> Result<FileAttr> {
        let md = match st.inodes.path(ino) {
            Some(p) => fs::symlink_metadata(self.full(p))?,
            None => st.handles.values().find(|h| h.ino == ino).ok_or(Errno::ENOENT)?.file.metadata()?,
        };
        Ok(attr(ino, &md, st.overlays.get(&ino)))
    }

    fn lookup_path(&self, st: &mut State, rel: &Path) -> Result<FileAttr> {
        let md = fs::symlink_metadata(self.full(rel))?;
        let ino = st.inodes.number(rel);
        Ok(attr(ino, &md, st.overlays.get(&ino)))
    }

    fn open_backing(&self, rel: &Path, flags: OpenFlags) -> Result<File> {
        let path = self.full(rel);
        // Read-write whenever allowed, so a later fsync through this handle can write back data
        // written through another one; the kernel has already checked the caller's access.
        OpenOptions::new().read(true).write(true).open(&path).or_else(|_| {
            let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
            OpenOptions::new().read(true).write(write).open(&path).map_err(Errno::from)
        })
    }

    fn do_setattr(&self, ino: u64, mode: Option<u32>, uid: Option<u32>, gid: Option<u32>, size: Option<u64>) -> Result<FileAttr> {
        let mut st = self.state();
        if let Some(rel) = st.inodes.path(ino).map(Path::to_path_buf) {
            let path = self.full(&rel);
            if let Some(mode) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid)?;
            }
        }
        if let Some(size) = size {
            let current = self.getattr_of(&st, ino)?;
            if current.kind != FileType::RegularFile {
                return Err(Errno::EISDIR);
            }
            st.overlays.entry(ino).or_insert_with(|| Overlay::new(current.size)).truncate(size);
        }
        self.getattr_of(&st, ino)
    }

    fn do_create(&self, parent: u64, name: &OsStr, mode: u32, umask: u32, flags: i32) -> Result<(FileAttr, FileHandle)> {
        let mut st = self.state();
        let rel = st.child(parent, name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .create_new(flags & libc::O_EXCL != 0)
            .mode(mode & !umask & 0o7777)
            .open(self.full(&rel))?;
        let ino = st.inodes.number(&rel);
        if flags & libc::O_TRUNC != 0 {
            let len = file.metadata()?.len();
            st.overlays.entry(ino).or_insert_with(|| Overlay::new(len)).truncate(0);
        }
        let fh = st.add_handle(ino, file);
        Ok((self.getattr_of(&st, ino)?, fh))
    }

    fn do_read(&self, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>> {
        let st = self.state();
        let handle = st.handle(fh)?;
        match st.overlays.get(&handle.ino) {
            Some(overlay) => Ok(overlay.read(&handle.file, offset, size as usize)?),
            None => {
                let mut buf = vec![0; size as usize];
                let n = read_full_at(&handle.file, &mut buf, offset)?;
                buf.truncate(n);
                Ok(buf)
            }
        }
    }

    fn do_write(&self, fh: FileHandle, offset: u64, data: &[u8], flags: OpenFlags) -> Result<()> {
        let mut st = self.state();
        let st = &mut *st;
        let handle = st.handles.get(&fh.0).ok_or(Errno::EBADF)?;
        let overlay = match st.overlays.entry(handle.ino) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(Overlay::new(handle.file.metadata()?.len())),
        };
        overlay.write(&handle.file, offset, data)?;
        if flags.0 & (libc::O_SYNC | libc::O_DSYNC) != 0 {
            let (ino, file) = (handle.ino, handle.file.try_clone()?);
            st.sync(ino, &file, flags.0 & libc::O_SYNC != libc::O_SYNC)?;
        }
        Ok(())
    }

    fn do_fsync(&self, fh: FileHandle, datasync: bool) -> Result<()> {
        let mut st = self.state();
        let handle = st.handle(fh)?;
        let (ino, file) = (handle.ino, handle.file.try_clone()?);
        st.sync(ino, &file, datasync)
    }

    fn do_readdir(&self, ino: u64, offset: u64, reply: &mut ReplyDirectory) -> Result<()> {
        let mut st = self.state();
        let rel = st.path(ino)?;
        let parent = rel.parent().map_or(ROOT, |p| st.inodes.number(p));
        let mut entries = vec![(ino, FileType::Directory, OsStr::new(".").to_os_string()), (parent, FileType::Directory, "..".into())];
        let mut children: Vec<(std::ffi::OsString, FileType)> = fs::read_dir(self.full(&rel))?
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name(), FileType::from_std(e.file_type().ok()?)?)))
            .collect();
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in children {
            entries.push((st.inodes.number(&rel.join(&name)), kind, name));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        Ok(())
    }

    fn do_rename(&self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr, flags: RenameFlags) -> Result<()> {
        let mut st = self.state();
        let (from, to) = (st.child(parent, name)?, st.child(newparent, newname)?);
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            if fs::symlink_metadata(self.full(&to)).is_ok() {
                return Err(Errno::EEXIST);
            }
        } else if !flags.is_empty() {
            return Err(Errno::EINVAL);
        }
        fs::rename(self.full(&from), self.full(&to))?;
        let replaced = st.inodes.rename(&from, &to);
        st.forget_if_gone(replaced);
        Ok(())
    }

    fn do_remove(&self, parent: u64, name: &OsStr, dir: bool) -> Result<()> {
        let mut st = self.state();
        let rel = st.child(parent, name)?;
        if dir { fs::remove_dir(self.full(&rel)) } else { fs::remove_file(self.full(&rel)) }?;
        let gone = st.inodes.remove(&rel);
        st.forget_if_gone(gone);
        Ok(())
    }

    fn do_statfs(&self) -> Result<libc::statvfs> {
        let path = std::ffi::CString::new(self.root.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
        let mut out: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a properly sized, writable statvfs.
        if unsafe { libc::statvfs(path.as_ptr(), &mut out) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(out)
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.state();
        match st.child(parent.0, name).and_then(|rel| self.lookup_path(&mut st, &rel)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr_of(&self.state(), ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino.0, mode, uid, gid, size) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = self.state().path(ino.0).and_then(|rel| fs::read_link(self.full(&rel)).map_err(Errno::from));
        match target {
            Ok(t) => reply.data(t.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut st = self.state();
        let made = st.child(parent.0, name).and_then(|rel| {
            fs::DirBuilder::new().mode(mode & !umask & 0o7777).create(self.full(&rel))?;
            self.lookup_path(&mut st, &rel)
        });
        match made {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(&self, _req: &Request, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags, reply: ReplyEmpty) {
        match self.do_rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.state();
        match st.path(ino.0).and_then(|rel| self.open_backing(&rel, flags)) {
            Ok(file) => reply.opened(st.add_handle(ino.0, file), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, size: u32, _flags: OpenFlags, _lock: Option<LockOwner>, reply: ReplyData) {
        match self.do_read(fh, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.do_write(fh, offset, data, flags) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        // close() makes nothing durable.
        reply.ok();
    }

    fn release(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _flags: OpenFlags, _lock: Option<LockOwner>, _flush: bool, reply: ReplyEmpty) {
        let mut st = self.state();
        st.handles.remove(&fh.0);
        st.forget_if_gone(Some(ino.0));
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        match self.do_fsync(fh, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.do_readdir(ino.0, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let synced = self.state().path(ino.0).and_then(|rel| File::open(self.full(&rel))?.sync_all().map_err(Errno::from));
        match synced {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.do_statfs() {
            Ok(s) => reply.statfs(s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_bsize as u32, s.f_namemax as u32, s.f_frsize as u32),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks access itself.
        reply.ok();
    }

    fn create(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        match self.do_create(parent.0, name, mode, umask, flags) {
            Ok((a, fh)) => reply.created(&TTL, &a, Generation(0), fh, FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut st = self.state();
        let grown = self.getattr_of(&st, ino.0).map(|current| {
            let overlay = st.overlays.entry(ino.0).or_insert_with(|| Overlay::new(current.size));
            if offset + length > overlay.size() {
                overlay.truncate(offset + length);
            }
        });
        match grown {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
