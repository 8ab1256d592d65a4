//! `vgpuctl types` on a simulated mixed-size L40S: the mode shown, capacity counted slot by slot
//! as the hook would place, and `--fit PROFILE` answering where one more can go.

mod common;

use common::hook::*;
use common::mixed::mixed_host;

fn vm(name: &str, vf: &str, profile: &str) -> DomainXml {
    vf_domain(name, &[(vf, &format!("profile=\"{profile}\""), false)])
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn types_shows_the_mode_and_counts_16_gb_room_by_slot_not_by_free_vf() {
    let Some((_sim, h)) = mixed_host(8) else {
        return;
    };
    assert_ok(&h.prepare(&vm("a", "41:00.4", "L40S-8Q")));
    let o = h.vgpuctl(&["types", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let gpu = &v["gpus"][0];
    assert_eq!(gpu["mixed_size"], "on");
    let avail = |name: &str| {
        gpu["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["available_instances"].as_u64().unwrap())
    };
    // Seven VFs are free, but a 16 GB vGPU starts only at slot 0 or 32.
    assert_eq!(avail("NVIDIA L40S-16Q"), Some(2));
    assert_eq!(
        avail("NVIDIA L40S-48Q"),
        None,
        "not creatable beside the 8 GB vGPU"
    );
}

#[test]
fn types_fit_says_how_many_more_of_a_profile_fit_and_exits_1_when_none_does() {
    let Some((_sim, h)) = mixed_host(8) else {
        return;
    };
    assert_ok(&h.prepare(&vm("a", "41:00.4", "L40S-24Q")));
    let o = h.vgpuctl(&["types", "--fit", "L40S-16Q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out(&o).contains("0000:41:00.0: NVIDIA L40S-16Q (type 1154): 1 more"),
        "{}",
        out(&o)
    );
    assert_ok(&h.prepare(&vm("b", "41:00.5", "L40S-16Q")));
    let o = h.vgpuctl(&["types", "--fit", "L40S-16Q"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("one more 'L40S-16Q' fits nowhere now"),
        "{}",
        out(&o)
    );
}

#[test]
fn doctor_reports_the_mode_and_the_command_that_would_set_it_without_setting_it() {
    let Some((sim, h)) = mixed_host(8) else {
        return;
    };
    let o = h.vgpuctl(&["doctor"]);
    assert!(
        out(&o).contains(&format!(
            "0000:41:00.0: mixed-size mode off: a boot would run `{NVIDIA_SMI_STAND_IN} vgpu -i 0000:41:00.0 -shm 1`"
        )),
        "{}",
        out(&o)
    );
    assert_eq!(read_mode(&sim), "0", "doctor changes nothing");
    assert_ok(&h.prepare(&vm("a", "41:00.4", "L40S-8Q")));
    assert!(
        out(&h.vgpuctl(&["doctor"])).contains("0000:41:00.0: mixed-size mode on"),
        "{}",
        out(&h.vgpuctl(&["doctor"]))
    );
}

fn read_mode(sim: &common::sim::Sim) -> String {
    std::fs::read_to_string(common::mixed::mode_file(sim))
        .unwrap()
        .trim()
        .to_string()
}
