//! The host-wide lock's file: a bounded wait for it, and a note of who holds it.
//!
//! Every hook call and vgpuctl command that reads or changes the state takes one exclusive
//! `flock`, and some hold it across slow steps (NVIDIA's `sriov-manage`, a blocking `remove`).
//! A holder that hangs (a stuck vendor tool, a `vgpuctl reconcile` stopped with Ctrl-Z) must not
//! stall every start and stop on the host without a word, so a waiter gives up after a bound
//! (`lock_wait_secs`) and names the holder, which each holder writes into the lock file as soon
//! as it has the lock: its pid, since when, and its command line.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use crate::host::state::now_secs;

/// Who holds the lock, as it wrote into the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process.
    pub pid: u32,
    /// Seconds since the epoch when it took the lock.
    pub since: u64,
    /// Its command line (`vgpuctl reconcile`, `qemu win11 prepare begin -`).
    pub command: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = now_secs().saturating_sub(self.since);
        write!(
            f,
            "pid {} (`{}`, holding it for {held} s)",
            self.pid, self.command
        )
    }
}

/// Why the lock was not taken.
#[derive(Debug)]
pub enum NotTaken {
    /// Another process held it for the whole wait; who, if the file says.
    Busy(Option<Holder>),
    /// `flock` itself failed.
    Io(std::io::Error),
}

/// Takes the exclusive lock on `file`, waiting at most `wait`; on success notes this process
/// as the holder.
pub fn acquire(file: &mut File, wait: Duration) -> Result<(), NotTaken> {
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) if wait.is_zero() => {
            return Err(NotTaken::Busy(read_holder(file)))
        }
        Err(std::fs::TryLockError::WouldBlock) => wait_in_line(file, wait)?,
        Err(std::fs::TryLockError::Error(e)) => return Err(NotTaken::Io(e)),
    }
    note_holder(file);
    Ok(())
}

/// Waits for the lock among the kernel's blocked lockers, which are woken the moment the holder
/// lets go; polling would miss the short gaps of a holder that takes the lock back to back
/// (a stop freeing device after device, a storm of starts) and could wait out its whole bound.
/// The blocking `flock` runs in a thread on a duplicate of `file` (the lock belongs to the open
/// file, shared by both): past `wait` the thread is left behind, and should it get the lock
/// later it closes its duplicate, so the lock goes when `file` does.
fn wait_in_line(file: &mut File, wait: Duration) -> Result<(), NotTaken> {
    let dup = file.try_clone().map_err(NotTaken::Io)?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let got = dup.lock();
        drop(dup);
        let _ = tx.send(got);
    });
    match rx.recv_timeout(wait) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(NotTaken::Io(e)),
        Err(_) => Err(NotTaken::Busy(read_holder(file))),
    }
}

/// Writes this process into the lock file; a failure only costs the name in a waiter's message.
fn note_holder(file: &mut File) {
    let command: Vec<String> = std::env::args().map(|a| crate::printable(&a, 80)).collect();
    let line = format!(
        "{} {} {}\n",
        std::process::id(),
        now_secs(),
        crate::printable(&command.join(" "), 200)
    );
    let written = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(line.as_bytes()));
    if let Err(e) = written {
        log::debug!("could not note the lock's holder: {e}");
    }
}

/// The holder the lock file names, if it names one.
fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(512).read_to_string(&mut text).ok()?;
    parse_holder(&text)
}

fn parse_holder(text: &str) -> Option<Holder> {
    let line = text.lines().next()?;
    let mut words = line.splitn(3, ' ');
    Some(Holder {
        pid: words.next()?.parse().ok()?,
        since: words.next()?.parse().ok()?,
        command: words.next().unwrap_or("").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::sleep;
    use std::time::Instant;

    fn lock_file(dir: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join("lock"))
            .unwrap()
    }

    #[test]
    fn the_holder_notes_itself_and_a_waiter_names_it_when_the_bound_runs_out() {
        let t = tempfile::tempdir().unwrap();
        let mut first = lock_file(t.path());
        acquire(&mut first, Duration::ZERO).unwrap();
        let mut second = lock_file(t.path());
        let start = Instant::now();
        let Err(NotTaken::Busy(holder)) = acquire(&mut second, Duration::from_millis(300)) else {
            panic!("the second lock must be refused as busy");
        };
        assert!(start.elapsed() >= Duration::from_millis(300));
        let holder = holder.expect("the holder is named");
        assert_eq!(holder.pid, std::process::id());
        assert!(holder
            .to_string()
            .starts_with(&format!("pid {} (`", std::process::id())));
    }

    #[test]
    fn a_waiter_gets_the_lock_once_the_holder_lets_go_within_the_bound() {
        let t = tempfile::tempdir().unwrap();
        let mut first = lock_file(t.path());
        acquire(&mut first, Duration::ZERO).unwrap();
        let path = t.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            acquire(&mut lock_file(&path), Duration::from_secs(10)).is_ok()
        });
        sleep(Duration::from_millis(200));
        drop(first);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn a_lock_file_without_a_note_names_no_holder() {
        assert_eq!(parse_holder(""), None);
        assert_eq!(parse_holder("garbage\n"), None);
        assert_eq!(
            parse_holder("42 1700000000 vgpuctl reconcile\n"),
            Some(Holder {
                pid: 42,
                since: 1_700_000_000,
                command: "vgpuctl reconcile".into()
            })
        );
    }
}
