//! Whole VFs: checking one the operator names, or picking free ones.
//!
//! A named VF is checked for being a VF of a configured PF (or one such a PF will have once the
//! hook enables its VFs) and for taking the vGPU type asked. Picking goes through the configured
//! PFs that hand out the kind of VF asked (plain, or NVIDIA kernel-6.8+ with a type) and takes
//! VFs no other domain refers to; a PF that gives fewer than asked says why ([`Shortfall`]).

use crate::alloc::inventory::{self, MdevState};
use crate::alloc::numa::Wanted;
use crate::ctl::xmledit::NewDevice;
use crate::host::sysfs::Sysfs;
use crate::model::config::PfKind;
use crate::model::config::{Config, Placement};
use crate::model::domain::{NumaWish, VfRequest, VfWant};
use crate::model::pci::PciAddress;

use super::{Plan, PlanError, Planner, Shortfall, VfAsk};

impl Planner<'_> {
    /// Plans `ask`: the VF it names, or VFs picked from the configured PFs.
    pub(super) fn vfs(&self, ask: &VfAsk) -> Result<Plan, PlanError> {
        match ask.address {
            Some(addr) => self.named_vf(ask, addr),
            None => self.pick_vfs(ask),
        }
    }

    fn named_vf(&self, ask: &VfAsk, addr: PciAddress) -> Result<Plan, PlanError> {
        if ask.count != 1 {
            return Err(PlanError::AddressWithCount);
        }
        if let Some(owner) = self.taken.get(&addr) {
            return Err(PlanError::Taken {
                vf: addr,
                owner: owner.clone(),
            });
        }
        let nvidia = self.sysfs.is_nvidia_vfio_vf(addr);
        let mut plan = Plan::default();
        if self.check {
            let config = self.config.ok_or(PlanError::NoConfigToCheck)?;
            plan.notes
                .extend(self.check_named_pf(config, addr, ask.pf)?);
            self.check_named_type(addr, nvidia, ask.want.as_ref())?;
        }
        plan.devices.push(vf_device(addr, ask.want.clone(), nvidia));
        Ok(plan)
    }

    /// Checks that `addr` is a VF of a configured PF (the one `--pf` names, if given), or will be
    /// one once the hook enables that PF's VFs; then the returned note says so.
    fn check_named_pf(
        &self,
        config: &Config,
        addr: PciAddress,
        asked: Option<PciAddress>,
    ) -> Result<Option<String>, PlanError> {
        let pfs = config.vf_pfs();
        match self.sysfs.physfn(addr) {
            Some(p) if pfs.iter().any(|(a, _)| *a == p) => match asked {
                Some(asked) if asked != p => Err(PlanError::OtherPf {
                    vf: addr,
                    pf: p,
                    asked,
                }),
                _ => Ok(None),
            },
            Some(p) => Err(PlanError::UnlistedPf {
                vf: addr,
                pf: p,
                config: config.path.clone(),
            }),
            None if self.sysfs.pci_exists(addr) => Err(PlanError::NotAVf { address: addr }),
            None => match self.future_parent(&pfs, addr) {
                Some(p) => Ok(Some(format!(
                    "VF {addr} does not exist yet; the hook enables the VFs of {p} when the domain starts"
                ))),
                None => Err(PlanError::NoSuchVf {
                    vf: addr,
                    configured: pfs.iter().map(|(a, _)| *a).collect(),
                }),
            },
        }
    }

    /// The configured generic PF without VFs that will have `addr` among them.
    fn future_parent(&self, pfs: &[(PciAddress, PfKind)], addr: PciAddress) -> Option<PciAddress> {
        let sysfs = self.sysfs;
        pfs.iter()
            .find(|(p, kind)| {
                *kind == PfKind::Generic
                    && sysfs.sriov_numvfs(*p).is_ok_and(|n| n == 0)
                    && sysfs
                        .future_vfs(*p, sysfs.sriov_totalvfs(*p))
                        .is_some_and(|v| v.contains(&addr))
            })
            .map(|(p, _)| *p)
    }

    /// An NVIDIA kernel-6.8+ VF needs a type its GPU offers; any other VF takes none.
    fn check_named_type(
        &self,
        addr: PciAddress,
        nvidia: bool,
        want: Option<&VfWant>,
    ) -> Result<(), PlanError> {
        match (nvidia, want) {
            (true, None) => Err(PlanError::NeedsVgpuType { vf: addr }),
            (true, Some(w)) => check_creatable(self.sysfs, &[addr], w),
            (false, Some(w)) => Err(PlanError::NoVgpuInterface {
                vf: addr,
                want: w.clone(),
            }),
            (false, None) => Ok(()),
        }
    }

    fn pick_vfs(&self, ask: &VfAsk) -> Result<Plan, PlanError> {
        let config = self.config.ok_or(PlanError::PickNeedsConfig)?;
        let candidates = candidates(config, ask.pf)?;
        let fitting = self.fitting(&candidates, ask.want.is_some());
        if fitting.is_empty() {
            return Err(self.nothing_fits(config, &candidates, ask));
        }
        let fitting = self.in_order(config, fitting, &ask.numa);
        let mut pick = Pick {
            count: ask.count,
            ..Pick::default()
        };
        for (p, kind) in fitting {
            if pick.full() {
                break;
            }
            self.pick_from(&mut pick, config, (p, kind), ask.want.as_ref());
        }
        if !pick.full() {
            return Err(PlanError::TooFewVfs {
                found: pick.chosen.len(),
                asked: ask.count,
                shortfalls: pick.shortfalls,
            });
        }
        if let Some(w) = &ask.want {
            let vfs: Vec<PciAddress> = pick.chosen.iter().map(|(a, _)| *a).collect();
            check_creatable(self.sysfs, &vfs, w)?;
        }
        let devices = pick
            .chosen
            .into_iter()
            .map(|(vf, nvidia)| vf_device(vf, ask.want.clone(), nvidia))
            .collect();
        Ok(Plan {
            devices,
            notes: pick.notes,
        })
    }

    /// The candidates that hand out the kind of VF asked: kernel-6.8+ NVIDIA GPUs for a vGPU
    /// type, other PFs for plain VFs.
    fn fitting(
        &self,
        candidates: &[(PciAddress, PfKind)],
        nvidia_wanted: bool,
    ) -> Vec<(PciAddress, PfKind)> {
        candidates
            .iter()
            .copied()
            .filter(|&(p, kind)| {
                let vfio = is_nvidia_vfio_pf(self.sysfs, p, kind);
                if nvidia_wanted {
                    vfio
                } else {
                    !vfio && kind != PfKind::Nvidia
                }
            })
            .collect()
    }

    /// The PFs to take VFs from, best first: those on the domain's NUMA nodes, then the nearest;
    /// within equal distance, `spread` takes the least loaded PF first (most free VFs for its
    /// size) and `pack` keeps the config order.
    fn in_order(
        &self,
        config: &Config,
        mut pfs: Vec<(PciAddress, PfKind)>,
        numa: &NumaWish,
    ) -> Vec<(PciAddress, PfKind)> {
        let wanted = Wanted::of(numa, self.sysfs, config.numa).ok().flatten();
        let distance = |pf: PciAddress| {
            wanted
                .as_ref()
                .map_or(0, |w| w.distance(self.sysfs.numa_node(pf)))
        };
        let load = |pf: PciAddress| {
            let total = self.sysfs.sriov_totalvfs(pf).max(1);
            let vfs = self.sysfs.vfs(pf);
            let free = vfs.iter().filter(|v| !self.taken.contains_key(v)).count() as u64;
            // Free share of the PF, scaled to compare without fractions; highest first.
            std::cmp::Reverse(free * 1_000_000 / u64::from(total))
        };
        match config.placement {
            Placement::Spread => pfs.sort_by_key(|&(pf, _)| (distance(pf), load(pf))),
            Placement::Pack => pfs.sort_by_key(|&(pf, _)| distance(pf)),
        }
        pfs
    }

    /// Why no candidate hands out the kind of VF asked.
    fn nothing_fits(
        &self,
        config: &Config,
        candidates: &[(PciAddress, PfKind)],
        ask: &VfAsk,
    ) -> PlanError {
        let sysfs = self.sysfs;
        let nvidia_wanted = ask.want.is_some();
        let dormant_nvidia = candidates.iter().find(|&&(p, k)| {
            k == PfKind::Nvidia && inventory::classify_nvidia(sysfs, p) == MdevState::VfsDisabled
        });
        if let (true, Some(&(pf, _))) = (nvidia_wanted, dormant_nvidia) {
            PlanError::NvidiaVfsDisabled {
                pf,
                how: crate::host::sriov::nvidia_vfs_missing(&config.sriov_manage, pf).1,
            }
        } else if nvidia_wanted {
            PlanError::NoVfioGpu {
                pf: ask.pf,
                configured: candidates.to_vec(),
            }
        } else if candidates
            .iter()
            .any(|&(p, k)| is_nvidia_vfio_pf(sysfs, p, k))
        {
            PlanError::VfioNeedsType
        } else {
            PlanError::NoWholeVfs {
                configured: candidates.to_vec(),
            }
        }
    }

    /// Takes free VFs of one PF into `pick`, or records why it gave fewer than still needed.
    fn pick_from(
        &self,
        pick: &mut Pick,
        config: &Config,
        (pf, kind): (PciAddress, PfKind),
        want: Option<&VfWant>,
    ) {
        let (vfs, future) = match self.vfs_of(config, pf, kind) {
            Ok(v) => v,
            Err(shortfall) => return pick.shortfalls.push(shortfall),
        };
        let nvidia = is_nvidia_vfio_pf(self.sysfs, pf, kind);
        let mut used: Vec<(PciAddress, String)> = Vec::new();
        let mut not_creatable = 0;
        for vf in vfs {
            if pick.full() {
                break;
            }
            if let Some(owner) = self.taken.get(&vf) {
                used.push((vf, owner.clone()));
                continue;
            }
            if pick.chosen.iter().any(|(c, _)| *c == vf) {
                continue;
            }
            if let (true, Some(w)) = (nvidia, want) {
                if !may_create(self.sysfs, vf, w) {
                    not_creatable += 1;
                    continue;
                }
            }
            if future {
                pick.notes.push(format!(
                    "PF {pf} has no VFs yet; the hook enables them when the domain starts, and {vf} will be one of them"
                ));
            }
            pick.chosen.push((vf, nvidia));
        }
        if !pick.full() {
            pick.shortfalls.push(Shortfall::Busy {
                pf,
                used,
                not_creatable,
                want: want.cloned(),
            });
        }
    }

    /// The VFs of a PF, and whether they are future ones (a generic PF whose VFs the hook
    /// enables at start); or why the PF has none to give.
    fn vfs_of(
        &self,
        config: &Config,
        pf: PciAddress,
        kind: PfKind,
    ) -> Result<(Vec<PciAddress>, bool), Shortfall> {
        let sysfs = self.sysfs;
        let vfs = sysfs.vfs(pf);
        if !vfs.is_empty() {
            return Ok((vfs, false));
        }
        let total = sysfs.sriov_totalvfs(pf);
        if !sysfs.pci_exists(pf) {
            return Err(Shortfall::Missing(pf));
        }
        if total == 0 {
            return Err(Shortfall::NotSriov(pf));
        }
        match kind {
            PfKind::Amd => Err(Shortfall::AmdNoVfs {
                pf,
                advice: crate::host::sriov::amd_vf_num(sysfs, pf),
            }),
            PfKind::Nvidia => Err(Shortfall::NvidiaNoVfs(pf)),
            PfKind::Generic => {
                let count = match config.vf_count {
                    0 => total,
                    n => n.min(total),
                };
                sysfs
                    .future_vfs(pf, count)
                    .map(|v| (v, true))
                    .ok_or(Shortfall::LayoutUnreadable { pf, count })
            }
        }
    }
}

/// VFs chosen so far, and what the operator should hear about the PFs.
#[derive(Debug, Default)]
struct Pick {
    count: u32,
    /// The VF and whether it is an NVIDIA kernel-6.8+ one.
    chosen: Vec<(PciAddress, bool)>,
    shortfalls: Vec<Shortfall>,
    notes: Vec<String>,
}

impl Pick {
    fn full(&self) -> bool {
        self.chosen.len() as u32 >= self.count
    }
}

/// The configured PFs to pick from: all, or the one `--pf` names.
fn candidates(
    config: &Config,
    pf: Option<PciAddress>,
) -> Result<Vec<(PciAddress, PfKind)>, PlanError> {
    let all = config.vf_pfs();
    if all.is_empty() {
        return Err(PlanError::NoPfs {
            config: config.path.clone(),
        });
    }
    let Some(p) = pf else {
        return Ok(all);
    };
    match all.iter().find(|(a, _)| *a == p) {
        Some(&c) => Ok(vec![c]),
        None => Err(PlanError::UnknownPf {
            pf: p,
            configured: all.iter().map(|(a, _)| *a).collect(),
        }),
    }
}

/// Whether a configured PF hands out NVIDIA kernel-6.8+ VFs.
fn is_nvidia_vfio_pf(sysfs: &Sysfs, pf: PciAddress, kind: PfKind) -> bool {
    kind == PfKind::Nvidia && inventory::classify_nvidia(sysfs, pf) == MdevState::NotMdev
}

/// Whether a free NVIDIA VF may take `want`: it lists it, or lists nothing (cannot tell now).
fn may_create(sysfs: &Sysfs, vf: PciAddress, want: &VfWant) -> bool {
    let list = sysfs.creatable_vgpu_types(vf).unwrap_or_default();
    list.is_empty() || list.iter().any(|(id, n)| want.matches(*id, n))
}

fn vf_device(address: PciAddress, want: Option<VfWant>, nvidia: bool) -> NewDevice {
    NewDevice::Vf {
        request: VfRequest { address, want },
        managed: !nvidia,
    }
}

/// Refuses a VF type that the VFs' GPU does not offer at all. A GPU that lists nothing (full, or
/// hosting another size) cannot be checked now; that is left to the hook at start.
fn check_creatable(sysfs: &Sysfs, vfs: &[PciAddress], want: &VfWant) -> Result<(), PlanError> {
    let mut seen: Vec<String> = Vec::new();
    for &vf in vfs {
        let siblings = sysfs
            .physfn(vf)
            .map_or_else(|| vec![vf], |pf| sysfs.vfs(pf));
        for s in siblings {
            for (id, name) in sysfs.creatable_vgpu_types(s).unwrap_or_default() {
                if want.matches(id, &name) {
                    return Ok(());
                }
                let l = format!("{name} ({id})");
                if !seen.contains(&l) {
                    seen.push(l);
                }
            }
        }
    }
    if seen.is_empty() {
        return Ok(());
    }
    Err(PlanError::NotCreatable {
        want: want.clone(),
        creatable: seen,
    })
}
