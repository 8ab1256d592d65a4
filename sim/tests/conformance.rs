//! The simulator against real captures (tests/fixtures/real-captures, sources in its README):
//! configured as the captured board in the captured state, it must show the same files with the
//! same bytes wherever the capture has them. Any difference fails and names the file.
//! Without FUSE these tests say why and return (with `CI=true` they fail instead).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::hosts::{P40, P40_PF};
use common::{bytes, names, read, start, write};

/// The real captures, in the root package's fixtures.
fn captures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/real-captures")
}

/// Compares `file` under both directories byte for byte, naming it on a difference.
fn same(real: &Path, simulated: &Path, file: &str) {
    let (want, got) = (bytes(real.join(file)), bytes(simulated.join(file)));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "{file} differs from the capture {}",
        real.join(file).display()
    );
}

/// The A2 VF of the capture is VF 11 of a PF at 08:00.0 (VF offset 4, stride 1).
const A2: &str = r#"
[[gpu]]
address = "0000:08:00.0"
kind = "nvidia-sriov"
board = "A2"
numvfs = 16
numa_node = 0
"#;

#[test]
fn a2_sriov_vf_next_to_a_4gb_vgpu_matches_the_capture() {
    let Some(sim) = start(A2) else { return };
    let sys = sim.root().join("sys/class/mdev_bus");
    // A sibling VF holds a 4 GB vGPU.
    assert_eq!(
        write(
            sys.join("0000:08:00.4/mdev_supported_types/nvidia-746/create"),
            "4e0c5c3e-5b7c-4d33-9d8e-1c1f1e1e1e1e",
        ),
        None,
        "create A2-4Q on a sibling VF"
    );
    let real = captures().join("harvester-pcidevices/sys/class/mdev_bus/0000:08:01.7");
    let simulated = sys.join("0000:08:01.7");
    let (real_types, sim_types) = (
        real.join("mdev_supported_types"),
        simulated.join("mdev_supported_types"),
    );
    assert_eq!(names(&sim_types), names(&real_types), "type directories");
    for ty in names(&real_types) {
        for file in ["name", "description", "device_api", "available_instances"] {
            same(&real_types.join(&ty), &sim_types.join(&ty), file);
        }
    }
    // The VF's own attributes, where the simulator has them. `config` is left out: the
    // simulator models the header and the SR-IOV capability only, not the VF's capability list.
    let shared: Vec<String> = names(&real)
        .intersection(&names(&simulated))
        .filter(|f| real.join(f.as_str()).is_file() && f.as_str() != "config")
        .cloned()
        .collect();
    for f in ["vendor", "device", "class", "numa_node", "driver_override"] {
        assert!(shared.iter().any(|s| s == f), "{f} is compared");
    }
    for f in &shared {
        same(&real, &simulated, f);
    }
}

/// The RTXA6000 of the table capture, empty at start.
const RTXA6000: &str = r#"
[[gpu]]
address = "0000:01:00.0"
kind = "nvidia-classic"
board = "RTXA6000"
"#;

const L40S: &str = r#"
modules = ["vfio", "vfio_pci", "vfio_iommu_type1"]
[[gpu]]
address = "0000:26:00.0"
kind = "nvidia-vfio"
board = "L40S"
numvfs = 1
"#;

#[test]
fn l40s_kernel_6_8_vf_matches_the_capture() {
    let Some(sim) = start(L40S) else { return };
    let real = captures().join("harvester-pcidevices/sys/bus/pci/devices/0000:26:00.4/nvidia");
    let simulated = sim.root().join("sys/bus/pci/devices/0000:26:00.4/nvidia");
    assert_eq!(names(&simulated), names(&real), "files of nvidia/");
    for f in names(&real) {
        same(&real, &simulated, &f);
    }
}

/// One row of a `mdevctl types`-style table: id, available_instances, name, description.
fn rows(file: &str) -> Vec<[String; 4]> {
    let text = String::from_utf8(bytes(captures().join(file))).expect("utf-8");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "{file}: {l}");
            [f[0], f[1], f[2], f[3]].map(str::to_string)
        })
        .collect()
}

fn check_rows(types: &Path, rows: &[[String; 4]]) {
    for [id, avail, name, desc] in rows {
        let dir = types.join(id);
        let file = |f: &str| read(dir.join(f));
        assert_eq!(file("name"), format!("{name}\n"), "{id}/name");
        assert_eq!(file("description"), format!("{desc}\n"), "{id}/description");
        assert_eq!(
            file("available_instances"),
            format!("{avail}\n"),
            "{id}/available_instances"
        );
    }
}

#[test]
fn rtxa6000_with_one_2q_matches_the_capture() {
    let Some(sim) = start(RTXA6000) else { return };
    let types = common::types_dir(&sim, "0000:01:00.0");
    assert_eq!(
        write(
            types.join("nvidia-525/create"),
            "7a0e5c3e-5b7c-4d33-9d8e-1c1f1e1e1e1e\n"
        ),
        None,
        "create RTXA6000-2Q"
    );
    let rows = rows("rtxa6000-driver-525.147.01-one-2Q-created.tsv");
    let listed: BTreeSet<String> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(names(&types), listed, "every type, no more");
    check_rows(&types, &rows);
}

#[test]
fn empty_p40_matches_the_partial_capture() {
    let Some(sim) = start(P40) else { return };
    let types = common::types_dir(&sim, P40_PF);
    check_rows(&types, &rows("p40-empty-partial.tsv"));
}
