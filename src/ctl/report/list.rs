//! `vgpuctl list`: the devices that exist now on configured GPUs, and who holds them.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use super::{dash, hold_state, utc, Table, JSON_VERSION};
use crate::alloc::inventory::{self, MdevState};
use crate::host::state::{Device, Liveness, State};
use crate::host::sysfs::Sysfs;
use crate::model::config::Config;
use crate::model::names::ParentName;

/// `vgpuctl list`: devices that exist now on configured GPUs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListReport {
    /// Shape version.
    pub version: u32,
    /// Sorted by parent, then device.
    pub devices: Vec<DeviceReport>,
}

/// One live device.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceReport {
    /// `mdev` or `vf`.
    pub kind: &'static str,
    /// mdev UUID or VF address.
    pub device: String,
    /// The configured GPU it belongs to.
    pub gpu: String,
    /// mdev parent, or the VF's PF.
    pub parent: String,
    /// Type id (mdev type, or NVIDIA vGPU type id of a VF); `null` for plain VFs.
    pub type_id: Option<String>,
    /// The type's pretty name, when known.
    pub type_name: Option<String>,
    /// Owning domain, from the state.
    pub domain: Option<String>,
    /// Owning domain's UUID.
    pub domain_uuid: Option<String>,
    /// `running` (the owner runs), `starting` (recorded moments ago, QEMU not up yet),
    /// `stale` (the owner is gone: `vgpuctl reconcile` cleans it) or `unowned` (not made by
    /// vgpu-hook, or its record was lost).
    pub state: &'static str,
    /// When the owner took it (seconds since the epoch).
    pub since: Option<u64>,
    /// The NUMA node of its parent (the GPU, or the VF's PF), when the kernel knows it.
    pub numa_node: Option<u32>,
}

/// Builds the `list` report: mdevs on configured parents, then VFs of configured PFs that a
/// record or a vGPU type says are in use, sorted by parent.
pub fn list_report(config: &Config, sysfs: &Sysfs, state: &State, live: &Liveness) -> ListReport {
    let holding = Holding { state, live, sysfs };
    let mut devices = mdev_devices(config, sysfs, &holding);
    devices.extend(vf_devices(config, sysfs, &holding));
    devices.sort_by(|a, b| (&a.parent, &a.device).cmp(&(&b.parent, &b.device)));
    ListReport {
        version: JSON_VERSION,
        devices,
    }
}

/// Who holds what: the records, and whether their domains run.
struct Holding<'a> {
    state: &'a State,
    live: &'a Liveness,
    sysfs: &'a Sysfs,
}

impl Holding<'_> {
    /// A row for `device` with its owner (if any) filled in.
    fn row(&self, device: &Device, kind: &'static str, parent: String) -> DeviceReport {
        let rec = self.state.owner(device);
        DeviceReport {
            kind,
            device: match device {
                Device::Mdev { uuid } => uuid.to_string(),
                Device::Vf { address } => address.to_string(),
            },
            gpu: parent.clone(),
            parent: parent.clone(),
            type_id: None,
            type_name: None,
            domain: rec.map(|r| r.domain_name.clone()),
            domain_uuid: rec.map(|r| r.domain_uuid.clone()),
            state: hold_state(rec, self.live),
            since: rec.map(|r| r.since),
            numa_node: self.sysfs.numa_node_of(&parent),
        }
    }
}

/// Every live mdev on a configured parent.
fn mdev_devices(config: &Config, sysfs: &Sysfs, holding: &Holding<'_>) -> Vec<DeviceReport> {
    let mut parent_gpu: BTreeMap<String, String> = BTreeMap::new();
    for g in inventory::mdev_gpus(config, sysfs) {
        if let MdevState::Parents(_, ps) = &g.state {
            for p in ps {
                parent_gpu.insert(p.to_string(), g.key.clone());
            }
        }
    }
    let mut devices = Vec::new();
    for m in sysfs.live_mdevs() {
        let Some(gpu) = parent_gpu.get(&m.parent) else {
            continue;
        };
        let type_name = ParentName::parse(&m.parent).ok().and_then(|p| {
            sysfs
                .mdev_types(&p)
                .into_iter()
                .find(|t| t.id == m.type_id)
                .and_then(|t| t.name)
        });
        let device = Device::Mdev {
            uuid: m.uuid.clone(),
        };
        devices.push(DeviceReport {
            gpu: gpu.clone(),
            type_id: Some(m.type_id.clone()),
            type_name,
            ..holding.row(&device, "mdev", m.parent.clone())
        });
    }
    devices
}

/// Every VF of a configured PF that is recorded as held or has an NVIDIA vGPU type set.
fn vf_devices(config: &Config, sysfs: &Sysfs, holding: &Holding<'_>) -> Vec<DeviceReport> {
    let mut devices = Vec::new();
    for (pf, _) in config.vf_pfs() {
        for vf in sysfs.vfs(pf) {
            let device = Device::Vf { address: vf };
            let rec = holding.state.owner(&device);
            let current = sysfs
                .is_nvidia_vfio_vf(vf)
                .then(|| sysfs.current_vgpu_type(vf).ok())
                .flatten()
                .filter(|&t| t != 0);
            if rec.is_none() && current.is_none() {
                continue;
            }
            let type_id = current
                .map(|t| t.to_string())
                .or_else(|| rec.and_then(|r| r.type_id.clone()));
            let type_name = current.and_then(|t| {
                sysfs
                    .vfs(pf)
                    .into_iter()
                    .flat_map(|s| sysfs.creatable_vgpu_types(s).unwrap_or_default())
                    .find(|(id, _)| *id == t)
                    .map(|(_, n)| n)
            });
            devices.push(DeviceReport {
                type_id,
                type_name,
                ..holding.row(&device, "vf", pf.to_string())
            });
        }
    }
    devices
}

impl ListReport {
    /// Writes the aligned table.
    pub fn write_table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.devices.is_empty() {
            return writeln!(w, "no vGPU devices on the configured GPUs");
        }
        let mut t = Table::new(&[
            "DEVICE", "PARENT", "NODE", "TYPE", "NAME", "DOMAIN", "STATE", "SINCE",
        ]);
        for d in &self.devices {
            t.row(vec![
                d.device.clone(),
                d.parent.clone(),
                dash(d.numa_node),
                dash(d.type_id.as_ref()),
                dash(d.type_name.as_ref()),
                dash(d.domain.as_ref()),
                d.state.to_string(),
                dash(d.since.map(utc)),
            ]);
        }
        t.write(w)
    }
}
