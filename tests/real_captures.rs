//! The hook's and vgpuctl's view of real hosts, read off the real captures themselves
//! (tests/fixtures/real-captures: an A2 SR-IOV VF that is an mdev parent, an L40S kernel-6.8+ VF,
//! the RTXA6000 and P40 type tables) as plain trees: which type a profile means, its framebuffer
//! and capacity, and what `vgpuctl types` reports. The simulator is checked against the same files
//! byte for byte in sim/tests/conformance.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use vgpu_hook::host::sysfs::{MdevType, Sysfs};
use vgpu_hook::model::names::{ParentName, Profile};

const A2_VF: &str = "0000:08:01.7";
const L40S_VF: &str = "0000:26:00.4";

fn captures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-captures")
}

fn harvester() -> Sysfs {
    Sysfs::new(&captures().join("harvester-pcidevices"))
}

/// The one type of `types` a profile means (the hook's and vgpuctl's rule).
fn pick<'a>(types: &'a [MdevType], profile: &str) -> Vec<&'a MdevType> {
    Profile::parse(profile)
        .unwrap()
        .pick(types, |t| t.name.as_deref())
}

/// A capture's `.tsv` type table (id, available, name, description) as a plain mdev parent tree.
fn tree_from_tsv(file: &str) -> (tempfile::TempDir, Sysfs, ParentName) {
    let dir = tempfile::tempdir().unwrap();
    let parent = "0000:82:00.0";
    let types = dir
        .path()
        .join("sys/class/mdev_bus")
        .join(parent)
        .join("mdev_supported_types");
    let text = std::fs::read_to_string(captures().join(file)).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        let t = types.join(f[0]);
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("available_instances"), format!("{}\n", f[1])).unwrap();
        std::fs::write(t.join("name"), format!("{}\n", f[2])).unwrap();
        std::fs::write(t.join("description"), format!("{}\n", f[3])).unwrap();
    }
    let sysfs = Sysfs::new(dir.path());
    (dir, sysfs, ParentName::parse(parent).unwrap())
}

#[test]
fn on_the_real_a2_vf_a_short_profile_means_its_4q_type_with_the_one_instance_left() {
    let s = harvester();
    let parent = ParentName::parse(A2_VF).unwrap();
    let types = s.mdev_types(&parent);
    assert_eq!(types.len(), 15);
    let got = pick(&types, "A2-4Q");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, "nvidia-746");
    assert_eq!(got[0].framebuffer_mb(), Some(4096));
    assert_eq!(got[0].max_instances(), Some(4));
    let id = vgpu_hook::model::names::TypeId::parse(&got[0].id).unwrap();
    assert_eq!(s.available_instances(&parent, &id).unwrap(), 1);
}

#[test]
fn a_profile_written_for_the_grid_prefix_still_means_the_real_a2_type() {
    let types = harvester().mdev_types(&ParentName::parse(A2_VF).unwrap());
    let got = pick(&types, "GRID A2-4C");
    assert_eq!(
        got.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["nvidia-754"]
    );
}

#[test]
fn on_the_real_a2_vf_only_the_4_gb_types_of_each_series_have_room() {
    let s = harvester();
    let parent = ParentName::parse(A2_VF).unwrap();
    let mut with_room: Vec<String> = s
        .type_names(&parent)
        .into_iter()
        .filter(|(id, _)| {
            let id = vgpu_hook::model::names::TypeId::parse(id).unwrap();
            s.available_instances(&parent, &id).unwrap() > 0
        })
        .filter_map(|(_, name)| name)
        .collect();
    with_room.sort();
    assert_eq!(with_room, ["NVIDIA A2-4A", "NVIDIA A2-4C", "NVIDIA A2-4Q"]);
}

#[test]
fn the_real_l40s_vf_is_free_and_offers_its_types_by_id_and_name() {
    let s = harvester();
    let vf = L40S_VF.parse().unwrap();
    assert!(s.is_nvidia_vfio_vf(vf));
    assert_eq!(s.current_vgpu_type(vf).unwrap(), 0);
    let creatable = s.creatable_vgpu_types(vf).unwrap();
    assert_eq!(
        creatable.first(),
        Some(&(1145, "NVIDIA L40S-1B".to_string()))
    );
    assert_eq!(
        creatable.last(),
        Some(&(2164, "NVIDIA L40S-3B".to_string()))
    );
    let want = Profile::parse("L40S-4Q").unwrap();
    let got = want.pick(&creatable, |(_, n)| Some(n.as_str()));
    assert_eq!(got.len(), 1, "{creatable:?}");
    assert!(got[0].1.ends_with("L40S-4Q"));
}

#[test]
fn every_type_of_the_rtxa6000_table_reads_its_own_size_and_cap() {
    let (_dir, s, parent) = tree_from_tsv("rtxa6000-driver-525.147.01-one-2Q-created.tsv");
    let types = s.mdev_types(&parent);
    assert_eq!(types.len(), 29);
    for t in &types {
        let name = t.name.as_deref().unwrap();
        let gb: u64 = name
            .rsplit('-')
            .next()
            .unwrap()
            .trim_end_matches(char::is_alphabetic)
            .parse()
            .unwrap();
        assert_eq!(t.framebuffer_mb(), Some(gb * 1024), "{name}");
        assert_eq!(t.max_instances(), Some((48 / gb).min(32) as u32), "{name}");
    }
}

#[test]
fn on_the_rtxa6000_with_a_2q_made_a_2b_request_finds_its_room() {
    let (_dir, s, parent) = tree_from_tsv("rtxa6000-driver-525.147.01-one-2Q-created.tsv");
    let types = s.mdev_types(&parent);
    let got = pick(&types, "RTXA6000-2B");
    assert_eq!(got.len(), 1);
    let id = vgpu_hook::model::names::TypeId::parse(&got[0].id).unwrap();
    assert_eq!(s.available_instances(&parent, &id).unwrap(), 23);
    let one_gb = pick(&types, "RTXA6000-1Q");
    let id = vgpu_hook::model::names::TypeId::parse(&one_gb[0].id).unwrap();
    assert_eq!(s.available_instances(&parent, &id).unwrap(), 0);
}

#[test]
fn a_p40_b4_profile_is_told_apart_from_its_b_twin() {
    let (_dir, s, parent) = tree_from_tsv("p40-empty-partial.tsv");
    let types = s.mdev_types(&parent);
    let ids = |p: &str| {
        pick(&types, p)
            .iter()
            .map(|t| t.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("P40-2B"), ["nvidia-156"]);
    assert_eq!(ids("P40-2B4"), ["nvidia-215"]);
    assert_eq!(ids("NVIDIA P40-1B4"), ["nvidia-241"]);
}

#[test]
fn vgpuctl_types_reports_the_real_a2_vf_as_the_driver_does() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("mdev_parents = [\"{A2_VF}\"]\n")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .args(["types", "--json"])
        .env(
            "VGPU_HOOK_SYSFS_ROOT",
            captures().join("harvester-pcidevices"),
        )
        .env("VGPU_HOOK_CONFIG", &config)
        .env("VGPU_HOOK_STATE_DIR", dir.path().join("state"))
        .env("VGPU_HOOK_LIBVIRT_RUN_DIR", dir.path().join("run"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let types = v["gpus"][0]["types"].as_array().unwrap();
    assert_eq!(types.len(), 15);
    let q4 = types.iter().find(|t| t["id"] == "nvidia-746").unwrap();
    assert_eq!(q4["name"], "NVIDIA A2-4Q");
    assert_eq!(q4["framebuffer_mb"], 4096);
    assert_eq!(q4["max_instances"], 4);
    assert_eq!(q4["available_instances"], 1);
}
