//! The FUSE adapter: serves the layout over the kernel's FUSE protocol.
//!
//! Each request locks the shared model briefly, advances its clock, answers and unlocks, so many
//! processes can hammer the mount at once. Nothing that changes is cached by the kernel (entry
//! and attribute TTL zero; see [`STATIC_TTL`] for the names that never change), and attribute files are opened with
//! direct I/O so a read returns the generated text whatever `st_size` (4096, as sysfs) says.
//! Writes that must wait, a remove of a held device or a slow create, hand their reply to a
//! thread that finishes it later, so the session keeps serving other requests meanwhile.
//! Inode numbers are assigned per path on first sight and never reused.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use crate::layout::{self, Node};
use crate::model::{Model, WriteOutcome};

/// Nothing that can change may be cached: every lookup and stat goes to the model.
const TTL: Duration = Duration::ZERO;

/// How long the kernel may keep a lookup of a name that never changes while a parent is
/// registered: the top directories and a parent's type directories with their attribute files
/// (not the `devices/` links inside, which follow live mdevs). Real sysfs answers these from the
/// dentry cache; without this every path walk would cost a round trip per component, which
/// measures FUSE rather than the client. Contents are still never cached (direct I/O), and a
/// name that goes away fails at open since its inode no longer resolves.
const STATIC_TTL: Duration = Duration::from_secs(1);

fn entry_ttl(path: &str) -> Duration {
    const FIXED: &[&str] = &[
        "sys",
        "sys/class",
        "sys/class/mdev_bus",
        "sys/bus",
        "sys/bus/mdev",
        "sys/bus/mdev/devices",
        "sys/bus/pci",
        "sys/bus/pci/devices",
        "sys/devices",
        "sys/devices/virtual",
        "sys/devices/pci0000:00",
    ];
    let p = path.trim_start_matches('/');
    let in_types = p
        .split_once("/mdev_supported_types/")
        .is_some_and(|(_, rest)| !rest.contains("/devices/"));
    if FIXED.contains(&p) || in_types {
        STATIC_TTL
    } else {
        TTL
    }
}

/// `st_size` of attribute files, as sysfs reports for every attribute.
const ATTR_SIZE: u64 = 4096;

/// Path <-> inode numbers; the root is inode 1 with the empty path.
#[derive(Debug, Default)]
struct Inodes {
    by_path: HashMap<String, u64>,
    paths: Vec<String>,
}

impl Inodes {
    fn new() -> Inodes {
        let mut i = Inodes::default();
        i.intern("");
        i
    }

    fn intern(&mut self, path: &str) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            return ino;
        }
        self.paths.push(path.to_string());
        let ino = self.paths.len() as u64;
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    fn path(&self, ino: INodeNo) -> Option<String> {
        let i = usize::try_from(ino.0).ok()?.checked_sub(1)?;
        self.paths.get(i).cloned()
    }
}

fn components(path: &str) -> Vec<&str> {
    if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

/// The model and the inode table, behind one lock.
struct State {
    model: Model,
    inodes: Inodes,
}

/// State shared by the session threads and the threads finishing delayed writes.
struct Shared {
    state: Mutex<State>,
    /// Signalled after every change, for blocked removes waiting on a release.
    changed: Condvar,
}

impl Shared {
    /// Locks the state and brings the model's clock to now. A panic elsewhere must not take
    /// the whole mount down, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.model.advance(Instant::now());
        st.model.requests += 1;
        st
    }
}

/// The filesystem handed to fuser.
pub struct SimFs {
    shared: Arc<Shared>,
    mounted_at: SystemTime,
}

impl SimFs {
    /// Wraps a model for serving.
    pub fn new(model: Model) -> SimFs {
        SimFs {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    model,
                    inodes: Inodes::new(),
                }),
                changed: Condvar::new(),
            }),
            mounted_at: SystemTime::now(),
        }
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (kind, perm, size, nlink) = match node {
            Node::Dir => (FileType::Directory, 0o755, 0, 2),
            Node::File(a) => (FileType::RegularFile, a.mode(), ATTR_SIZE, 1),
            Node::Link(t) => (FileType::Symlink, 0o777, t.len() as u64, 1),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The path and node of an inode, if it still exists.
    fn resolve(st: &State, ino: INodeNo) -> Option<(String, Node)> {
        let path = st.inodes.path(ino)?;
        let node = layout::lookup(&st.model, &components(&path))?;
        Some((path, node))
    }

    fn attr_reply(&self, ino: INodeNo, reply: ReplyAttr) {
        let st = self.shared.lock();
        match Self::resolve(&st, ino) {
            Some((_, node)) => reply.attr(&TTL, &self.attr(ino.0, &node)),
            None => reply.error(Errno::ENOENT),
        }
    }
}

/// A write whose reply is still owed: answered at once, or by a thread once the model has
/// finished it, so the session keeps serving other requests meanwhile.
struct PendingWrite {
    shared: Arc<Shared>,
    /// Mount-relative path written to, for the event log.
    path: String,
    data: Vec<u8>,
    reply: ReplyWrite,
}

impl PendingWrite {
    /// Replies with the whole length written, or the errno.
    fn answer(self, result: Result<(), i32>) {
        match result {
            Ok(()) => self
                .reply
                .written(u32::try_from(self.data.len()).unwrap_or(u32::MAX)),
            Err(e) => self.reply.error(errno(e)),
        }
    }

    /// A remove of a held device: waits until the model no longer holds it back, then
    /// succeeds.
    fn finish_remove(self, uuid: &str, serial: u64) {
        let shared = Arc::clone(&self.shared);
        let mut st = shared.lock();
        while st.model.remove_pending(uuid, serial) {
            st = shared
                .changed
                .wait_timeout(st, Duration::from_millis(500))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            st.model.advance(Instant::now());
        }
        st.model.record(&self.path, &self.data, Ok(()));
        drop(st);
        self.answer(Ok(()));
    }

    /// A write that takes `delay`: sleeps, lets the model `finish` it, logs and answers.
    fn finish_after(self, delay: Duration, finish: impl FnOnce(&mut Model) -> Result<(), i32>) {
        thread::sleep(delay);
        let shared = Arc::clone(&self.shared);
        let mut st = shared.lock();
        let result = finish(&mut st.model);
        st.model.record(&self.path, &self.data, result);
        shared.changed.notify_all();
        drop(st);
        self.answer(result);
    }
}

fn file_type(node: &Node) -> FileType {
    match node {
        Node::Dir => FileType::Directory,
        Node::File(_) => FileType::RegularFile,
        Node::Link(_) => FileType::Symlink,
    }
}

impl Filesystem for SimFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        let mut st = self.shared.lock();
        let Some(ppath) = st.inodes.path(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let path = join(&ppath, name);
        match layout::lookup(&st.model, &components(&path)) {
            Some(node) => {
                let ino = st.inodes.intern(&path);
                reply.entry(&entry_ttl(&path), &self.attr(ino, &node), Generation(0));
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.attr_reply(ino, reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Opening with O_TRUNC (shell redirections, std::fs::write) truncates first; sysfs
        // accepts and ignores that, and so does this.
        self.attr_reply(ino, reply);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = self.shared.lock();
        match Self::resolve(&st, ino) {
            Some((_, Node::Link(target))) => reply.data(target.as_bytes()),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EACCES);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EACCES);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EACCES);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let st = self.shared.lock();
        let attr = match Self::resolve(&st, ino) {
            Some((_, Node::File(a))) => a,
            Some((_, Node::Dir)) => return reply.error(Errno::EISDIR),
            Some((_, Node::Link(_))) => return reply.error(Errno::ELOOP),
            None => return reply.error(Errno::ENOENT),
        };
        let (r, w) = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => (true, false),
            OpenAccMode::O_WRONLY => (false, true),
            OpenAccMode::O_RDWR => (true, true),
        };
        if (r && !attr.readable()) || (w && !attr.writable()) {
            return reply.error(Errno::EACCES);
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.shared.lock();
        let attr = match Self::resolve(&st, ino) {
            Some((_, Node::File(a))) => a,
            Some(_) => return reply.error(Errno::EISDIR),
            // The object behind an open attribute went away: kernfs says ENODEV.
            None => return reply.error(Errno::ENODEV),
        };
        match st.model.read_bytes(&attr) {
            Ok(bytes) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                reply.data(&bytes[start..end]);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.shared.lock();
        let (path, attr) = match Self::resolve(&st, ino) {
            Some((p, Node::File(a))) => (p, a),
            Some(_) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENODEV),
        };
        let outcome = st.model.write(&attr, data);
        self.shared.changed.notify_all();
        let pending = PendingWrite {
            shared: Arc::clone(&self.shared),
            path,
            data: data.to_vec(),
            reply,
        };
        match outcome {
            WriteOutcome::Done(result) => {
                if pending.path.starts_with("sys/") {
                    st.model.record(&pending.path, data, result);
                }
                drop(st);
                pending.answer(result);
            }
            WriteOutcome::Blocked { uuid, serial } => {
                drop(st);
                thread::spawn(move || pending.finish_remove(&uuid, serial));
            }
            WriteOutcome::Waiting { addr, delay } => {
                drop(st);
                thread::spawn(move || pending.finish_after(delay, |m| m.finish_clear(&addr)));
            }
            WriteOutcome::Delayed {
                uuid,
                serial,
                delay,
            } => {
                drop(st);
                thread::spawn(move || {
                    pending.finish_after(delay, |m| m.finish_create(&uuid, serial))
                });
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let st = self.shared.lock();
        match Self::resolve(&st, ino) {
            Some((_, Node::Dir)) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.shared.lock();
        let Some(path) = st.inodes.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let comps = components(&path);
        let Some(children) = layout::children(&st.model, &comps) else {
            return reply.error(Errno::ENOENT);
        };
        let parent_path = comps[..comps.len().saturating_sub(1)].join("/");
        let parent_ino = st.inodes.intern(&parent_path);
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (ino.0, FileType::Directory, ".".to_string()),
            (parent_ino, FileType::Directory, "..".to_string()),
        ];
        for (name, node) in children {
            let child = st.inodes.intern(&join(&path, &name));
            entries.push((child, file_type(&node), name));
        }
        drop(st);
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(skip) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }
}
