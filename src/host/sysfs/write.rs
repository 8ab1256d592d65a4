//! Writing sysfs attributes: one `write(2)` each, keeping the kernel's errno, and bounded in time.
//!
//! Some writes block in the kernel until another process lets go of the device (`remove` while
//! QEMU or the vGPU manager still holds it), and such a wait is not interruptible: even a killed
//! process stays until the kernel is done. A thread cannot bound that, so a bounded write runs in
//! a forked child that owns nothing but the attribute (stdio on /dev/null, every other descriptor
//! closed, so neither libvirt's pipes nor the state lock are held by it). The caller waits up to
//! its bound on a pidfd; past that it goes on and the child finishes the write on its own
//! whenever the device is released.

use std::ffi::{CStr, CString};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::SysfsError;
use crate::host::errno::Attr;

/// One `write(2)` of `value` to an existing attribute.
pub fn write_attr(path: &Path, value: &str) -> Result<(), SysfsError> {
    let fail = |e: io::Error| refused(path, value, e.raw_os_error().unwrap_or(0));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(fail)?;
    // A sysfs store takes the whole value in one write; a short one would store a fragment, so
    // it is not followed by another write of the rest.
    match f.write(value.as_bytes()) {
        Ok(n) if n == value.len() => Ok(()),
        Ok(_) => Err(refused(path, value, libc::EIO)),
        Err(e) => Err(fail(e)),
    }
}

fn refused(path: &Path, value: &str, errno: i32) -> SysfsError {
    SysfsError::Write {
        path: path.to_path_buf(),
        value: crate::printable(value, 60),
        errno,
        attr: Attr::Other,
    }
}

/// [`write_attr`] that gives up waiting after `timeout` (the write itself goes on in a child).
pub fn write_bounded(path: &Path, value: &str, timeout: Duration) -> Result<(), SysfsError> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| refused(path, value, libc::EINVAL))?;
    let Some(pid) = spawn_writer(&c_path, value.as_bytes()) else {
        return write_attr(path, value);
    };
    match wait_exit(pid, timeout) {
        Ended::Exited(0) => Ok(()),
        Ended::Exited(errno) => Err(refused(path, value, errno)),
        Ended::Killed => Err(refused(path, value, libc::EINTR)),
        Ended::Pending(pid) => Err(SysfsError::Timeout {
            path: path.to_path_buf(),
            value: crate::printable(value, 60),
            secs: timeout.as_secs().max(1),
            pid,
        }),
    }
}

/// Forks a child that writes `bytes` to `path` once and exits with the errno (0 on success).
/// `None` when no child could be made (the caller then writes itself).
fn spawn_writer(path: &CStr, bytes: &[u8]) -> Option<i32> {
    // SAFETY: plain libc calls; the child only uses async-signal-safe calls on memory prepared
    // before the fork, then `_exit`s.
    unsafe {
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if devnull < 0 {
            return None;
        }
        let pid = libc::fork();
        if pid == 0 {
            isolate(devnull);
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, bytes.as_ptr().cast(), bytes.len()) < 0 {
                libc::_exit(*libc::__errno_location() & 0xff);
            }
            libc::_exit(0);
        }
        libc::close(devnull);
        (pid > 0).then_some(pid)
    }
}

/// In the writer child: stdio on /dev/null and every other descriptor closed, so the child
/// holds neither libvirt's pipes nor the state lock while it waits in the kernel.
///
/// # Safety
/// Only in a freshly forked child; async-signal-safe calls only.
unsafe fn isolate(devnull: i32) {
    libc::dup2(devnull, 0);
    libc::dup2(devnull, 1);
    libc::dup2(devnull, 2);
    if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
        // Kernels before 5.9: close one by one.
        let max = match libc::sysconf(libc::_SC_OPEN_MAX) {
            n if n > 0 => n.min(65_536) as i32,
            _ => 4096,
        };
        for fd in 3..max {
            libc::close(fd);
        }
    }
}

/// How a writer child's wait ended.
enum Ended {
    /// It exited with this status (the errno, 0 on success).
    Exited(i32),
    /// A signal ended it.
    Killed,
    /// Still writing when the bound passed (0 when it could not be waited for at all).
    Pending(i32),
}

/// Waits up to `timeout` for the writer: on a pidfd (readable at exit) where the kernel has
/// them, else by polling with short sleeps.
fn wait_exit(pid: i32, timeout: Duration) -> Ended {
    let deadline = Instant::now() + timeout;
    // SAFETY: pidfd_open on our own child; the descriptor is closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    let ended = loop {
        let mut status = 0;
        // SAFETY: reaps our own child, if it has exited.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break if libc::WIFEXITED(status) {
                Ended::Exited(libc::WEXITSTATUS(status))
            } else {
                Ended::Killed
            };
        }
        let now = Instant::now();
        if r < 0 || now >= deadline {
            break Ended::Pending(if r < 0 { 0 } else { pid });
        }
        wait_readable(pidfd, deadline - now);
    };
    if pidfd >= 0 {
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::close(pidfd) };
    }
    ended
}

/// Sleeps until `pidfd` is readable (the child exited) or `limit` passes; without a pidfd, a
/// short sleep.
fn wait_readable(pidfd: i32, limit: Duration) {
    if pidfd < 0 {
        std::thread::sleep(Duration::from_micros(200));
        return;
    }
    let mut pfd = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = limit.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: poll on one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Waits up to `timeout` for the child of a timed-out [`write_bounded`] to finish its write.
/// True when it has (whatever the outcome).
pub fn wait_child(pid: i32, timeout: Duration) -> bool {
    if pid <= 0 {
        return true;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: reaps our own child, if it has exited.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r != 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_to_missing_attribute_fails_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("create");
        let e = write_attr(&p, "x").unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT));
        assert!(!p.exists());
    }

    #[test]
    fn a_bounded_write_reports_the_childs_errno() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_bounded(&dir.path().join("absent"), "1", Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT));
    }

    #[test]
    fn a_bounded_write_lands_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("attr");
        fs::write(&p, "").unwrap();
        write_bounded(&p, "42", Duration::from_secs(5)).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "42");
    }

    #[test]
    fn a_write_blocked_on_a_fifo_is_pending_past_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo on a fresh path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = write_bounded(&p, "1", Duration::from_millis(100)).unwrap_err();
        let SysfsError::Timeout { pid, .. } = e else {
            panic!("expected a timeout, got {e}");
        };
        assert!(pid > 0);
        // Let the child finish: open the reading end.
        let _reader = fs::File::open(&p).unwrap();
        assert!(wait_child(pid, Duration::from_secs(5)));
    }
}
