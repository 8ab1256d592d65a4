//! One `vgpu:vf` request made real: find the VF's configured PF (switching its VFs on where the
//! VF does not exist yet), check the hostdev fits the VF's driver, and for NVIDIA's kernel-6.8+
//! VFs set the asked vGPU type.

use super::refusal::Refusal;
use super::{Ctx, Failure};
use crate::host::sriov::Switch;
use crate::model::config::PfKind;
use std::collections::BTreeMap;
use std::fmt;

use crate::host::state::{Device, State};
use crate::host::sysfs::Sysfs;
use crate::model::domain::{Hostdev, VfRequest, VfWant};
use crate::model::names::MdevUuid;
use crate::model::pci::PciAddress;

/// Claims the VF a request names (and for NVIDIA's kernel-6.8+ VFs sets its vGPU type),
/// recording it in the context.
pub fn allocate_vf(ctx: &mut Ctx<'_>, req: &VfRequest) -> Result<(), Failure> {
    let vf = req.address;
    let device = Device::Vf { address: vf };
    if let Some(other) = ctx.other_owner(&device) {
        return Err(Refusal::VfHeld { vf, other }.into());
    }
    if let Some(user) = ctx.user_without_record(&device) {
        return Err(Refusal::VfInUse { vf, user }.into());
    }
    if let Some(mdev) = mdev_on(ctx.sysfs(), ctx.state, vf) {
        return Err(Refusal::VfHostsMdev { vf, mdev }.into());
    }
    let pf = locate_vf(ctx, vf)?;
    let managed = match ctx.dom.pci_hostdev(vf) {
        Some(Hostdev::Pci { managed, .. }) => Some(*managed),
        _ => {
            log::warn!(
                "domain '{}': vgpu:vf {vf} has no matching <hostdev type='pci'>; claiming it anyway",
                ctx.dom.name
            );
            None
        }
    };
    if ctx.sysfs().is_nvidia_vfio_vf(vf) {
        return claim_nvidia_vf(ctx, req, pf, managed);
    }
    if let Some(w) = &req.want {
        let want = w.to_string();
        return Err(Refusal::VfNotNvidia { vf, want }.into());
    }
    if managed == Some(false) {
        let driver = ctx.sysfs().driver(vf);
        if driver.as_deref() != Some("vfio-pci") {
            return Err(Refusal::VfNotOnVfio { vf, driver }.into());
        }
    }
    ctx.record(device, pf.to_string(), None, false);
    Ok(())
}

/// A vGPU mdev living on a VF (NVIDIA's Ampere SR-IOV GPUs make each VF an mdev parent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevOnVf {
    /// The mdev.
    pub uuid: MdevUuid,
    /// The domain our state records it for, if any.
    pub domain: Option<String>,
}

impl fmt::Display for MdevOnVf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(d) => write!(f, "vGPU mdev {} of domain '{d}'", self.uuid),
            None => write!(
                f,
                "vGPU mdev {}, which no domain is recorded for",
                self.uuid
            ),
        }
    }
}

/// The mdev living on `vf`, if any: such a VF is in use whoever runs, since passing it through
/// whole would pull it from under that vGPU.
pub fn mdev_on(sysfs: &Sysfs, state: &State, vf: PciAddress) -> Option<MdevOnVf> {
    sysfs.physfn(vf)?;
    let name = vf.to_string();
    let live = sysfs.live_mdevs().into_iter().find(|m| m.parent == name)?;
    Some(on_vf(state, live.uuid))
}

/// Every VF a vGPU mdev lives on, with that mdev: one pass over the live mdevs, for callers
/// that ask about many VFs.
pub fn mdevs_on_vfs(sysfs: &Sysfs, state: &State) -> BTreeMap<PciAddress, MdevOnVf> {
    let mut out = BTreeMap::new();
    for live in sysfs.live_mdevs() {
        let Ok(vf) = live.parent.parse::<PciAddress>() else {
            continue;
        };
        if sysfs.physfn(vf).is_some() {
            out.entry(vf).or_insert_with(|| on_vf(state, live.uuid));
        }
    }
    out
}

fn on_vf(state: &State, uuid: MdevUuid) -> MdevOnVf {
    let device = Device::Mdev { uuid: uuid.clone() };
    let domain = state.owner(&device).map(|r| r.domain_name.clone());
    MdevOnVf { uuid, domain }
}

/// Finds the configured PF a VF belongs to, switching VFs on at a configured PF that has none
/// if needed (never changing a non-zero count).
fn locate_vf(ctx: &mut Ctx<'_>, vf: PciAddress) -> Result<PciAddress, Refusal> {
    let sysfs = ctx.sysfs().clone();
    let pfs = ctx.config.vf_pfs();
    if let Some(pf) = sysfs.physfn(vf) {
        let configured = pfs.into_iter().find(|(a, _)| *a == pf).map(|(a, _)| a);
        let pf = configured.ok_or_else(|| Refusal::VfPfNotConfigured {
            vf,
            pf,
            config: ctx.config.path.clone(),
        })?;
        if let Some(drain) = ctx.drained(&pf.to_string()) {
            return Err(Refusal::Drained {
                device: format!("VF {vf}"),
                drain: drain.clone(),
            });
        }
        return scheduler_serves(ctx, vf, pf).map(|()| pf);
    }
    if sysfs.pci_exists(vf) {
        return Err(Refusal::NotAVf(vf));
    }
    let mut tried = Vec::new();
    for (pf, kind) in dormant_pfs(&sysfs, pfs, vf) {
        if let Some(drain) = ctx.drained(&pf.to_string()) {
            tried.push(format!("{pf} ({drain})"));
            continue;
        }
        if let Err(e) = scheduler_serves(ctx, vf, pf) {
            tried.push(format!("{pf} ({e})"));
            continue;
        }
        let switch = Switch::for_pf(ctx.config, &sysfs, pf);
        match switch.enable(&sysfs, ctx.config, pf, kind) {
            Ok(changed) if sysfs.physfn(vf) == Some(pf) => {
                if changed {
                    ctx.txn.enabled_vfs.push((pf, switch));
                }
                return Ok(pf);
            }
            Ok(true) => {
                if let Err(e) = switch.disable(&sysfs, ctx.config, pf) {
                    log::error!("could not disable the VFs of {pf} again: {e}");
                }
                tried.push(format!(
                    "{pf} (enabled VFs, {vf} not among them; disabled again)"
                ));
            }
            Ok(false) => tried.push(format!(
                "{pf} (its VFs were enabled meanwhile, {vf} not among them)"
            )),
            Err(e) => tried.push(format!("{pf} ({e})")),
        }
    }
    Err(Refusal::VfAbsent { vf, tried })
}

/// Whether the VF's GPU runs the scheduling policy the VM asks for (any GPU, when it asks none;
/// no GPU but NVIDIA's, whose policies these are).
fn scheduler_serves(ctx: &Ctx<'_>, vf: PciAddress, pf: PciAddress) -> Result<(), Refusal> {
    match ctx.scheduler_mismatch(Some(pf)) {
        None => Ok(()),
        Some((runs, wants)) => Err(Refusal::VfScheduler {
            vf,
            pf,
            runs,
            wants,
        }),
    }
}

/// The configured PFs with no VFs yet that may bring `vf`: where the PF's config space tells
/// where its VFs will be (First VF Offset, VF Stride), only the PF that will have it; otherwise
/// every candidate, nearest bus first (the caller switches off again what does not hold it).
fn dormant_pfs(
    sysfs: &Sysfs,
    pfs: Vec<(PciAddress, PfKind)>,
    vf: PciAddress,
) -> Vec<(PciAddress, PfKind)> {
    let mut dormant: Vec<(PciAddress, PfKind)> = pfs
        .into_iter()
        .filter(|(pf, _)| {
            pf.domain == vf.domain && pf.bus <= vf.bus && sysfs.sriov_totalvfs(*pf) > 0
        })
        .filter(|(pf, _)| sysfs.sriov_numvfs(*pf).is_ok_and(|n| n == 0))
        .filter(|(pf, _)| {
            sysfs
                .future_vfs(*pf, sysfs.sriov_totalvfs(*pf))
                .is_none_or(|future| future.contains(&vf))
        })
        .collect();
    dormant.sort_by_key(|(pf, _)| (vf.bus - pf.bus, std::cmp::Reverse(*pf)));
    dormant
}

/// An NVIDIA kernel-6.8+ VF: `managed='no'`, a type asked, any leftover type cleared, then the
/// asked type set (a VF that already has it is taken as it is).
fn claim_nvidia_vf(
    ctx: &mut Ctx<'_>,
    req: &VfRequest,
    pf: PciAddress,
    managed: Option<bool>,
) -> Result<(), Failure> {
    let vf = req.address;
    let sysfs = ctx.sysfs().clone();
    if managed == Some(true) {
        return Err(Refusal::NvidiaVfManaged(vf).into());
    }
    let Some(want) = &req.want else {
        return Err(Refusal::NvidiaVfNeedsType(vf).into());
    };
    let current = sysfs
        .current_vgpu_type(vf)
        .map_err(|source| Refusal::VfSysfs { vf, source })?;
    let device = Device::Vf { address: vf };
    if current != 0 {
        // Another domain holding the VF was refused above: a record is ours or a stopped one's.
        let recorded = ctx.state.owner(&device).and_then(|r| r.type_id.clone());
        let same = match want {
            VfWant::Type(id) => *id == current,
            VfWant::Profile(_) => recorded.as_deref() == Some(current.to_string().as_str()),
        };
        if same {
            log::info!(
                "domain '{}': VF {vf} already has vGPU type {current}",
                ctx.dom.name
            );
            ctx.record(device, pf.to_string(), Some(current.to_string()), true);
            return Ok(());
        }
        // A leftover of a stopped domain or of someone else: one bounded try to clear it (a VF
        // still in use refuses, and retrying here would hold every other start).
        let timeout = ctx.config.timing.remove_timeout;
        sysfs
            .set_current_vgpu_type(vf, 0, timeout)
            .map_err(|source| Refusal::VfLeftover {
                vf,
                current,
                source,
            })?;
    }
    let mixed = super::mixed::assert_mode(ctx, pf);
    let id = creatable_id(&sysfs, vf, want)?;
    sysfs
        .set_current_vgpu_type(vf, id, ctx.config.timing.device_wait)
        .map_err(|source| Refusal::VfSysfs { vf, source })?;
    ctx.txn.set_vf_types.push(vf);
    if mixed {
        super::mixed::place(ctx, pf, vf, id);
    }
    ctx.record(device, pf.to_string(), Some(id.to_string()), true);
    Ok(())
}

/// The id of the creatable type that `want` means on `vf` now.
fn creatable_id(sysfs: &Sysfs, vf: PciAddress, want: &VfWant) -> Result<u32, Refusal> {
    let creatable = sysfs
        .creatable_vgpu_types(vf)
        .map_err(|source| Refusal::VfSysfs { vf, source })?;
    let chosen = match want {
        VfWant::Type(t) => creatable.iter().find(|(id, _)| id == t),
        VfWant::Profile(p) => match p.pick(&creatable, |(_, n)| Some(n.as_str())).as_slice() {
            [] => None,
            [one] => Some(*one),
            many => {
                return Err(Refusal::VfAmbiguous {
                    want: p.to_string(),
                    vf,
                    matches: many.iter().map(|m| (*m).clone()).collect(),
                })
            }
        },
    };
    if let Some((id, _)) = chosen {
        return Ok(*id);
    }
    Err(Refusal::VfNotCreatable {
        want: want.to_string(),
        vf,
        creatable,
    })
}
