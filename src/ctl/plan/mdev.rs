//! Whether some configured parent offers an mdev type or profile.
//!
//! The check walks the configured GPUs once ([`Survey`]): the parents allowed by `--parent` and
//! their types, the GPUs that offer nothing now (which cannot be checked, only noted), and the
//! kernel-6.8+ NVIDIA GPUs, which offer the same profiles per VF rather than as mdev types. A
//! refusal lists what the allowed parents do offer, so the operator can pick from it.

use crate::alloc::inventory::{self, MdevGpu, MdevState};
use crate::host::sysfs::{MdevType, Sysfs};
use crate::model::config::Config;
use crate::model::domain::{MdevWant, VfWant};
use crate::model::names::ParentName;
use crate::model::pci::PciAddress;

use super::PlanError;

/// How the host offers a type that passed the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Offer {
    /// As mdevs; `unchecked` lists GPUs that offer nothing now and could not be checked.
    Mdevs {
        /// `key (why)` of each such GPU.
        unchecked: Vec<String>,
    },
    /// Only as a kernel-6.8+ NVIDIA VF type.
    VfType(VfWant),
}

/// Checks that some configured parent allowed by `parents` offers `want`.
pub(super) fn check(
    config: &Config,
    sysfs: &Sysfs,
    want: &MdevWant,
    parents: &[ParentName],
) -> Result<Offer, PlanError> {
    let gpus = inventory::mdev_gpus(config, sysfs);
    if gpus.is_empty() && config.vf_pfs().is_empty() {
        return Err(PlanError::NoGpus {
            config: config.path.clone(),
        });
    }
    check_parents_known(&gpus, parents)?;
    let survey = Survey::of(sysfs, &gpus, want, parents)?;
    if survey.found {
        return Ok(Offer::Mdevs {
            unchecked: survey.unavailable,
        });
    }
    survey.vfio_fallback(sysfs, want)
}

/// Refuses a `--parent` that names neither a configured GPU nor one of their parents.
fn check_parents_known(gpus: &[MdevGpu], parents: &[ParentName]) -> Result<(), PlanError> {
    for p in parents {
        let known = gpus.iter().any(|g| {
            g.key == p.as_str() || matches!(&g.state, MdevState::Parents(_, ps) if ps.contains(p))
        });
        if !known {
            return Err(PlanError::UnknownParent {
                parent: p.clone(),
                configured: gpus.iter().map(|g| g.key.clone()).collect(),
            });
        }
    }
    Ok(())
}

/// What the allowed GPUs offer now, gathered in one pass.
#[derive(Debug, Default)]
struct Survey {
    /// Whether an allowed parent has the type.
    found: bool,
    /// `key: type, type, ...` of each GPU that offers types.
    offered: Vec<String>,
    /// `key (why)` of each GPU that offers nothing now.
    unavailable: Vec<String>,
    /// Allowed kernel-6.8+ NVIDIA GPUs, whose types are per VF.
    vfio_gpus: Vec<PciAddress>,
    /// Whether `--parent` narrowed the GPUs.
    by_parent: bool,
}

impl Survey {
    fn of(
        sysfs: &Sysfs,
        gpus: &[MdevGpu],
        want: &MdevWant,
        parents: &[ParentName],
    ) -> Result<Survey, PlanError> {
        let mut survey = Survey {
            by_parent: !parents.is_empty(),
            ..Survey::default()
        };
        for gpu in gpus {
            match &gpu.state {
                MdevState::Parents(_, ps) => survey.parents(sysfs, gpu, ps, want, parents)?,
                MdevState::NotMdev => {
                    if let (Some(pf), true) = (gpu.pf, gpu.allowed_by(parents)) {
                        survey.vfio_gpus.push(pf);
                    }
                }
                other => survey
                    .unavailable
                    .push(format!("{} ({})", gpu.key, other.label())),
            }
        }
        Ok(survey)
    }

    /// One GPU's allowed parents: whether one has the type (exactly one type, or the profile is
    /// ambiguous), and every type they offer.
    fn parents(
        &mut self,
        sysfs: &Sysfs,
        gpu: &MdevGpu,
        ps: &[ParentName],
        want: &MdevWant,
        parents: &[ParentName],
    ) -> Result<(), PlanError> {
        let mut labels: Vec<String> = Vec::new();
        for p in ps.iter().filter(|p| gpu.allows_parent(parents, p)) {
            let types = sysfs.mdev_types(p);
            let m = inventory::matching_types(&types, want);
            if m.len() > 1 {
                return Err(PlanError::Ambiguous {
                    label: want.to_string(),
                    parent: p.clone(),
                    types: m.iter().map(|t| t.id.clone()).collect(),
                });
            }
            self.found |= !m.is_empty();
            for l in types.iter().map(type_label) {
                if !labels.contains(&l) {
                    labels.push(l);
                }
            }
        }
        if !labels.is_empty() {
            self.offered
                .push(format!("{}: {}", gpu.key, labels.join(", ")));
        }
        Ok(())
    }

    /// No mdev parent has the type: a kernel-6.8+ NVIDIA GPU may offer it per VF (by numeric id
    /// or profile name); otherwise the refusal, listing what is offered.
    fn vfio_fallback(mut self, sysfs: &Sysfs, want: &MdevWant) -> Result<Offer, PlanError> {
        let vf_want = match want {
            MdevWant::Profile(p) => Some(VfWant::Profile(p.clone())),
            MdevWant::Type(t) => t.as_str().parse::<u32>().ok().map(VfWant::Type),
        };
        let mut vfio_types: Vec<String> = Vec::new();
        if let Some(vw) = &vf_want {
            match vf_types(sysfs, &self.vfio_gpus, vw) {
                Ok(()) => return Ok(Offer::VfType(vw.clone())),
                Err(types) => vfio_types = types,
            }
        }
        if !vfio_types.is_empty() {
            for pf in &self.vfio_gpus {
                self.offered
                    .push(format!("{pf} (VF types): {}", vfio_types.join(", ")));
            }
        }
        let label = want.to_string();
        if self.offered.is_empty() && !self.unavailable.is_empty() {
            return Err(PlanError::CannotCheck {
                label,
                unavailable: self.unavailable,
            });
        }
        Err(PlanError::NotOffered {
            label,
            by_parent: self.by_parent,
            offered: self.offered,
            unavailable: self.unavailable,
        })
    }
}

/// `Ok` when a VF of one of the GPUs can create `want`, else every type they can create.
fn vf_types(sysfs: &Sysfs, pfs: &[PciAddress], want: &VfWant) -> Result<(), Vec<String>> {
    let mut seen: Vec<String> = Vec::new();
    for pf in pfs {
        for vf in sysfs.vfs(*pf) {
            for (id, name) in sysfs.creatable_vgpu_types(vf).unwrap_or_default() {
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
    Err(seen)
}

fn type_label(t: &MdevType) -> String {
    match &t.name {
        Some(n) => format!("{} ({})", n, t.id),
        None => t.id.clone(),
    }
}
