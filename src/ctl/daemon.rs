//! The libvirt daemon that runs QEMU hooks (`libvirtd`, or `virtqemud` on modular hosts): finding
//! it, telling whether it has seen the installed hook, and making it see it.
//!
//! libvirt looks for hook scripts only when the daemon starts or reloads (SIGHUP), so a hook
//! installed into a running daemon's hooks directory is silently ignored until then. Install
//! therefore sends SIGHUP (the daemon keeps its pid and its running domains) and records that it
//! did, because a reload leaves no other trace: the daemon's start time stays older than the hook
//! and would otherwise look like "never reloaded".

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::host::procfs::Procfs;

/// Daemon names that run QEMU hooks.
pub const NAMES: [&str; 2] = ["libvirtd", "virtqemud"];

/// Where those daemons write their pid, in the order they are tried.
pub const PID_FILES: [(&str, &str); 3] = [
    ("libvirtd", "/run/libvirtd.pid"),
    ("virtqemud", "/run/virtqemud.pid"),
    ("virtqemud", "/run/libvirt/virtqemud.pid"),
];

/// File in the state directory recording the last reload vgpuctl caused.
const RELOAD_RECORD: &str = "daemon-reload.json";

/// A running libvirt daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// `libvirtd` or `virtqemud`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
}

/// Finds the daemon: first through its pid files (checked against the process's name, since a
/// stale pid file may name a reused pid), then by scanning the process table.
pub fn find(proc: &Procfs, pid_files: &[(&str, PathBuf)]) -> Option<Daemon> {
    for (name, file) in pid_files {
        let pid = fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            if proc.comm(pid).as_deref() == Some(name) {
                return Some(Daemon {
                    name: name.to_string(),
                    pid,
                });
            }
        }
    }
    proc.find_by_comm(&NAMES)
        .into_iter()
        .next()
        .map(|(pid, name)| Daemon { name, pid })
}

/// [`find`] through the daemons' usual pid files, with processes from `proc` (the host's).
pub fn find_system(proc: &Procfs) -> Option<Daemon> {
    let files: Vec<(&str, PathBuf)> = PID_FILES
        .iter()
        .map(|(n, f)| (*n, PathBuf::from(f)))
        .collect();
    find(proc, &files)
}

/// What vgpuctl last did to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadRecord {
    /// Daemon name.
    pub daemon: String,
    /// Its pid then.
    pub pid: u32,
    /// When the signal was sent (seconds since the epoch).
    pub at: u64,
}

/// Sends SIGHUP so the daemon rescans its hooks, and records it in `state_dir`.
pub fn reload(daemon: &Daemon, state_dir: &Path) -> Result<(), String> {
    let pid = libc::pid_t::try_from(daemon.pid).map_err(|_| "pid out of range".to_string())?;
    // SAFETY: kill(2) with a valid signal number has no memory-safety preconditions.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let record = ReloadRecord {
        daemon: daemon.name.clone(),
        pid: daemon.pid,
        at: crate::host::state::now_secs(),
    };
    // The record only helps `doctor`; failing to write it does not undo the reload.
    let created = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir);
    if created.is_ok() {
        if let Ok(json) = serde_json::to_vec(&record) {
            // Through a temp file and O_NOFOLLOW, as everything in the state directory.
            let path = state_dir.join(RELOAD_RECORD);
            let durability = crate::host::atomic::Durability::RenameOnly;
            let _ = crate::host::atomic::replace(&path, state_dir, &json, 0o600, durability);
        }
    }
    Ok(())
}

/// The last reload vgpuctl recorded, if any.
pub fn last_reload(state_dir: &Path) -> Option<ReloadRecord> {
    serde_json::from_slice(&fs::read(state_dir.join(RELOAD_RECORD)).ok()?).ok()
}

/// Whether the daemon has seen a hook file last modified at `hook_mtime`: it started after it,
/// or vgpuctl reloaded this very process after it.
pub fn has_seen(
    daemon: &Daemon,
    proc: &Procfs,
    state_dir: &Path,
    hook_mtime: SystemTime,
) -> Option<bool> {
    let started = proc.start_time(daemon.pid)?;
    // Start times have clock-tick precision and mtimes may be coarse: allow a second.
    if started + Duration::from_secs(1) >= hook_mtime {
        return Some(true);
    }
    let mtime_secs = hook_mtime
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Some(
        last_reload(state_dir)
            .is_some_and(|r| r.pid == daemon.pid && r.daemon == daemon.name && r.at >= mtime_secs),
    )
}

/// How to reload the daemon by hand, for messages.
pub fn reload_command(daemon: Option<&Daemon>) -> String {
    match daemon {
        Some(d) => format!("kill -HUP {} (or systemctl reload {})", d.pid, d.name),
        None => "systemctl reload libvirtd (or virtqemud), or kill -HUP the daemon".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_pid_file_of_another_process_is_ignored() {
        let t = tempfile::tempdir().unwrap();
        let proc_dir = t.path().join("proc");
        for (pid, comm) in [(10, "bash"), (20, "virtqemud")] {
            let d = proc_dir.join(pid.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        }
        let pidfile = t.path().join("libvirtd.pid");
        fs::write(&pidfile, "10\n").unwrap();
        let found = find(&Procfs::new(&proc_dir), &[("libvirtd", pidfile)]).unwrap();
        assert_eq!(
            found,
            Daemon {
                name: "virtqemud".into(),
                pid: 20
            }
        );
    }

    #[test]
    fn reload_record_counts_only_for_the_same_process() {
        let t = tempfile::tempdir().unwrap();
        let proc_dir = t.path().join("proc");
        let d = proc_dir.join("20");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("stat"),
            "20 (libvirtd) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 0 20",
        )
        .unwrap();
        fs::write(proc_dir.join("stat"), "btime 1000\n").unwrap();
        let proc = Procfs::new(&proc_dir);
        let daemon = Daemon {
            name: "libvirtd".into(),
            pid: 20,
        };
        let hook = UNIX_EPOCH + Duration::from_secs(5000);
        assert_eq!(has_seen(&daemon, &proc, t.path(), hook), Some(false));
        let rec = ReloadRecord {
            daemon: "libvirtd".into(),
            pid: 20,
            at: 5001,
        };
        fs::write(
            t.path().join(RELOAD_RECORD),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
        assert_eq!(has_seen(&daemon, &proc, t.path(), hook), Some(true));
        let other = Daemon { pid: 21, ..daemon };
        assert_eq!(has_seen(&other, &proc, t.path(), hook), None);
    }
}
