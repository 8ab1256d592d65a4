//! `reconnect begin`: libvirtd restarted while the domain runs; record again what it holds.

use super::prepare::leaves_something;
use super::HookError;
use crate::host::state::{now_secs, Device, Read, Record};
use crate::host::Host;
use crate::model::config::{Config, Timing};
use crate::model::domain::{Domain, Request};

/// `reconnect begin`: the daemon restarted while the domain runs; record what it holds.
pub fn reconnect(host: &Host, config: Option<&Config>, dom: &Domain) -> Result<(), HookError> {
    let grace = config.map_or_else(
        || Timing::default().prepare_grace,
        |c| c.timing.prepare_grace,
    );
    let locked = host.state.lock()?;
    let mut state = super::load_state(host, &locked, grace, Read::Whole)?;
    state.drop_stale(&host.liveness(grace), |r| leaves_something(&host.sysfs, r));
    for req in &dom.requests {
        let (device, parent, type_id) = match req {
            Request::Mdev(m) => match host.sysfs.mdev(&m.uuid) {
                Some(live) => (
                    Device::Mdev {
                        uuid: m.uuid.clone(),
                    },
                    live.parent,
                    Some(live.type_id),
                ),
                None => {
                    log::warn!(
                        "domain '{}': mdev {} is gone although the domain runs",
                        dom.name,
                        m.uuid
                    );
                    continue;
                }
            },
            Request::Vf(v) => {
                let Some(pf) = host.sysfs.physfn(v.address) else {
                    log::warn!(
                        "domain '{}': VF {} is gone although the domain runs",
                        dom.name,
                        v.address
                    );
                    continue;
                };
                let t = host
                    .sysfs
                    .current_vgpu_type(v.address)
                    .ok()
                    .filter(|&t| t != 0)
                    .map(|t| t.to_string());
                (Device::Vf { address: v.address }, pf.to_string(), t)
            }
        };
        if let Some(r) = state.owner(&device).filter(|r| r.domain_uuid != dom.uuid) {
            log::warn!(
                "domain '{}': {device} is recorded for domain '{}'; keeping that record",
                dom.name,
                r.domain_name
            );
            continue;
        }
        let since = state.owner(&device).map_or_else(now_secs, |r| r.since);
        let numa_note = state.owner(&device).and_then(|r| r.numa_note.clone());
        let created = !matches!(device, Device::Vf { .. }) || type_id.is_some();
        state.put(Record {
            domain_uuid: dom.uuid.clone(),
            domain_name: dom.name.clone(),
            device,
            parent,
            type_id,
            since,
            created,
            numa_note,
        });
    }
    locked.save(&state)?;
    Ok(())
}
