//! A simulated GPU host for tests: runs `vgpu-sim mount` on a host description and gives the
//! mount point, the control file and the event log; dropping it unmounts.
//!
//! Where FUSE cannot be used (no `/dev/fuse`, no permission to mount), [`Sim::start`] explains
//! why on stderr and returns `None` so the test can return early; with `CI=true` it panics
//! instead, so a CI machine that lost FUSE fails loudly rather than passing empty tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Two NVIDIA P40 boards (classic mdev, 24 GB each), at 82:00.0 and 83:00.0.
pub const TWO_P40: &str = r#"
[[gpu]]
address = "0000:82:00.0"
kind = "nvidia-classic"
board = "P40"
framebuffer_mb = 24576

[[gpu]]
address = "0000:83:00.0"
kind = "nvidia-classic"
board = "P40"
framebuffer_mb = 24576
"#;

/// An AMD S7150 at 04:00.0 on the old GIM: four VFs, fixed at load (the new GIM gives an MI300X
/// one VF only).
pub const GIM: &str =
    "[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"amd-gim\"\ngim = \"old\"\nnumvfs = 4\n";

/// How long a mount may take to answer; generous because many tests mount at once.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the simulator gets to unmount after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running simulator and its mount.
pub struct Sim {
    child: Option<Child>,
    root: PathBuf,
    err_file: PathBuf,
    // Last field: dropped after the unmount in `Drop`, so the directory is never removed
    // through a live mount.
    dir: tempfile::TempDir,
}

/// The `vgpu-sim` binary: `$VGPU_SIM_BIN`, else `target/<profile>/vgpu-sim` next to the
/// `deps/` directory this test binary runs from (what `cargo build --workspace` makes), else one
/// built on demand ([`build_on_demand`]): a plain `cargo test` builds only the root package, and
/// a newcomer's first run must not fail for want of the simulator.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("VGPU_SIM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .or_else(|| exe.parent())
        .unwrap_or(Path::new("."));
    let beside = profile_dir.join("vgpu-sim");
    if beside.is_file() {
        return beside;
    }
    build_on_demand(profile_dir)
}

/// Builds `vgpu-sim` with `$CARGO build -p vgpu-sim` into its own target directory under the
/// test's (`target/sim-on-demand`: a nested cargo never waits for the lock of the `cargo test`
/// that runs us), once per test process; cargo's own lock on that directory serialises the
/// test processes, and a second build is a no-op check that keeps the binary up to date with
/// the simulator's sources. Panics with cargo's output when the build fails.
fn build_on_demand(profile_dir: &Path) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let target = profile_dir
                .parent()
                .unwrap_or(Path::new("target"))
                .join("sim-on-demand");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", "vgpu-sim", "--target-dir"])
                .arg(&target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if release {
                cmd.arg("--release");
            }
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("cannot run cargo to build vgpu-sim: {e}"));
            assert!(
                out.status.success(),
                "building vgpu-sim failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            target
                .join(if release { "release" } else { "debug" })
                .join("vgpu-sim")
        })
        .clone()
}

fn unavailable(reason: &str) -> Option<Sim> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("FUSE simulator unavailable on CI: {reason}");
    }
    eprintln!("skipped: this test needs the FUSE simulator: {reason}");
    None
}

impl Sim {
    /// Mounts a simulated host described by `host_toml` (see sim/README.md) on a fresh
    /// temporary directory, waiting until it answers.
    pub fn start(host_toml: &str) -> Option<Sim> {
        Sim::start_with(&binary(), host_toml)
    }

    /// Like [`Sim::start`] with an explicit simulator binary.
    pub fn start_with(bin: &Path, host_toml: &str) -> Option<Sim> {
        assert!(
            bin.is_file(),
            "{} not found: build it with `cargo build -p vgpu-sim` (or set VGPU_SIM_BIN)",
            bin.display()
        );
        if !Path::new("/dev/fuse").exists() {
            return unavailable("/dev/fuse does not exist");
        }
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let host_file = dir.path().join("host.toml");
        let root = dir.path().join("mnt");
        let err_file = dir.path().join("sim.err");
        std::fs::write(&host_file, host_toml).expect("write the host file");
        std::fs::create_dir(&root).expect("create the mount point");
        let stderr = std::fs::File::create(&err_file).expect("create the simulator's log");
        let mut child = Command::new(bin)
            .arg("mount")
            .arg(&host_file)
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));

        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut sim = Sim {
            child: Some(child),
            root,
            err_file,
            dir,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.trim() == "ready" => return Some(sim),
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let log = sim.log();
                    drop(sim);
                    return unavailable(&format!(
                        "vgpu-sim did not answer within {READY_TIMEOUT:?}: {log}"
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = sim.child.as_mut().and_then(|c| c.wait().ok());
                    let log = sim.log();
                    drop(sim);
                    // Exit status 3: the mount itself failed (no FUSE here). Anything else is
                    // a broken host file or simulator, which is the test's fault.
                    if status.and_then(|s| s.code()) == Some(3) {
                        return unavailable(&log);
                    }
                    panic!("vgpu-sim exited before mounting ({status:?}): {log}");
                }
            }
        }
    }

    /// The mount point: the simulated host's root (it contains `sys/` and `sim/`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A PCI device's directory (`sys/bus/pci/devices/<addr>`).
    pub fn pci_dir(&self, addr: &str) -> PathBuf {
        self.root.join("sys/bus/pci/devices").join(addr)
    }

    /// The type directory of `parent` whose `name` is `name`; panics when there is none.
    pub fn type_dir(&self, parent: &str, name: &str) -> PathBuf {
        let dir = self
            .root
            .join("sys/class/mdev_bus")
            .join(parent)
            .join("mdev_supported_types");
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .find(|p| {
                std::fs::read_to_string(p.join("name"))
                    .unwrap_or_default()
                    .trim()
                    == name
            })
            .unwrap_or_else(|| panic!("no type named {name} on {parent}"))
    }

    /// The parent an mdev lives on, from the kernel's own link; `None` when it does not exist.
    pub fn mdev_parent(&self, uuid: &str) -> Option<String> {
        let dev = self.root.join("sys/bus/mdev/devices").join(uuid);
        let real = std::fs::canonicalize(dev).ok()?;
        Some(real.parent()?.file_name()?.to_string_lossy().into_owned())
    }

    /// Writes one command to `sim/control` (`hold <uuid>`, `fault create-eio <parent>`, ...).
    pub fn control(&self, cmd: &str) -> std::io::Result<()> {
        std::fs::write(self.root.join("sim/control"), format!("{cmd}\n"))
    }

    /// The event log: one line per write made under `sys/`, `<path> <value> -> ok|<ERRNO>`.
    pub fn events(&self) -> String {
        std::fs::read_to_string(self.root.join("sim/events")).unwrap_or_default()
    }

    /// What the simulator wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.err_file)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Stops the simulator (SIGTERM, then SIGKILL after a timeout) and returns its exit status;
    /// a mount left behind is detached.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Option<ExitStatus> {
        let mut status = None;
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on our own child's pid; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            status = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        break child.wait().ok();
                    }
                }
            };
        }
        if still_mounted(&self.root) {
            let detached = Command::new("umount")
                .arg("-l")
                .arg(&self.root)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !detached {
                let _ = Command::new("fusermount3")
                    .args(["-u", "-z"])
                    .arg(&self.root)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        status
    }
}

/// Whether something is still mounted on `dir` (a dead FUSE mount fails to stat).
fn still_mounted(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = dir.parent() else {
        return false;
    };
    match (std::fs::metadata(dir), std::fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev(),
        (Err(e), _) => e.kind() != std::io::ErrorKind::NotFound,
        _ => false,
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown();
    }
}
