//! Drained GPUs (`vgpuctl drain`): a start never places a new vGPU on one, other GPUs still
//! take them, the VMs on it run on and are listed, and `vgpuctl undrain` gives it back. The
//! drain is driven through vgpuctl, as an operator does, and judged by the hook's answers.

mod common;

use std::time::Duration;

use common::hook::*;
use common::sim::{Sim, GIM, TWO_P40};

fn p40_host() -> Option<(Sim, TestHost)> {
    let sim = Sim::start(TWO_P40)?;
    let config = format!("nvidia_vgpu_pfs = [\"82:00.0\", \"0000:83:00.0\"]\n{FAST_TIMING}");
    let h = TestHost::new(sim.root(), &config);
    Some((sim, h))
}

fn vm(name: &str, n: u32) -> DomainXml {
    mdev_domain(name, &[(n, "profile=\"P40-2Q\"")])
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs vgpuctl, which must succeed; its stdout.
fn ctl(h: &TestHost, args: &[&str]) -> String {
    let o = h.vgpuctl(args);
    assert_eq!(o.status.code(), Some(0), "vgpuctl {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// The GPU a domain's one vGPU went to.
fn gpu_of(h: &TestHost, name: &str) -> String {
    let r = h.records();
    let r = r
        .iter()
        .find(|r| r["domain_name"] == name)
        .expect("a record");
    r["parent"].as_str().unwrap().to_string()
}

#[test]
fn a_start_goes_to_a_gpu_that_is_not_drained() {
    let Some((_sim, h)) = p40_host() else { return };
    ctl(&h, &["drain", "82:00.0"]);
    assert_ok(&h.prepare(&vm("a", 1)));
    assert_eq!(gpu_of(&h, "a"), "0000:83:00.0");
}

#[test]
fn a_start_only_drained_gpus_could_take_is_refused_naming_the_drain_and_its_end() {
    let Some((_sim, h)) = p40_host() else { return };
    ctl(&h, &["drain", "--all", "--reason", "driver 570 -> 580"]);
    assert_refused(
        &h.prepare(&vm("a", 1)),
        &[
            "0000:82:00.0 (drained since 20",
            ", reason: driver 570 -> 580;",
            "`vgpuctl undrain 0000:83:00.0` gives it new vGPUs again",
        ],
    );
    assert!(h.records().is_empty());
}

#[test]
fn a_start_taking_over_its_own_leftover_on_a_drained_gpu_is_refused_and_the_mdev_left() {
    let Some((sim, h)) = p40_host() else { return };
    let a = vm("a", 1);
    assert_ok(&h.prepare(&a));
    assert_eq!(gpu_of(&h, "a"), "0000:82:00.0");
    ctl(&h, &["drain", "82:00.0"]);
    assert_refused(
        &h.prepare(&a),
        &[&format!(
            "mdev {} is on GPU 0000:82:00.0, which is drained since",
            mdev_uuid(1)
        )],
    );
    assert_eq!(
        sim.mdev_parent(&mdev_uuid(1)).as_deref(),
        Some("0000:82:00.0")
    );
}

#[test]
fn undrain_gives_the_gpu_new_vgpus_again() {
    let Some((_sim, h)) = p40_host() else { return };
    ctl(&h, &["drain", "--all"]);
    let out = ctl(&h, &["undrain", "0000:82:00.0"]);
    assert!(out.contains("0000:82:00.0: undrained"), "{out}");
    assert_ok(&h.prepare(&vm("a", 1)));
    assert_eq!(gpu_of(&h, "a"), "0000:82:00.0");
}

#[test]
fn a_vf_of_a_drained_pf_is_refused() {
    let Some(sim) = Sim::start(GIM) else { return };
    let h = TestHost::new(
        sim.root(),
        &format!("amd_vgpu_pfs = [\"04:00.0\"]\n{FAST_TIMING}"),
    );
    ctl(&h, &["drain", "04:00.0"]);
    assert_refused(
        &h.prepare(&vf_domain("a", &[("04:00.4", "", true)])),
        &["VF 0000:04:00.4 is on GPU 0000:04:00.0, which is drained since"],
    );
}

#[test]
fn drain_lists_the_vms_still_on_the_gpu_and_its_wait_times_out_naming_them() {
    let Some((_sim, mut h)) = p40_host() else {
        return;
    };
    assert_ok(&h.prepare(&vm("a", 1)));
    h.start_qemu("a");
    let o = h.vgpuctl(&["drain", "82:00.0", "--wait", "--timeout", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("0000:82:00.0: drained: it takes no new vGPU; still held by 'a'"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("timed out: 0000:82:00.0 still held by 'a'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn drain_wait_returns_once_the_last_vm_on_the_gpu_stopped() {
    let Some((_sim, mut h)) = p40_host() else {
        return;
    };
    let a = vm("a", 1);
    assert_ok(&h.prepare(&a));
    h.start_qemu("a");
    let bin = env!("CARGO_BIN_EXE_vgpuctl");
    let waiting = h
        .command(std::path::Path::new(bin), &["drain", "82:00.0", "--wait"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    h.stop_qemu("a");
    assert_ok(&h.release(&a));
    let o = waiting.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("waiting: 0000:82:00.0 still held by 'a'")
            && stdout(&o).contains("no VM holds a vGPU on 0000:82:00.0"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn drain_of_a_gpu_the_config_does_not_list_names_the_ones_it_does() {
    let Some((_sim, h)) = p40_host() else { return };
    let o = h.vgpuctl(&["drain", "0000:99:00.0"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("0000:99:00.0 is not a GPU")
            && stderr(&o).contains("0000:82:00.0, 0000:83:00.0"),
        "{}",
        stderr(&o)
    );
    assert!(!h.config.with_file_name("drained.toml").exists());
}

#[test]
fn a_drain_outlives_the_state_directory_emptied_at_boot() {
    let Some((_sim, h)) = p40_host() else { return };
    ctl(&h, &["drain", "--all"]);
    std::fs::remove_dir_all(h.state_dir()).unwrap();
    assert_refused(&h.prepare(&vm("a", 1)), &["drained since"]);
}

#[test]
fn a_damaged_drain_list_refuses_starts_naming_it_and_plain_domains_start() {
    let Some((_sim, h)) = p40_host() else { return };
    std::fs::write(
        h.config.with_file_name("drained.toml"),
        "[[gpu]]\ngpu = 3\n",
    )
    .unwrap();
    assert_refused(
        &h.prepare(&vm("a", 1)),
        &["drained.toml is unreadable", "remove it to end every drain"],
    );
    assert_ok(&h.prepare(&domain("plain", None, "")));
}

#[test]
fn a_domain_migrating_in_is_refused_before_qemu_when_only_a_drained_gpu_has_room() {
    let Some((_sim, h)) = p40_host() else { return };
    ctl(&h, &["drain", "--all"]);
    let a = vm("a", 1);
    assert_refused(
        &h.call(&a.name, "migrate", "begin", "-", &a.text),
        &["drained since"],
    );
}
