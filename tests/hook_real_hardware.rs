//! The hook on a simulated host that answers as real NVIDIA, AMD and kernel drivers do (real
//! captures and vendor source, see tests/fixtures/real-captures): NVIDIA's `vgpu_params` drops
//! the last byte written, NVIDIA refuses creates with EIO, NVIDIA PFs enable VFs only through
//! NVIDIA's `sriov-manage`, type names change prefix between driver branches, kernel-6.8+
//! `current_vgpu_type` answers EPERM, AMD's GIM fixes its VF count per card. One behaviour per
//! test; each fails on the hook's behaviour before it followed the real driver.

mod common;

use std::path::PathBuf;

use common::hook::*;
use common::sim::Sim;

const P40: &str = "[[gpu]]\naddress = \"0000:82:00.0\"\nkind = \"nvidia-classic\"\nboard = \"P40\"\nframebuffer_mb = 24576\n";

/// An A2 (Ampere, mdev on SR-IOV VFs) whose VFs are not enabled yet.
const A2_NO_VFS: &str = "[[gpu]]\naddress = \"0000:41:00.0\"\nkind = \"nvidia-sriov\"\nboard = \"A2\"\nframebuffer_mb = 16384\nnumvfs = 0\ntotalvfs = 16\n";

/// An L40S (kernel-6.8+ vGPU on VFs) whose VFs are not enabled yet.
const L40S_NO_VFS: &str = "[[gpu]]\naddress = \"0000:41:00.0\"\nkind = \"nvidia-vfio\"\nboard = \"L40S\"\nframebuffer_mb = 49152\nnumvfs = 0\ntotalvfs = 16\n";

/// An L40S with four VFs enabled.
const L40S: &str = "[[gpu]]\naddress = \"0000:41:00.0\"\nkind = \"nvidia-vfio\"\nboard = \"L40S\"\nframebuffer_mb = 49152\nnumvfs = 4\n";

fn config(pfs: &str, extra: &str) -> String {
    format!("nvidia_vgpu_pfs = [\"{pfs}\"]\n{FAST_TIMING}{extra}")
}

fn with_stand_in() -> String {
    format!("sriov_manage = \"{SRIOV_MANAGE_STAND_IN}\"\n")
}

fn mdev_dir(sim: &Sim, n: u32) -> PathBuf {
    sim.root().join("sys/bus/mdev/devices").join(mdev_uuid(n))
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Creates mdev `n` of the type named `name` on `parent` by hand, as an operator would.
fn create_by_hand(sim: &Sim, parent: &str, name: &str, n: u32) {
    std::fs::write(sim.type_dir(parent, name).join("create"), mdev_uuid(n)).unwrap();
}

#[test]
fn params_reach_nvidia_whole_although_its_driver_drops_the_last_byte_written() {
    let Some(sim) = Sim::start(P40) else { return };
    let h = TestHost::new(sim.root(), &config("82:00.0", ""));
    let vm = mdev_domain(
        "a",
        &[(1, "profile=\"P40-2Q\" params=\"frame_rate_limiter=0\"")],
    );
    assert_ok(&h.prepare(&vm));
    let stored = read(mdev_dir(&sim, 1).join("nvidia/vgpu_params"));
    assert_eq!(stored, "frame_rate_limiter=0\n");
}

#[test]
fn params_refused_because_a_vm_holds_the_vgpu_say_so() {
    let Some(sim) = Sim::start(P40) else { return };
    create_by_hand(&sim, "0000:82:00.0", "GRID P40-2Q", 1);
    sim.control(&format!("hold {}", mdev_uuid(1))).unwrap();
    let h = TestHost::new(sim.root(), &config("82:00.0", ""));
    let vm = mdev_domain(
        "a",
        &[(1, "profile=\"P40-2Q\" params=\"frame_rate_limiter=0\"")],
    );
    assert_refused(&h.prepare(&vm), &["EPERM", "a VM holds the vGPU"]);
}

#[test]
fn params_longer_than_nvidia_accepts_are_refused_with_e2big_and_the_mdev_undone() {
    let Some(sim) = Sim::start(P40) else { return };
    let h = TestHost::new(sim.root(), &config("82:00.0", ""));
    let long = format!("a={}", "1".repeat(1022));
    let vm = mdev_domain(
        "a",
        &[(1, &format!("profile=\"P40-2Q\" params=\"{long}\""))],
    );
    assert_refused(&h.prepare(&vm), &["E2BIG", "shorten params"]);
    assert!(!mdev_dir(&sim, 1).exists());
}

#[test]
fn an_nvidia_create_refused_with_eio_points_at_the_vgpu_manager_journal() {
    let Some(sim) = Sim::start(P40) else { return };
    sim.control("fault create-eio 0000:82:00.0").unwrap();
    let h = TestHost::new(sim.root(), &config("82:00.0", ""));
    assert_refused(
        &h.prepare(&mdev_domain("a", &[(1, "profile=\"P40-2Q\"")])),
        &["EIO", "journalctl -u nvidia-vgpu-mgr"],
    );
}

#[test]
fn a_profile_written_before_a_driver_renamed_the_board_still_matches() {
    let renamed = format!("{P40}name_prefix = \"NVIDIA\"\n");
    let Some(sim) = Sim::start(&renamed) else {
        return;
    };
    let h = TestHost::new(sim.root(), &config("82:00.0", ""));
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"GRID P40-2Q\"")])));
    let real = std::fs::canonicalize(mdev_dir(&sim, 1).join("mdev_type")).unwrap();
    assert_eq!(read(real.join("name")).trim(), "NVIDIA P40-2Q");
}

#[test]
fn nvidia_sriov_vfs_are_enabled_with_sriov_manage_and_the_vgpu_made_on_one() {
    let Some(sim) = Sim::start(A2_NO_VFS) else {
        return;
    };
    let h = TestHost::new(sim.root(), &config("41:00.0", &with_stand_in()));
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"A2-4Q\"")])));
    assert_eq!(
        read(sim.pci_dir("0000:41:00.0").join("sriov_numvfs")).trim(),
        "16"
    );
    let parent = std::fs::canonicalize(mdev_dir(&sim, 1)).unwrap();
    let vf = parent.parent().unwrap().file_name().unwrap();
    assert!(read(sim.pci_dir(vf.to_str().unwrap()).join("physfn/device")).contains("0x"));
}

#[test]
fn vfs_enabled_by_a_refused_start_are_disabled_again_with_sriov_manage() {
    let Some(sim) = Sim::start(A2_NO_VFS) else {
        return;
    };
    let h = TestHost::new(sim.root(), &config("41:00.0", &with_stand_in()));
    let vm = mdev_domain("a", &[(1, "profile=\"A2-4Q\""), (2, "profile=\"A2-99Q\"")]);
    assert_refused(&h.prepare(&vm), &["A2-99Q"]);
    assert_eq!(
        read(sim.pci_dir("0000:41:00.0").join("sriov_numvfs")).trim(),
        "0"
    );
    assert!(!mdev_dir(&sim, 1).exists());
}

#[test]
fn nvidia_vfs_without_sriov_manage_are_refused_with_the_exact_command() {
    let Some(sim) = Sim::start(A2_NO_VFS) else {
        return;
    };
    let missing = "sriov_manage = \"/nonexistent/sriov-manage\"\n";
    let h = TestHost::new(sim.root(), &config("41:00.0", missing));
    assert_refused(
        &h.prepare(&mdev_domain("a", &[(1, "profile=\"A2-4Q\"")])),
        &["`/nonexistent/sriov-manage -e 0000:41:00.0`"],
    );
    assert_eq!(
        read(sim.pci_dir("0000:41:00.0").join("sriov_numvfs")).trim(),
        "0"
    );
}

#[test]
fn a_kernel_68_vf_that_does_not_exist_yet_is_made_by_sriov_manage_and_typed() {
    let Some(sim) = Sim::start(L40S_NO_VFS) else {
        return;
    };
    let h = TestHost::new(sim.root(), &config("41:00.0", &with_stand_in()));
    let vm = vf_domain("a", &[("41:00.4", "profile=\"L40S-4Q\"", false)]);
    assert_ok(&h.prepare(&vm));
    let current = read(sim.pci_dir("0000:41:00.4").join("nvidia/current_vgpu_type"));
    assert_ne!(current.trim(), "0");
}

#[test]
fn a_kernel_68_vf_whose_leftover_type_cannot_be_cleared_says_what_eperm_means() {
    let Some(sim) = Sim::start(L40S) else { return };
    let vf = sim.pci_dir("0000:41:00.4");
    let creatable = read(vf.join("nvidia/creatable_vgpu_types"));
    let id = creatable
        .lines()
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .trim()
        .to_string();
    std::fs::write(vf.join("nvidia/current_vgpu_type"), &id).unwrap();
    sim.control("hold 0000:41:00.4").unwrap();
    let h = TestHost::new(sim.root(), &config("41:00.0", ""));
    let vm = vf_domain("a", &[("41:00.4", "profile=\"L40S-8Q\"", false)]);
    assert_refused(&h.prepare(&vm), &["EPERM", "a VM still holds it"]);
    assert_eq!(read(vf.join("nvidia/current_vgpu_type")).trim(), id);
}

#[test]
fn a_missing_mi300x_vf_gets_advice_for_the_mi300x_gim() {
    let gim = "[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"amd-gim\"\ndevice = \"0x74a1\"\nnumvfs = 0\n";
    let Some(sim) = Sim::start(gim) else { return };
    let h = TestHost::new(
        sim.root(),
        &format!("amd_vgpu_pfs = [\"04:00.0\"]\n{FAST_TIMING}"),
    );
    let o = h.prepare(&vf_domain("a", &[("04:00.4", "", true)]));
    assert_refused(
        &o,
        &[
            "vf_num=1",
            "1 VF (SPX) or 8 VFs (CPX",
            "amd-smi set --num-vf",
        ],
    );
}
