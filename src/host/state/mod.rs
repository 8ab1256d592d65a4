//! Who holds which device: the hook's only memory between calls.
//!
//! sysfs says what exists; this says who it belongs to. Records live in one JSON file under
//! `/run/vgpu-hook` (0700), one record per line ([`lines`]), which the kernel empties at boot together with every mdev and VF
//! setting, so the lifetimes match. Hooks for different domains run concurrently, so every reader
//! and writer takes an exclusive `flock` on a separate lock file, and every write is atomic
//! (temp file, fsync, rename, fsync of the directory): a crash leaves the old file or the new one,
//! never half of one. A record whose domain is no longer running is stale and is dropped when met
//! (by a start that reads it; every one by a reconnect and by `vgpuctl reconcile`).
//!
//! The hook reads the file lazily ([`Locked::load_lazy`]): a question about a device or a
//! domain parses only the lines that can name it, and a save writes the others back as read.
//! vgpuctl and the reconnect read it whole ([`Locked::load`]).
//!
//! The file carries a format version ([`FORMAT_VERSION`]). The rule for upgrades: a hook reads
//! every version up to its own, and a later version only adds fields with defaults, so the new
//! hook reads what the old one wrote while VMs run; a file of a newer version than the reader's is
//! refused, never rewritten. Nothing here follows a symlink out of the directory: the directory,
//! the lock and the data file must be what this program made (a directory owned by the hook's
//! user, regular files). A data file that cannot be read (truncated, garbage, empty) is moved aside,
//! never deleted, and the caller rebuilds the records from what the host shows.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::host::atomic::Durability;
use crate::host::lockfile::NotTaken;
use crate::model::names::MdevUuid;
use crate::model::pci::PciAddress;

mod lines;
use lines::{LastFound, Needle, Unread};

/// Default state directory.
pub const DEFAULT_DIR: &str = "/run/vgpu-hook";
/// Default libvirt QEMU runtime directory (where `<name>.pid` lives).
pub const DEFAULT_LIBVIRT_RUN_DIR: &str = "/run/libvirt/qemu";

const DATA_FILE: &str = "owners.json";
/// The format this program writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
const LOCK_FILE: &str = "lock";

/// A device the hook hands out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Device {
    /// A mediated device.
    Mdev {
        /// Its UUID.
        uuid: MdevUuid,
    },
    /// A whole SR-IOV VF.
    Vf {
        /// Its address.
        address: PciAddress,
    },
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Mdev { uuid } => write!(f, "mdev {uuid}"),
            Device::Vf { address } => write!(f, "VF {address}"),
        }
    }
}

/// One ownership record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The owning domain's UUID.
    pub domain_uuid: String,
    /// The owning domain's name (for messages and the running check).
    pub domain_name: String,
    /// The device.
    pub device: Device,
    /// mdev parent name, or the VF's PF address.
    pub parent: String,
    /// mdev type id, or NVIDIA vGPU type id of a VF (`None` for plain VFs).
    pub type_id: Option<String>,
    /// Seconds since the epoch when the record was made.
    pub since: u64,
    /// Whether the hook created the device (an mdev) or set its type (an NVIDIA VF), so release
    /// knows whether there is anything to undo.
    pub created: bool,
    /// Why the device is on another NUMA node than the domain asked for, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_note: Option<String>,
}

/// All records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The format version (files written before versions existed are version 1).
    pub version: u32,
    /// The records read (every one, for a whole read) or made, in the order they were made.
    pub records: Vec<Record>,
    /// The file's text, for a lazy read (bytes: a line is checked for UTF-8 when parsed).
    text: Vec<u8>,
    /// The records of a lazy read not parsed (yet), as their lines of `text`, in file order.
    unread: Vec<Unread>,
    /// Where the last question's needle was found in `unread`.
    found: LastFound,
}

/// The data file as serde reads a file of any shape (pretty-printed by an older vgpu-hook).
#[derive(Serialize, Deserialize)]
struct Document {
    #[serde(default = "first_version")]
    version: u32,
    records: Vec<Record>,
}

fn first_version() -> u32 {
    1
}

impl Default for State {
    fn default() -> Self {
        State::from_records(Vec::new())
    }
}

impl Device {
    /// How the file spells the device's key (its UUID or address, as a JSON string): every
    /// line about the device contains it.
    fn needle(&self) -> Needle {
        match self {
            Device::Mdev { uuid } => Needle::new(uuid.as_str()),
            Device::Vf { address } => Needle::new(&address.to_string()),
        }
    }
}

impl State {
    /// A state of these records, in this program's format.
    pub fn from_records(records: Vec<Record>) -> Self {
        State {
            version: FORMAT_VERSION,
            records,
            text: Vec::new(),
            unread: Vec::new(),
            found: LastFound::default(),
        }
    }

    /// The record for a device, if any.
    pub fn owner(&self, device: &Device) -> Option<&Record> {
        if let Some(r) = self.records.iter().find(|r| &r.device == device) {
            return Some(r);
        }
        self.lines_naming(&device.needle())
            .into_iter()
            .filter_map(|i| self.unread[i].record(&self.text))
            .find(|r| &r.device == device)
    }

    /// Records of one domain (by UUID).
    pub fn of_domain<'a>(&'a self, domain_uuid: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
        let read = self
            .records
            .iter()
            .filter(move |r| r.domain_uuid == domain_uuid);
        read.chain(self.unread_about(Needle::new(domain_uuid), move |r| {
            r.domain_uuid == domain_uuid
        }))
    }

    /// Records of the domains named `name` (release by name, when the XML is unreadable).
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
        let read = self.records.iter().filter(move |r| r.domain_name == name);
        read.chain(self.unread_about(Needle::new(name), move |r| r.domain_name == name))
    }

    /// The unread records whose line contains `needle` and that `keep` accepts. The needle is
    /// looked for once in the whole text (one pass, however many lines).
    fn unread_about<'a>(
        &'a self,
        needle: Needle,
        keep: impl Fn(&Record) -> bool + 'a,
    ) -> impl Iterator<Item = &'a Record> + 'a {
        let lines = self.lines_naming(&needle);
        lines
            .into_iter()
            .filter_map(|i| self.unread[i].record(&self.text))
            .filter(move |r| keep(r))
    }

    /// The indexes of the unread lines that contain `needle`, each once.
    fn lines_naming(&self, needle: &Needle) -> Vec<usize> {
        self.found.lines(needle, || {
            let mut out: Vec<usize> = Vec::new();
            for at in needle.find_in(&self.text) {
                let i = self.unread.partition_point(|u| u.end() <= at);
                let fresh = out.last() != Some(&i);
                if fresh && self.unread.get(i).is_some_and(|u| u.holds(at)) {
                    out.push(i);
                }
            }
            out
        })
    }

    /// Adds or replaces the record for `record.device`.
    pub fn put(&mut self, record: Record) {
        self.remove(&record.device);
        self.records.push(record);
    }

    /// Removes the record of a device.
    pub fn remove(&mut self, device: &Device) {
        self.remove_if(device, |_| true);
    }

    /// Removes the record of a device if `whose` accepts it; whether it did.
    pub fn remove_if(&mut self, device: &Device, whose: impl Fn(&Record) -> bool) -> bool {
        let mine = |r: &Record| &r.device == device && whose(r);
        let before = self.records.len() + self.unread.len();
        self.records.retain(|r| !mine(r));
        let text = &self.text;
        let naming = self.lines_naming(&device.needle());
        let mut i = 0;
        self.unread.retain(|u| {
            let about = naming.contains(&i) && u.record(text).is_some_and(mine);
            i += 1;
            !about
        });
        self.found.clear();
        self.records.len() + self.unread.len() != before
    }

    /// Drops records that no longer hold anything: the domain is not running (per `live`) and
    /// the device is gone (`exists` says there is nothing left to undo). A stopped domain's record whose device still
    /// exists stays until its own `release` runs (which may be seconds away, waiting for the
    /// driver's clean-up) or another domain claims the device; until then it no longer counts
    /// as holding (see [`Liveness::holds`]). Of a lazy read, only the records a question
    /// concerned are judged. Returns what was dropped.
    pub fn drop_stale(&mut self, live: &Liveness, exists: impl Fn(&Record) -> bool) -> Vec<Record> {
        let holds = |r: &Record| live.holds(r) || exists(r);
        let (keep, mut stale): (Vec<Record>, Vec<Record>) = std::mem::take(&mut self.records)
            .into_iter()
            .partition(holds);
        self.records = keep;
        self.unread.retain(|u| match u.parsed() {
            Some(r) if !holds(r) => {
                stale.push(r.clone());
                false
            }
            _ => true,
        });
        self.found.clear();
        stale
    }

    /// The record of a device if its domain still holds it.
    pub fn holder<'a>(&'a self, device: &Device, live: &Liveness) -> Option<&'a Record> {
        self.owner(device).filter(|r| live.holds(r))
    }

    /// The file's text: unread lines as read, then the records.
    fn text(&self) -> Result<Vec<u8>, serde_json::Error> {
        let made = self
            .records
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<Vec<u8>>, _>>()?;
        let read = self.unread.iter().map(|u| u.line(&self.text));
        Ok(lines::join(
            FORMAT_VERSION,
            read.chain(made.iter().map(Vec::as_slice)),
        ))
    }
}

/// An error reading or writing state; names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory or lock could not be set up.
    #[error("state {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A newer program wrote the data file; this one must not guess at it.
    #[error("state {path} has format {version}, newer than this vgpu-hook reads ({FORMAT_VERSION}); install the vgpu-hook that wrote it (or newer) and run `vgpuctl reconcile`")]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its format version.
        version: u32,
    },
    /// The directory or a file in it is not what this program made (a symlink, another owner,
    /// another file type): nothing is read or written through it.
    #[error("state {path} {why}; remove it (the hook recreates it)")]
    Unsafe {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Another process held the lock for longer than the bound.
    #[error("state lock {path} has been held by {} for more than {waited} s (lock_wait_secs); if that process hangs, stop it, then try again", holder.as_deref().unwrap_or("another process"))]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// How long this process waited, in seconds.
        waited: u64,
        /// Who holds it, as the lock file says.
        holder: Option<String>,
    },
    /// The data file is not what this program writes.
    #[error("state {path} is unreadable ({message}); move it aside and run `vgpuctl reconcile`")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    /// How long [`StateDir::lock`] waits for another holder.
    wait: Duration,
}

/// The state directory, locked. Dropping it releases the lock.
#[derive(Debug)]
pub struct Locked {
    dir: PathBuf,
    _lock: File,
}

impl StateDir {
    /// State under `dir`.
    pub fn new(dir: &Path) -> Self {
        StateDir {
            dir: dir.to_path_buf(),
            wait: crate::model::config::DEFAULT_LOCK_WAIT,
        }
    }

    /// The same, with [`StateDir::lock`] waiting at most `wait` for another holder.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (0700) if needed and takes the exclusive lock, waiting for it at
    /// most the bound ([`StateError::Busy`] names the holder then).
    pub fn lock(&self) -> Result<Locked, StateError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        self.check_dir()?;
        let lock_path = self.dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| unsafe_or_io(&lock_path, e))?;
        crate::host::lockfile::acquire(&mut lock, self.wait).map_err(|e| match e {
            NotTaken::Busy(holder) => StateError::Busy {
                path: lock_path.clone(),
                waited: self.wait.as_secs(),
                holder: holder.map(|h| h.to_string()),
            },
            NotTaken::Io(source) => StateError::Io {
                path: lock_path.clone(),
                source,
            },
        })?;
        Ok(Locked {
            dir: self.dir.clone(),
            _lock: lock,
        })
    }

    /// Reads the state without locking (for display only; may be momentarily stale).
    pub fn peek(&self) -> Result<State, StateError> {
        read_state(&self.dir.join(DATA_FILE), Read::Whole)
    }

    /// [`StateDir::peek`], lazily: for a question about one domain.
    pub fn peek_lazy(&self) -> Result<State, StateError> {
        read_state(&self.dir.join(DATA_FILE), Read::Lazy)
    }

    /// The directory must be a real directory (not a symlink) owned by this program's user;
    /// its mode is put back to 0700 when it drifted.
    fn check_dir(&self) -> Result<(), StateError> {
        let unsafe_dir = |why: String| StateError::Unsafe {
            path: self.dir.clone(),
            why,
        };
        let meta = fs::symlink_metadata(&self.dir).map_err(|source| StateError::Io {
            path: self.dir.clone(),
            source,
        })?;
        if meta.file_type().is_symlink() {
            return Err(unsafe_dir("is a symlink".into()));
        }
        if !meta.is_dir() {
            return Err(unsafe_dir("is not a directory".into()));
        }
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(unsafe_dir(format!(
                "is owned by uid {}, not {me}",
                meta.uid()
            )));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(
                |source| StateError::Io {
                    path: self.dir.clone(),
                    source,
                },
            )?;
        }
        Ok(())
    }
}

/// An open that failed on a symlink (`O_NOFOLLOW`) is unsafe; anything else is I/O.
fn unsafe_or_io(path: &Path, e: io::Error) -> StateError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        StateError::Unsafe {
            path: path.to_path_buf(),
            why: "is a symlink".into(),
        }
    } else {
        StateError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// How much of the file a read parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Every record.
    Whole,
    /// Nothing yet: the records are parsed when a question concerns them.
    Lazy,
}

fn read_state(path: &Path, read: Read) -> Result<State, StateError> {
    let Some(text) = read_file(path)? else {
        return Ok(State::default());
    };
    let corrupt = |message: String| StateError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let state = match lines::split(&text) {
        Some((version, lines)) if read == Read::Lazy => State {
            version,
            records: Vec::new(),
            unread: lines.into_iter().map(Unread::new).collect(),
            text,
            found: LastFound::default(),
        },
        Some((version, lines)) => State {
            version,
            records: lines
                .into_iter()
                .enumerate()
                .map(|(i, l)| {
                    serde_json::from_slice(&text[l])
                        .map_err(|e| corrupt(format!("record {}: {e}", i + 1)))
                })
                .collect::<Result<_, _>>()?,
            ..State::default()
        },
        None => {
            let doc: Document =
                serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
            State {
                version: doc.version,
                records: doc.records,
                ..State::default()
            }
        }
    };
    if state.version > FORMAT_VERSION {
        return Err(StateError::Newer {
            path: path.to_path_buf(),
            version: state.version,
        });
    }
    Ok(state)
}

/// The data file's bytes, or `None` when there is none; never through a symlink, only a
/// regular file.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unsafe_or_io(path, e)),
    };
    let meta = file.metadata().ok().filter(|m| m.is_file());
    let Some(meta) = meta else {
        return Err(StateError::Unsafe {
            path: path.to_path_buf(),
            why: "is not a regular file".into(),
        });
    };
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    file.read_to_end(&mut bytes)
        .map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Some(bytes))
}

impl Locked {
    /// The state directory this lock guards.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Reads the state, every record.
    pub fn load(&self) -> Result<State, StateError> {
        read_state(&self.dir.join(DATA_FILE), Read::Whole)
    }

    /// Reads the state, parsing records only when a question concerns them (see [`lines`]).
    pub fn load_lazy(&self) -> Result<State, StateError> {
        read_state(&self.dir.join(DATA_FILE), Read::Lazy)
    }

    /// Reads the state as `read` says; a data file that cannot be read is moved aside (kept,
    /// for the operator) and `rebuild` makes the records anew from what the host shows. A newer
    /// format or an unsafe path is still an error: neither may be guessed at or written through.
    pub fn load_or_rebuild(
        &self,
        read: Read,
        rebuild: impl FnOnce() -> State,
    ) -> Result<State, StateError> {
        match read_state(&self.dir.join(DATA_FILE), read) {
            Err(StateError::Corrupt { path, message }) => {
                let aside = self.dir.join(format!("{DATA_FILE}.damaged-{}", now_secs()));
                fs::rename(&path, &aside).map_err(|source| StateError::Io {
                    path: path.clone(),
                    source,
                })?;
                log::error!(
                    "state {} was unreadable ({message}); kept as {} and rebuilt from the running domains",
                    path.display(),
                    aside.display()
                );
                let state = rebuild();
                self.save(&state)?;
                Ok(state)
            }
            other => other,
        }
    }

    /// A small file of the state directory other than the records (what the hook learned), if
    /// it exists and is a regular file; never through a symlink.
    pub fn read_aux(&self, name: &str) -> Option<Vec<u8>> {
        use std::io::Read;
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.dir.join(name))
            .ok()?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    /// Replaces a small file of the state directory atomically (temp file, fsync, rename).
    pub fn write_aux(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.replace(&self.dir.join(name), bytes)
    }

    /// Replaces the state atomically.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let path = self.dir.join(DATA_FILE);
        let text = state.text().map_err(|e| StateError::Io {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        self.replace(&path, &text)
    }

    /// Writes `bytes` to a temp file beside `path`, syncs it, renames it over `path` and syncs
    /// the directory: a crash leaves the old file or the new one.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<(), StateError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(DATA_FILE);
        crate::host::atomic::replace(path, &self.dir, bytes, 0o600, Durability::Synced)
            .map_err(|e| unsafe_or_io(path, e))?;
        self.remove_dead_temps(name);
        Ok(())
    }

    /// Removes the temp files of writes killed before their rename: every writer holds the
    /// lock, so under it any `.<name>.<pid>` left is a dead process's (best effort; a symlink is
    /// removed itself, never followed).
    fn remove_dead_temps(&self, name: &str) {
        let prefix = format!(".{name}.");
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name();
            let dead = file
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
            if dead {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Decides whether a record's domain still holds its device.
#[derive(Debug, Clone)]
pub struct Liveness {
    run_dir: PathBuf,
    /// Whether the runtime dir exists, looked at once: every record's judgement asks.
    run_dir_present: bool,
    procfs: crate::host::procfs::Procfs,
    grace: Duration,
    now: u64,
}

impl Liveness {
    /// Liveness judged from libvirt's runtime dir and processes from `procfs` (the host's, or a
    /// test tree); records younger than `grace` count as held even before QEMU runs (the domain
    /// is between `prepare` and QEMU's start).
    pub fn with_procfs(
        run_dir: &Path,
        procfs: &crate::host::procfs::Procfs,
        grace: Duration,
    ) -> Self {
        Liveness {
            run_dir: run_dir.to_path_buf(),
            run_dir_present: run_dir.is_dir(),
            procfs: procfs.clone(),
            grace,
            now: now_secs(),
        }
    }

    /// The QEMU pid of a running domain: `<run_dir>/<name>.pid` names a live process whose
    /// command is QEMU (guards against a reused pid).
    pub fn qemu_pid(&self, domain_name: &str) -> Option<u32> {
        if !crate::model::names::domain_name_is_safe(domain_name) {
            return None;
        }
        let pid: u32 = fs::read_to_string(self.run_dir.join(format!("{domain_name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        self.procfs.is_qemu(pid).then_some(pid)
    }

    /// Whether the domain runs now.
    pub fn running(&self, domain_name: &str) -> bool {
        self.qemu_pid(domain_name).is_some()
    }

    /// Whether a record still holds its device: its domain runs, or it was made within the grace.
    /// Without libvirt's runtime directory nothing can be judged, so every record holds (dropping
    /// a running domain's record would let another domain take its device).
    pub fn holds(&self, r: &Record) -> bool {
        !self.run_dir_present
            || self.running(&r.domain_name)
            || self.now.saturating_sub(r.since) < self.grace.as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_on_this_host(run_dir: &Path, grace: Duration) -> Liveness {
        Liveness::with_procfs(run_dir, &crate::host::procfs::Procfs::system(), grace)
    }

    fn record(name: &str, since: u64) -> Record {
        Record {
            domain_uuid: format!("uuid-{name}"),
            domain_name: name.into(),
            device: Device::Mdev {
                uuid: MdevUuid::new_random(),
            },
            parent: "mtty".into(),
            type_id: Some("mtty-2".into()),
            since,
            created: true,
            numa_note: None,
        }
    }

    #[test]
    fn state_dir_is_created_private() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("run/vgpu-hook");
        let _l = StateDir::new(&dir).lock().unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn saved_state_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let l = StateDir::new(t.path()).lock().unwrap();
        let mut s = State::default();
        s.put(record("a", 1));
        l.save(&s).unwrap();
        assert_eq!(l.load().unwrap(), s);
    }

    #[test]
    fn save_leaves_no_temp_file() {
        let t = tempfile::tempdir().unwrap();
        let l = StateDir::new(t.path()).lock().unwrap();
        l.save(&State::default()).unwrap();
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_temp_file_left_by_a_killed_save_is_removed_by_the_next_save() {
        let t = tempfile::tempdir().unwrap();
        let l = StateDir::new(t.path()).lock().unwrap();
        fs::write(t.path().join(format!(".{DATA_FILE}.4242")), "{\"vers").unwrap();
        fs::write(t.path().join(format!("{DATA_FILE}.damaged-1")), "kept").unwrap();
        l.save(&State::default()).unwrap();
        let mut names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["lock", "owners.json", "owners.json.damaged-1"]);
    }

    #[test]
    fn corrupt_state_names_the_file_and_the_fix() {
        let t = tempfile::tempdir().unwrap();
        let l = StateDir::new(t.path()).lock().unwrap();
        fs::write(t.path().join(DATA_FILE), "{not json").unwrap();
        let e = l.load().unwrap_err().to_string();
        assert!(
            e.contains(DATA_FILE) && e.contains("vgpuctl reconcile"),
            "{e}"
        );
    }

    /// A locked state dir holding records of `names` (saved in this program's form).
    fn saved(t: &tempfile::TempDir, names: &[&str]) -> (Locked, Vec<Record>) {
        let l = StateDir::new(t.path()).lock().unwrap();
        let records: Vec<Record> = names.iter().map(|n| record(n, 1)).collect();
        l.save(&State::from_records(records.clone())).unwrap();
        (l, records)
    }

    fn data(t: &tempfile::TempDir) -> String {
        fs::read_to_string(t.path().join(DATA_FILE)).unwrap()
    }

    #[test]
    fn a_lazy_read_answers_as_a_whole_one() {
        let t = tempfile::tempdir().unwrap();
        let (l, records) = saved(&t, &["a", "b", "c"]);
        let lazy = l.load_lazy().unwrap();
        assert_eq!(lazy.owner(&records[1].device), Some(&records[1]));
        assert_eq!(lazy.of_domain("uuid-c").collect::<Vec<_>>(), [&records[2]]);
        assert_eq!(lazy.named("a").collect::<Vec<_>>(), [&records[0]]);
        assert!(lazy.owner(&record("d", 1).device).is_none());
    }

    #[test]
    fn a_lazy_read_parses_only_the_lines_a_question_can_concern() {
        let t = tempfile::tempdir().unwrap();
        let (l, records) = saved(&t, &["a", "b"]);
        let lazy = l.load_lazy().unwrap();
        lazy.owner(&records[0].device);
        let parsed: Vec<_> = lazy.unread.iter().map(|u| u.parsed().is_some()).collect();
        assert_eq!(parsed, [true, false]);
    }

    #[test]
    fn a_save_after_a_lazy_read_keeps_the_other_lines_as_read() {
        let t = tempfile::tempdir().unwrap();
        let (l, _) = saved(&t, &["a", "b"]);
        let before = data(&t);
        let mut lazy = l.load_lazy().unwrap();
        lazy.put(record("c", 1));
        l.save(&lazy).unwrap();
        let after = data(&t);
        let kept =
            before.lines().nth(1).unwrap().to_string() + "\n" + before.lines().nth(2).unwrap();
        assert!(after.contains(&kept), "{after}");
        assert_eq!(l.load().unwrap().records.len(), 3);
    }

    #[test]
    fn a_record_removed_after_a_lazy_read_is_gone_from_the_file() {
        let t = tempfile::tempdir().unwrap();
        let (l, records) = saved(&t, &["a", "b"]);
        let mut lazy = l.load_lazy().unwrap();
        lazy.remove(&records[0].device);
        l.save(&lazy).unwrap();
        assert_eq!(l.load().unwrap().records, [records[1].clone()]);
    }

    #[test]
    fn a_pretty_printed_file_of_an_older_vgpu_hook_is_read_whole_either_way() {
        let t = tempfile::tempdir().unwrap();
        let l = StateDir::new(t.path()).lock().unwrap();
        let records = vec![record("a", 1), record("b", 1)];
        let doc = Document {
            version: 1,
            records: records.clone(),
        };
        fs::write(
            t.path().join(DATA_FILE),
            serde_json::to_vec_pretty(&doc).unwrap(),
        )
        .unwrap();
        assert_eq!(l.load().unwrap().records, records);
        let lazy = l.load_lazy().unwrap();
        assert_eq!(lazy.records, records);
        l.save(&lazy).unwrap();
        assert!(lines::split(data(&t).as_bytes()).is_some());
    }

    #[test]
    fn a_damaged_line_answers_nothing_in_a_lazy_read_is_kept_and_fails_a_whole_one() {
        let t = tempfile::tempdir().unwrap();
        let (l, records) = saved(&t, &["a", "b"]);
        let text = data(&t).replacen("\"created\":true", "\"created\":maybe", 1);
        fs::write(t.path().join(DATA_FILE), &text).unwrap();
        let mut lazy = l.load_lazy().unwrap();
        assert!(lazy.owner(&records[0].device).is_none());
        assert_eq!(lazy.owner(&records[1].device), Some(&records[1]));
        lazy.put(record("c", 1));
        l.save(&lazy).unwrap();
        assert!(data(&t).contains("\"created\":maybe"));
        let e = l.load().unwrap_err().to_string();
        assert!(
            e.contains("record 1") && e.contains("vgpuctl reconcile"),
            "{e}"
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_kept_as_bytes_and_fails_a_whole_read() {
        let t = tempfile::tempdir().unwrap();
        let (l, records) = saved(&t, &["a", "b"]);
        let mut bytes = fs::read(t.path().join(DATA_FILE)).unwrap();
        let at = bytes.windows(4).position(|w| w == b"\"a\",").unwrap() + 1;
        bytes[at] = 0xff;
        fs::write(t.path().join(DATA_FILE), &bytes).unwrap();
        let mut lazy = l.load_lazy().unwrap();
        assert_eq!(lazy.owner(&records[1].device), Some(&records[1]));
        lazy.put(record("c", 1));
        l.save(&lazy).unwrap();
        let after = fs::read(t.path().join(DATA_FILE)).unwrap();
        assert!(after.windows(2).any(|w| w == b"\"\xff"));
        let e = l.load().unwrap_err().to_string();
        assert!(e.contains("record 1"), "{e}");
    }

    #[test]
    fn a_lazy_read_judges_only_the_records_it_read_for_staleness() {
        let t = tempfile::tempdir().unwrap();
        let (l, records) = saved(&t, &["gone", "other"]);
        let live = live_on_this_host(t.path(), Duration::ZERO);
        let mut lazy = l.load_lazy().unwrap();
        lazy.owner(&records[0].device);
        let stale = lazy.drop_stale(&live, |_| false);
        assert_eq!(stale, [records[0].clone()]);
        assert_eq!(lazy.owner(&records[1].device), Some(&records[1]));
    }

    #[test]
    fn a_question_asked_again_after_lines_went_is_answered_from_the_lines_left() {
        let t = tempfile::tempdir().unwrap();
        let (l, records) = saved(&t, &["gone", "other", "third"]);
        let live = live_on_this_host(t.path(), Duration::ZERO);
        let mut lazy = l.load_lazy().unwrap();
        lazy.owner(&records[0].device);
        lazy.owner(&records[2].device);
        lazy.drop_stale(&live, |r| r.domain_name != "gone");
        assert_eq!(lazy.owner(&records[2].device), Some(&records[2]));
        assert!(lazy.remove_if(&records[2].device, |_| true));
        assert_eq!(lazy.owner(&records[2].device), None);
        assert_eq!(lazy.owner(&records[1].device), Some(&records[1]));
    }

    #[test]
    fn old_record_of_a_stopped_domain_is_stale() {
        let t = tempfile::tempdir().unwrap();
        let live = live_on_this_host(t.path(), Duration::from_secs(300));
        let mut s = State::default();
        s.put(record("gone", 1));
        s.put(record("fresh", now_secs()));
        let stale = s.drop_stale(&live, |_| false);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].domain_name, "gone");
        assert_eq!(s.records[0].domain_name, "fresh");
    }

    #[test]
    fn a_stopped_domains_record_stays_while_its_device_exists() {
        let t = tempfile::tempdir().unwrap();
        let live = live_on_this_host(t.path(), Duration::ZERO);
        let mut s = State::default();
        s.put(record("stopping", 1));
        assert!(s.drop_stale(&live, |_| true).is_empty());
        assert!(s.holder(&s.records[0].device.clone(), &live).is_none());
    }

    #[test]
    fn without_libvirts_runtime_dir_every_record_holds() {
        let live = live_on_this_host(Path::new("/nonexistent/libvirt/qemu"), Duration::ZERO);
        let mut s = State::default();
        s.put(record("old", 1));
        assert!(s.drop_stale(&live, |_| false).is_empty());
    }

    #[test]
    fn pid_file_of_a_non_qemu_process_does_not_count_as_running() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("vm.pid"), format!("{}\n", std::process::id())).unwrap();
        assert!(!live_on_this_host(t.path(), Duration::ZERO).running("vm"));
    }

    #[test]
    fn second_lock_waits_for_the_first() {
        let t = tempfile::tempdir().unwrap();
        let dir = StateDir::new(t.path());
        let first = dir.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d2 = dir.clone();
        let h = std::thread::spawn(move || {
            let _second = d2.lock().unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(first);
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        h.join().unwrap();
    }
}
