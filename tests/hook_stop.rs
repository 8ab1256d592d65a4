//! Stops that do not wait for nothing and never race NVIDIA's driver: a stop waits for the
//! driver's own clean-up of a domain's vGPUs (all of them at once) until the host has learned,
//! for that driver version, that the driver leaves clean-up to us; a driver version seen cleaning
//! up by itself is always waited for, and the hook then writes no `remove`. One behaviour per test.

mod common;

use std::time::Duration;

use common::hook::*;
use common::stop::{p40_host, start_and_stop, two_vgpus};

const FACTS: &str = "driver-cleanup.json";

fn facts(h: &TestHost) -> serde_json::Value {
    let bytes = std::fs::read(h.state_dir().join(FACTS)).expect("facts recorded");
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn a_domains_vgpus_are_waited_for_together_not_one_after_the_other() {
    let Some((sim, h)) = p40_host("", "", 2) else {
        return;
    };
    let took = start_and_stop(&sim, &h, &two_vgpus());
    assert!(
        took >= Duration::from_secs(2),
        "waited for the driver: {took:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "one wait for both vGPUs: {took:?}"
    );
}

#[test]
fn after_three_stops_left_to_us_the_driver_is_no_longer_waited_for() {
    let Some((sim, h)) = p40_host("", "", 1) else {
        return;
    };
    let vm = two_vgpus();
    for stop in 1..=3 {
        let took = start_and_stop(&sim, &h, &vm);
        assert!(
            took >= Duration::from_secs(1),
            "stop {stop} still learns: {took:?}"
        );
    }
    assert_eq!(facts(&h)["left_to_us"], 3);
    let took = start_and_stop(&sim, &h, &vm);
    assert!(took < Duration::from_secs(1), "learned: {took:?}");
}

#[test]
fn a_driver_seen_cleaning_up_is_always_waited_for_and_never_raced() {
    let Some((sim, h)) = p40_host("", "self_cleanup_ms = 200\n", 5) else {
        return;
    };
    let vm = two_vgpus();
    for _ in 0..4 {
        start_and_stop(&sim, &h, &vm);
    }
    assert_eq!(facts(&h)["cleans_itself"], true);
    assert!(
        !sim.events().contains("/remove"),
        "the hook removed a vGPU the driver was about to remove:\n{}",
        sim.events()
    );
}

#[test]
fn facts_learned_about_another_driver_version_do_not_count() {
    let Some((sim, h)) = p40_host("", "", 1) else {
        return;
    };
    std::fs::create_dir_all(h.state_dir()).unwrap();
    let other = r#"{"driver":"535.230.02","left_to_us":3,"cleans_itself":false}"#;
    std::fs::write(h.state_dir().join(FACTS), other).unwrap();
    let took = start_and_stop(&sim, &h, &two_vgpus());
    assert!(
        took >= Duration::from_secs(1),
        "an upgraded driver is learned again: {took:?}"
    );
    assert_eq!(facts(&h)["left_to_us"], 1);
}

#[test]
fn learned_facts_of_this_driver_version_spare_the_wait() {
    let Some((sim, h)) = p40_host("nvidia_version = \"550.144.02\"\n", "", 30) else {
        return;
    };
    std::fs::create_dir_all(h.state_dir()).unwrap();
    let learned = r#"{"driver":"550.144.02","left_to_us":3,"cleans_itself":false}"#;
    std::fs::write(h.state_dir().join(FACTS), learned).unwrap();
    let took = start_and_stop(&sim, &h, &two_vgpus());
    assert!(took < Duration::from_secs(10), "no 30 s wait: {took:?}");
}
