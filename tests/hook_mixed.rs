//! NVIDIA mixed-size mode on kernel-6.8+ VFs, on a simulated L40S: the hook switches the mode on
//! for an empty GPU (and again after `sriov-manage` wiped it), several sizes then share the GPU,
//! and each vGPU is moved to the slot that keeps larger sizes creatable. One behaviour per test.

mod common;

use std::path::PathBuf;

use common::hook::*;
use common::mixed::{l40s, mixed_config, mixed_host, mode_file, PF};
use common::sim::Sim;

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn slot(sim: &Sim, vf: &str) -> String {
    read(sim.pci_dir(vf).join("nvidia/placement_id"))
}

/// A domain `name` with one VF of profile `profile` (`41:00.N`).
fn vm(name: &str, vf: &str, profile: &str) -> DomainXml {
    vf_domain(name, &[(vf, &format!("profile=\"{profile}\""), false)])
}

#[test]
fn the_hook_switches_mixed_size_mode_on_for_an_empty_gpu() {
    let Some((sim, h)) = mixed_host(4) else {
        return;
    };
    assert_eq!(read(mode_file(&sim)), "0");
    assert_ok(&h.prepare(&vm("a", "41:00.4", "L40S-8Q")));
    assert_eq!(read(mode_file(&sim)), "1");
}

#[test]
fn a_mixed_size_gpu_hosts_two_sizes_at_once() {
    let Some((_sim, h)) = mixed_host(4) else {
        return;
    };
    assert_ok(&h.prepare(&vm("a", "41:00.4", "L40S-8Q")));
    assert_ok(&h.prepare(&vm("b", "41:00.5", "L40S-16Q")));
    assert_ok(&h.prepare(&vm("c", "41:00.6", "L40S-4Q")));
}

#[test]
fn mixed_size_mode_wiped_by_sriov_manage_is_switched_on_again() {
    let Some((sim, h)) = mixed_host(4) else {
        return;
    };
    std::fs::write(mode_file(&sim), "1").expect("the GPU takes the mode while empty");
    // A driver reload at the operator's hand: sriov-manage -d rebinds the GPU, wiping the mode;
    // the next start has the hook run sriov-manage -e, which rebinds it again.
    let disabled = std::process::Command::new(SRIOV_MANAGE_STAND_IN)
        .args(["-d", PF])
        .env("VGPU_HOOK_SYSFS_ROOT", sim.root())
        .status()
        .expect("sriov-manage stand-in runs");
    assert!(disabled.success());
    assert_eq!(read(mode_file(&sim)), "0");
    assert_ok(&h.prepare(&vm("a", "41:00.4", "L40S-8Q")));
    assert_eq!(read(mode_file(&sim)), "1");
    assert_ok(&h.prepare(&vm("b", "41:00.5", "L40S-16Q")));
}

#[test]
fn a_vgpu_is_moved_off_the_drivers_first_slot_when_that_strands_larger_sizes() {
    let Some((sim, h)) = mixed_host(4) else {
        return;
    };
    assert_ok(&h.prepare(&vm("a", "41:00.4", "L40S-8Q")));
    // The driver puts an 8 GB vGPU at slot 0, where it blocks one of the two 16 GB slots.
    assert_eq!(slot(&sim, "0000:41:00.4"), "16");
}

#[test]
fn slot_aware_placement_fits_a_later_16_gb_vgpu_that_the_drivers_first_fit_refuses() {
    // The same three starts on two hosts: one where the hook places, one where nvidia-smi is
    // missing (the mode set by hand), so the driver's first fit decides.
    let sequence = [("a", "41:00.4", "L40S-4Q"), ("b", "41:00.5", "L40S-24Q")];
    let last = vm("c", "41:00.6", "L40S-16Q");
    let Some((_sim, ours)) = mixed_host(4) else {
        return;
    };
    let first_sim = Sim::start(&l40s(4)).expect("a second simulator");
    std::fs::write(mode_file(&first_sim), "1").unwrap();
    let first = TestHost::new(first_sim.root(), &mixed_config("/nonexistent/nvidia-smi"));
    for (name, vf, profile) in sequence {
        assert_ok(&ours.prepare(&vm(name, vf, profile)));
        assert_ok(&first.prepare(&vm(name, vf, profile)));
    }
    assert_ok(&ours.prepare(&last));
    assert_refused(
        &first.prepare(&last),
        &["'L40S-16Q' is not creatable on VF 0000:41:00.6 now"],
    );
}

#[test]
fn a_gpu_that_already_hosts_a_vgpu_stays_in_one_size_mode_and_still_starts_vms() {
    let Some((sim, h)) = mixed_host(4) else {
        return;
    };
    let id = read(
        sim.pci_dir("0000:41:00.4")
            .join("nvidia/creatable_vgpu_types"),
    )
    .lines()
    .find(|l| l.ends_with("NVIDIA L40S-8Q"))
    .and_then(|l| l.split(':').next())
    .map(|s| s.trim().to_string())
    .expect("8Q creatable");
    std::fs::write(
        sim.pci_dir("0000:41:00.4").join("nvidia/current_vgpu_type"),
        id,
    )
    .unwrap();
    assert_ok(&h.prepare(&vm("a", "41:00.5", "L40S-8Q")));
    assert_eq!(
        read(mode_file(&sim)),
        "0",
        "the hook leaves the mode alone once a vGPU exists (NVIDIA would refuse it)"
    );
    assert_refused(
        &h.prepare(&vm("b", "41:00.6", "L40S-16Q")),
        &["'L40S-16Q' is not creatable on VF 0000:41:00.6 now"],
    );
}
