//! Turning an operator's "attach a P40-2Q" or "attach a VF" into concrete metadata entries and
//! `<hostdev>` elements, checked against what this host offers.
//!
//! Attaching only edits a definition; the device is made when the domain starts. But a request
//! that can never be met (a profile no configured GPU has, a PF that is not configured, a VF
//! another domain already names) should be refused now, with the list of what does exist, rather
//! than at the next `virsh start`. Capacity is not checked: it changes by the minute and the hook
//! checks it at start. mdevs get fresh random UUIDs; VFs are picked among those no other domain
//! refers to.
//!
//! [`mdev`] checks a type or profile against the configured parents, [`vf`] names or picks whole
//! VFs, and [`error`] holds the typed reasons for a refusal.

mod error;
mod mdev;
mod vf;

use std::collections::BTreeMap;

pub use error::{PlanError, Shortfall};

use crate::ctl::xmledit::NewDevice;
use crate::host::sysfs::Sysfs;
use crate::model::config::Config;
use crate::model::domain::{MdevRequest, MdevWant, NumaWish, VfWant};
use crate::model::names::{MdevUuid, Params, ParentName};
use crate::model::pci::PciAddress;

/// What the operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Mediated devices.
    Mdev(MdevAsk),
    /// Whole VFs.
    Vf(VfAsk),
}

/// Mediated devices of one type or profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevAsk {
    /// Type or profile.
    pub want: MdevWant,
    /// How many.
    pub count: u32,
    /// Allowed parents (config keys or parent names, as typed).
    pub parents: Vec<String>,
    /// NVIDIA `vgpu_params`.
    pub params: Option<Params>,
}

/// Whole VFs, picked or named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VfAsk {
    /// How many.
    pub count: u32,
    /// Restrict to this PF.
    pub pf: Option<PciAddress>,
    /// This exact VF.
    pub address: Option<PciAddress>,
    /// vGPU type for NVIDIA kernel-6.8+ VFs.
    pub want: Option<VfWant>,
    /// The domain's NUMA wishes: picked VFs come from PFs on its nodes first.
    pub numa: NumaWish,
}

impl Ask {
    /// The same ask, for a domain with these NUMA wishes.
    pub fn for_domain(&self, numa: &NumaWish) -> Ask {
        match self {
            Ask::Vf(v) => Ask::Vf(VfAsk {
                numa: numa.clone(),
                ..v.clone()
            }),
            other => other.clone(),
        }
    }
}

/// Devices to add, and what the operator should know about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The devices.
    pub devices: Vec<NewDevice>,
    /// Remarks worth printing (a VF that does not exist yet, a check that could not be done).
    pub notes: Vec<String>,
}

/// VFs other domains refer to (by definition or by holding them now), with the domain's name.
pub type Taken = BTreeMap<PciAddress, String>;

/// Plans `ask`. Without `config` (or with `check` false) nothing is checked against the host:
/// for preparing definitions elsewhere, or before the vendor driver is up.
pub fn plan(
    config: Option<&Config>,
    sysfs: &Sysfs,
    ask: &Ask,
    taken: &Taken,
    check: bool,
) -> Result<Plan, PlanError> {
    let planner = Planner {
        config,
        sysfs,
        taken,
        check,
    };
    match ask {
        Ask::Mdev(m) => planner.mdevs(m),
        Ask::Vf(v) => planner.vfs(v),
    }
}

/// What every planning step looks at: the host as the config describes it, the VFs already
/// spoken for, and whether to check at all.
struct Planner<'a> {
    config: Option<&'a Config>,
    sysfs: &'a Sysfs,
    taken: &'a Taken,
    check: bool,
}

impl Planner<'_> {
    /// The config to check against, when checks are on.
    fn checked_config(&self) -> Option<&Config> {
        self.config.filter(|_| self.check)
    }

    /// mdevs with fresh UUIDs, after checking that some allowed parent offers the type. A type
    /// that only kernel-6.8+ NVIDIA GPUs offer becomes a request for whole VFs.
    fn mdevs(&self, ask: &MdevAsk) -> Result<Plan, PlanError> {
        let parents = parse_parents(&ask.parents)?;
        let mut plan = Plan::default();
        if let Some(config) = self.checked_config() {
            match mdev::check(config, self.sysfs, &ask.want, &parents)? {
                mdev::Offer::Mdevs { unchecked } if !unchecked.is_empty() => plan.notes.push(
                    format!("not checked (not available now): {}", unchecked.join(", ")),
                ),
                mdev::Offer::Mdevs { .. } => {}
                mdev::Offer::VfType(want) => return self.mdevs_as_vfs(ask, &parents, want),
            }
        }
        plan.devices = (0..ask.count)
            .map(|_| {
                NewDevice::Mdev(MdevRequest {
                    uuid: MdevUuid::new_random(),
                    want: ask.want.clone(),
                    parents: parents.clone(),
                    params: ask.params.clone(),
                })
            })
            .collect();
        Ok(plan)
    }

    /// An mdev request whose type only exists as a kernel-6.8+ VF type, planned as VFs.
    fn mdevs_as_vfs(
        &self,
        ask: &MdevAsk,
        parents: &[ParentName],
        want: VfWant,
    ) -> Result<Plan, PlanError> {
        if ask.params.is_some() || !parents.is_empty() {
            return Err(PlanError::MdevOptionsOnVf {
                want: ask.want.clone(),
            });
        }
        let mut plan = self.vfs(&VfAsk {
            count: ask.count,
            want: Some(want),
            ..VfAsk::default()
        })?;
        plan.notes.insert(
            0,
            format!(
                "'{}' is offered by kernel-6.8+ NVIDIA GPUs as whole VFs; attaching VFs",
                ask.want
            ),
        );
        Ok(plan)
    }
}

/// The `--parent` values, split at commas, without repeats.
fn parse_parents(raw: &[String]) -> Result<Vec<ParentName>, PlanError> {
    let mut out: Vec<ParentName> = Vec::new();
    for item in raw {
        for name in ParentName::parse_list(item).map_err(PlanError::BadParent)? {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
