//! The counters the hook keeps for `vgpuctl metrics`: a refusal counts under its reason's label,
//! a release that leaves a device behind counts once, and nothing else writes a counter (a
//! domain without our metadata, a prepare and release that succeed).

mod common;

use std::fs;

use common::hook::*;
use common::sim::Sim;

const MTTY: &str = r#"
[[gpu]]
kind = "mdev"
name = "mtty"
types = [{ id = "mtty-1", name = "Single port serial", max_instances = 24 },
         { id = "mtty-2", name = "Dual port serial", max_instances = 1 }]
"#;

fn mtty_host(sim: &Sim) -> TestHost {
    TestHost::new(
        sim.root(),
        &format!("mdev_parents = [\"mtty\"]\n{FAST_TIMING}"),
    )
}

fn counter(h: &TestHost, name: &str) -> Option<u64> {
    fs::read_to_string(h.state_dir().join("counters").join(name))
        .ok()
        .map(|s| s.trim().parse().unwrap())
}

#[test]
fn a_refusal_is_counted_under_its_reason() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let mut h = mtty_host(&sim);
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")])));
    h.start_qemu("a");
    for n in 2..4 {
        let o = h.prepare(&mdev_domain("b", &[(n, "type=\"mtty-2\"")]));
        assert_refused(&o, &["no free"]);
    }
    assert_eq!(counter(&h, "refused.no_room"), Some(2));
    let vf = vf_domain("c", &[("09:00.1", "", true)]);
    assert_refused(&h.prepare(&vf), &["09:00.1"]);
    let names: Vec<String> = fs::read_dir(h.state_dir().join("counters"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_release_that_leaves_a_device_behind_is_counted() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = mtty_host(&sim);
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.prepare(&vm));
    sim.control(&format!("hold {}", mdev_uuid(1))).unwrap();
    assert_ok(&h.release(&vm));
    assert_eq!(counter(&h, "release_failed"), Some(1));
    sim.control(&format!("release {}", mdev_uuid(1))).unwrap();
}

#[test]
fn success_and_domains_without_metadata_write_no_counter() {
    let Some(sim) = Sim::start(MTTY) else { return };
    let h = mtty_host(&sim);
    let plain = domain("plain", None, "");
    assert_ok(&h.prepare(&plain));
    assert_ok(&h.release(&plain));
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.prepare(&vm));
    assert_ok(&h.release(&vm));
    assert!(!h.state_dir().join("counters").exists());
}
