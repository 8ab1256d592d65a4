//! vGPU scheduling policy wishes on a simulated host: a VM that asks for a policy
//! (`<vgpu:vgpu scheduler="...">`) gets only a GPU whose `nvidia` module options run it, as
//! `/proc/driver/nvidia/params` shows them; otherwise it is refused naming each GPU's policy.
//! One behaviour per test.

mod common;

use common::hook::*;
use common::sim::{Sim, TWO_P40};

/// Two P40s, the second running equal share by its own registry key.
fn p40s(global: &str) -> Option<(Sim, TestHost)> {
    let host = format!(
        "nvidia_registry_dwords = \"{global}\"\nnvidia_registry_dwords_per_device = \"pci=0000:83:00.0;RmPVMRL=0x01\"\n{TWO_P40}"
    );
    let sim = Sim::start(&host)?;
    let h = TestHost::new(
        sim.root(),
        &format!("nvidia_vgpu_pfs = [\"82:00.0\", \"83:00.0\"]\n{FAST_TIMING}"),
    );
    Some((sim, h))
}

fn p40_vm(name: &str, policy: &str) -> DomainXml {
    with_scheduler(mdev_domain(name, &[(1, "profile=\"P40-2Q\"")]), policy)
}

#[test]
fn a_vm_asking_for_equal_share_gets_the_gpu_that_runs_it() {
    let Some((sim, h)) = p40s("") else {
        return;
    };
    assert_ok(&h.prepare(&p40_vm("a", "equal-share")));
    assert_eq!(
        sim.mdev_parent(&mdev_uuid(1)).as_deref(),
        Some("0000:83:00.0")
    );
}

#[test]
fn a_vm_asking_for_a_policy_no_gpu_runs_is_refused_naming_what_each_runs() {
    let Some((_sim, h)) = p40s("") else {
        return;
    };
    assert_refused(
        &h.prepare(&p40_vm("a", "fixed-share")),
        &[
            "0000:82:00.0 (runs the best-effort vGPU scheduler, the VM asks for fixed-share)",
            "0000:83:00.0 (runs the equal-share vGPU scheduler, the VM asks for fixed-share)",
        ],
    );
}

#[test]
fn the_global_key_sets_the_policy_of_gpus_without_their_own() {
    let Some((sim, h)) = p40s("RmPVMRL=0x11") else {
        return;
    };
    assert_ok(&h.prepare(&p40_vm("a", "fixed-share")));
    assert_eq!(
        sim.mdev_parent(&mdev_uuid(1)).as_deref(),
        Some("0000:82:00.0")
    );
}

#[test]
fn a_time_slice_wish_takes_only_a_gpu_with_that_slice() {
    let Some((_sim, h)) = p40s("") else {
        return;
    };
    assert_refused(
        &h.prepare(&p40_vm("a", "equal-share/4ms")),
        &["runs the equal-share vGPU scheduler, the VM asks for equal-share/4ms"],
    );
}

#[test]
fn a_vf_on_a_gpu_running_another_policy_is_refused_naming_it() {
    let host = "nvidia_registry_dwords_per_device = \"pci=41:00;RmPVMRL=0x1\"\n[[gpu]]\naddress = \"0000:41:00.0\"\nkind = \"nvidia-vfio\"\nboard = \"L40S\"\nname_prefix = \"NVIDIA\"\nframebuffer_mb = 49152\nnumvfs = 4\n";
    let Some(sim) = Sim::start(host) else {
        return;
    };
    let h = TestHost::new(
        sim.root(),
        &format!("nvidia_vgpu_pfs = [\"41:00.0\"]\n{FAST_TIMING}"),
    );
    let vm = |policy| {
        with_scheduler(
            vf_domain("a", &[("41:00.4", "profile=\"L40S-4Q\"", false)]),
            policy,
        )
    };
    assert_refused(
        &h.prepare(&vm("fixed-share")),
        &["VF 0000:41:00.4 is on GPU 0000:41:00.0, which runs the equal-share vGPU scheduler, the VM asks for fixed-share"],
    );
    assert_ok(&h.prepare(&vm("equal-share")));
}

#[test]
fn a_policy_that_is_not_one_is_refused_with_the_ones_there_are() {
    let Some((_sim, h)) = p40s("") else {
        return;
    };
    assert_refused(
        &h.prepare(&p40_vm("a", "fair")),
        &["scheduler: 'fair' is not a vGPU scheduling policy (expected \"best-effort\", \"equal-share\" or \"fixed-share\""],
    );
}

#[test]
fn a_policy_wish_never_lands_on_a_gpu_that_is_not_nvidias() {
    let host = format!("{TWO_P40}\n[[gpu]]\naddress = \"0000:00:02.0\"\nkind = \"mdev\"\ntypes = [{{ id = \"i915-GVTg_V5_4\", name = \"GVTg_V5_4\", max_instances = 2 }}]\n");
    let Some(sim) = Sim::start(&host) else {
        return;
    };
    let h = TestHost::new(
        sim.root(),
        &format!(
            "nvidia_vgpu_pfs = [\"82:00.0\"]\nmdev_parents = [\"0000:00:02.0\"]\n{FAST_TIMING}"
        ),
    );
    let vm = with_scheduler(
        mdev_domain("a", &[(1, "type=\"i915-GVTg_V5_4\"")]),
        "best-effort",
    );
    assert_refused(
        &h.prepare(&vm),
        &["0000:00:02.0 (runs no NVIDIA vGPU scheduler that can be read"],
    );
}
