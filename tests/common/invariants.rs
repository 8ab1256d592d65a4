//! What must hold on a simulated host after any mix of hook calls, kills and reconciles: the
//! state reads; every device a release would have to undo (an mdev, a kernel-6.8+ NVIDIA VF with
//! a vGPU type) has exactly one owner record and every record its device; nothing was allocated
//! twice (the simulator's event log never shows a UUID created, or a VF typed, while it already
//! was); a bystander domain that runs throughout keeps its device and record, untouched.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use vgpu_hook::host::state::{Device, Record, State, StateDir};

use super::hook::{assert_ok, DomainXml, TestHost};
use super::sim::Sim;

/// The state as the hook reads it; panics naming the problem when it does not read.
pub fn readable_state(h: &TestHost) -> State {
    StateDir::new(&h.state_dir())
        .peek()
        .unwrap_or_else(|e| panic!("the state must stay readable: {e}"))
}

/// What the simulator shows that a release must undo, keyed like [`Device`]'s display
/// (`mdev <uuid>`, `VF <address>`), with the vGPU type of a VF.
pub fn held_devices(sim: &Sim) -> BTreeMap<String, Option<String>> {
    let sys = sim.root().join("sys");
    let mut held = BTreeMap::new();
    for uuid in names_in(&sys.join("bus/mdev/devices")) {
        held.insert(format!("mdev {uuid}"), None);
    }
    for addr in names_in(&sys.join("bus/pci/devices")) {
        let attr = sys
            .join("bus/pci/devices")
            .join(&addr)
            .join("nvidia/current_vgpu_type");
        if let Ok(t) = std::fs::read_to_string(attr) {
            if t.trim() != "0" {
                held.insert(format!("VF {addr}"), Some(t.trim().to_string()));
            }
        }
    }
    held
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every held device has exactly one record and every record its device (a plain VF record
/// its PCI function); the owners are exactly `owners`.
pub fn assert_accounted(sim: &Sim, h: &TestHost, owners: &[&str]) {
    let state = readable_state(h);
    let mut recorded = BTreeSet::new();
    for r in &state.records {
        assert!(
            recorded.insert(r.device.to_string()),
            "{} is recorded twice: {:?}",
            r.device,
            state.records
        );
    }
    let held = held_devices(sim);
    for (device, vf_type) in &held {
        let r = state
            .records
            .iter()
            .find(|r| &r.device.to_string() == device);
        let Some(r) = r else {
            panic!(
                "{device} exists without an owner record; records: {:?}",
                state.records
            );
        };
        if vf_type.is_some() {
            assert_eq!(&r.type_id, vf_type, "{device}: recorded type vs sysfs");
        }
    }
    for r in &state.records {
        let exists = match &r.device {
            Device::Vf { address } if r.type_id.is_none() => sim
                .root()
                .join("sys/bus/pci/devices")
                .join(address.to_string())
                .exists(),
            d => held.contains_key(&d.to_string()),
        };
        assert!(exists, "record without its device: {r:?}; held: {held:?}");
    }
    let names: BTreeSet<&str> = state
        .records
        .iter()
        .map(|r| r.domain_name.as_str())
        .collect();
    let want: BTreeSet<&str> = owners.iter().copied().collect();
    assert_eq!(names, want, "owners; records: {:?}", state.records);
}

/// One line of `sim/events`: the path (relative to the mount), the value, the outcome.
fn event(line: &str) -> Option<(&str, &str, &str)> {
    let (rest, outcome) = line.rsplit_once(" -> ")?;
    let (path, value) = rest.split_once(' ')?;
    Some((path, value, outcome))
}

/// Over the whole event log: no mdev UUID created while it existed, no VF given a vGPU type
/// while it had one.
pub fn assert_nothing_allocated_twice(events: &str) {
    let mut live: BTreeSet<String> = BTreeSet::new();
    for line in events.lines() {
        let Some((path, value, "ok")) = event(line) else {
            continue;
        };
        let (dir, attr) = path.rsplit_once('/').unwrap_or(("", path));
        match attr {
            "create" => assert!(
                live.insert(format!("mdev {}", value.to_lowercase())),
                "mdev {value} created twice: {line}\n{events}"
            ),
            "remove" if value != "0" => {
                let uuid = dir.rsplit('/').next().unwrap_or_default();
                live.remove(&format!("mdev {uuid}"));
            }
            "current_vgpu_type" => {
                let vf = dir.trim_end_matches("/nvidia");
                let vf = vf.rsplit('/').next().unwrap_or_default();
                let key = format!("VF {vf}");
                if value == "0" {
                    live.remove(&key);
                } else {
                    assert!(live.insert(key), "VF {vf} typed twice: {line}\n{events}");
                }
            }
            _ => {}
        }
    }
}

/// A domain that got its device before the test and runs throughout.
pub struct Bystander {
    pub xml: DomainXml,
    /// The text that names its device in sysfs paths (an mdev UUID, a VF address).
    key: String,
    records: Vec<Record>,
    events_before: usize,
}

impl Bystander {
    /// Prepares `xml` (which must succeed), starts its QEMU, and remembers its records.
    pub fn start(sim: &Sim, h: &mut TestHost, xml: DomainXml, key: &str) -> Bystander {
        assert_ok(&h.prepare(&xml));
        h.start_qemu(&xml.name);
        let records: Vec<Record> = readable_state(h)
            .records
            .into_iter()
            .filter(|r| r.domain_uuid == xml.uuid)
            .collect();
        assert!(!records.is_empty(), "the bystander holds something");
        Bystander {
            xml,
            key: key.to_string(),
            records,
            events_before: sim.events().lines().count(),
        }
    }

    /// Its records are as they were and no write touched its device since it started.
    pub fn assert_untouched(&self, sim: &Sim, h: &TestHost) {
        let now: Vec<Record> = readable_state(h)
            .records
            .into_iter()
            .filter(|r| r.domain_uuid == self.xml.uuid)
            .collect();
        assert_eq!(now, self.records, "the bystander's records");
        let events = sim.events();
        let touched: Vec<&str> = events
            .lines()
            .skip(self.events_before)
            .filter(|l| l.contains(&self.key))
            .collect();
        assert!(
            touched.is_empty(),
            "the bystander's device was written: {touched:?}"
        );
    }
}

/// Everything at once: accounted for with only `owners` holding, nothing allocated twice, the
/// bystander untouched.
pub fn assert_settled(sim: &Sim, h: &TestHost, bystander: &Bystander, owners: &[&str]) {
    assert_accounted(sim, h, owners);
    assert_nothing_allocated_twice(&sim.events());
    bystander.assert_untouched(sim, h);
}
