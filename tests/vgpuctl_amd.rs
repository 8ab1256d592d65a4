//! AMD Instinct GPUs under the new GIM on a simulated host: the partition modes the card reports
//! (`spatial_partition_mode`, `memory_partition_mode` on the PF) shown by `types` and `doctor`
//! with what the VF count means in them.

mod common;

use common::hook::TestHost;
use common::sim::Sim;

/// An MI300X (new GIM) with `numvfs` VFs and, when given, the compute and memory modes.
fn mi300x(numvfs: u32, modes: &str) -> Option<(Sim, TestHost)> {
    let host = format!("[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"amd-gim\"\nnumvfs = {numvfs}\ntotalvfs = 8\n{modes}");
    let sim = Sim::start(&host)?;
    let h = TestHost::new(sim.root(), "amd_vgpu_pfs = [\"04:00.0\"]\n");
    Some((sim, h))
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn types_shows_the_partition_modes_the_card_reports() {
    let Some((_sim, h)) = mi300x(
        8,
        "compute_partition = \"CPX\"\nmemory_partition = \"NPS4\"\n",
    ) else {
        return;
    };
    let o = h.vgpuctl(&["types", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("types --json");
    let p = &v["gpus"][0]["partition"];
    assert_eq!(p["compute"], "CPX");
    assert_eq!(p["memory"], "NPS4");
    assert_eq!(
        p["summary"],
        "compute partition CPX (one per XCD), memory NPS4: 8 VFs, one per partition"
    );
}

#[test]
fn doctor_says_one_vf_holds_every_partition_of_a_cpx_card() {
    let Some((_sim, h)) = mi300x(1, "compute_partition = \"CPX\"\n") else {
        return;
    };
    let out = stdout(&h.vgpuctl(&["doctor"]));
    assert!(
        out.contains("0000:04:00.0: sriov, 1 of 8 VFs enabled; compute partition CPX (one per XCD), memory NPS1: 1 VF holding every partition"),
        "{out}"
    );
}

#[test]
fn a_single_vf_card_reports_spx_by_gims_default() {
    let Some((_sim, h)) = mi300x(1, "") else {
        return;
    };
    let out = stdout(&h.vgpuctl(&["types"]));
    assert!(
        out.contains("note: 0000:04:00.0: compute partition SPX (1 partition(s)), memory NPS1: 1 VF, the whole GPU"),
        "{out}"
    );
}
