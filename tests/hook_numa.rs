//! NUMA-aware placement on a simulated dual- (and triple-) socket host: a VM's vGPU goes to a GPU
//! on the VM's nodes (from `<numatune>`, `<vcpu cpuset>`), else the nearest by the kernel's
//! distances; `numa = "require"` refuses rather than go remote; wishes the host cannot meet are
//! ignored with a log line (or refused under `require`); a VM without wishes is placed as
//! before. One behaviour per test.

mod common;

use common::hook::*;
use common::sim::Sim;

const TWO_NODES: &str = "[[node]]\nid = 0\ncpus = \"0-3\"\ndistance = [10, 21]\n[[node]]\nid = 1\ncpus = \"4-7\"\ndistance = [21, 10]\n";

/// A P40 at `addr` on `node`.
fn p40(addr: &str, node: u32) -> String {
    format!("[[gpu]]\naddress = \"{addr}\"\nkind = \"nvidia-classic\"\nboard = \"P40\"\nnuma_node = {node}\n")
}

/// Two P40s, the first in the config on node 0, the second on node 1.
fn dual_socket(config_extra: &str) -> Option<(Sim, TestHost)> {
    let sim = Sim::start(&format!(
        "{TWO_NODES}{}{}",
        p40("0000:82:00.0", 0),
        p40("0000:83:00.0", 1)
    ))?;
    let config =
        format!("nvidia_vgpu_pfs = [\"82:00.0\", \"83:00.0\"]\n{FAST_TIMING}{config_extra}");
    let h = TestHost::new(sim.root(), &config);
    Some((sim, h))
}

/// A domain asking for mdev `n` of `profile`, with NUMA placement XML added.
fn placed(name: &str, n: u32, profile: &str, numa: Numa) -> DomainXml {
    let mut vm = mdev_domain(name, &[(n, &format!("profile=\"{profile}\""))]);
    let (vcpu, tune) = match numa {
        Numa::None => (String::new(), String::new()),
        Numa::Nodes(set) => (
            String::new(),
            format!("  <numatune>\n    <memory mode='strict' nodeset='{set}'/>\n  </numatune>\n"),
        ),
        Numa::Cpus(set) => (format!(" cpuset='{set}'"), String::new()),
    };
    vm.text = vm
        .text
        .replace(
            "<vcpu placement='static'>",
            &format!("<vcpu placement='static'{vcpu}>"),
        )
        .replace("  <os>", &format!("{tune}  <os>"));
    vm
}

enum Numa<'a> {
    None,
    Nodes(&'a str),
    Cpus(&'a str),
}

fn parent_of(sim: &Sim, n: u32) -> String {
    sim.mdev_parent(&mdev_uuid(n)).expect("the mdev exists")
}

#[test]
fn a_vm_on_node_1_gets_the_gpu_on_node_1() {
    let Some((sim, h)) = dual_socket("") else {
        return;
    };
    assert_ok(&h.prepare(&placed("a", 1, "P40-2Q", Numa::Nodes("1"))));
    assert_eq!(parent_of(&sim, 1), "0000:83:00.0");
}

#[test]
fn vcpus_pinned_to_node_1s_cpus_bring_the_gpu_on_node_1() {
    let Some((sim, h)) = dual_socket("") else {
        return;
    };
    assert_ok(&h.prepare(&placed("a", 1, "P40-2Q", Numa::Cpus("4-5"))));
    assert_eq!(parent_of(&sim, 1), "0000:83:00.0");
}

#[test]
fn a_vm_without_wishes_is_placed_as_before() {
    let Some((sim, h)) = dual_socket("") else {
        return;
    };
    assert_ok(&h.prepare(&placed("a", 1, "P40-2Q", Numa::None)));
    assert_eq!(parent_of(&sim, 1), "0000:82:00.0");
}

#[test]
fn with_no_room_on_its_node_a_vm_goes_remote_and_the_record_says_why() {
    let Some((sim, h)) = dual_socket("") else {
        return;
    };
    assert_ok(&h.prepare(&placed("big", 1, "P40-4Q", Numa::Nodes("1"))));
    assert_ok(&h.prepare(&placed("a", 2, "P40-2Q", Numa::Nodes("1"))));
    assert_eq!(parent_of(&sim, 2), "0000:82:00.0");
    let note = h.records()[1]["numa_note"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        note.contains("on NUMA node 0, not the VM's node 1: no room there"),
        "{note}"
    );
}

#[test]
fn require_refuses_rather_than_go_remote_naming_the_node() {
    let Some((_sim, h)) = dual_socket("numa = \"require\"\n") else {
        return;
    };
    assert_ok(&h.prepare(&placed("big", 1, "P40-4Q", Numa::Nodes("1"))));
    let o = h.prepare(&placed("a", 2, "P40-2Q", Numa::Nodes("1")));
    assert_refused(
        &o,
        &[
            "0000:82:00.0 (on NUMA node 0, not the VM's node 1; numa = \"require\")",
            "0000:83:00.0 (hosts 'GRID P40-4Q')",
        ],
    );
}

#[test]
fn a_node_the_host_lacks_is_ignored_and_the_vm_placed_as_without_wishes() {
    let Some((sim, h)) = dual_socket("") else {
        return;
    };
    assert_ok(&h.prepare(&placed("a", 1, "P40-2Q", Numa::Nodes("7"))));
    assert_eq!(parent_of(&sim, 1), "0000:82:00.0");
}

#[test]
fn an_unreadable_cpuset_is_ignored_unless_numa_is_required() {
    let Some((_sim, h)) = dual_socket("") else {
        return;
    };
    assert_ok(&h.prepare(&placed("a", 1, "P40-2Q", Numa::Cpus("4-x"))));
    let Some((_sim, h)) = dual_socket("numa = \"require\"\n") else {
        return;
    };
    let o = h.prepare(&placed("b", 2, "P40-2Q", Numa::Cpus("4-x")));
    assert_refused(&o, &["NUMA placement cannot be used", "'4-x' is not a set"]);
}

#[test]
fn numa_ignore_places_as_without_wishes() {
    let Some((sim, h)) = dual_socket("numa = \"ignore\"\n") else {
        return;
    };
    assert_ok(&h.prepare(&placed("a", 1, "P40-2Q", Numa::Nodes("1"))));
    assert_eq!(parent_of(&sim, 1), "0000:82:00.0");
}

#[test]
fn without_room_locally_the_nearest_node_comes_before_the_far_one() {
    let three = "[[node]]\nid = 0\ncpus = \"0-3\"\ndistance = [10, 21, 31]\n[[node]]\nid = 1\ncpus = \"4-7\"\ndistance = [21, 10, 21]\n[[node]]\nid = 2\ncpus = \"8-11\"\ndistance = [31, 21, 10]\n";
    let host = format!(
        "{three}{}{}",
        p40("0000:82:00.0", 2),
        p40("0000:83:00.0", 1)
    );
    let Some(sim) = Sim::start(&host) else { return };
    let config = format!("nvidia_vgpu_pfs = [\"82:00.0\", \"83:00.0\"]\n{FAST_TIMING}");
    let h = TestHost::new(sim.root(), &config);
    assert_ok(&h.prepare(&placed("a", 1, "P40-2Q", Numa::Nodes("0"))));
    assert_eq!(parent_of(&sim, 1), "0000:83:00.0");
}

#[test]
fn a_migrated_domain_gets_a_vf_on_its_node_when_its_own_is_taken() {
    let gim = |addr: &str, node: u32| {
        format!("[[gpu]]\naddress = \"{addr}\"\nkind = \"amd-gim\"\ngim = \"old\"\nnumvfs = 2\nnuma_node = {node}\n")
    };
    let Some(sim) = Sim::start(&format!(
        "{TWO_NODES}{}{}",
        gim("0000:04:00.0", 0),
        gim("0000:05:00.0", 1)
    )) else {
        return;
    };
    let config = format!("amd_vgpu_pfs = [\"04:00.0\", \"05:00.0\"]\n{FAST_TIMING}");
    let mut h = TestHost::new(sim.root(), &config);
    assert_ok(&h.prepare(&vf_domain("other", &[("04:00.4", "", true)])));
    h.start_qemu("other");
    let mut vm = vf_domain("a", &[("04:00.4", "", true)]);
    vm.text = vm.text.replace(
        "  <os>",
        "  <numatune>\n    <memory mode='strict' nodeset='1'/>\n  </numatune>\n  <os>",
    );
    let o = h.call("a", "migrate", "begin", "-", &vm.text);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("address=\"0000:05:00.4\""), "{out}");
}
