//! `vgpuctl types`: every configured GPU, what it is now and what it offers, with capacity.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use super::{dash, framebuffer_from_name, Table, JSON_VERSION};
use crate::alloc::inventory::{self, Generation, MdevGpu, MdevState};
use crate::host::drains::{Drain, Drains};
use crate::host::state::{Device, Liveness, State};
use crate::host::sysfs::{LiveMdev, MdevType, Sysfs};
use crate::model::config::Config;
use crate::model::config::PfKind;
use crate::model::names::{ParentName, Profile};
use crate::model::pci::PciAddress;

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
    /// The NUMA node it hangs off (`numa_node`), when the kernel knows it.
    pub numa_node: Option<u32>,
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
    /// When the operator drained it (`vgpuctl drain`): since when and why; it takes no new
    /// vGPU until `vgpuctl undrain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drained: Option<Drain>,
    /// For a GPU of `mixed_size_pfs`: its mixed-size mode as nvidia-smi reports it (`on`,
    /// `off`, `n/a`, `unknown`); while on, `available_instances` counts what still fits slot by
    /// slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed_size: Option<&'static str>,
    /// For an NVIDIA GPU: the vGPU scheduling policy it runs (what the `nvidia` module loaded
    /// with), when the module's parameters can be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// For an AMD Instinct PF under GIM: the partition modes it reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionReport>,
}

/// The partition modes an AMD PF reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionReport {
    /// `SPX`, `DPX`, `QPX`, `CPX`; null on a card without spatial partitions.
    pub compute: Option<String>,
    /// `NPS1` .. `NPS8`, null when unreadable.
    pub memory: Option<String>,
    /// The line `types` and `doctor` show.
    pub summary: String,
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

/// What a report has read once and every GPU shares: the live mdevs, and each type's name and
/// description by type id. The mdev core names a type `<driver>-<driver's name for it>`, so an
/// id is one type of one driver on every parent (NVIDIA's are one table for all boards): a board
/// of 32 VFs is read for its names once, not 32 times.
struct Seen {
    live: Vec<LiveMdev>,
    types: BTreeMap<String, MdevType>,
}

impl Seen {
    fn new(sysfs: &Sysfs) -> Self {
        Seen {
            live: sysfs.live_mdevs(),
            types: BTreeMap::new(),
        }
    }

    /// The types `parent` offers, names and descriptions read only for ids not seen before.
    fn types_of(&mut self, sysfs: &Sysfs, parent: &ParentName) -> Vec<MdevType> {
        sysfs
            .mdev_type_ids(parent)
            .into_iter()
            .map(|id| {
                self.types
                    .entry(id.clone())
                    .or_insert_with(|| sysfs.mdev_type(parent, id))
                    .clone()
            })
            .collect()
    }
}

fn mdev_types_of(sysfs: &Sysfs, seen: &mut Seen, parents: &[ParentName]) -> Vec<TypeReport> {
    let mut by_id: BTreeMap<String, TypeReport> = BTreeMap::new();
    let mut existing: BTreeMap<String, u32> = BTreeMap::new();
    let mut described_max: BTreeMap<String, bool> = BTreeMap::new();
    for p in parents {
        for t in seen.types_of(sysfs, p) {
            let avail = crate::model::names::TypeId::parse(&t.id)
                .ok()
                .and_then(|id| sysfs.available_instances(p, &id).ok())
                .unwrap_or(0);
            let here = seen
                .live
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

impl TypesReport {
    /// Marks the GPUs the operator drained.
    pub fn mark_drains(&mut self, drains: &Drains) {
        for g in &mut self.gpus {
            g.drained = drains.of(&g.gpu).cloned();
        }
    }
}

/// Builds the `types` report: the configured mdev sources, then the other SR-IOV PFs.
pub fn types_report(config: &Config, sysfs: &Sysfs, state: &State, live: &Liveness) -> TypesReport {
    let held = held_vfs(state, live);
    let mut seen = Seen::new(sysfs);
    let mut gpus: Vec<GpuReport> = inventory::mdev_gpus(config, sysfs)
        .iter()
        .map(|g| mdev_gpu_report(config, sysfs, &mut seen, g, &held))
        .collect();
    gpus.extend(
        config
            .vf_pfs()
            .into_iter()
            .filter(|(_, kind)| *kind != PfKind::Nvidia)
            .map(|(pf, kind)| sriov_pf_report(sysfs, pf, kind, &held)),
    );
    TypesReport {
        version: JSON_VERSION,
        gpus,
    }
}

/// One configured NVIDIA GPU or mdev parent, by what it offers now.
fn mdev_gpu_report(
    config: &Config,
    sysfs: &Sysfs,
    seen: &mut Seen,
    g: &MdevGpu,
    held: &[PciAddress],
) -> GpuReport {
    let mut report = GpuReport {
        gpu: g.key.clone(),
        numa_node: sysfs.numa_node_of(&g.key),
        config_key: if g.nvidia {
            "nvidia_vgpu_pfs"
        } else {
            "mdev_parents"
        },
        generation: g.state.label(),
        parents: Vec::new(),
        vfs: None,
        types: Vec::new(),
        note: None,
        drained: None,
        mixed_size: None,
        scheduler: g
            .pf
            .filter(|_| g.nvidia)
            .and_then(|pf| sysfs.running_scheduler(pf))
            .map(|s| s.to_string()),
        partition: None,
    };
    match &g.state {
        MdevState::Parents(gen, ps) => {
            report.parents = ps.iter().map(|p| p.to_string()).collect();
            report.vfs = g.pf.filter(|_| *gen == Generation::SriovMdev).map(|pf| {
                vf_counts(sysfs, pf, |v| {
                    seen.live.iter().any(|m| m.parent == v.to_string())
                })
            });
            report.types = mdev_types_of(sysfs, seen, ps);
        }
        MdevState::NotMdev => {
            report.vfs = g.pf.map(|pf| {
                vf_counts(sysfs, pf, |v| {
                    held.contains(&v) || sysfs.current_vgpu_type(v).map_or(true, |t| t != 0)
                })
            });
            report.types =
                g.pf.map_or_else(Vec::new, |pf| nvidia_vfio_types(sysfs, pf, held));
            if let Some(pf) = g.pf.filter(|pf| config.mixed_size_pfs.contains(pf)) {
                mixed_size_room(config, sysfs, pf, &mut report);
            }
        }
        MdevState::VfsDisabled => {
            report.vfs = g.pf.map(|pf| vf_counts(sysfs, pf, |_| true));
            report.note =
                Some(crate::host::sriov::nvidia_vfs_missing(&config.sriov_manage, &g.key).1);
        }
        MdevState::Missing | MdevState::Unregistered => {}
    }
    report
}

/// A GPU of `mixed_size_pfs`: its mode, and while it is on, what each type still fits slot by
/// slot (at most one per free VF).
fn mixed_size_room(config: &Config, sysfs: &Sysfs, pf: PciAddress, report: &mut GpuReport) {
    let smi = crate::host::nvidia_smi::Smi::new(&config.nvidia_smi);
    let mode = smi.heterogeneous_mode(pf);
    report.mixed_size = Some(match &mode {
        Ok(Some(true)) => "on",
        Ok(Some(false)) => "off",
        Ok(None) => "n/a",
        Err(_) => "unknown",
    });
    match mode {
        Ok(Some(true)) => {}
        Ok(Some(false)) => {
            report.note = Some("mixed-size mode is off: one size at a time here (the hook switches it on while the GPU is empty; `vgpuctl boot` at boot)".into());
            return;
        }
        Ok(None) => {
            report.note = Some("mixed-size mode is N/A (nvidia-smi: MIG on, or not a vGPU host): one size at a time here".into());
            return;
        }
        Err(e) => {
            report.note = Some(format!("mixed-size mode unknown: {e}"));
            return;
        }
    }
    let free = report.vfs.as_ref().map_or(0, |v| v.free);
    match crate::alloc::mixed::room_by_type(config, sysfs, pf) {
        Ok(room) => {
            for t in &mut report.types {
                let fits = room
                    .iter()
                    .find(|(id, _)| id.to_string() == t.id)
                    .map_or(0, |(_, n)| *n);
                t.available_instances = fits.min(free);
            }
        }
        Err(e) => {
            report.note = Some(format!(
                "placements unknown, AVAILABLE counts free VFs: {e}"
            ))
        }
    }
}

/// One configured AMD or generic SR-IOV PF: its VF counts, and AMD's advice when it has none.
fn sriov_pf_report(sysfs: &Sysfs, pf: PciAddress, kind: PfKind, held: &[PciAddress]) -> GpuReport {
    let exists = sysfs.pci_exists(pf);
    let partition = (kind == PfKind::Amd)
        .then(|| sysfs.amd_partition(pf))
        .flatten()
        .map(|p| PartitionReport {
            summary: p.describe(sysfs.vfs(pf).len()),
            compute: p.compute,
            memory: p.memory,
        });
    GpuReport {
        gpu: pf.to_string(),
        numa_node: sysfs.numa_node(pf),
        config_key: kind.config_key(),
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
        drained: None,
        mixed_size: None,
        scheduler: None,
        partition,
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
            "NODE",
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
                        dash(g.numa_node),
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
                    dash(g.numa_node),
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
                    dash(g.numa_node),
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
            if let Some(drain) = &g.drained {
                writeln!(w, "note: {}: {drain}", g.gpu)?;
            }
            // A note already says what the partition or the placements mean for the GPU.
            if let Some(p) = g.partition.as_ref().filter(|_| g.note.is_none()) {
                writeln!(w, "note: {}: {}", g.gpu, p.summary)?;
            }
            if g.mixed_size == Some("on") && g.note.is_none() {
                writeln!(
                    w,
                    "note: {}: mixed-size mode on: AVAILABLE is what still fits slot by slot",
                    g.gpu
                )?;
            }
        }
        Ok(())
    }

    /// The report kept to the types `profile` names (`vgpuctl types --fit`), GPUs offering
    /// none left out.
    pub fn fit(&self, profile: &Profile) -> TypesReport {
        let gpus = self
            .gpus
            .iter()
            .filter_map(|g| {
                let types: Vec<TypeReport> = profile
                    .pick(&g.types, |t| t.name.as_deref())
                    .into_iter()
                    .cloned()
                    .collect();
                (!types.is_empty()).then(|| GpuReport { types, ..g.clone() })
            })
            .collect();
        TypesReport {
            version: self.version,
            gpus,
        }
    }

    /// Whether one more vGPU of a type the report holds fits on some GPU that is not drained.
    pub fn fits_anywhere(&self) -> bool {
        self.gpus
            .iter()
            .filter(|g| g.drained.is_none())
            .any(|g| g.types.iter().any(|t| t.available_instances > 0))
    }

    /// Where one more vGPU of `profile` can go now: one line per GPU that offers it, then the
    /// answer. False when it fits nowhere.
    pub fn write_fit(&self, profile: &Profile, w: &mut dyn Write) -> io::Result<bool> {
        for g in &self.gpus {
            for t in &g.types {
                let name = t.name.as_deref().unwrap_or(&t.id);
                let why = if g.drained.is_some() {
                    " (drained: takes no new vGPU)"
                } else if t.available_instances == 0 {
                    " (full for this size now)"
                } else {
                    ""
                };
                let n = if g.drained.is_some() {
                    0
                } else {
                    t.available_instances
                };
                writeln!(w, "{}: {name} (type {}): {n} more{why}", g.gpu, t.id)?;
            }
        }
        let anywhere = self.fits_anywhere();
        if self.gpus.is_empty() {
            writeln!(w, "one more '{profile}' fits nowhere now: no configured GPU can create a type of that name (full, hosting another size, or no such type: see vgpuctl types)")?;
        } else if !anywhere {
            writeln!(w, "one more '{profile}' fits nowhere now")?;
        }
        Ok(anywhere)
    }
}
