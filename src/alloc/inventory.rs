//! The configured devices as they exist right now: which generation each NVIDIA GPU is, which mdev
//! parents it offers, and why one offers none.
//!
//! The config lists GPUs; sysfs decides what each one is (classic mdev on the PF, mdev on SR-IOV
//! VFs, or NVIDIA's kernel-6.8+ interface on VFs). This is re-derived on every call, because
//! drivers register parents late at boot and GPUs fall off the bus.

use crate::host::sysfs::{MdevType, Sysfs};
use crate::model::config::Config;
use crate::model::domain::MdevWant;
use crate::model::names::ParentName;
use crate::model::pci::PciAddress;

/// Which interface a GPU offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// mdev types on the physical GPU (Maxwell to Turing, and any non-NVIDIA mdev parent).
    Mdev,
    /// mdev types on each SR-IOV VF (Ampere and later up to vGPU 16).
    SriovMdev,
    /// NVIDIA's kernel-6.8+ interface: `nvidia/current_vgpu_type` on each VF, no mdev.
    NvidiaVfio,
    /// Plain SR-IOV: whole VFs (AMD MxGPU, generic).
    Sriov,
}

impl Generation {
    /// Short label for tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Generation::Mdev => "mdev",
            Generation::SriovMdev => "sriov-mdev",
            Generation::NvidiaVfio => "nvidia-vfio",
            Generation::Sriov => "sriov",
        }
    }
}

/// What a configured GPU offers for mdev requests now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdevState {
    /// These mdev parents are registered (the GPU itself, or its VFs).
    Parents(Generation, Vec<ParentName>),
    /// The device does not exist at all.
    Missing,
    /// The device exists but no mdev parent is registered for it (vendor manager not up yet).
    Unregistered,
    /// An SR-IOV GPU whose VFs are not enabled yet.
    VfsDisabled,
    /// The GPU speaks the kernel-6.8+ interface: it serves `vgpu:vf` requests, not mdevs.
    NotMdev,
}

impl MdevState {
    /// Short label for tables and JSON: the generation, or why there is none.
    pub fn label(&self) -> &'static str {
        match self {
            MdevState::Parents(g, _) => g.label(),
            MdevState::NotMdev => Generation::NvidiaVfio.label(),
            MdevState::Missing => "missing",
            MdevState::Unregistered => "unregistered",
            MdevState::VfsDisabled => "vfs-disabled",
        }
    }
}

/// One configured source of mdevs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevGpu {
    /// PF address, or the parent's name for `mdev_parents`.
    pub key: String,
    /// The PF when the source is a PCI GPU.
    pub pf: Option<PciAddress>,
    /// Whether it came from `nvidia_vgpu_pfs` (guidance differs).
    pub nvidia: bool,
    /// What it offers now.
    pub state: MdevState,
}

impl MdevGpu {
    /// Whether a request restricted to `wanted` (PF addresses or parent names; empty: anywhere)
    /// may use this GPU at all. The one rule for the hook and vgpuctl.
    pub fn allowed_by(&self, wanted: &[ParentName]) -> bool {
        wanted.is_empty()
            || wanted.iter().any(|p| p.as_str() == self.key)
            || matches!(&self.state, MdevState::Parents(_, ps) if ps.iter().any(|p| wanted.contains(p)))
    }

    /// Whether such a request may use `parent` of this GPU: any of its parents when the GPU
    /// itself is named, else only the parents named.
    pub fn allows_parent(&self, wanted: &[ParentName], parent: &ParentName) -> bool {
        wanted.is_empty() || wanted.iter().any(|p| p.as_str() == self.key || p == parent)
    }
}

/// Classifies one NVIDIA PF from sysfs.
pub fn classify_nvidia(sysfs: &Sysfs, pf: PciAddress) -> MdevState {
    if !sysfs.pci_exists(pf) && !sysfs.is_mdev_parent(&ParentName::from(pf)) {
        return MdevState::Missing;
    }
    if sysfs.is_mdev_parent(&ParentName::from(pf)) {
        return MdevState::Parents(Generation::Mdev, vec![ParentName::from(pf)]);
    }
    let vfs = sysfs.vfs(pf);
    if vfs.iter().any(|&vf| sysfs.is_nvidia_vfio_vf(vf)) {
        return MdevState::NotMdev;
    }
    let parents: Vec<ParentName> = vfs
        .into_iter()
        .map(ParentName::from)
        .filter(|p| sysfs.is_mdev_parent(p))
        .collect();
    if !parents.is_empty() {
        return MdevState::Parents(Generation::SriovMdev, parents);
    }
    if sysfs.sriov_totalvfs(pf) > 0 && sysfs.sriov_numvfs(pf).unwrap_or(0) == 0 {
        return MdevState::VfsDisabled;
    }
    MdevState::Unregistered
}

/// When a configured mdev parent (`mdev_parents`) is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentCheck {
    /// Now, one lookup each (what reports show).
    Now,
    /// Not now: it is taken as registered, and the survey, which reads the asked type there
    /// anyway, looks only where that read found nothing. A start on a host of hundreds of
    /// parents then pays one lookup per parent, not two.
    WhenSurveyed,
}

/// Every configured mdev source, in config order (NVIDIA GPUs, then other parents).
pub fn mdev_gpus(config: &Config, sysfs: &Sysfs) -> Vec<MdevGpu> {
    mdev_gpus_checked(config, sysfs, ParentCheck::Now)
}

/// [`mdev_gpus`], with the configured parents looked for as `check` says.
pub fn mdev_gpus_checked(config: &Config, sysfs: &Sysfs, check: ParentCheck) -> Vec<MdevGpu> {
    let mut out: Vec<MdevGpu> = config
        .nvidia_vgpu_pfs
        .iter()
        .map(|&pf| MdevGpu {
            key: pf.to_string(),
            pf: Some(pf),
            nvidia: true,
            state: classify_nvidia(sysfs, pf),
        })
        .collect();
    out.extend(config.mdev_parents.iter().map(|p| MdevGpu {
        key: p.to_string(),
        pf: PciAddress::from_text(p.as_str()),
        nvidia: false,
        state: if check == ParentCheck::WhenSurveyed || sysfs.is_mdev_parent(p) {
            MdevState::Parents(Generation::Mdev, vec![p.clone()])
        } else {
            MdevState::Missing
        },
    }));
    out
}

/// The types of one parent that an mdev request means: an exact type id, or a profile matched by
/// full name first and by short name only when no full name matches (the hook's rule). More
/// than one result means the profile is ambiguous on that parent.
pub fn matching_types<'a>(types: &'a [MdevType], want: &MdevWant) -> Vec<&'a MdevType> {
    match want {
        MdevWant::Type(t) => types.iter().filter(|ty| ty.id == t.as_str()).collect(),
        MdevWant::Profile(p) => p.pick(types, |ty| ty.name.as_deref()),
    }
}
