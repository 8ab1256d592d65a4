//! Stopping a VM with two NVIDIA vGPUs on a simulated P40, for the stop tests and the stop
//! benchmark: the host, the domain, and one timed start-and-stop cycle.

use std::time::{Duration, Instant};

use super::hook::{assert_ok, mdev_domain, mdev_uuid, DomainXml, TestHost, FAST_TIMING};
use super::sim::Sim;

const P40: &str =
    "[[gpu]]\naddress = \"0000:82:00.0\"\nkind = \"nvidia-classic\"\nboard = \"P40\"\n";

/// A P40 host (`top`: host-wide keys, `gpu`: more keys of the GPU) whose stops wait `wait`
/// seconds for the driver at most; state on tmpfs as on a real host.
pub fn p40_host(top: &str, gpu: &str, wait: u64) -> Option<(Sim, TestHost)> {
    let sim = Sim::start(&format!("{top}{P40}{gpu}"))?;
    let config = format!("nvidia_vgpu_pfs = [\"82:00.0\"]\n{FAST_TIMING}").replace(
        "cleanup_wait_secs = 0",
        &format!("cleanup_wait_secs = {wait}"),
    );
    let h = TestHost::on_tmpfs(sim.root(), &config);
    Some((sim, h))
}

/// A domain with two P40-2Q vGPUs (mdevs 1 and 2).
pub fn two_vgpus() -> DomainXml {
    mdev_domain("a", &[(1, "profile=\"P40-2Q\""), (2, "profile=\"P40-2Q\"")])
}

/// Starts the domain, lets QEMU open and close its vGPUs, and times the stop; checks that both
/// vGPUs and their records are gone afterwards.
pub fn start_and_stop(sim: &Sim, h: &TestHost, vm: &DomainXml) -> Duration {
    assert_ok(&h.prepare(vm));
    for n in [1, 2] {
        sim.control(&format!("hold {}", mdev_uuid(n))).unwrap();
        sim.control(&format!("release {}", mdev_uuid(n))).unwrap();
    }
    let t = Instant::now();
    assert_ok(&h.release(vm));
    let took = t.elapsed();
    for n in [1, 2] {
        assert!(
            sim.mdev_parent(&mdev_uuid(n)).is_none(),
            "mdev {n} left behind"
        );
    }
    assert!(h.records().is_empty());
    took
}
