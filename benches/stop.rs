//! How long a VM with two NVIDIA vGPUs takes to stop, stop after stop, printed beside the fixed
//! wait the hook used to make.
//!
//! On a simulated P40 host, a domain with two vGPUs is started and stopped again and again.
//! - `leaves clean-up to us`: a driver that never removes a vGPU itself. The first stops wait
//!   `cleanup_wait_secs` once for both vGPUs while the host learns; after [`STOPS_TO_LEARN`] of
//!   them the hook no longer waits. Budget: a learned stop takes at most 1 s of wall time. The
//!   baseline is the fixed wait: `cleanup_wait_secs` per vGPU, one after the other, at every stop.
//! - `cleans up itself`: a driver that removes a vGPU 300 ms after its VM lets go. Every stop
//!   waits for it, and the hook must write no `remove` at all (it would race the driver).
//!
//! Run: `cargo bench --bench stop` (`STOP_WAIT_SECS` sets `cleanup_wait_secs`, default 2, so the
//! run stays short; the learned figure does not depend on it).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::stop::{p40_host, start_and_stop, two_vgpus};

/// The stops the hook needs to learn; kept in step with `vgpu_hook::host::learned`.
const STOPS_TO_LEARN: usize = 3;
const STOPS: usize = 6;

fn main() {
    let wait: u64 = std::env::var("STOP_WAIT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let Some(learned) = leaves_clean_up_to_us(wait) else {
        println!("stop benchmark not run: the FUSE simulator is unavailable");
        return;
    };
    cleans_up_itself(wait);
    let budget = Duration::from_secs(1);
    println!(
        "budget: a learned 2-vGPU stop <= 1 s: {}",
        if learned <= budget { "met" } else { "NOT MET" }
    );
    if learned > budget && std::env::var("CI").as_deref() == Ok("true") {
        std::process::exit(1);
    }
}

/// Runs the stops on a driver that never cleans up; returns the slowest learned stop.
fn leaves_clean_up_to_us(wait: u64) -> Option<Duration> {
    let (sim, h) = p40_host("", "", wait)?;
    let vm = two_vgpus();
    let fixed = Duration::from_secs(2 * wait);
    println!("2-vGPU stop, driver leaves clean-up to us (cleanup_wait_secs = {wait})");
    println!(
        "{:<6} {:>12} {:>26}",
        "stop", "now", "fixed wait (before, 2 x)"
    );
    let mut slowest_learned = Duration::ZERO;
    for stop in 1..=STOPS {
        let took = start_and_stop(&sim, &h, &vm);
        if stop > STOPS_TO_LEARN {
            slowest_learned = slowest_learned.max(took);
        }
        println!(
            "{stop:<6} {:>10.3} s {:>20.3} s",
            took.as_secs_f64(),
            fixed.as_secs_f64()
        );
    }
    Some(slowest_learned)
}

/// Runs the stops on a driver that cleans up by itself; reports the removes the hook wrote.
fn cleans_up_itself(wait: u64) {
    let Some((sim, h)) = p40_host("", "self_cleanup_ms = 300\n", wait) else {
        return;
    };
    let vm = two_vgpus();
    println!("2-vGPU stop, driver cleans up by itself 300 ms after release");
    for stop in 1..=STOPS {
        let took = start_and_stop(&sim, &h, &vm);
        println!("{stop:<6} {:>10.3} s", took.as_secs_f64());
    }
    let removes = sim
        .events()
        .lines()
        .filter(|l| l.contains("/remove"))
        .count();
    println!("removes written by the hook on a self-cleaning driver: {removes} (must be 0)");
    assert_eq!(removes, 0, "the hook raced the driver's own clean-up");
}
