//! Mixed-size mode at a VM's start, on a kernel-6.8+ NVIDIA GPU listed in `mixed_size_pfs`.
//!
//! NVIDIA lets the mode change only while the GPU hosts no vGPU, and forgets it whenever the GPU
//! leaves its driver (`sriov-manage`, a driver reload), so the hook asserts it before the first
//! vGPU of an empty GPU is set, as well as `vgpuctl boot` at boot. Once the type is set the driver
//! has put the vGPU on the first free slot of its type; [`place`] moves it to the slot
//! [`super::slots::best`] picks, so that larger vGPUs still fit later. Neither step refuses a
//! start: a GPU whose mode cannot be set hosts the vGPU as one-size mode allows (the type write
//! itself then says whether it fits), and a vGPU that cannot move stays where the driver put it;
//! both are logged with the command to run by hand.

use super::slots::{self, Taken};
use super::Ctx;
use crate::host::nvidia_smi::{Smi, SmiError, TypePlacements};
use crate::host::sysfs::Sysfs;
use crate::model::config::Config;
use crate::model::pci::PciAddress;

/// Where a GPU's mixed-size mode stands after [`ensure_mode`].
#[derive(Debug)]
pub enum Mode {
    /// It was on.
    On,
    /// It was off, the GPU empty, and it was switched on.
    SwitchedOn,
    /// It is off and the GPU empty: this command would switch it on (a dry run).
    WouldSwitchOn(String),
    /// It is off and a vGPU already exists, so NVIDIA refuses to change it.
    OffInUse,
    /// nvidia-smi reports it as N/A (MIG on, or not a vGPU host).
    NotAvailable,
    /// nvidia-smi gave no answer, or refused.
    Unknown(SmiError),
}

impl Mode {
    /// Whether vGPUs of several sizes can share the GPU now.
    pub fn is_on(&self) -> bool {
        matches!(self, Mode::On | Mode::SwitchedOn)
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::On => write!(f, "mixed-size mode on"),
            Mode::SwitchedOn => write!(f, "mixed-size mode switched on (it was off: the GPU left its driver since it was set)"),
            Mode::WouldSwitchOn(c) => write!(f, "mixed-size mode off: a boot would run `{c}`"),
            Mode::OffInUse => write!(f, "mixed-size mode off and a vGPU already exists, so it cannot be switched on until the GPU is empty (stop its VMs, then `vgpuctl boot`); vGPUs there are placed as one-size mode allows"),
            Mode::NotAvailable => write!(f, "mixed-size mode N/A (nvidia-smi: MIG on, or not a vGPU host); vGPUs there are placed as one-size mode allows"),
            Mode::Unknown(e) => write!(f, "mixed-size mode not set: {e}"),
        }
    }
}

/// Makes sure a GPU of `mixed_size_pfs` is in mixed-size mode, switching it on while it hosts
/// no vGPU (`dry_run`: only says which command would). Shared by the hook and `vgpuctl boot`.
pub fn ensure_mode(config: &Config, sysfs: &Sysfs, pf: PciAddress, dry_run: bool) -> Mode {
    let smi = Smi::new(&config.nvidia_smi);
    match smi.heterogeneous_mode(pf) {
        Ok(Some(true)) => return Mode::On,
        Ok(Some(false)) => {}
        Ok(None) => return Mode::NotAvailable,
        Err(e) => return Mode::Unknown(e),
    }
    if hosts_vgpu(sysfs, pf) {
        return Mode::OffInUse;
    }
    if dry_run {
        return Mode::WouldSwitchOn(smi.switch_on_command(pf));
    }
    match smi.set_heterogeneous_mode(pf, true) {
        Ok(()) => Mode::SwitchedOn,
        Err(e) => Mode::Unknown(e),
    }
}

/// Before a type is set on a VF of `pf`: whether the GPU is in mixed-size mode (switching it on
/// while the GPU is empty). `false` for a GPU not in `mixed_size_pfs`.
pub fn assert_mode(ctx: &Ctx<'_>, pf: PciAddress) -> bool {
    if !ctx.config.mixed_size_pfs.contains(&pf) {
        return false;
    }
    let mode = ensure_mode(ctx.config, ctx.sysfs(), pf, false);
    match &mode {
        Mode::On => {}
        Mode::SwitchedOn => log::info!("{pf}: {mode}"),
        _ => log::warn!("{pf}: {mode}"),
    }
    mode.is_on()
}

/// Whether any VF of `pf` has a vGPU type set.
fn hosts_vgpu(sysfs: &Sysfs, pf: PciAddress) -> bool {
    sysfs
        .vfs(pf)
        .into_iter()
        .any(|vf| sysfs.current_vgpu_type(vf).is_ok_and(|t| t != 0))
}

/// After type `type_id` was set on `vf` of `pf` (in mixed-size mode): moves its vGPU to the slot
/// that keeps the most room for large sizes, if that is not where the driver put it.
pub fn place(ctx: &Ctx<'_>, pf: PciAddress, vf: PciAddress, type_id: u32) {
    let smi = Smi::new(&ctx.config.nvidia_smi);
    let types = match smi.placements(pf) {
        Ok(t) => t,
        Err(e) => {
            log::warn!(
                "{pf}: placements unknown, the vGPU on {vf} stays where the driver put it: {e}"
            );
            return;
        }
    };
    let Some(want) = types.iter().find(|t| t.type_id == type_id) else {
        log::warn!("{pf}: nvidia-smi lists no placements for vGPU type {type_id}; the vGPU on {vf} stays where the driver put it");
        return;
    };
    let sysfs = ctx.sysfs();
    let here = sysfs.placement_id(vf);
    let taken = taken_besides(sysfs, &types, pf, Some(vf));
    let Some(best) = slots::best(&types, want, &taken) else {
        return;
    };
    if here == Some(best) {
        return;
    }
    let from = here.map_or_else(|| "an unknown slot".to_string(), |h| format!("slot {h}"));
    match sysfs.set_placement_id(vf, best) {
        Ok(()) => log::info!(
            "domain '{}': vGPU on {vf} moved from {from} to slot {best} of {pf}, which leaves larger sizes room",
            ctx.dom.name
        ),
        Err(e) => log::warn!(
            "domain '{}': vGPU on {vf} stays at {from} of {pf}: {e}",
            ctx.dom.name
        ),
    }
}

/// The slots the vGPUs of `pf` hold (their `placement_id`, their type's size), but `vf`'s.
fn taken_besides(
    sysfs: &Sysfs,
    types: &[TypePlacements],
    pf: PciAddress,
    vf: Option<PciAddress>,
) -> Vec<Taken> {
    sysfs
        .vfs(pf)
        .into_iter()
        .filter(|&v| Some(v) != vf)
        .filter_map(|v| {
            let t = sysfs.current_vgpu_type(v).ok().filter(|&t| t != 0)?;
            let size = types.iter().find(|x| x.type_id == t)?.size;
            Some(Taken {
                at: sysfs.placement_id(v)?,
                size,
            })
        })
        .collect()
}

/// How many more vGPUs of each type a mixed-size GPU takes now (each placed as the hook would
/// place it; free VFs not counted), by type id.
pub fn room_by_type(
    config: &Config,
    sysfs: &Sysfs,
    pf: PciAddress,
) -> Result<Vec<(u32, u32)>, SmiError> {
    let types = Smi::new(&config.nvidia_smi).placements(pf)?;
    let taken = taken_besides(sysfs, &types, pf, None);
    Ok(types
        .iter()
        .map(|t| (t.type_id, slots::room(&types, t, &taken)))
        .collect())
}
