//! A real libvirt daemon for tests: makes sure `virtlogd` and `libvirtd` run (as on a host
//! without systemd: `virtlogd -d; libvirtd -d`), defines throwaway TCG domains with unique names
//! and undefines them when dropped, and serialises tests that change host-wide files
//! (`/etc/libvirt/hooks`, `/etc/vgpu-hook/config.toml`) and puts those files back afterwards.
//!
//! Needs root and the libvirt-daemon-system / qemu-system-x86 packages. When they are missing,
//! [`Libvirtd::ensure`] says why on stderr and returns `None`; with `CI=true` it panics instead,
//! so a CI machine that lost libvirt fails loudly rather than passing empty tests.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The system URI every test uses.
pub const URI: &str = "qemu:///system";
const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
const SOCKET: &str = "/var/run/libvirt/libvirt-sock";
const HOST_LOCK: &str = "/run/lock/vgpu-hook-tests.lock";

/// A daemon known to answer.
#[derive(Debug)]
pub struct Libvirtd(());

fn unavailable(reason: &str) -> Option<Libvirtd> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("libvirtd unavailable on CI: {reason}");
    }
    eprintln!("skipped: this test needs a running libvirtd: {reason}");
    None
}

/// Whether a live (not zombie) process named `comm` exists.
fn running(comm: &str) -> bool {
    let Ok(rd) = fs::read_dir("/proc") else {
        return false;
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| {
            let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
            let Some((head, tail)) = stat.rsplit_once(')') else {
                return false;
            };
            let name = head.split_once('(').map_or("", |(_, n)| n);
            name == comm && !tail.trim_start().starts_with('Z')
        })
}

fn have(bin: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(bin).exists())
}

/// Adds `user = "root"` / `group = "root"` to qemu.conf when absent: without systemd and udev,
/// /dev/kvm is 0600 and libvirt re-probes QEMU on every define (40 s each) otherwise.
fn ensure_qemu_conf() -> std::io::Result<bool> {
    let text = fs::read_to_string(QEMU_CONF).unwrap_or_default();
    let has = |key: &str| {
        text.lines()
            .any(|l| l.trim_start().starts_with(key) && l.contains('='))
    };
    let mut add = String::new();
    if !has("user") {
        add.push_str("user = \"root\"\n");
    }
    if !has("group") {
        add.push_str("group = \"root\"\n");
    }
    if add.is_empty() {
        return Ok(false);
    }
    let mut new = text;
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&add);
    fs::write(QEMU_CONF, new)?;
    Ok(true)
}

impl Libvirtd {
    /// Makes sure the daemons run and answer; `None` (or a panic on CI) when they cannot.
    ///
    /// Tests run in parallel threads and test binaries, and on a fresh machine several of them
    /// find no daemon at the same moment. Starting is therefore serialised with the host lock,
    /// and a daemon that answers once the lock is held (started by a sibling, or by anything
    /// else) is success; a `libvirtd -d` that fails is only fatal when no daemon answers after
    /// it. Call it before taking [`HostLock`] yourself (flock locks are per open file).
    pub fn ensure() -> Option<Libvirtd> {
        if let Err(reason) = preconditions() {
            return unavailable(&reason);
        }
        let _lock = HostLock::take();
        if answers() {
            return Some(Libvirtd(()));
        }
        match start_daemons().and_then(|()| wait_until_answering(Duration::from_secs(60))) {
            Ok(()) => Some(Libvirtd(())),
            Err(reason) => unavailable(&reason),
        }
    }
}

/// Root, the binaries, and a qemu.conf that runs QEMU as root.
fn preconditions() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".to_string());
    }
    for bin in ["libvirtd", "virtlogd", "virsh", "qemu-system-x86_64"] {
        if !have(bin) {
            return Err(format!(
                "{bin} is not installed (apt-get install libvirt-daemon-system qemu-system-x86)"
            ));
        }
    }
    ensure_qemu_conf()
        .map(|_| ())
        .map_err(|e| format!("cannot update {QEMU_CONF}: {e}"))
}

/// Whether the system daemon answers on its socket now.
fn answers() -> bool {
    Path::new(SOCKET).exists() && virsh(&["version"]).status.success()
}

/// Starts whichever of virtlogd and libvirtd is not running (as on a host without systemd).
/// Called under the host lock, so no sibling test starts them at the same time.
fn start_daemons() -> Result<(), String> {
    if !running("virtlogd") {
        let _ = Command::new("virtlogd").arg("-d").status();
    }
    if running("libvirtd") {
        return Ok(());
    }
    let out = Command::new("libvirtd")
        .arg("-d")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run libvirtd -d: {e}"))?;
    if out.status.success() || running("libvirtd") {
        return Ok(());
    }
    Err(format!(
        "libvirtd -d failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Waits until the daemon answers; a daemon that was just started needs a moment for its socket.
fn wait_until_answering(limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !answers() {
        if Instant::now() > deadline {
            return Err(format!(
                "libvirtd did not answer within {} s",
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Stops libvirtd and virtlogd (SIGTERM to every process of that name) and waits until they are
/// gone, so a test can check how the suite behaves on a machine where neither runs yet.
pub fn stop_daemons() {
    for comm in ["libvirtd", "virtlogd"] {
        let _ = Command::new("pkill").args(["-TERM", "-x", comm]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while running(comm) {
            assert!(Instant::now() < deadline, "{comm} did not stop within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs `virsh -c qemu:///system ARGS` with a time limit.
pub fn virsh(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run virsh")
}

/// `virsh` that must succeed; returns stdout.
pub fn virsh_ok(args: &[&str]) -> String {
    let o = virsh(args);
    assert!(
        o.status.success(),
        "virsh {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A defined domain, undefined (and destroyed) when dropped.
#[derive(Debug)]
pub struct TestDomain {
    /// Its unique name.
    pub name: String,
}

/// The XML of a minimal TCG domain with no disk: defines in well under a second and starts
/// with `--paused` without running guest code.
pub fn domain_xml(name: &str, metadata: &str, devices: &str) -> String {
    let meta = if metadata.is_empty() {
        String::new()
    } else {
        format!("  <metadata>{metadata}</metadata>\n")
    };
    format!(
        "<domain type='qemu'>\n  <name>{name}</name>\n{meta}  <memory unit='MiB'>32</memory>\n  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n  </os>\n  <on_poweroff>destroy</on_poweroff>\n  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n{devices}  </devices>\n</domain>\n"
    )
}

impl TestDomain {
    /// Defines a domain named `PREFIX-<pid>-<n>` with optional metadata and devices.
    pub fn define(prefix: &str, metadata: &str, devices: &str) -> TestDomain {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("dom.xml");
        fs::write(&file, domain_xml(&name, metadata, devices)).expect("write domain xml");
        virsh_ok(&["define", file.to_str().expect("utf-8 path")]);
        TestDomain { name }
    }

    /// `virsh dumpxml --inactive`.
    pub fn inactive_xml(&self) -> String {
        virsh_ok(&["dumpxml", "--inactive", &self.name])
    }

    /// `virsh domstate`.
    pub fn state(&self) -> String {
        String::from_utf8_lossy(&virsh(&["domstate", &self.name]).stdout)
            .trim()
            .to_string()
    }
}

impl Drop for TestDomain {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name]);
    }
}

/// Exclusive use of the host-wide files tests change; held across processes with flock.
pub struct HostLock(fs::File);

impl HostLock {
    /// Waits for the lock.
    pub fn take() -> HostLock {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(HOST_LOCK)
            .expect("open the test lock file");
        f.lock().expect("lock the test lock file");
        HostLock(f)
    }
}

/// A file put back as it was (content and mode, or absence) when dropped; its directory is
/// removed again when it did not exist before and is empty.
pub struct Restore {
    path: PathBuf,
    saved: Option<(Vec<u8>, u32)>,
    dir_existed: bool,
}

impl Restore {
    /// Remembers `path` now.
    pub fn new(path: &Path) -> Restore {
        let saved = fs::read(path).ok().map(|b| {
            let mode = fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
            (b, mode)
        });
        Restore {
            path: path.to_path_buf(),
            saved,
            dir_existed: path.parent().is_some_and(Path::exists),
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        match &self.saved {
            Some((bytes, mode)) => {
                if let Some(d) = self.path.parent() {
                    let _ = fs::create_dir_all(d);
                }
                let _ = fs::write(&self.path, bytes);
                let _ = fs::set_permissions(&self.path, fs::Permissions::from_mode(*mode));
            }
            None => {
                let _ = fs::remove_file(&self.path);
                if !self.dir_existed {
                    if let Some(d) = self.path.parent() {
                        let _ = fs::remove_dir(d);
                    }
                }
            }
        }
    }
}
