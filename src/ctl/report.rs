//! What `vgpuctl types`, `list` and `status` show: the configured GPUs and their types with
//! capacity, the devices that exist now and who holds them, and one domain's requests against its
//! holdings.
//!
//! Each report is plain data built from sysfs, the state and the config (never cached), with two
//! renderings: aligned tables for people and JSON for scripts. The JSON shape is a contract
//! (documented in docs/json.md, versioned by its `version` field): fields are only ever added.
//! Rendering writes to a passed-in writer so that tests compare it with golden files.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::alloc::inventory::{self, Generation, MdevState, PfKind};
use crate::host::state::{Device, Liveness, Record, State};
use crate::host::sysfs::Sysfs;
use crate::model::config::Config;
use crate::model::domain::{Domain, Hostdev, MdevWant, Request, VfWant};
use crate::model::names::ParentName;
use crate::model::pci::PciAddress;

/// Version of the JSON shapes below; bumped only for incompatible changes.
pub const JSON_VERSION: u32 = 1;

// ---------------------------------------------------------------------------------------------
// Tables and times.

/// An aligned text table: columns separated by two spaces, the last one unpadded.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes the table.
    pub fn write(&self, w: &mut dyn Write) -> io::Result<()> {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut line = |cells: &[String]| -> io::Result<()> {
            let mut s = String::new();
            for (i, width) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                s.push_str(c);
                if i + 1 < n {
                    s.extend(std::iter::repeat_n(' ', width - c.chars().count() + 2));
                }
            }
            writeln!(w, "{}", s.trim_end())
        };
        line(&self.headers)?;
        for r in &self.rows {
            line(r)?;
        }
        Ok(())
    }
}

/// Seconds since the epoch as `2024-05-01T12:00:00Z`.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Writes any report as pretty JSON with a final newline.
pub fn write_json<T: Serialize>(w: &mut dyn Write, value: &T) -> io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    text.push('\n');
    w.write_all(text.as_bytes())
}

/// How a record's domain stands now.
fn hold_state(r: Option<&Record>, live: &Liveness) -> &'static str {
    match r {
        None => "unowned",
        Some(r) if live.running(&r.domain_name) => "running",
        Some(r) if live.holds(r) => "starting",
        Some(_) => "stale",
    }
}

/// Framebuffer in MiB from an NVIDIA profile name (`NVIDIA L40S-4Q` -> 4096): the number
/// before the series letter is gigabytes by NVIDIA's naming rule.
fn framebuffer_from_name(name: &str) -> Option<u64> {
    let short = name.rsplit(char::is_whitespace).next()?;
    let (_, tail) = short.rsplit_once('-')?;
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    let series = &tail[digits.len()..];
    if digits.is_empty() || series.is_empty() || !series.chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    digits.parse::<u64>().ok().map(|gb| gb * 1024)
}

// ---------------------------------------------------------------------------------------------
// types

/// `vgpuctl types`: every configured GPU, what it is now and what it offers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TypesReport {
    /// Shape version.
    pub version: u32,
    /// In config order: `nvidia_vgpu_pfs`, `mdev_parents`, `amd_vgpu_pfs`, `sriov_pfs`.
    pub gpus: Vec<GpuReport>,
}

/// One configured GPU (or other parent / PF).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GpuReport {
    /// The config entry: PF address, or parent name for `mdev_parents`.
    pub gpu: String,
    /// Which config list it comes from.
    pub config_key: &'static str,
    /// `mdev`, `sriov-mdev`, `nvidia-vfio`, `sriov`, or why it offers nothing now:
    /// `missing`, `unregistered`, `vfs-disabled`.
    pub generation: &'static str,
    /// mdev parents it offers now (itself, or its VFs).
    pub parents: Vec<String>,
    /// SR-IOV counts, for GPUs whose VFs matter.
    pub vfs: Option<VfCounts>,
    /// Types offered, by type id.
    pub types: Vec<TypeReport>,
    /// What the operator must know or do when the GPU offers nothing now (the same advice the
    /// hook's refusal and `doctor` give).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// SR-IOV counts of a PF.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VfCounts {
    /// `sriov_totalvfs`.
    pub total: u32,
    /// VFs enabled now.
    pub enabled: u32,
    /// Enabled VFs nobody holds (no running domain, no vGPU on it).
    pub free: u32,
}

/// One type of a GPU, summed over its parents.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TypeReport {
    /// Sysfs type id (`nvidia-46`), or NVIDIA's numeric vGPU type id for kernel-6.8+ GPUs.
    pub id: String,
    /// Pretty name (`GRID P40-1Q`), when the driver gives one.
    pub name: Option<String>,
    /// Framebuffer in MiB, from the driver's description or the NVIDIA profile name.
    pub framebuffer_mb: Option<u64>,
    /// Instances the GPU can host at most: the driver's `max_instance`, else what is available
    /// plus what exists; unknown for kernel-6.8+ GPUs.
    pub max_instances: Option<u32>,
    /// Instances that can be created now.
    pub available_instances: u32,
}

fn mdev_types_of(sysfs: &Sysfs, parents: &[ParentName]) -> Vec<TypeReport> {
    let live = sysfs.live_mdevs();
    let mut by_id: BTreeMap<String, TypeReport> = BTreeMap::new();
    let mut existing: BTreeMap<String, u32> = BTreeMap::new();
    let mut described_max: BTreeMap<String, bool> = BTreeMap::new();
    for p in parents {
        for t in sysfs.mdev_types(p) {
            let avail = crate::model::names::TypeId::parse(&t.id)
                .ok()
                .and_then(|id| sysfs.available_instances(p, &id).ok())
                .unwrap_or(0);
            let here = live
                .iter()
                .filter(|m| m.parent == p.as_str() && m.type_id == t.id)
                .count() as u32;
            *existing.entry(t.id.clone()).or_default() += here;
            described_max.insert(t.id.clone(), t.max_instances().is_some());
            let e = by_id.entry(t.id.clone()).or_insert_with(|| TypeReport {
                id: t.id.clone(),
                name: t.name.clone(),
                framebuffer_mb: t.framebuffer_mb(),
                max_instances: t.max_instances(),
                available_instances: 0,
            });
            e.available_instances += avail;
        }
    }
    by_id
        .into_values()
        .map(|mut t| {
            if described_max.get(&t.id) != Some(&true) {
                t.max_instances =
                    Some(t.available_instances + existing.get(&t.id).copied().unwrap_or(0));
            }
            t
        })
        .collect()
}

fn held_vfs(state: &State, live: &Liveness) -> Vec<PciAddress> {
    state
        .records
        .iter()
        .filter(|r| live.holds(r))
        .filter_map(|r| match r.device {
            Device::Vf { address } => Some(address),
            _ => None,
        })
        .collect()
}

fn vf_counts(sysfs: &Sysfs, pf: PciAddress, busy: impl Fn(PciAddress) -> bool) -> VfCounts {
    let vfs = sysfs.vfs(pf);
    VfCounts {
        total: sysfs.sriov_totalvfs(pf),
        enabled: vfs.len() as u32,
        free: vfs.iter().filter(|&&v| !busy(v)).count() as u32,
    }
}

fn nvidia_vfio_types(sysfs: &Sysfs, pf: PciAddress, held: &[PciAddress]) -> Vec<TypeReport> {
    let mut by_id: BTreeMap<u32, TypeReport> = BTreeMap::new();
    for vf in sysfs.vfs(pf) {
        let free = !held.contains(&vf) && sysfs.current_vgpu_type(vf).is_ok_and(|t| t == 0);
        for (id, name) in sysfs.creatable_vgpu_types(vf).unwrap_or_default() {
            let e = by_id.entry(id).or_insert_with(|| TypeReport {
                id: id.to_string(),
                framebuffer_mb: framebuffer_from_name(&name),
                name: Some(name),
                max_instances: None,
                available_instances: 0,
            });
            if free {
                e.available_instances += 1;
            }
        }
    }
    by_id.into_values().collect()
}

/// Builds the `types` report.
pub fn types_report(config: &Config, sysfs: &Sysfs, state: &State, live: &Liveness) -> TypesReport {
    let held = held_vfs(state, live);
    let mut gpus = Vec::new();
    for g in inventory::mdev_gpus(config, sysfs) {
        let config_key = if g.nvidia {
            "nvidia_vgpu_pfs"
        } else {
            "mdev_parents"
        };
        let generation = g.state.label();
        let report = match &g.state {
            MdevState::Parents(gen, ps) => {
                let vfs = (*gen == Generation::SriovMdev).then(|| {
                    let live_mdevs = sysfs.live_mdevs();
                    g.pf.map(|pf| {
                        vf_counts(sysfs, pf, |v| {
                            live_mdevs.iter().any(|m| m.parent == v.to_string())
                        })
                    })
                });
                GpuReport {
                    gpu: g.key.clone(),
                    config_key,
                    generation,
                    parents: ps.iter().map(|p| p.to_string()).collect(),
                    vfs: vfs.flatten(),
                    types: mdev_types_of(sysfs, ps),
                    note: None,
                }
            }
            MdevState::NotMdev => {
                let pf = g.pf;
                GpuReport {
                    gpu: g.key.clone(),
                    config_key,
                    generation,
                    parents: Vec::new(),
                    vfs: pf.map(|pf| {
                        vf_counts(sysfs, pf, |v| {
                            held.contains(&v) || sysfs.current_vgpu_type(v).map_or(true, |t| t != 0)
                        })
                    }),
                    types: pf.map_or_else(Vec::new, |pf| nvidia_vfio_types(sysfs, pf, &held)),
                    note: None,
                }
            }
            MdevState::VfsDisabled => GpuReport {
                gpu: g.key.clone(),
                config_key,
                generation,
                parents: Vec::new(),
                vfs: g.pf.map(|pf| vf_counts(sysfs, pf, |_| true)),
                types: Vec::new(),
                note: Some(crate::host::sriov::nvidia_vfs_missing(&config.sriov_manage, &g.key).1),
            },
            MdevState::Missing | MdevState::Unregistered => GpuReport {
                gpu: g.key.clone(),
                config_key,
                generation,
                parents: Vec::new(),
                vfs: None,
                types: Vec::new(),
                note: None,
            },
        };
        gpus.push(report);
    }
    for (pf, kind) in inventory::vf_pfs(config) {
        if kind == PfKind::Nvidia {
            continue;
        }
        let exists = sysfs.pci_exists(pf);
        gpus.push(GpuReport {
            gpu: pf.to_string(),
            config_key: inventory::pf_kind_label(kind),
            generation: if exists {
                Generation::Sriov.label()
            } else {
                "missing"
            },
            parents: Vec::new(),
            vfs: exists.then(|| vf_counts(sysfs, pf, |v| held.contains(&v))),
            types: Vec::new(),
            note: (exists && kind == PfKind::Amd && sysfs.vfs(pf).is_empty())
                .then(|| crate::host::sriov::amd_vf_num(sysfs, pf)),
        });
    }
    TypesReport {
        version: JSON_VERSION,
        gpus,
    }
}

impl TypesReport {
    /// Writes the aligned table.
    pub fn write_table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.gpus.is_empty() {
            return writeln!(
                w,
                "no GPUs configured (list them in the config: nvidia_vgpu_pfs, amd_vgpu_pfs, mdev_parents, sriov_pfs)"
            );
        }
        let mut t = Table::new(&[
            "GPU",
            "GENERATION",
            "TYPE",
            "NAME",
            "FRAMEBUFFER",
            "MAX",
            "AVAILABLE",
        ]);
        for g in &self.gpus {
            if !g.types.is_empty() {
                for ty in &g.types {
                    t.row(vec![
                        g.gpu.clone(),
                        g.generation.to_string(),
                        ty.id.clone(),
                        dash(ty.name.as_ref()),
                        dash(ty.framebuffer_mb.map(|m| format!("{m}M"))),
                        dash(ty.max_instances),
                        ty.available_instances.to_string(),
                    ]);
                }
            } else if g.generation == Generation::Sriov.label() {
                let v = g.vfs.as_ref();
                t.row(vec![
                    g.gpu.clone(),
                    g.generation.to_string(),
                    "vf".into(),
                    "whole VF".into(),
                    "-".into(),
                    dash(v.map(|v| v.total)),
                    dash(v.map(|v| v.free)),
                ]);
            } else {
                t.row(vec![
                    g.gpu.clone(),
                    g.generation.to_string(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
        }
        t.write(w)?;
        for g in &self.gpus {
            if let Some(note) = &g.note {
                writeln!(w, "note: {}: {note}", g.gpu)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// list

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
}

/// Builds the `list` report.
pub fn list_report(config: &Config, sysfs: &Sysfs, state: &State, live: &Liveness) -> ListReport {
    let mut devices = Vec::new();
    let mut parent_gpu: BTreeMap<String, String> = BTreeMap::new();
    for g in inventory::mdev_gpus(config, sysfs) {
        if let MdevState::Parents(_, ps) = &g.state {
            for p in ps {
                parent_gpu.insert(p.to_string(), g.key.clone());
            }
        }
    }
    for m in sysfs.live_mdevs() {
        let Some(gpu) = parent_gpu.get(&m.parent) else {
            continue;
        };
        let rec = state.owner(&Device::Mdev {
            uuid: m.uuid.clone(),
        });
        let type_name = ParentName::parse(&m.parent).ok().and_then(|p| {
            sysfs
                .mdev_types(&p)
                .into_iter()
                .find(|t| t.id == m.type_id)
                .and_then(|t| t.name)
        });
        devices.push(DeviceReport {
            kind: "mdev",
            device: m.uuid.to_string(),
            gpu: gpu.clone(),
            parent: m.parent.clone(),
            type_id: Some(m.type_id.clone()),
            type_name,
            domain: rec.map(|r| r.domain_name.clone()),
            domain_uuid: rec.map(|r| r.domain_uuid.clone()),
            state: hold_state(rec, live),
            since: rec.map(|r| r.since),
        });
    }
    for (pf, _) in inventory::vf_pfs(config) {
        for vf in sysfs.vfs(pf) {
            let rec = state.owner(&Device::Vf { address: vf });
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
                kind: "vf",
                device: vf.to_string(),
                gpu: pf.to_string(),
                parent: pf.to_string(),
                type_id,
                type_name,
                domain: rec.map(|r| r.domain_name.clone()),
                domain_uuid: rec.map(|r| r.domain_uuid.clone()),
                state: hold_state(rec, live),
                since: rec.map(|r| r.since),
            });
        }
    }
    devices.sort_by(|a, b| (&a.parent, &a.device).cmp(&(&b.parent, &b.device)));
    ListReport {
        version: JSON_VERSION,
        devices,
    }
}

impl ListReport {
    /// Writes the aligned table.
    pub fn write_table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.devices.is_empty() {
            return writeln!(w, "no vGPU devices on the configured GPUs");
        }
        let mut t = Table::new(&[
            "DEVICE", "PARENT", "TYPE", "NAME", "DOMAIN", "STATE", "SINCE",
        ]);
        for d in &self.devices {
            t.row(vec![
                d.device.clone(),
                d.parent.clone(),
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

// ---------------------------------------------------------------------------------------------
// status

/// `vgpuctl status DOMAIN`: what a domain asks for and what it holds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusReport {
    /// Shape version.
    pub version: u32,
    /// Domain name.
    pub domain: String,
    /// Domain UUID.
    pub uuid: String,
    /// Whether it runs now.
    pub running: bool,
    /// Requested devices in definition order, then devices the state says it holds without
    /// asking for them (detached while running).
    pub devices: Vec<StatusDevice>,
    /// Things that will make a start fail or leak a device, each with its fix.
    pub problems: Vec<String>,
}

/// One device of the domain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusDevice {
    /// `mdev` or `vf`.
    pub kind: &'static str,
    /// mdev UUID or VF address.
    pub device: String,
    /// Whether the definition's metadata asks for it.
    pub requested: bool,
    /// Asked-for type id.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Asked-for profile.
    pub profile: Option<String>,
    /// Allowed parents (empty: any configured).
    pub parents: Vec<String>,
    /// NVIDIA vgpu_params.
    pub params: Option<String>,
    /// Whether the definition has the matching `<hostdev>`.
    pub hostdev: bool,
    /// Whether the state records it as this domain's.
    pub held: bool,
    /// Another domain recorded as holding it.
    pub held_by: Option<String>,
    /// Whether the device exists in sysfs now.
    pub exists: bool,
    /// Where it was made (from the state).
    pub parent: Option<String>,
    /// The type it was made with (from the state).
    pub type_id: Option<String>,
    /// Since when this domain holds it.
    pub since: Option<u64>,
}

/// Builds the `status` report. `running` comes from libvirt when reachable.
pub fn status_report(dom: &Domain, running: bool, sysfs: &Sysfs, state: &State) -> StatusReport {
    let mut devices = Vec::new();
    let mut problems = Vec::new();
    let mine = |d: &Device| state.owner(d).filter(|r| r.domain_uuid == dom.uuid);
    let other = |d: &Device| {
        state
            .owner(d)
            .filter(|r| r.domain_uuid != dom.uuid)
            .map(|r| r.domain_name.clone())
    };
    for req in &dom.requests {
        let (kind, device, key, type_, profile, parents, params, hostdev, exists) = match req {
            Request::Mdev(m) => {
                let (t, p) = match &m.want {
                    MdevWant::Type(t) => (Some(t.to_string()), None),
                    MdevWant::Profile(p) => (None, Some(p.to_string())),
                };
                let hostdev = dom.has_mdev_hostdev(&m.uuid);
                if !hostdev {
                    problems.push(format!(
                        "vgpu:mdev {} has no <hostdev type='mdev'> naming it, so the guest will not get it; run `vgpuctl detach {} --uuid {}` and attach again",
                        m.uuid, dom.name, m.uuid
                    ));
                }
                (
                    "mdev",
                    m.uuid.to_string(),
                    Device::Mdev {
                        uuid: m.uuid.clone(),
                    },
                    t,
                    p,
                    m.parents.iter().map(|p| p.to_string()).collect(),
                    m.params.as_ref().map(|p| p.to_string()),
                    hostdev,
                    sysfs.mdev_exists(&m.uuid),
                )
            }
            Request::Vf(v) => {
                let (t, p) = match &v.want {
                    None => (None, None),
                    Some(VfWant::Type(t)) => (Some(t.to_string()), None),
                    Some(VfWant::Profile(p)) => (None, Some(p.to_string())),
                };
                let hd = dom.pci_hostdev(v.address);
                match hd {
                    None => problems.push(format!(
                        "vgpu:vf {} has no <hostdev type='pci'> naming it, so the guest will not get it; run `vgpuctl detach {} --address {}` and attach again",
                        v.address, dom.name, v.address
                    )),
                    Some(Hostdev::Pci { managed: true, .. }) if sysfs.is_nvidia_vfio_vf(v.address) => {
                        problems.push(format!(
                            "VF {} is an NVIDIA vGPU VF but its <hostdev> is managed='yes'; it must be managed='no' (detach and attach it again)",
                            v.address
                        ))
                    }
                    _ => {}
                }
                (
                    "vf",
                    v.address.to_string(),
                    Device::Vf { address: v.address },
                    t,
                    p,
                    Vec::new(),
                    None,
                    hd.is_some(),
                    sysfs.pci_exists(v.address),
                )
            }
        };
        let rec = mine(&key);
        let held_by = other(&key);
        if let Some(o) = &held_by {
            problems.push(format!(
                "{key} is held by domain '{o}'; this domain cannot start while it runs (give one of them another device)"
            ));
        }
        if running && rec.is_none() && held_by.is_none() {
            problems.push(format!(
                "the domain runs but holds no {key} (it was attached after the start, or its record was lost); it takes effect at the next start"
            ));
        }
        devices.push(StatusDevice {
            kind,
            device,
            requested: true,
            type_,
            profile,
            parents,
            params,
            hostdev,
            held: rec.is_some(),
            held_by,
            exists,
            parent: rec.map(|r| r.parent.clone()),
            type_id: rec.and_then(|r| r.type_id.clone()),
            since: rec.map(|r| r.since),
        });
    }
    for r in state.of_domain(&dom.uuid) {
        let requested = dom.requests.iter().any(|q| match (q, &r.device) {
            (Request::Mdev(m), Device::Mdev { uuid }) => &m.uuid == uuid,
            (Request::Vf(v), Device::Vf { address }) => &v.address == address,
            _ => false,
        });
        if requested {
            continue;
        }
        let (kind, device, exists) = match &r.device {
            Device::Mdev { uuid } => ("mdev", uuid.to_string(), sysfs.mdev_exists(uuid)),
            Device::Vf { address } => ("vf", address.to_string(), sysfs.pci_exists(*address)),
        };
        problems.push(format!(
            "holds {} that its definition no longer asks for; it is freed when the domain stops (or run `vgpuctl reconcile` once it has stopped)",
            r.device
        ));
        devices.push(StatusDevice {
            kind,
            device,
            requested: false,
            type_: None,
            profile: None,
            parents: Vec::new(),
            params: None,
            hostdev: false,
            held: true,
            held_by: None,
            exists,
            parent: Some(r.parent.clone()),
            type_id: r.type_id.clone(),
            since: Some(r.since),
        });
    }
    StatusReport {
        version: JSON_VERSION,
        domain: dom.name.clone(),
        uuid: dom.uuid.clone(),
        running,
        devices,
        problems,
    }
}

impl StatusReport {
    /// Writes the summary line, the device table and the problems.
    pub fn write_table(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "domain '{}' ({}), {}",
            self.domain,
            self.uuid,
            if self.running { "running" } else { "shut off" }
        )?;
        if self.devices.is_empty() {
            writeln!(
                w,
                "no vgpu-hook devices (attach one with `vgpuctl attach {} --profile P`)",
                self.domain
            )?;
        } else {
            let mut t = Table::new(&[
                "DEVICE", "ASKS", "HOSTDEV", "HELD", "EXISTS", "PARENT", "TYPE", "SINCE",
            ]);
            let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
            for d in &self.devices {
                let mut asks = match (&d.type_, &d.profile) {
                    (Some(t), _) => format!("type {t}"),
                    (None, Some(p)) => format!("profile {p}"),
                    (None, None) if d.requested => "whole VF".to_string(),
                    (None, None) => "(not asked)".to_string(),
                };
                if !d.parents.is_empty() {
                    asks.push_str(&format!(" on {}", d.parents.join(",")));
                }
                let held = match (&d.held_by, d.held) {
                    (Some(o), _) => format!("by '{o}'"),
                    (None, h) => yes(h),
                };
                t.row(vec![
                    d.device.clone(),
                    asks,
                    yes(d.hostdev),
                    held,
                    yes(d.exists),
                    dash(d.parent.as_ref()),
                    dash(d.type_id.as_ref()),
                    dash(d.since.map(utc)),
                ]);
            }
            t.write(w)?;
        }
        for p in &self.problems {
            writeln!(w, "problem: {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn table_aligns_columns_and_trims_the_last() {
        let mut t = Table::new(&["A", "BB", "C"]);
        t.row(vec!["xxx".into(), "y".into(), "".into()]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "A    BB  C\nxxx  y\n");
    }

    #[test]
    fn framebuffer_is_derived_from_nvidia_profile_names() {
        assert_eq!(framebuffer_from_name("NVIDIA L40S-4Q"), Some(4096));
        assert_eq!(framebuffer_from_name("GRID P40-24Q"), Some(24576));
        assert_eq!(framebuffer_from_name("Dual port serial"), None);
    }
}
