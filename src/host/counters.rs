//! Counters the hook keeps for `vgpuctl metrics`: refusals by reason, releases that could not
//! free a device, and when `vgpuctl reconcile` last ran.
//!
//! One small file per counter in `STATE/counters/`, holding a decimal number. The hook bumps a
//! counter only while it holds the state lock anyway (the [`Locked`] argument is the proof), and
//! only on paths that already did real work (a refusal, a release that left a device behind), so
//! a domain without our metadata never touches them and concurrent hooks never lose a count.
//! The files live in `/run` like the state, so they restart at zero at boot; Prometheus treats
//! a counter that goes down as a reset. A counter that cannot be written is logged and skipped:
//! counting must never change what the hook does.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::host::atomic::{self, Durability};
use crate::host::state::Locked;

/// The counters' directory inside the state directory.
pub const DIR: &str = "counters";
/// Releases that left a device behind (still in use, or refusing removal).
pub const RELEASE_FAILED: &str = "release_failed";
/// Seconds since the epoch of the last `vgpuctl reconcile` that changed or checked the host.
pub const LAST_RECONCILE: &str = "last_reconcile";
/// Prefix of a refusal counter; the rest is the refusal's stable label (`no_room`, ...).
pub const REFUSED_PREFIX: &str = "refused.";

/// Where the counters of the state directory `state_dir` live.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// Adds one to counter `name`. Never fails; a problem is logged.
pub fn bump(locked: &Locked, name: &str) {
    let dir = dir(locked.path());
    let next = read_one(&dir.join(name)).unwrap_or(0).saturating_add(1);
    if let Err(e) = write(&dir, name, next) {
        log::warn!("counter {name} not updated: {e}");
    }
}

/// Sets counter (or gauge) `name` to `value`. Never fails; a problem is logged.
pub fn set(locked: &Locked, name: &str, value: u64) {
    if let Err(e) = write(&dir(locked.path()), name, value) {
        log::warn!("counter {name} not updated: {e}");
    }
}

/// Writes `value` to `dir/name` through a temp file and a rename (a reader sees the old number
/// or the new one). No fsync: the files live in /run and are advisory.
fn write(dir: &Path, name: &str, value: u64) -> io::Result<()> {
    if !valid_name(name) {
        return Err(io::Error::other(format!("invalid counter name '{name}'")));
    }
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new().mode(0o700).create(dir)?;
        }
        Err(e) => return Err(e),
    }
    let bytes = format!("{value}\n");
    atomic::replace(
        &dir.join(name),
        dir,
        bytes.as_bytes(),
        0o600,
        Durability::RenameOnly,
    )
}

fn read_one(path: &Path) -> Option<u64> {
    let mut text = String::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

/// Every counter of the state directory `state_dir`, by name (empty when there are none yet).
/// Read without the lock: each file is replaced whole, so each value is one the hook wrote.
pub fn read_all(state_dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir(state_dir)) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !valid_name(&name) {
            continue;
        }
        if let Some(v) = read_one(&e.path()) {
            out.insert(name, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::state::StateDir;

    #[test]
    fn bump_counts_from_zero_and_read_all_sees_it() {
        let t = tempfile::tempdir().unwrap();
        let l = StateDir::new(t.path()).lock().unwrap();
        bump(&l, "refused.no_room");
        bump(&l, "refused.no_room");
        bump(&l, RELEASE_FAILED);
        set(&l, LAST_RECONCILE, 1_700_000_000);
        let all = read_all(t.path());
        assert_eq!(all.get("refused.no_room"), Some(&2));
        assert_eq!(all.get(RELEASE_FAILED), Some(&1));
        assert_eq!(all.get(LAST_RECONCILE), Some(&1_700_000_000));
        assert_eq!(all.len(), 3, "no temp files left: {all:?}");
    }

    #[test]
    fn a_garbled_counter_restarts_and_bad_names_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let l = StateDir::new(t.path()).lock().unwrap();
        fs::create_dir_all(dir(t.path())).unwrap();
        fs::write(dir(t.path()).join(RELEASE_FAILED), "garbage").unwrap();
        bump(&l, RELEASE_FAILED);
        bump(&l, "../escape");
        assert_eq!(read_all(t.path()).get(RELEASE_FAILED), Some(&1));
        assert!(!t.path().join("escape").exists());
    }

    #[test]
    fn a_counter_directory_that_is_a_symlink_is_not_written_through() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let l = StateDir::new(t.path()).lock().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir(t.path())).unwrap();
        bump(&l, RELEASE_FAILED);
        assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }
}
