//! The suite on a machine where no libvirt daemon runs yet: tests that need libvirtd find none
//! at the same moment, and each must end up with a daemon that answers, whoever started it.
//!
//! This is its own test binary on purpose: it stops the daemons, which would pull them away
//! from tests running beside it (cargo runs test binaries one after another).

mod common;

use common::libvirtd::{stop_daemons, virsh, Libvirtd};

/// How many tests ask for the daemon at once (more than `--test-threads=2` ever runs).
const SIBLINGS: usize = 4;

#[test]
fn sibling_tests_that_find_no_daemon_all_get_one_that_answers() {
    if Libvirtd::ensure().is_none() {
        return;
    }
    stop_daemons();
    let barrier = std::sync::Barrier::new(SIBLINGS);
    let got: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..SIBLINGS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    Libvirtd::ensure().is_some()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(got, vec![true; SIBLINGS], "every sibling gets a daemon");
    assert!(virsh(&["version"]).status.success(), "the daemon answers");
}
