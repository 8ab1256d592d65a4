//! The host file's rules, one per test: defaults, refusals and the messages that name the key.

use std::collections::BTreeSet;

use super::*;

/// A classic P40 at 82:00.0 with its framebuffer stated; append keys to extend its entry.
const P40: &str = "[[gpu]]\naddress = \"0000:82:00.0\"\nkind = \"nvidia-classic\"\nboard = \"P40\"\nframebuffer_mb = 24576\n";

/// A GIM entry at 04:00.0 without a VF count or generation; append keys to extend it.
const GIM: &str = "[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"amd-gim\"\n";

/// A generic SR-IOV PF at 04:00.0; append keys to extend it.
const SRIOV: &str = "[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"sriov\"\n";

fn host(text: &str) -> Result<Host, String> {
    parse(text, "host.toml").map_err(|e| e.to_string())
}

/// The error of a host that must be refused.
fn refused(text: &str) -> String {
    host(text).expect_err("the host file must be refused")
}

#[test]
fn classic_board_derives_profiles_and_defaults() {
    let h = host(P40).unwrap();
    let g = &h.gpus[0];
    // B 1-2, B4 1-2, Q and A at 8 sizes, C at 5 (4 GB and up).
    assert_eq!(g.types.len(), 25);
    assert_eq!(g.types[0].name.as_deref(), Some("GRID P40-1B"));
    assert_eq!(g.driver.as_deref(), Some("nvidia"));
    assert_eq!(g.vendor, 0x10de);
    assert_eq!(g.device, 0x1b38);
    assert!(g.remove_blocks);
    assert_eq!(
        h.modules,
        ["vfio", "vfio_pci", "vfio_iommu_type1", "mdev", "nvidia"]
    );
}

#[test]
fn errors_name_file_key_and_expectation() {
    let e = refused(&P40.replace("24576", "1000"));
    assert!(
        e.starts_with("host.toml: gpu[0].framebuffer_mb: expected"),
        "{e}"
    );
    let e = refused(&SRIOV.replace("0000:04:00.0", "82:00.0"));
    assert!(e.contains("gpu[0].address: expected a PCI address"), "{e}");
    let e = refused(&SRIOV.replace("sriov", "gpu"));
    assert!(e.contains("gpu[0].kind: expected one of"), "{e}");
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let e = refused(&format!("{SRIOV}numvf = 2\n"));
    assert!(e.starts_with("host.toml: ") && e.contains("numvf"), "{e}");
}

#[test]
fn keys_of_other_kinds_are_refused() {
    let e = refused(&format!("{P40}numvfs = 2\n"));
    assert!(
        e.contains("gpu[0].numvfs: not used by kind \"nvidia-classic\""),
        "{e}"
    );
}

#[test]
fn amd_gim_is_never_sriov_configurable() {
    let h = host(&format!("{GIM}gim = \"old\"\ntotalvfs = 8\n")).unwrap();
    assert_eq!(h.gpus[0].numvfs, 0);
    assert!(!h.gpus[0].sriov_configurable);
    assert_eq!(h.modules, ["vfio", "vfio_pci", "vfio_iommu_type1"]);
}

#[test]
fn old_gim_pf_has_no_driver() {
    let old = host(&format!("{GIM}gim = \"old\"\nnumvfs = 16\n")).unwrap();
    assert_eq!(
        (old.gpus[0].device, old.gpus[0].driver.as_deref()),
        (0x6929, None)
    );
}

#[test]
fn new_gim_has_one_vf_with_its_own_id() {
    let new = host(&format!("{GIM}numvfs = 1\n")).unwrap();
    let g = &new.gpus[0];
    assert_eq!((g.device, g.vf_device, g.totalvfs), (0x74a1, 0x74b5, 1));
    assert_eq!(g.driver.as_deref(), Some("gim"));
}

#[test]
fn new_gim_takes_more_than_one_vf_only_from_multi_vf_firmware_and_at_most_eight() {
    let e = refused(&format!("{GIM}numvfs = 2\n"));
    assert!(e.contains("expected at most totalvfs (1)"), "{e}");
    let cpx = host(&format!("{GIM}totalvfs = 8\nnumvfs = 8\n")).unwrap();
    assert_eq!(cpx.gpus[0].totalvfs, 8);
    let e = refused(&format!("{GIM}totalvfs = 9\n"));
    assert!(e.contains("gpu[0].totalvfs: GIM supports at most 8"), "{e}");
}

#[test]
fn nvidia_pfs_are_not_sriov_configurable_by_default() {
    let h = host("[[gpu]]\naddress = \"0000:41:00.0\"\nkind = \"nvidia-sriov\"\nboard = \"A2\"\n[[gpu]]\naddress = \"0000:05:00.0\"\nkind = \"sriov\"\n").unwrap();
    assert!(!h.gpus[0].sriov_configurable);
    assert!(h.gpus[1].sriov_configurable);
    assert_eq!(
        h.gpus[0].types.len(),
        15,
        "framebuffer defaults to the board's 16 GB"
    );
    assert!(h.modules.contains(&"pci_pf_stub".to_string()));
    assert!(!h.vfio_pci_enable_sriov);
}

#[test]
fn mtty_by_name_is_the_kernel_sample_with_a_shared_port_pool() {
    let h = host("[[gpu]]\nkind = \"mdev\"\nname = \"mtty\"\n").unwrap();
    let g = &h.gpus[0];
    assert_eq!(g.pool, Some(24));
    assert_eq!(g.available, Available::Driver);
    let t: Vec<(&str, u32, u32)> = g
        .types
        .iter()
        .map(|t| (t.id.as_str(), t.max_instances, t.units))
        .collect();
    assert_eq!(t, [("mtty-1", 24, 1), ("mtty-2", 12, 2)]);
}

#[test]
fn core_counted_parents_need_a_pool() {
    let e = refused("[[gpu]]\nkind = \"mdev\"\nname = \"x\"\navailable = \"core\"\ntypes = [{ id = \"x-1\", max_instances = 2 }]\n");
    assert!(e.contains("gpu[0].pool: missing"), "{e}");
}

#[test]
fn vf_addresses_follow_offset_and_stride() {
    let h = host("[[gpu]]\naddress = \"0000:41:00.0\"\nkind = \"nvidia-vfio\"\nboard = \"L40S\"\nframebuffer_mb = 49152\n")
        .unwrap();
    let g = &h.gpus[0];
    assert_eq!(g.vf_address(0).as_deref(), Some("0000:41:00.4"));
    assert_eq!(g.vf_address(4).as_deref(), Some("0000:41:01.0"));
    assert_eq!(g.types[0].id, "1145");
}

#[test]
fn overlapping_vfs_of_two_gpus_are_refused() {
    let e = refused("[[gpu]]\naddress = \"0000:41:00.0\"\nkind = \"sriov\"\n[[gpu]]\naddress = \"0000:41:00.5\"\nkind = \"sriov\"\n");
    assert!(
        e.contains("gpu[1].address: device 0000:41:00.5 is already used by gpu[0]"),
        "{e}"
    );
}

#[test]
fn mdev_kind_needs_types_unless_it_is_mtty() {
    let e = refused("[[gpu]]\nkind = \"mdev\"\nname = \"gvt\"\n");
    assert!(e.contains("gpu[0].types: missing"), "{e}");
}

#[test]
fn a_named_mdev_parent_is_virtual_and_has_no_driver() {
    let h = host("[[gpu]]\nkind = \"mdev\"\nname = \"mtty\"\ntypes = [{ id = \"mtty-1\", max_instances = 2 }]\n").unwrap();
    assert_eq!(h.gpus[0].location, Location::Virtual("mtty".into()));
    assert_eq!(h.gpus[0].driver, None);
}

#[test]
fn two_boards_get_disjoint_type_ids() {
    let t4 = "[[gpu]]\naddress = \"0000:02:00.0\"\nkind = \"nvidia-classic\"\nboard = \"T4\"\nframebuffer_mb = 16384\n";
    let h = host(
        &[
            &P40.replace("82:00.0", "01:00.0"),
            t4,
            &P40.replace("82:00.0", "03:00.0"),
        ]
        .concat(),
    )
    .unwrap();
    let a: BTreeSet<_> = h.gpus[0].types.iter().map(|t| &t.id).collect();
    let b: BTreeSet<_> = h.gpus[1].types.iter().map(|t| &t.id).collect();
    assert!(a.is_disjoint(&b));
    assert_eq!(h.gpus[0].types, h.gpus[2].types);
}

#[test]
fn hex_ids_accept_strings_and_integers() {
    let h = host(&format!("{SRIOV}vendor = \"0x15b3\"\ndevice = 4123\n")).unwrap();
    assert_eq!(h.gpus[0].vendor, 0x15b3);
    assert_eq!(h.gpus[0].device, 4123);
}

#[test]
fn hex_ids_without_their_prefix_are_refused() {
    let e = refused(&format!("{SRIOV}vendor = \"15b3\"\n"));
    assert!(e.contains("gpu[0].vendor: expected a hex string"), "{e}");
}

#[test]
fn nodes_are_read_with_their_cpus_and_distances() {
    let h = host("[[node]]\nid = 0\ncpus = \"0-3\"\ndistance = [10, 21]\n[[node]]\nid = 1\ncpus = \"4-7\"\ndistance = [21, 10]\n").unwrap();
    assert_eq!(h.nodes.len(), 2);
    assert_eq!(h.nodes[1].cpus, "4-7");
    assert_eq!(h.nodes[1].distance, [21, 10]);
}

#[test]
fn a_node_with_a_distance_per_missing_node_is_refused() {
    let e = host("[[node]]\nid = 0\ncpus = \"0-3\"\ndistance = [10, 21]\n").unwrap_err();
    assert!(e.to_string().contains("expected 1 numbers"), "{e}");
}

#[test]
fn nvidia_hosts_show_the_driver_version() {
    let h = host(P40).unwrap();
    assert_eq!(h.nvidia_version, crate::host::DEFAULT_NVIDIA_VERSION);
    let h = host(&format!("nvidia_version = \"535.230.02\"\n{P40}")).unwrap();
    assert_eq!(h.nvidia_version, "535.230.02");
}
