//! Many hooks at once, as at boot when every autostarted domain starts together: the host-wide
//! lock must hand out every instance exactly once, refuse the rest with the no-room line, and
//! leave state and sysfs consistent; releasing all at once must restore every count.

mod common;

use std::collections::BTreeMap;

use common::hook::*;
use common::sim::Sim;

const PARENTS: usize = 4;
const PER_PARENT: usize = 16;
const DOMAINS: usize = PARENTS * PER_PARENT + 8;

fn host_toml() -> String {
    (0..PARENTS)
        .map(|i| format!("[[gpu]]\nkind = \"mdev\"\nname = \"card{i}\"\ntypes = [{{ id = \"card{i}-a\", name = \"Slice\", max_instances = {PER_PARENT} }}]\n"))
        .collect()
}

fn config() -> String {
    let names: Vec<String> = (0..PARENTS).map(|i| format!("\"card{i}\"")).collect();
    format!("mdev_parents = [{}]\nparent_wait_secs = 0\ncleanup_wait_secs = 0\nretry_interval_ms = 50\n", names.join(", "))
}

fn available(sim: &Sim, i: usize) -> u32 {
    let p = sim.root().join(format!(
        "sys/class/mdev_bus/card{i}/mdev_supported_types/card{i}-a/available_instances"
    ));
    std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
}

#[test]
fn concurrent_prepares_use_every_instance_once_and_refuse_the_rest_then_releases_restore_all() {
    let Some(sim) = Sim::start(&host_toml()) else {
        return;
    };
    let h = TestHost::new(sim.root(), &config());
    let vms: Vec<DomainXml> = (0..DOMAINS)
        .map(|n| mdev_domain(&format!("vm{n}"), &[(n as u32, "profile=\"Slice\"")]))
        .collect();

    let children: Vec<_> = vms
        .iter()
        .map(|vm| h.spawn(&vm.name, "prepare", "begin", "-", &vm.text))
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();

    let ok = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, PARENTS * PER_PARENT, "every instance used");
    for o in outputs.iter().filter(|o| !o.status.success()) {
        assert_refused(o, &["no free 'Slice'", "card0 (0 left, held by"]);
    }
    for i in 0..PARENTS {
        assert_eq!(available(&sim, i), 0, "card{i} full");
    }
    let live: Vec<String> = std::fs::read_dir(sim.root().join("sys/bus/mdev/devices"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        live.len(),
        PARENTS * PER_PARENT,
        "no device leaked by refused calls"
    );
    let records = h.records();
    assert_eq!(records.len(), live.len(), "one record per device");
    let mut per_parent: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        let uuid = r["device"]["uuid"].as_str().unwrap();
        assert!(
            live.iter().any(|l| l == uuid),
            "record for a device that does not exist: {uuid}"
        );
        *per_parent
            .entry(r["parent"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        per_parent.values().all(|&n| n == PER_PARENT),
        "{per_parent:?}"
    );

    let children: Vec<_> = vms
        .iter()
        .map(|vm| h.spawn(&vm.name, "release", "end", "-", &vm.text))
        .collect();
    for c in children {
        assert_ok(&c.wait_with_output().unwrap());
    }
    for i in 0..PARENTS {
        assert_eq!(available(&sim, i), PER_PARENT as u32, "card{i} restored");
    }
    assert!(h.records().is_empty());
    assert_eq!(
        std::fs::read_dir(sim.root().join("sys/bus/mdev/devices"))
            .unwrap()
            .count(),
        0
    );
}

/// The host's state lock, taken by this process as a hung holder keeps it.
fn lock_as_a_stuck_holder(h: &TestHost) -> vgpu_hook::host::state::Locked {
    vgpu_hook::host::state::StateDir::new(&h.state_dir())
        .lock()
        .unwrap()
}

#[test]
fn a_start_behind_a_stuck_lock_holder_is_refused_within_the_bound_naming_it() {
    let Some(sim) = Sim::start(&host_toml()) else {
        return;
    };
    let h = TestHost::new(sim.root(), &format!("{}lock_wait_secs = 1\n", config()));
    let _held = lock_as_a_stuck_holder(&h);
    let t = std::time::Instant::now();
    let o = h.prepare(&mdev_domain("a", &[(1, "profile=\"Slice\"")]));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
    let holder = format!("held by pid {} (`", std::process::id());
    assert_refused(&o, &[&holder, "for more than 1 s (lock_wait_secs)"]);
    assert_eq!(available(&sim, 0), PER_PARENT as u32);
}

#[test]
fn a_stop_behind_a_stuck_lock_holder_waits_again_and_frees_the_device_once_it_lets_go() {
    let Some(sim) = Sim::start(&host_toml()) else {
        return;
    };
    let h = TestHost::new(sim.root(), &format!("{}lock_wait_secs = 1\n", config()));
    let vm = mdev_domain("a", &[(1, "profile=\"Slice\"")]);
    assert_ok(&h.prepare(&vm));
    let held = lock_as_a_stuck_holder(&h);
    let stop = h.spawn("a", "release", "end", "-", &vm.text);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(held);
    let o = stop.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The holder kept the lock past one bound (1 s): a release that gave up then would leave it.
    assert!(h.records().is_empty(), "{:?}", h.records());
    assert_eq!(
        available(&sim, 0) + available(&sim, 1),
        2 * PER_PARENT as u32
    );
}
