//! Whole-VF devices on a simulated host: AMD MxGPU (GIM), generic SR-IOV PFs, NVIDIA Ampere
//! SR-IOV (mdev on VFs) and NVIDIA kernel-6.8+ VFs (`nvidia/current_vgpu_type`), plus the
//! migrate/restore filter. One behaviour per test.

mod common;

use std::path::PathBuf;

use common::hook::*;
use common::sim::{Sim, GIM};

fn gim_host() -> Option<(Sim, TestHost)> {
    let sim = Sim::start(GIM)?;
    let h = TestHost::new(
        sim.root(),
        &format!("amd_vgpu_pfs = [\"04:00.0\"]\n{FAST_TIMING}"),
    );
    Some((sim, h))
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn a_vf_a_running_domain_uses_as_a_plain_hostdev_is_refused_naming_it() {
    let Some((_sim, mut h)) = gim_host() else {
        return;
    };
    let plain = "    <hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x04' slot='0x00' function='0x4'/></source></hostdev>\n";
    h.start_qemu("b");
    h.write_status(&domain("b", None, plain));
    let a = vf_domain("a", &[("04:00.4", "", true)]);
    assert_refused(
        &h.prepare(&a),
        &[
            "VF 0000:04:00.4 is in use by running domain 'b'",
            "vgpuctl attach DOMAIN --vf",
        ],
    );
    assert!(h.owners().is_empty());
}

#[test]
fn an_amd_vf_is_claimed_at_prepare_and_dropped_at_release() {
    let Some((_sim, h)) = gim_host() else { return };
    let vm = vf_domain("a", &[("04:00.4", "", true)]);
    assert_ok(&h.prepare(&vm));
    assert_eq!(h.owners(), ["a"]);
    assert_eq!(h.records()[0]["device"]["address"], "0000:04:00.4");
    assert_ok(&h.release(&vm));
    assert!(h.records().is_empty());
}

#[test]
fn a_vf_held_by_a_running_domain_is_refused_naming_it() {
    let Some((_sim, mut h)) = gim_host() else {
        return;
    };
    assert_ok(&h.prepare(&vf_domain("first", &[("04:00.4", "", true)])));
    h.start_qemu("first");
    assert_refused(
        &h.prepare(&vf_domain("second", &[("04:00.4", "", true)])),
        &["VF 0000:04:00.4 is held by domain 'first'"],
    );
}

#[test]
fn two_domains_racing_for_the_last_vf_get_one_winner() {
    let Some((_sim, h)) = gim_host() else { return };
    let a = vf_domain("a", &[("04:00.7", "", true)]);
    let b = vf_domain("b", &[("04:00.7", "", true)]);
    let (ca, cb) = (
        h.spawn("a", "prepare", "begin", "-", &a.text),
        h.spawn("b", "prepare", "begin", "-", &b.text),
    );
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    let (winner, loser) = match (oa.status.success(), ob.status.success()) {
        (true, false) => ("a", &ob),
        (false, true) => ("b", &oa),
        other => panic!(
            "exactly one must win: {other:?} {} {}",
            stderr(&oa),
            stderr(&ob)
        ),
    };
    assert_refused(loser, &[&format!("held by domain '{winner}'")]);
    assert_eq!(h.owners(), [winner]);
}

#[test]
fn gim_with_no_vfs_says_the_count_is_fixed_at_module_load() {
    let Some(sim) =
        Sim::start("[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"amd-gim\"\nnumvfs = 0\n")
    else {
        return;
    };
    let h = TestHost::new(
        sim.root(),
        &format!("amd_vgpu_pfs = [\"04:00.0\"]\n{FAST_TIMING}"),
    );
    let o = h.prepare(&vf_domain("a", &[("04:00.4", "", true)]));
    assert_refused(&o, &["VF 0000:04:00.4 does not exist", "vf_num"]);
    assert_eq!(read(sim.pci_dir("0000:04:00.0").join("sriov_numvfs")), "0");
}

const SRIOV: &str =
    "[[gpu]]\naddress = \"0000:05:00.0\"\nkind = \"sriov\"\nnumvfs = 0\ntotalvfs = 4\n";

#[test]
fn a_generic_pf_without_vfs_gets_them_enabled_for_the_request() {
    let Some(sim) = Sim::start(SRIOV) else { return };
    let h = TestHost::new(
        sim.root(),
        &format!("sriov_pfs = [\"05:00.0\"]\n{FAST_TIMING}"),
    );
    assert_ok(&h.prepare(&vf_domain("a", &[("05:00.5", "", true)])));
    assert_eq!(read(sim.pci_dir("0000:05:00.0").join("sriov_numvfs")), "4");
    assert_eq!(h.owners(), ["a"]);
}

#[test]
fn vf_count_setting_limits_how_many_vfs_are_enabled() {
    let Some(sim) = Sim::start(SRIOV) else { return };
    let h = TestHost::new(
        sim.root(),
        &format!("sriov_pfs = [\"05:00.0\"]\nvf_count = 2\n{FAST_TIMING}"),
    );
    assert_ok(&h.prepare(&vf_domain("a", &[("05:00.4", "", true)])));
    assert_eq!(read(sim.pci_dir("0000:05:00.0").join("sriov_numvfs")), "2");
}

#[test]
fn a_non_zero_vf_count_that_lacks_the_vf_is_never_changed() {
    let Some(sim) = Sim::start(&SRIOV.replace("numvfs = 0", "numvfs = 2")) else {
        return;
    };
    let h = TestHost::new(
        sim.root(),
        &format!("sriov_pfs = [\"05:00.0\"]\n{FAST_TIMING}"),
    );
    assert_refused(
        &h.prepare(&vf_domain("a", &[("05:00.7", "", true)])),
        &["VF 0000:05:00.7 does not exist"],
    );
    assert_eq!(read(sim.pci_dir("0000:05:00.0").join("sriov_numvfs")), "2");
    assert!(!sim.events().contains("sriov_numvfs"), "{}", sim.events());
}

#[test]
fn a_vf_of_an_unconfigured_pf_is_refused_with_the_key_to_add() {
    let Some(sim) = Sim::start(&SRIOV.replace("numvfs = 0", "numvfs = 2")) else {
        return;
    };
    let h = TestHost::new(sim.root(), FAST_TIMING);
    assert_refused(
        &h.prepare(&vf_domain("a", &[("05:00.4", "", true)])),
        &["belongs to PF 0000:05:00.0", "sriov_pfs"],
    );
}

#[test]
fn an_unmanaged_vf_not_on_vfio_pci_is_refused_with_the_fix() {
    let Some((_sim, h)) = gim_host() else { return };
    assert_refused(
        &h.prepare(&vf_domain("a", &[("04:00.4", "", false)])),
        &["managed='no'", "vfio-pci", "driverctl"],
    );
}

#[test]
fn an_unmanaged_vf_already_on_vfio_pci_is_accepted() {
    let Some(sim) = Sim::start(&GIM.replace("numvfs = 4", "numvfs = 4\nvf_driver = \"vfio-pci\""))
    else {
        return;
    };
    let h = TestHost::new(
        sim.root(),
        &format!("amd_vgpu_pfs = [\"04:00.0\"]\n{FAST_TIMING}"),
    );
    assert_ok(&h.prepare(&vf_domain("a", &[("04:00.4", "", false)])));
}

#[test]
fn a_type_on_a_vf_without_the_nvidia_interface_is_refused() {
    let Some((_sim, h)) = gim_host() else { return };
    assert_refused(
        &h.prepare(&vf_domain("a", &[("04:00.4", "profile=\"L40S-4Q\"", true)])),
        &["no NVIDIA vGPU interface"],
    );
}

const L40S: &str = "[[gpu]]\naddress = \"0000:41:00.0\"\nkind = \"nvidia-vfio\"\nboard = \"L40S\"\nname_prefix = \"NVIDIA\"\nframebuffer_mb = 49152\nnumvfs = 4\n";

fn l40s_host(extra_host: &str) -> Option<(Sim, TestHost)> {
    let sim = Sim::start(&format!("{L40S}{extra_host}"))?;
    let h = TestHost::new(
        sim.root(),
        &format!("nvidia_vgpu_pfs = [\"41:00.0\"]\nprepare_grace_secs = 0\n{FAST_TIMING}"),
    );
    Some((sim, h))
}

fn current_type(sim: &Sim, vf: &str) -> String {
    read(sim.pci_dir(vf).join("nvidia/current_vgpu_type"))
}

fn creatable_id(sim: &Sim, vf: &str, name: &str) -> String {
    read(sim.pci_dir(vf).join("nvidia/creatable_vgpu_types"))
        .lines()
        .find(|l| l.trim_end().ends_with(name))
        .and_then(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("{name} not creatable on {vf}"))
}

#[test]
fn an_nvidia_kernel_6_8_vf_gets_its_vgpu_type_by_profile_and_loses_it_at_release() {
    let Some((sim, h)) = l40s_host("") else {
        return;
    };
    let id = creatable_id(&sim, "0000:41:00.4", "NVIDIA L40S-4Q");
    let vm = vf_domain("a", &[("41:00.4", "profile=\"L40S-4Q\"", false)]);
    assert_ok(&h.prepare(&vm));
    assert_eq!(current_type(&sim, "0000:41:00.4"), id);
    assert_ok(&h.release(&vm));
    assert_eq!(current_type(&sim, "0000:41:00.4"), "0");
    assert!(h.records().is_empty());
}

#[test]
fn an_nvidia_kernel_6_8_vf_gets_its_vgpu_type_by_numeric_id() {
    let Some((sim, h)) = l40s_host("") else {
        return;
    };
    let id = creatable_id(&sim, "0000:41:00.5", "NVIDIA L40S-8Q");
    assert_ok(&h.prepare(&vf_domain(
        "a",
        &[("41:00.5", &format!("type=\"{id}\""), false)],
    )));
    assert_eq!(current_type(&sim, "0000:41:00.5"), id);
}

#[test]
fn an_nvidia_type_not_creatable_now_is_refused_listing_what_is() {
    let Some((sim, h)) = l40s_host("") else {
        return;
    };
    assert_ok(&h.prepare(&vf_domain(
        "a",
        &[("41:00.4", "profile=\"L40S-8Q\"", false)],
    )));
    let o = h.prepare(&vf_domain(
        "b",
        &[("41:00.5", "profile=\"L40S-4Q\"", false)],
    ));
    assert_refused(
        &o,
        &[
            "'L40S-4Q' is not creatable on VF 0000:41:00.5 now",
            "NVIDIA L40S-8Q",
        ],
    );
    assert_eq!(current_type(&sim, "0000:41:00.5"), "0");
}

#[test]
fn an_nvidia_kernel_6_8_vf_with_managed_yes_is_refused() {
    let Some((_sim, h)) = l40s_host("") else {
        return;
    };
    assert_refused(
        &h.prepare(&vf_domain("a", &[("41:00.4", "profile=\"L40S-4Q\"", true)])),
        &["must be managed='no'"],
    );
}

#[test]
fn an_nvidia_kernel_6_8_vf_without_a_type_is_refused() {
    let Some((_sim, h)) = l40s_host("") else {
        return;
    };
    assert_refused(
        &h.prepare(&vf_domain("a", &[("41:00.4", "", false)])),
        &["say which vGPU with type= or profile="],
    );
}

#[test]
fn a_late_release_never_wipes_the_next_owners_vgpu() {
    let Some((sim, mut h)) = l40s_host("") else {
        return;
    };
    let a = vf_domain("a", &[("41:00.4", "profile=\"L40S-4Q\"", false)]);
    let b = vf_domain("b", &[("41:00.4", "profile=\"L40S-4Q\"", false)]);
    assert_ok(&h.prepare(&a));
    // a stopped without its release having run yet; b takes the VF and runs.
    assert_ok(&h.prepare(&b));
    h.start_qemu("b");
    let id = current_type(&sim, "0000:41:00.4");
    assert_ne!(id, "0");
    assert_ok(&h.release(&a));
    assert_eq!(
        current_type(&sim, "0000:41:00.4"),
        id,
        "b's vGPU survived a's late release"
    );
    assert_eq!(h.owners(), ["b"]);
}

#[test]
fn a_busy_vf_reset_is_retried_until_it_takes() {
    let Some((sim, h)) = l40s_host("reset_busy_ms = 150\nexit_timeout_ms = 50\n") else {
        return;
    };
    let vm = vf_domain("a", &[("41:00.4", "profile=\"L40S-4Q\"", false)]);
    assert_ok(&h.prepare(&vm));
    sim.control("hold 0000:41:00.4").unwrap();
    sim.control("release 0000:41:00.4").unwrap();
    assert_ok(&h.release(&vm));
    assert_eq!(current_type(&sim, "0000:41:00.4"), "0");
    assert!(
        sim.events().contains("current_vgpu_type 0 -> EBUSY"),
        "{}",
        sim.events()
    );
}

#[test]
fn a_failing_vf_request_undoes_the_mdev_created_before_it() {
    let host = format!("{GIM}\n[[gpu]]\nkind = \"mdev\"\nname = \"mtty\"\ntypes = [{{ id = \"mtty-2\", name = \"Dual port serial\", max_instances = 12 }}]\n");
    let Some(sim) = Sim::start(&host) else { return };
    let mut h = TestHost::new(
        sim.root(),
        &format!("amd_vgpu_pfs = [\"04:00.0\"]\nmdev_parents = [\"mtty\"]\n{FAST_TIMING}"),
    );
    assert_ok(&h.prepare(&vf_domain("first", &[("04:00.4", "", true)])));
    h.start_qemu("first");
    let (m, d) = mdev_request(1, "type=\"mtty-2\"");
    let both = domain(
        "second",
        Some(&format!("{m}      <vgpu:vf address=\"04:00.4\"/>\n")),
        &format!("{d}    <hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x04' slot='0x00' function='0x4'/></source></hostdev>\n"),
    );
    assert_refused(&h.prepare(&both), &["held by domain 'first'"]);
    assert!(!sim
        .root()
        .join("sys/bus/mdev/devices")
        .join(mdev_uuid(1))
        .exists());
    assert_eq!(h.owners(), ["first"]);
}

const A10: &str = "[[gpu]]\naddress = \"0000:42:00.0\"\nkind = \"nvidia-sriov\"\nboard = \"A10\"\nname_prefix = \"NVIDIA\"\nframebuffer_mb = 24576\nnumvfs = 4\n";

fn a10_host() -> Option<(Sim, TestHost)> {
    let sim = Sim::start(A10)?;
    let h = TestHost::new(
        sim.root(),
        &format!("nvidia_vgpu_pfs = [\"42:00.0\"]\n{FAST_TIMING}"),
    );
    Some((sim, h))
}

/// The VF (as `BB:SS.F`) that b's vGPU, prepared first, lives on.
fn vf_of_bs_vgpu(sim: &Sim, h: &TestHost) -> String {
    assert_ok(&h.prepare(&mdev_domain("b", &[(2, "profile=\"A10-4Q\"")])));
    let parent = sim.mdev_parent(&mdev_uuid(2)).unwrap();
    parent["0000:".len()..].to_string()
}

#[test]
fn a_whole_vf_request_for_a_vf_hosting_a_vgpu_is_refused_naming_it() {
    let Some((sim, h)) = a10_host() else { return };
    let vf = vf_of_bs_vgpu(&sim, &h);
    assert_refused(
        &h.prepare(&vf_domain("a", &[(&vf, "", true)])),
        &[&format!(
            "VF 0000:{vf} hosts vGPU mdev {} of domain 'b'",
            mdev_uuid(2)
        )],
    );
    assert_eq!(h.owners(), ["b"]);
}

#[test]
fn migrate_filter_moves_a_vf_hosting_a_vgpu_to_a_free_one() {
    let Some((sim, h)) = a10_host() else { return };
    let vf = vf_of_bs_vgpu(&sim, &h);
    let vm = vf_domain("a", &[(&vf, "", true)]);
    let o = h.call("a", "migrate", "begin", "-", &vm.text);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        !out.is_empty() && !out.contains(&format!("address=\"{vf}\"")),
        "{out}"
    );
}

#[test]
fn ampere_vfs_each_host_one_vgpu() {
    let Some((sim, h)) = a10_host() else { return };
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "profile=\"A10-4Q\"")])));
    assert_ok(&h.prepare(&mdev_domain("b", &[(2, "profile=\"A10-4Q\"")])));
    let parent = |n: u32| sim.mdev_parent(&mdev_uuid(n)).unwrap();
    assert_ne!(parent(1), parent(2));
    assert!(parent(1).starts_with("0000:42:00."), "{}", parent(1));
}

#[test]
fn migrate_filter_prints_nothing_when_the_vf_is_free_here() {
    let Some((_sim, h)) = gim_host() else { return };
    let vm = vf_domain("a", &[("04:00.4", "", true)]);
    assert_ok(&h.call("a", "migrate", "begin", "-", &vm.text));
}

#[test]
fn migrate_filter_moves_a_held_vf_to_a_free_one_changing_only_host_addresses() {
    let Some((_sim, mut h)) = gim_host() else {
        return;
    };
    assert_ok(&h.prepare(&vf_domain("other", &[("04:00.4", "", true)])));
    h.start_qemu("other");
    let vm = vf_domain("a", &[("04:00.4", "", true)]);
    let o = h.call("a", "migrate", "begin", "-", &vm.text);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let expected = vm
        .text
        .replace("address=\"04:00.4\"", "address=\"0000:04:00.5\"")
        .replace(
            "bus='0x04' slot='0x00' function='0x4'",
            "bus='0x04' slot='0x00' function='0x5'",
        );
    assert_eq!(out, expected);
}

#[test]
fn migrate_filter_moves_a_held_vf_given_as_a_hostdev_interface() {
    let Some((_sim, mut h)) = gim_host() else {
        return;
    };
    assert_ok(&h.prepare(&vf_domain("other", &[("04:00.4", "", true)])));
    h.start_qemu("other");
    let vm = vf_domain("a", &[("04:00.4", "", true)]);
    let nic = vm
        .text
        .replace(
            "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain",
            "<interface type='hostdev' managed='yes'><source><address type='pci' domain",
        )
        .replace("</source></hostdev>", "</source></interface>");
    let o = h.call("a", "migrate", "begin", "-", &nic);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("<address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x5'/></source></interface>"),
        "{out}"
    );
}

#[test]
fn restore_filter_refuses_when_no_vf_is_free() {
    let Some((_sim, mut h)) = gim_host() else {
        return;
    };
    for (i, f) in ["4", "5", "6", "7"].iter().enumerate() {
        let name = format!("o{i}");
        assert_ok(&h.prepare(&vf_domain(&name, &[(&format!("04:00.{f}"), "", true)])));
        h.start_qemu(&name);
    }
    let vm = vf_domain("a", &[("04:00.4", "", true)]);
    assert_refused(
        &h.call("a", "restore", "begin", "-", &vm.text),
        &["no free VF"],
    );
}

#[test]
fn a_late_release_retrying_a_busy_reset_leaves_the_vf_once_another_domain_took_it() {
    let Some((sim, mut h)) = l40s_host("reset_busy_ms = 1500\nexit_timeout_ms = 50\n") else {
        return;
    };
    let h_cfg = std::fs::read_to_string(&h.config)
        .unwrap()
        .replace("retries = 3", "retries = 20");
    std::fs::write(&h.config, h_cfg).unwrap();
    let a = vf_domain("a", &[("41:00.4", "profile=\"L40S-4Q\"", false)]);
    let b = vf_domain("b", &[("41:00.4", "profile=\"L40S-4Q\"", false)]);
    assert_ok(&h.prepare(&a));
    let id = current_type(&sim, "0000:41:00.4");
    sim.control("hold 0000:41:00.4").unwrap();
    sim.control("release 0000:41:00.4").unwrap();
    let late = h.spawn("a", "release", "end", "-", &a.text);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_ok(&h.prepare(&b));
    h.start_qemu("b");
    assert_ok(&late.wait_with_output().unwrap());
    assert_eq!(
        current_type(&sim, "0000:41:00.4"),
        id,
        "b's vGPU survived a's late release"
    );
    assert_eq!(h.owners(), ["b"]);
    let events = sim.events();
    assert!(
        events.contains("current_vgpu_type 0 -> EBUSY"),
        "a's release did try: {events}"
    );
    assert!(
        !events.contains("current_vgpu_type 0 -> ok"),
        "and never reset it: {events}"
    );
}

#[test]
fn the_filter_never_replaces_a_vf_with_one_of_another_model() {
    let host = format!("{GIM}\n[[gpu]]\naddress = \"0000:05:00.0\"\nkind = \"sriov\"\nnumvfs = 2\ntotalvfs = 2\nvendor = \"0x8086\"\ndevice = \"0x1572\"\n");
    let Some(sim) = Sim::start(&host) else {
        return;
    };
    let mut h = TestHost::new(
        sim.root(),
        &format!("amd_vgpu_pfs = [\"04:00.0\"]\nsriov_pfs = [\"05:00.0\"]\n{FAST_TIMING}"),
    );
    for (i, f) in ["4", "5", "6", "7"].iter().enumerate() {
        let name = format!("o{i}");
        assert_ok(&h.prepare(&vf_domain(&name, &[(&format!("04:00.{f}"), "", true)])));
        h.start_qemu(&name);
    }
    let vm = vf_domain("a", &[("04:00.4", "", true)]);
    assert_refused(
        &h.call("a", "migrate", "begin", "-", &vm.text),
        &["held by domain 'o0'", "same model"],
    );
}
