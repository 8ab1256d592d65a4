//! The hook's mdev behaviour against a simulated host that reacts like the kernel and NVIDIA's
//! driver: devices appear after `create`, counts move, errno comes back, removes block while held.
//! One behaviour per test.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::hook::*;
use common::sim::{Sim, TWO_P40};

fn p40_config(extra: &str) -> String {
    format!("nvidia_vgpu_pfs = [\"82:00.0\", \"0000:83:00.0\"]\n{FAST_TIMING}{extra}")
}

const MTTY: &str = r#"
[[gpu]]
kind = "mdev"
name = "mtty"
types = [{ id = "mtty-1", name = "Single port serial", max_instances = 24 },
         { id = "mtty-2", name = "Dual port serial", max_instances = 12 }]
"#;

fn mtty_config(extra: &str) -> String {
    format!("mdev_parents = [\"mtty\"]\n{FAST_TIMING}{extra}")
}

fn dev_path(sim: &Sim, n: u32) -> PathBuf {
    sim.root().join("sys/bus/mdev/devices").join(mdev_uuid(n))
}

/// The parent an mdev lives on, from the kernel's own link.
fn parent_of(sim: &Sim, n: u32) -> Option<String> {
    sim.mdev_parent(&mdev_uuid(n))
}

fn avail_at(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("available_instances"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn avail(sim: &Sim, parent: &str, name: &str) -> u32 {
    avail_at(&sim.type_dir(parent, name))
}

fn live_count(sim: &Sim) -> usize {
    std::fs::read_dir(sim.root().join("sys/bus/mdev/devices"))
        .unwrap()
        .count()
}

#[test]
fn prepare_creates_the_mdev_and_release_removes_it() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let vm = mdev_domain("vm1", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.prepare(&vm));
    assert_eq!(parent_of(&sim, 1).as_deref(), Some("mtty"));
    assert_eq!(avail(&sim, "mtty", "Dual port serial"), 11);
    assert_eq!(h.owners(), ["vm1"]);
    assert_ok(&h.release(&vm));
    assert!(!dev_path(&sim, 1).exists());
    assert_eq!(avail(&sim, "mtty", "Dual port serial"), 12);
    assert!(h.records().is_empty());
}

#[test]
fn short_profile_name_selects_the_nvidia_type() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    assert_ok(&h.prepare(&mdev_domain("vm1", &[(1, "profile=\"P40-2Q\"")])));
    assert_eq!(avail(&sim, "0000:82:00.0", "GRID P40-2Q"), 11);
}

#[test]
fn full_profile_name_selects_the_nvidia_type() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    assert_ok(&h.prepare(&mdev_domain("vm1", &[(1, "profile=\"GRID P40-4Q\"")])));
    assert_eq!(avail(&sim, "0000:82:00.0", "GRID P40-4Q"), 5);
}

#[test]
fn exact_type_id_selects_the_type() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    assert_ok(&h.prepare(&mdev_domain("vm1", &[(1, "type=\"mtty-1\"")])));
    assert_eq!(avail(&sim, "mtty", "Single port serial"), 23);
}

#[test]
fn pack_puts_the_second_vgpu_on_the_gpu_already_hosting_the_profile() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config("placement = \"pack\"\n"));
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"P40-2Q\"")])));
    assert_ok(&h.prepare(&mdev_domain("b", &[(2, "profile=\"P40-2Q\"")])));
    assert_eq!(parent_of(&sim, 1), parent_of(&sim, 2));
}

#[test]
fn spread_puts_the_second_vgpu_on_the_gpu_with_most_room() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config("placement = \"spread\"\n"));
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"P40-2Q\"")])));
    assert_ok(&h.prepare(&mdev_domain("b", &[(2, "profile=\"P40-2Q\"")])));
    assert_ne!(parent_of(&sim, 1), parent_of(&sim, 2));
}

const UNEVEN: &str = r#"
[[gpu]]
kind = "mdev"
name = "big"
types = [{ id = "big-1", name = "Slice", max_instances = 8 }]

[[gpu]]
kind = "mdev"
name = "small"
types = [{ id = "small-1", name = "Slice", max_instances = 4 }]
"#;

#[test]
fn pack_prefers_the_parent_with_the_fewest_free_when_none_hosts_the_profile() {
    let Some(sim) = Sim::start(UNEVEN) else {
        return;
    };
    let h = TestHost::new(
        sim.root(),
        &format!("mdev_parents = [\"big\", \"small\"]\n{FAST_TIMING}"),
    );
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"Slice\"")])));
    assert_eq!(parent_of(&sim, 1).as_deref(), Some("small"));
}

#[test]
fn spread_prefers_the_parent_with_the_most_free() {
    let Some(sim) = Sim::start(UNEVEN) else {
        return;
    };
    let h = TestHost::new(
        sim.root(),
        &format!("mdev_parents = [\"big\", \"small\"]\nplacement = \"spread\"\n{FAST_TIMING}"),
    );
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"Slice\"")])));
    assert_eq!(parent_of(&sim, 1).as_deref(), Some("big"));
}

#[test]
fn another_profile_size_goes_to_the_other_gpu() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"P40-2Q\"")])));
    assert_ok(&h.prepare(&mdev_domain("b", &[(2, "profile=\"P40-4Q\"")])));
    assert_ne!(parent_of(&sim, 1), parent_of(&sim, 2));
}

#[test]
fn third_size_is_refused_naming_the_profiles_each_gpu_hosts() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"P40-2Q\"")])));
    assert_ok(&h.prepare(&mdev_domain("b", &[(2, "profile=\"P40-4Q\"")])));
    let o = h.prepare(&mdev_domain("c", &[(3, "profile=\"P40-8Q\"")]));
    assert_refused(
        &o,
        &[
            "domain 'c'",
            "no free 'P40-8Q'",
            "0000:82:00.0 (hosts 'GRID P40-2Q')",
            "0000:83:00.0 (hosts 'GRID P40-4Q')",
        ],
    );
    assert!(!dev_path(&sim, 3).exists());
}

#[test]
fn exhaustion_names_the_domains_holding_each_gpu() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let mut h = TestHost::new(sim.root(), &p40_config(""));
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"P40-24Q\"")])));
    h.start_qemu("a");
    assert_ok(&h.prepare(&mdev_domain("b", &[(2, "profile=\"P40-24Q\"")])));
    h.start_qemu("b");
    let o = h.prepare(&mdev_domain("c", &[(3, "profile=\"P40-24Q\"")]));
    assert_refused(&o, &["no free 'P40-24Q' on 0000:82:00.0 (0 left, held by 'a'), 0000:83:00.0 (0 left, held by 'b')"]);
}

#[test]
fn exhaustion_counts_devices_not_made_by_the_hook() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let ty = sim.type_dir("mtty", "Dual port serial");
    for n in 100..112 {
        std::fs::write(ty.join("create"), mdev_uuid(n)).unwrap();
    }
    let o = h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")]));
    assert_refused(&o, &["mtty (0 left, 12 not made by vgpu-hook)"]);
}

#[test]
fn parent_attribute_restricts_where_the_vgpu_goes() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    assert_ok(&h.prepare(&mdev_domain(
        "a",
        &[(1, "profile=\"P40-2Q\" parent=\"83:00.0\"")],
    )));
    assert_eq!(parent_of(&sim, 1).as_deref(), Some("0000:83:00.0"));
}

#[test]
fn parent_attribute_naming_an_unconfigured_gpu_is_refused_with_the_configured_ones() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    let o = h.prepare(&mdev_domain(
        "a",
        &[(1, "profile=\"P40-2Q\" parent=\"0000:84:00.0\"")],
    ));
    assert_refused(
        &o,
        &[
            "parent=0000:84:00.0",
            "configured: 0000:82:00.0, 0000:83:00.0",
        ],
    );
}

#[test]
fn unknown_profile_is_refused_per_gpu() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    let o = h.prepare(&mdev_domain("a", &[(1, "profile=\"T4-2Q\"")]));
    assert_refused(
        &o,
        &[
            "no free 'T4-2Q'",
            "0000:82:00.0 (no such type)",
            "0000:83:00.0 (no such type)",
        ],
    );
}

#[test]
fn params_are_written_to_vgpu_params() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    assert_ok(&h.prepare(&mdev_domain(
        "a",
        &[(1, "profile=\"P40-2Q\" params=\"frame_rate_limiter=0\"")],
    )));
    let got = std::fs::read_to_string(dev_path(&sim, 1).join("nvidia/vgpu_params")).unwrap();
    assert_eq!(got.trim(), "frame_rate_limiter=0");
}

#[test]
fn params_on_a_parent_without_vgpu_params_are_refused_and_the_device_rolled_back() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let o = h.prepare(&mdev_domain(
        "a",
        &[(1, "type=\"mtty-2\" params=\"frame_rate_limiter=0\"")],
    ));
    assert_refused(&o, &["no nvidia/vgpu_params"]);
    assert!(!dev_path(&sim, 1).exists());
    assert_eq!(avail(&sim, "mtty", "Dual port serial"), 12);
    assert!(h.records().is_empty());
}

#[test]
fn a_failing_second_request_undoes_the_first() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let o = h.prepare(&mdev_domain(
        "a",
        &[(1, "type=\"mtty-2\""), (2, "type=\"mtty-7\"")],
    ));
    assert_refused(&o, &["'mtty-7'"]);
    assert!(!dev_path(&sim, 1).exists());
    assert_eq!(avail(&sim, "mtty", "Dual port serial"), 12);
    assert!(h.records().is_empty());
}

#[test]
fn create_eio_on_one_gpu_falls_back_to_the_next() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    sim.control("fault create-eio 0000:82:00.0").unwrap();
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"P40-2Q\"")])));
    assert_eq!(parent_of(&sim, 1).as_deref(), Some("0000:83:00.0"));
}

#[test]
fn create_eio_everywhere_is_reported_with_the_errno() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    sim.control("fault create-eio 0000:82:00.0").unwrap();
    sim.control("fault create-eio 0000:83:00.0").unwrap();
    let o = h.prepare(&mdev_domain("a", &[(1, "profile=\"P40-2Q\"")]));
    assert_refused(
        &o,
        &[
            "0000:82:00.0 (create failed: EIO (Input/output error))",
            "0000:83:00.0 (create failed: EIO",
        ],
    );
    assert_eq!(live_count(&sim), 0);
}

#[test]
fn an_existing_idle_mdev_of_the_right_type_is_reused() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let ty = sim.type_dir("mtty", "Dual port serial");
    std::fs::write(ty.join("create"), mdev_uuid(1)).unwrap();
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")])));
    assert_eq!(avail_at(&ty), 11);
    assert_eq!(h.owners(), ["a"]);
}

/// An mdev made by hand (n) that a running domain `b` without our metadata is given as a plain
/// `<hostdev type='mdev'>`, the way it is set up by hand.
fn mdev_of_a_plain_running_domain(sim: &Sim, h: &mut TestHost, n: u32) {
    let ty = sim.type_dir("mtty", "Dual port serial");
    std::fs::write(ty.join("create"), mdev_uuid(n)).unwrap();
    let b = domain("b", None, &mdev_request(n, "").1);
    h.start_qemu("b");
    h.write_status(&b);
}

#[test]
fn an_mdev_a_running_domain_uses_without_our_metadata_is_refused_naming_it() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let mut h = TestHost::new(sim.root(), &mtty_config(""));
    mdev_of_a_plain_running_domain(&sim, &mut h, 1);
    let a = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_refused(
        &h.prepare(&a),
        &["in use by running domain 'b'", "vgpuctl detach --uuid"],
    );
    assert!(h.owners().is_empty(), "nothing recorded for a");
    assert_ok(&h.release(&a));
    assert!(
        dev_path(&sim, 1).exists(),
        "b's device survives a's release"
    );
}

#[test]
fn an_mdev_named_by_a_domain_that_no_longer_runs_is_reused() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let mut h = TestHost::new(sim.root(), &mtty_config(""));
    mdev_of_a_plain_running_domain(&sim, &mut h, 1);
    h.stop_qemu("b");
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")])));
    assert_eq!(h.owners(), ["a"]);
}

#[test]
fn an_existing_mdev_of_another_type_is_refused_with_the_fix() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    std::fs::write(
        sim.type_dir("mtty", "Single port serial").join("create"),
        mdev_uuid(1),
    )
    .unwrap();
    let o = h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")]));
    assert_refused(&o, &["already exists as mtty-1 on mtty", "/remove"]);
    assert!(
        dev_path(&sim, 1).exists(),
        "a device the hook did not make is left alone"
    );
}

#[test]
fn a_uuid_held_by_another_running_domain_is_refused_naming_it() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let mut h = TestHost::new(sim.root(), &mtty_config(""));
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")])));
    h.start_qemu("a");
    let o = h.prepare(&mdev_domain("b", &[(1, "type=\"mtty-2\"")]));
    assert_refused(&o, &["held by domain 'a'"]);
    assert_eq!(h.owners(), ["a"]);
}

#[test]
fn a_parent_that_registers_late_is_waited_for() {
    let late = TWO_P40.replacen(
        "framebuffer_mb = 24576",
        "framebuffer_mb = 24576\nappear_after_ms = 1500",
        2,
    );
    let Some(sim) = Sim::start(&late) else { return };
    let h = TestHost::new(
        sim.root(),
        &p40_config("").replace("parent_wait_secs = 0", "parent_wait_secs = 20"),
    );
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"P40-2Q\"")])));
    assert!(dev_path(&sim, 1).exists());
}

#[test]
fn a_parent_that_never_appears_is_given_up_on_within_the_bound() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(
        sim.root(),
        &format!("nvidia_vgpu_pfs = [\"99:00.0\"]\n{FAST_TIMING}")
            .replace("parent_wait_secs = 0", "parent_wait_secs = 1"),
    );
    let t = Instant::now();
    let o = h.prepare(&mdev_domain("a", &[(1, "profile=\"P40-2Q\"")]));
    assert_refused(&o, &["0000:99:00.0 (missing"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn release_waits_for_nvidia_to_clean_up_by_itself() {
    let cleaning = TWO_P40.replacen(
        "framebuffer_mb = 24576",
        "framebuffer_mb = 24576\nself_cleanup_ms = 300",
        2,
    );
    let Some(sim) = Sim::start(&cleaning) else {
        return;
    };
    let h = TestHost::new(
        sim.root(),
        &p40_config("").replace("cleanup_wait_secs = 0", "cleanup_wait_secs = 5"),
    );
    let vm = mdev_domain("a", &[(1, "profile=\"P40-2Q\"")]);
    assert_ok(&h.prepare(&vm));
    sim.control(&format!("hold {}", mdev_uuid(1))).unwrap();
    sim.control(&format!("release {}", mdev_uuid(1))).unwrap();
    assert_ok(&h.release(&vm));
    assert!(!dev_path(&sim, 1).exists());
    assert!(
        !sim.events().contains("/remove"),
        "the hook removed it itself:\n{}",
        sim.events()
    );
    assert!(h.records().is_empty());
}

#[test]
fn release_removes_the_mdev_when_the_driver_does_not() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(
        sim.root(),
        &p40_config("").replace("cleanup_wait_secs = 0", "cleanup_wait_secs = 1"),
    );
    let vm = mdev_domain("a", &[(1, "profile=\"P40-2Q\"")]);
    assert_ok(&h.prepare(&vm));
    assert_ok(&h.release(&vm));
    assert!(!dev_path(&sim, 1).exists());
    assert!(sim.events().contains("/remove 1 -> ok"), "{}", sim.events());
}

#[test]
fn a_remove_blocked_by_a_holder_ends_within_its_bound() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.prepare(&vm));
    sim.control(&format!("hold {}", mdev_uuid(1))).unwrap();
    let t = Instant::now();
    assert_ok(&h.release(&vm));
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(dev_path(&sim, 1).exists());
    assert_eq!(
        h.owners(),
        ["a"],
        "the record stays while the device could not be removed"
    );
    sim.control(&format!("release {}", mdev_uuid(1))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while dev_path(&sim, 1).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !dev_path(&sim, 1).exists(),
        "the pending remove completes once the holder lets go"
    );
}

#[test]
fn a_stop_that_cannot_remove_one_mdev_frees_the_others_and_keeps_only_its_record() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let kinds = [
        (1, "type=\"mtty-2\""),
        (2, "type=\"mtty-2\""),
        (3, "type=\"mtty-1\""),
    ];
    let vm = mdev_domain("a", &kinds);
    assert_ok(&h.prepare(&vm));
    sim.control(&format!("hold {}", mdev_uuid(2))).unwrap();
    assert_ok(&h.release(&vm));
    let present: Vec<bool> = [1, 2, 3]
        .iter()
        .map(|&n| dev_path(&sim, n).exists())
        .collect();
    assert_eq!(present, [false, true, false]);
    let kept: Vec<String> = h
        .records()
        .iter()
        .map(|r| r["device"]["uuid"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kept, [mdev_uuid(2)]);
    sim.control(&format!("release {}", mdev_uuid(2))).unwrap();
}

#[test]
fn release_without_prepare_or_twice_exits_0() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.release(&vm));
    assert_ok(&h.prepare(&vm));
    assert_ok(&h.release(&vm));
    assert_ok(&h.release(&vm));
    assert_eq!(avail(&sim, "mtty", "Dual port serial"), 12);
}

#[test]
fn release_after_a_refused_prepare_leaves_the_other_domains_device() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let mut h = TestHost::new(sim.root(), &mtty_config(""));
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")])));
    h.start_qemu("a");
    let b = mdev_domain("b", &[(1, "type=\"mtty-2\"")]);
    assert_refused(&h.prepare(&b), &["held by domain 'a'"]);
    assert_ok(&h.call("b", "stopped", "end", "-", &b.text));
    assert_ok(&h.release(&b));
    assert!(dev_path(&sim, 1).exists());
    assert_eq!(h.owners(), ["a"]);
}

#[test]
fn reconnect_records_the_running_domains_devices_again() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.prepare(&vm));
    std::fs::remove_dir_all(h.state_dir()).unwrap();
    assert_ok(&h.call("a", "reconnect", "begin", "-", &vm.text));
    assert_eq!(h.owners(), ["a"]);
    assert_eq!(h.records()[0]["parent"], "mtty");
}

/// A host where domain "gone" stopped without its release (a daemon crash) and its mdev 1
/// went away: its record is stale.
fn host_with_a_stale_record(sim: &Sim) -> TestHost {
    let h = TestHost::new(sim.root(), &mtty_config("prepare_grace_secs = 0\n"));
    assert_ok(&h.prepare(&mdev_domain("gone", &[(1, "type=\"mtty-2\"")])));
    std::fs::write(dev_path(sim, 1).join("remove"), "1").unwrap();
    h
}

#[test]
fn a_stale_record_of_a_stopped_domain_is_dropped_when_a_start_meets_it() {
    let Some(sim) = Sim::start(MTTY) else {
        return;
    };
    let h = host_with_a_stale_record(&sim);
    assert_ok(&h.prepare(&mdev_domain("b", &[(1, "type=\"mtty-2\"")])));
    assert_eq!(h.owners(), ["b"]);
}

#[test]
fn a_stale_record_no_start_meets_is_left_to_reconcile() {
    let Some(sim) = Sim::start(MTTY) else {
        return;
    };
    let mut h = host_with_a_stale_record(&sim);
    assert_ok(&h.prepare(&mdev_domain("b", &[(2, "type=\"mtty-2\"")])));
    h.start_qemu("b");
    assert_eq!(h.owners(), ["gone", "b"]);
    let o = h.vgpuctl(&["reconcile"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(h.owners(), ["b"]);
}

#[test]
fn a_domain_started_again_after_a_lost_release_gets_its_start_up_grace_again() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let a = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.prepare(&a));
    // a ran long ago and its release never came (the daemon crashed); now a starts again.
    h.age_records(3600);
    assert_ok(&h.prepare(&a));
    // Between prepare and QEMU's start, reconcile must take a's mdev for starting, not leaked.
    let o = h.vgpuctl(&["reconcile"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        dev_path(&sim, 1).exists(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(h.owners(), ["a"]);
}

#[test]
fn a_hook_killed_mid_prepare_does_not_block_the_next_run() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = TestHost::new(
        sim.root(),
        &mtty_config("").replace("device_wait_secs = 2", "device_wait_secs = 10"),
    );
    sim.control("fault create-delay mtty 2000").unwrap();
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    let mut child = h.spawn("a", "prepare", "begin", "-", &vm.text);
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    let _ = child.wait();
    sim.control("fault create-delay mtty 0").unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    assert_ok(&h.prepare(&mdev_domain("b", &[(2, "type=\"mtty-2\"")])));
    assert_ok(&h.prepare(&vm));
    assert!(dev_path(&sim, 1).exists() && dev_path(&sim, 2).exists());
    let mut owners = h.owners();
    owners.sort();
    assert_eq!(owners, ["a", "b"]);
}

#[test]
fn a_gpu_that_fell_off_the_bus_is_skipped_and_named_missing() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    sim.control("unplug 0000:82:00.0").unwrap();
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"P40-24Q\"")])));
    assert_eq!(parent_of(&sim, 1).as_deref(), Some("0000:83:00.0"));
    let o = h.prepare(&mdev_domain("b", &[(2, "profile=\"P40-24Q\"")]));
    assert_refused(
        &o,
        &[
            "0000:82:00.0 (missing",
            "0000:83:00.0 (0 left, held by 'a')",
        ],
    );
}

#[test]
fn release_after_the_gpu_vanished_exits_0_and_drops_the_record() {
    let Some(sim) = Sim::start(TWO_P40) else {
        return;
    };
    let h = TestHost::new(sim.root(), &p40_config(""));
    let vm = mdev_domain("a", &[(1, "profile=\"P40-2Q\"")]);
    assert_ok(&h.prepare(&vm));
    let parent = parent_of(&sim, 1).unwrap();
    sim.control(&format!("unplug {parent}")).unwrap();
    assert_ok(&h.release(&vm));
    assert!(h.records().is_empty());
}

#[test]
fn release_after_refusing_a_foreign_mdev_leaves_that_mdev_alone() {
    let Some(sim) = Sim::start(MTTY) else {
        return;
    };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    std::fs::write(
        sim.type_dir("mtty", "Single port serial").join("create"),
        mdev_uuid(1),
    )
    .unwrap();
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_refused(&h.prepare(&vm), &["already exists as mtty-1"]);
    assert_ok(&h.call("a", "stopped", "end", "-", &vm.text));
    assert_ok(&h.release(&vm));
    assert!(
        dev_path(&sim, 1).exists(),
        "the operator's mdev survives the failed start"
    );
}

#[test]
fn asking_for_more_than_a_parent_has_says_the_domain_took_the_rest_itself() {
    let Some(sim) = Sim::start(MTTY) else {
        return;
    };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let reqs: Vec<(u32, &str)> = (1..=13).map(|n| (n, "type=\"mtty-2\"")).collect();
    let o = h.prepare(&mdev_domain("big", &reqs));
    assert_refused(
        &o,
        &["mtty (0 left, 12 taken by this domain's earlier requests)"],
    );
    assert_eq!(live_count(&sim), 0);
    assert_eq!(avail(&sim, "mtty", "Dual port serial"), 12);
}

#[test]
fn release_end_with_libvirt_10_5_reasons_frees_the_device() {
    let Some(sim) = Sim::start(MTTY) else {
        return;
    };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let reasons = [
        (1, "destroyed"),
        (2, "from snapshot"),
        (3, "migrated"),
        (4, "saved"),
        (5, "a-reason-of-a-later-libvirt"),
    ];
    for (n, reason) in reasons {
        let vm = mdev_domain("a", &[(n, "type=\"mtty-2\"")]);
        assert_ok(&h.prepare(&vm));
        assert_ok(&h.call("a", "release", "end", reason, &vm.text));
        assert!(!dev_path(&sim, n).exists(), "release end {reason}");
    }
}

#[test]
fn release_with_unreadable_xml_frees_by_domain_name() {
    let Some(sim) = Sim::start(MTTY) else {
        return;
    };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.prepare(&vm));
    let broken = vm.text.replace("</devices>", "</device>");
    assert_ok(&h.call("a", "release", "end", "-", &broken));
    assert!(!dev_path(&sim, 1).exists());
    assert!(h.records().is_empty());
}

#[test]
fn release_after_the_metadata_was_removed_while_running_still_frees_the_device() {
    let Some(sim) = Sim::start(MTTY) else {
        return;
    };
    let h = TestHost::new(sim.root(), &mtty_config(""));
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")])));
    let without = domain("a", None, "");
    assert_ok(&h.call("a", "release", "end", "-", &without.text));
    assert!(!dev_path(&sim, 1).exists());
    assert!(h.records().is_empty());
}

#[test]
fn a_create_that_returns_late_is_undone_after_the_refusal() {
    let Some(sim) = Sim::start(MTTY) else {
        return;
    };
    let h = TestHost::new(
        sim.root(),
        &mtty_config("").replace("device_wait_secs = 2", "device_wait_secs = 1"),
    );
    sim.control("fault create-delay mtty 1500").unwrap();
    let o = h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")]));
    assert_refused(
        &o,
        &["create did not return within 1 s", "device_wait_secs"],
    );
    assert!(
        !dev_path(&sim, 1).exists(),
        "the late create was removed again"
    );
    assert_eq!(avail(&sim, "mtty", "Dual port serial"), 12);
    assert!(h.records().is_empty());
}

#[test]
fn a_stopped_domains_record_survives_another_prepare_until_its_own_release() {
    let Some(sim) = Sim::start(MTTY) else {
        return;
    };
    let h = TestHost::new(sim.root(), &mtty_config("prepare_grace_secs = 0\n"));
    let a = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.prepare(&a));
    // a's QEMU is gone (grace 0, no pid file) but its release has not run yet.
    assert_ok(&h.prepare(&mdev_domain("b", &[(2, "type=\"mtty-2\"")])));
    assert_eq!(h.owners(), ["a", "b"]);
    assert_ok(&h.release(&a));
    assert!(!dev_path(&sim, 1).exists());
    assert_eq!(h.owners(), ["b"]);
}

#[test]
fn a_gpu_gone_for_good_does_not_delay_a_no_room_refusal_after_boot() {
    let Some(sim) = Sim::start(MTTY) else {
        return;
    };
    let config =
        format!("mdev_parents = [\"mtty\", \"gone\"]\n{FAST_TIMING}boot_window_secs = 0\n")
            .replace("parent_wait_secs = 0", "parent_wait_secs = 60");
    let h = TestHost::new(sim.root(), &config);
    let reqs: Vec<(u32, &str)> = (1..=13).map(|n| (n, "type=\"mtty-2\"")).collect();
    let t = Instant::now();
    let o = h.prepare(&mdev_domain("big", &reqs));
    assert_refused(&o, &["gone (missing", "mtty (0 left"]);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "waited {:?} for a GPU that is not coming",
        t.elapsed()
    );
}
