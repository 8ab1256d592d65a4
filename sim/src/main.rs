//! The `vgpu-sim` command: `vgpu-sim mount HOST.toml MOUNTPOINT`.
//!
//! Mounts the simulated host in the foreground, prints `ready` once the mount answers (so a test
//! can wait for that line instead of sleeping), serves until SIGINT or SIGTERM, then unmounts
//! and exits 0. If the mount point is busy at that moment it is detached lazily instead, so a
//! stray shell inside the mount never leaves a dead FUSE mount behind.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL};
use vgpu_sim::fs::SimFs;
use vgpu_sim::host;
use vgpu_sim::model::Model;

const USAGE: &str = "usage: vgpu-sim mount HOST.toml MOUNTPOINT\n\n\
Mounts a simulated GPU host (mdev, NVIDIA vGPU, AMD GIM, SR-IOV sysfs) at MOUNTPOINT,\n\
prints `ready` when it answers and serves until SIGINT or SIGTERM.\n\
RUST_LOG=debug shows FUSE traffic.";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let strs: Vec<Option<&str>> = args.iter().map(|a| a.to_str()).collect();
    match strs.as_slice() {
        [Some("mount"), _, _] => match mount(Path::new(&args[1]), Path::new(&args[2])) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure { code, message }) => {
                eprintln!("vgpu-sim: {message}");
                ExitCode::from(code)
            }
        },
        [Some("-h" | "--help" | "help")] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Why `mount` gave up, and the exit status that tells callers which kind of problem it was:
/// 1 for a bad host file, 3 when the mount itself failed (no FUSE, no permission).
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn host(message: String) -> Failure {
        Failure { code: 1, message }
    }

    fn mount(message: String) -> Failure {
        Failure { code: 3, message }
    }
}

/// The termination signals, blocked in every thread so the main thread can wait for them.
fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own; pthread_sigmask only
    // reads it. Called before any other thread exists, so every thread inherits the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits up to `timeout` for one of `set`; true if one arrived.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `set` is an initialised sigset_t, `ts` a valid timespec, info may be null.
    let r = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    r > 0
}

fn mount(host_file: &Path, mountpoint: &Path) -> Result<(), Failure> {
    let host = host::load(host_file).map_err(|e| Failure::host(e.to_string()))?;
    let model = Model::new(host, Instant::now());
    let signals = termination_signals();

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("vgpu-sim".to_string()),
        MountOption::Subtype("vgpu-sim".to_string()),
        MountOption::NoAtime,
    ];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root may let every user in; tests often drop privileges for some steps.
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(4);
    config.clone_fd = true;

    let session = Session::new(SimFs::new(model), mountpoint, &config)
        .map_err(|e| Failure::mount(format!("cannot mount at {}: {e}", mountpoint.display())))?;
    let background = session
        .spawn()
        .map_err(|e| Failure::mount(format!("cannot start the FUSE session: {e}")))?;

    let probe: PathBuf = mountpoint.join("sim/events");
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = std::fs::metadata(&probe) {
        if Instant::now() > deadline {
            return Err(Failure::mount(format!(
                "the mount at {} does not answer: {e}",
                mountpoint.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = std::io::stdout().lock();
    // A reader that went away must not stop the simulator.
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);

    loop {
        if wait_signal(&signals, Duration::from_millis(200)) {
            break;
        }
        if background.guard.is_finished() {
            // Unmounted from outside: nothing left to serve.
            return Ok(());
        }
    }
    log::info!("unmounting {}", mountpoint.display());
    if let Err(e) = background.umount_and_join() {
        log::warn!("unmount failed ({e}); detaching lazily");
        lazy_unmount(mountpoint);
    }
    Ok(())
}

/// Detaches a busy mount; the kernel finishes the unmount once the last user leaves.
fn lazy_unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `c` is a valid NUL-terminated path.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if r != 0 {
        let _ = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(mountpoint)
            .status();
    }
}
