//! Rebuilding the ownership records when the state file was lost to damage.
//!
//! The records are the hook's only memory of who holds what, and sysfs cannot say it. But
//! libvirt can: every running domain has its live definition, with our metadata, in its status
//! file (`<run dir>/<name>.xml`, a `<domstatus>` wrapping the `<domain>`). A device that such a
//! domain names in our metadata and that exists in sysfs is that domain's. Devices of domains
//! that are not running are not claimed here; `vgpuctl reconcile` decides about those.

use crate::host::running::inner_domain;
use crate::host::state::{now_secs, Device, Liveness, Record, State};
use crate::host::Host;
use crate::model::domain::{Domain, Request};

/// The records of every running domain, as its status file and sysfs show them.
pub fn from_running_domains(host: &Host, live: &Liveness) -> State {
    let mut state = State::default();
    let Ok(entries) = std::fs::read_dir(&host.libvirt_run_dir) else {
        return state;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".xml"))
        else {
            continue;
        };
        if !live.running(name) {
            continue;
        }
        let Some(dom) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|xml| Domain::parse(inner_domain(&xml)?).ok())
        else {
            continue;
        };
        for record in records_of(host, &dom) {
            log::info!(
                "rebuilt record: {} of running domain '{}'",
                record.device,
                record.domain_name
            );
            state.put(record);
        }
    }
    state
}

/// The devices a running domain's metadata names that exist now.
fn records_of(host: &Host, dom: &Domain) -> Vec<Record> {
    let sysfs = &host.sysfs;
    let record = |device, parent: String, type_id: Option<String>, created| Record {
        domain_uuid: dom.uuid.clone(),
        domain_name: dom.name.clone(),
        device,
        parent,
        type_id,
        since: now_secs(),
        created,
        numa_note: None,
    };
    dom.requests
        .iter()
        .filter_map(|req| match req {
            Request::Mdev(m) => sysfs.mdev(&m.uuid).map(|live| {
                let device = Device::Mdev {
                    uuid: m.uuid.clone(),
                };
                record(device, live.parent, Some(live.type_id), true)
            }),
            Request::Vf(v) => sysfs.physfn(v.address).map(|pf| {
                let t = sysfs
                    .current_vgpu_type(v.address)
                    .ok()
                    .filter(|&t| t != 0)
                    .map(|t| t.to_string());
                let created = t.is_some();
                record(
                    Device::Vf { address: v.address },
                    pf.to_string(),
                    t,
                    created,
                )
            }),
        })
        .collect()
}
