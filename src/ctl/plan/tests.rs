//! Plans and typed refusals against small sysfs trees in a temp dir.

use std::fs;

use super::*;
use crate::model::names::{Profile, TypeId};

/// A host with a sysfs tree under a temp dir.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn sysfs(&self) -> Sysfs {
        Sysfs::new(self.dir.path())
    }

    fn config(&self, text: &str) -> Config {
        Config::parse(text, &self.dir.path().join("config.toml")).unwrap()
    }

    /// A PF at `0000:05:00.0` with `n` VFs (`05:00.1` on), its NUMA node unknown.
    fn pf_with_vfs(&self, n: u8) {
        self.pf_on_node("05", -1, n, n);
    }

    /// A PF at `0000:{bus}:00.0` on NUMA `node` with `n` VFs, of which `total` could be enabled.
    fn pf_on_node(&self, bus: &str, node: i32, n: u8, total: u8) {
        let devs = self.dir.path().join("sys/bus/pci/devices");
        let pf_name = format!("0000:{bus}:00.0");
        let pf = devs.join(&pf_name);
        fs::create_dir_all(&pf).unwrap();
        fs::write(pf.join("sriov_totalvfs"), format!("{total}\n")).unwrap();
        fs::write(pf.join("sriov_numvfs"), format!("{n}\n")).unwrap();
        fs::write(pf.join("numa_node"), format!("{node}\n")).unwrap();
        for i in 0..n {
            let vf = format!("0000:{bus}:00.{}", i + 1);
            fs::create_dir_all(devs.join(&vf)).unwrap();
            std::os::unix::fs::symlink(format!("../{vf}"), pf.join(format!("virtfn{i}"))).unwrap();
            std::os::unix::fs::symlink(format!("../{pf_name}"), devs.join(&vf).join("physfn"))
                .unwrap();
        }
    }

    /// NUMA nodes 0 and 1 with CPUs 0-3 and 4-7.
    fn two_nodes(&self) {
        for (id, cpus, dist) in [(0, "0-3", "10 21"), (1, "4-7", "21 10")] {
            let node = self
                .dir
                .path()
                .join(format!("sys/devices/system/node/node{id}"));
            fs::create_dir_all(&node).unwrap();
            fs::write(node.join("cpulist"), format!("{cpus}\n")).unwrap();
            fs::write(node.join("distance"), format!("{dist}\n")).unwrap();
        }
    }

    /// Makes a VF speak NVIDIA's kernel-6.8+ interface.
    fn nvidia_vf(&self, vf: &str, creatable: &str) {
        let dir = self
            .dir
            .path()
            .join("sys/bus/pci/devices")
            .join(vf)
            .join("nvidia");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("current_vgpu_type"), "0\n").unwrap();
        fs::write(dir.join("creatable_vgpu_types"), creatable).unwrap();
    }

    /// An mdev parent with `(id, name)` types.
    fn mdev_parent(&self, name: &str, types: &[(&str, &str)]) {
        let dir = self
            .dir
            .path()
            .join("sys/class/mdev_bus")
            .join(name)
            .join("mdev_supported_types");
        fs::create_dir_all(&dir).unwrap();
        for (id, pretty) in types {
            fs::create_dir_all(dir.join(id)).unwrap();
            fs::write(dir.join(id).join("name"), format!("{pretty}\n")).unwrap();
        }
    }
}

fn pci(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn vfs(count: u32) -> Ask {
    Ask::Vf(VfAsk {
        count,
        ..VfAsk::default()
    })
}

fn mdevs(want: MdevWant, parents: &[&str]) -> Ask {
    Ask::Mdev(MdevAsk {
        want,
        count: 1,
        parents: parents.iter().map(|p| p.to_string()).collect(),
        params: None,
    })
}

fn addresses(plan: &Plan) -> Vec<String> {
    plan.devices
        .iter()
        .map(|d| match d.key() {
            crate::ctl::xmledit::DeviceKey::Vf(a) => a.to_string(),
            crate::ctl::xmledit::DeviceKey::Mdev(u) => u,
        })
        .collect()
}

#[test]
fn free_vfs_are_picked_in_order_past_the_taken_ones() {
    let f = Fixture::new();
    f.pf_with_vfs(3);
    let config = f.config("sriov_pfs = [\"05:00.0\"]\n");
    let taken = Taken::from([(pci("05:00.1"), "other".to_string())]);
    let plan = plan(Some(&config), &f.sysfs(), &vfs(2), &taken, true).unwrap();
    assert_eq!(addresses(&plan), ["0000:05:00.2", "0000:05:00.3"]);
}

#[test]
fn too_few_free_vfs_say_which_are_used_and_by_whom() {
    let f = Fixture::new();
    f.pf_with_vfs(2);
    let config = f.config("sriov_pfs = [\"05:00.0\"]\n");
    let taken = Taken::from([(pci("05:00.1"), "other".to_string())]);
    let e = plan(Some(&config), &f.sysfs(), &vfs(2), &taken, true).unwrap_err();
    assert_eq!(
        e,
        PlanError::TooFewVfs {
            found: 1,
            asked: 2,
            shortfalls: vec![Shortfall::Busy {
                pf: pci("05:00.0"),
                used: vec![(pci("05:00.1"), "other".into())],
                not_creatable: 0,
                want: None,
            }],
        }
    );
    assert!(!e.is_not_found());
    assert_eq!(
        e.to_string(),
        "1 free VF found, 2 asked: 0000:05:00.0 (used: 0000:05:00.1 by 'other')"
    );
}

#[test]
fn a_named_vf_another_domain_uses_is_refused_with_its_owner() {
    let f = Fixture::new();
    let taken = Taken::from([(pci("05:00.1"), "web".to_string())]);
    let ask = Ask::Vf(VfAsk {
        count: 1,
        address: Some(pci("05:00.1")),
        ..VfAsk::default()
    });
    let e = plan(None, &f.sysfs(), &ask, &taken, false).unwrap_err();
    assert_eq!(
        e,
        PlanError::Taken {
            vf: pci("05:00.1"),
            owner: "web".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "VF 0000:05:00.1 is already used by domain 'web'"
    );
}

#[test]
fn an_address_with_a_count_is_refused_before_anything_is_read() {
    let f = Fixture::new();
    let ask = Ask::Vf(VfAsk {
        count: 2,
        address: Some(pci("05:00.1")),
        ..VfAsk::default()
    });
    let e = plan(None, &f.sysfs(), &ask, &Taken::new(), true).unwrap_err();
    assert_eq!(e, PlanError::AddressWithCount);
}

#[test]
fn a_named_vf_of_an_unlisted_pf_is_not_found() {
    let f = Fixture::new();
    f.pf_with_vfs(1);
    let config = f.config("sriov_pfs = [\"06:00.0\"]\n");
    let ask = Ask::Vf(VfAsk {
        count: 1,
        address: Some(pci("05:00.1")),
        ..VfAsk::default()
    });
    let e = plan(Some(&config), &f.sysfs(), &ask, &Taken::new(), true).unwrap_err();
    assert!(
        matches!(e, PlanError::UnlistedPf { vf, pf, .. } if vf == pci("05:00.1") && pf == pci("05:00.0")),
        "{e:?}"
    );
    assert!(e.is_not_found());
}

#[test]
fn an_unconfigured_pf_is_not_found_and_lists_the_configured_ones() {
    let f = Fixture::new();
    let config = f.config("sriov_pfs = [\"05:00.0\"]\n");
    let ask = Ask::Vf(VfAsk {
        count: 1,
        pf: Some(pci("07:00.0")),
        ..VfAsk::default()
    });
    let e = plan(Some(&config), &f.sysfs(), &ask, &Taken::new(), true).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--pf 0000:07:00.0 is not a configured PF (configured: 0000:05:00.0)"
    );
    assert!(e.is_not_found());
}

#[test]
fn an_nvidia_vgpu_vf_needs_a_type() {
    let f = Fixture::new();
    f.pf_with_vfs(1);
    f.nvidia_vf("0000:05:00.1", "1145 : NVIDIA L40S-4Q\n");
    let config = f.config("nvidia_vgpu_pfs = [\"05:00.0\"]\n");
    let ask = Ask::Vf(VfAsk {
        count: 1,
        address: Some(pci("05:00.1")),
        ..VfAsk::default()
    });
    let e = plan(Some(&config), &f.sysfs(), &ask, &Taken::new(), true).unwrap_err();
    assert_eq!(e, PlanError::NeedsVgpuType { vf: pci("05:00.1") });
    let typed = Ask::Vf(VfAsk {
        count: 1,
        address: Some(pci("05:00.1")),
        want: Some(VfWant::Type(999)),
        ..VfAsk::default()
    });
    let e = plan(Some(&config), &f.sysfs(), &typed, &Taken::new(), true).unwrap_err();
    assert_eq!(
        e.to_string(),
        "'999' is not a vGPU type of this GPU (creatable now: NVIDIA L40S-4Q (1145))"
    );
}

#[test]
fn a_type_no_parent_offers_is_not_found_with_what_is_offered() {
    let f = Fixture::new();
    f.mdev_parent("mtty", &[("mtty-1", "Single port serial")]);
    let config = f.config("mdev_parents = [\"mtty\"]\n");
    let ask = mdevs(MdevWant::Type(TypeId::parse("mtty-9").unwrap()), &[]);
    let e = plan(Some(&config), &f.sysfs(), &ask, &Taken::new(), true).unwrap_err();
    assert_eq!(
        e,
        PlanError::NotOffered {
            label: "mtty-9".into(),
            by_parent: false,
            offered: vec!["mtty: Single port serial (mtty-1)".into()],
            unavailable: vec![],
        }
    );
    assert_eq!(
        e.to_string(),
        "no configured parent offers 'mtty-9'; available: mtty: Single port serial (mtty-1)"
    );
}

#[test]
fn a_profile_matching_two_types_of_a_parent_is_ambiguous() {
    let f = Fixture::new();
    f.mdev_parent("gpu", &[("t-1", "GRID P40-2Q"), ("t-2", "GRID P40-2Q")]);
    let config = f.config("mdev_parents = [\"gpu\"]\n");
    let ask = mdevs(MdevWant::Profile(Profile::parse("P40-2Q").unwrap()), &[]);
    let e = plan(Some(&config), &f.sysfs(), &ask, &Taken::new(), true).unwrap_err();
    assert!(
        matches!(&e, PlanError::Ambiguous { types, .. } if types == &["t-1", "t-2"]),
        "{e:?}"
    );
}

#[test]
fn an_unknown_parent_is_not_found() {
    let f = Fixture::new();
    f.mdev_parent("mtty", &[("mtty-1", "Single port serial")]);
    let config = f.config("mdev_parents = [\"mtty\"]\n");
    let ask = mdevs(MdevWant::Type(TypeId::parse("mtty-1").unwrap()), &["other"]);
    let e = plan(Some(&config), &f.sysfs(), &ask, &Taken::new(), true).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--parent other is not a configured mdev parent (configured: mtty)"
    );
}

#[test]
fn an_offered_type_gives_one_mdev_per_count_and_unchecked_is_planned_blind() {
    let f = Fixture::new();
    f.mdev_parent("mtty", &[("mtty-1", "Single port serial")]);
    let config = f.config("mdev_parents = [\"mtty\"]\n");
    let mut ask = MdevAsk {
        want: MdevWant::Type(TypeId::parse("mtty-1").unwrap()),
        count: 2,
        parents: vec![],
        params: None,
    };
    let checked = plan(
        Some(&config),
        &f.sysfs(),
        &Ask::Mdev(ask.clone()),
        &Taken::new(),
        true,
    )
    .unwrap();
    assert_eq!(checked.devices.len(), 2);
    assert!(checked.notes.is_empty(), "{:?}", checked.notes);
    ask.want = MdevWant::Type(TypeId::parse("anything").unwrap());
    let blind = plan(None, &f.sysfs(), &Ask::Mdev(ask), &Taken::new(), true).unwrap();
    assert_eq!(blind.devices.len(), 2);
}

#[test]
fn a_malformed_parent_is_refused_with_the_name_error() {
    let f = Fixture::new();
    let ask = mdevs(MdevWant::Type(TypeId::parse("x").unwrap()), &["../etc"]);
    let e = plan(None, &f.sysfs(), &ask, &Taken::new(), false).unwrap_err();
    assert!(matches!(e, PlanError::BadParent(_)), "{e:?}");
    assert!(e.to_string().starts_with("--parent: "), "{e}");
}

fn picked(plan: &Plan) -> Vec<String> {
    plan.devices
        .iter()
        .map(|d| match d {
            NewDevice::Vf { request, .. } => request.address.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn vfs_come_from_a_pf_on_the_domains_numa_node_first() {
    let f = Fixture::new();
    f.two_nodes();
    f.pf_on_node("05", 0, 2, 2);
    f.pf_on_node("06", 1, 2, 2);
    let config = f.config("sriov_pfs = [\"05:00.0\", \"06:00.0\"]\n");
    let numa = NumaWish {
        nodesets: vec!["1".into()],
        ..NumaWish::default()
    };
    let ask = vfs(1).for_domain(&numa);
    let p = plan(Some(&config), &f.sysfs(), &ask, &Taken::new(), true).unwrap();
    assert_eq!(picked(&p), ["0000:06:00.1"]);
}

#[test]
fn spread_takes_vfs_from_the_least_loaded_pf_first() {
    let f = Fixture::new();
    f.pf_on_node("05", -1, 2, 2);
    f.pf_on_node("06", -1, 2, 2);
    let config = f.config("sriov_pfs = [\"05:00.0\", \"06:00.0\"]\nplacement = \"spread\"\n");
    let taken = Taken::from([(pci("05:00.1"), "other".to_string())]);
    let p = plan(Some(&config), &f.sysfs(), &vfs(1), &taken, true).unwrap();
    assert_eq!(picked(&p), ["0000:06:00.1"]);
}

#[test]
fn pack_takes_vfs_in_config_order() {
    let f = Fixture::new();
    f.pf_on_node("05", -1, 2, 2);
    f.pf_on_node("06", -1, 2, 2);
    let config = f.config("sriov_pfs = [\"05:00.0\", \"06:00.0\"]\n");
    let taken = Taken::from([(pci("05:00.1"), "other".to_string())]);
    let p = plan(Some(&config), &f.sysfs(), &vfs(1), &taken, true).unwrap();
    assert_eq!(picked(&p), ["0000:05:00.2"]);
}
