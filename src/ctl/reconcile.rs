//! Cleaning up after crashes: devices on configured GPUs that no running domain holds are removed
//! and ownership records of domains that are gone are dropped.
//!
//! The hook frees devices at `release end`, but a killed daemon, a hook bug or a host that lost
//! power in the wrong moment can leave an mdev (or an NVIDIA VF's vGPU type) behind, and with it
//! one instance less for everybody. Reconcile works under the same host-wide lock as the hook, so
//! it never races a start. It removes only devices of configured GPUs, and never one that a QEMU
//! process still names on its command line, whatever the state says: a device in use is worth
//! more than a tidy state.

use std::collections::BTreeSet;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::alloc::inventory::{self, MdevState};
use crate::host::procfs::Procfs;
use crate::host::state::{Device, Liveness, State, StateError};
use crate::host::Host;
use crate::model::config::Config;
use crate::model::names::MdevUuid;
use crate::model::pci::PciAddress;

/// One thing reconcile does (or would do, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Remove a leaked mdev.
    RemoveMdev {
        /// Its UUID.
        uuid: MdevUuid,
        /// Its parent.
        parent: String,
        /// Its type.
        type_id: String,
        /// Why it counts as leaked.
        reason: String,
    },
    /// Reset a leaked NVIDIA VF vGPU type to 0.
    ResetVf {
        /// The VF.
        address: PciAddress,
        /// The type it holds.
        type_id: u32,
        /// Why it counts as leaked.
        reason: String,
    },
    /// Drop an ownership record.
    DropRecord {
        /// The device.
        device: Device,
        /// The domain it named.
        domain: String,
        /// Why.
        reason: String,
    },
    /// Leave a device alone although nothing explains it.
    Keep {
        /// The device.
        device: String,
        /// Why.
        reason: String,
    },
}

/// An action and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What.
    pub action: Action,
    /// `None` on success (or in a dry run), else why it failed.
    pub error: Option<String>,
}

/// Everything reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// In order.
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// Whether some action failed.
    pub fn failed(&self) -> bool {
        self.outcomes.iter().any(|o| o.error.is_some())
    }

    /// One line per outcome.
    pub fn lines(&self) -> Vec<String> {
        if self.outcomes.is_empty() {
            return vec![
                "nothing to do: every device on the configured GPUs is accounted for".into(),
            ];
        }
        self.outcomes
            .iter()
            .map(|o| {
                let (past, inf, what) = match &o.action {
                    Action::RemoveMdev {
                        uuid,
                        parent,
                        type_id,
                        reason,
                    } => (
                        "removed",
                        "remove",
                        format!("mdev {uuid} ({type_id} on {parent}): {reason}"),
                    ),
                    Action::ResetVf {
                        address,
                        type_id,
                        reason,
                    } => (
                        "reset",
                        "reset",
                        format!("vGPU type {type_id} of VF {address}: {reason}"),
                    ),
                    Action::DropRecord {
                        device,
                        domain,
                        reason,
                    } => (
                        "dropped",
                        "drop",
                        format!("record of {device} for domain '{domain}': {reason}"),
                    ),
                    Action::Keep { device, reason } => {
                        ("left alone", "leave alone", format!("{device}: {reason}"))
                    }
                };
                match &o.error {
                    Some(e) => format!("FAILED to {inf} {what}: {e}"),
                    None if self.dry_run => format!("would {inf} {what}"),
                    None => format!("{past} {what}"),
                }
            })
            .collect()
    }
}

fn in_use(proc: &Procfs, needle: &str) -> Option<String> {
    proc.qemu_using(needle).map(|(pid, name)| match name {
        Some(n) => format!("QEMU pid {pid} (domain '{n}') uses it"),
        None => format!("QEMU pid {pid} uses it"),
    })
}

/// Plans the actions from a snapshot.
pub fn plan(
    host: &Host,
    config: &Config,
    state: &State,
    live: &Liveness,
    proc: &Procfs,
) -> Vec<Action> {
    let sysfs = &host.sysfs;
    let mut actions = Vec::new();
    let mut torn_down: BTreeSet<String> = BTreeSet::new();
    let parents: BTreeSet<String> = inventory::mdev_gpus(config, sysfs)
        .into_iter()
        .filter_map(|g| match g.state {
            MdevState::Parents(_, ps) => Some(ps),
            _ => None,
        })
        .flatten()
        .map(|p| p.to_string())
        .collect();

    for m in sysfs.live_mdevs() {
        if !parents.contains(&m.parent) {
            continue;
        }
        let rec = state.owner(&Device::Mdev {
            uuid: m.uuid.clone(),
        });
        let reason = match rec {
            Some(r) if live.holds(r) => continue,
            Some(r) => format!("held by domain '{}', which is not running", r.domain_name),
            None => "no ownership record explains it".to_string(),
        };
        if let Some(user) = in_use(proc, m.uuid.as_str()) {
            actions.push(Action::Keep {
                device: format!("mdev {}", m.uuid),
                reason: format!("{reason}, but {user}"),
            });
            continue;
        }
        torn_down.insert(m.uuid.to_string());
        actions.push(Action::RemoveMdev {
            uuid: m.uuid.clone(),
            parent: m.parent.clone(),
            type_id: m.type_id.clone(),
            reason,
        });
    }

    for (pf, _) in inventory::vf_pfs(config) {
        for vf in sysfs.vfs(pf) {
            if !sysfs.is_nvidia_vfio_vf(vf) {
                continue;
            }
            let Ok(current) = sysfs.current_vgpu_type(vf) else {
                continue;
            };
            if current == 0 {
                continue;
            }
            let reason = match state.owner(&Device::Vf { address: vf }) {
                Some(r) if live.holds(r) => continue,
                Some(r) => format!("held by domain '{}', which is not running", r.domain_name),
                None => "no ownership record explains it".to_string(),
            };
            if let Some(user) = in_use(proc, &vf.to_string()) {
                actions.push(Action::Keep {
                    device: format!("VF {vf}"),
                    reason: format!("{reason}, but {user}"),
                });
                continue;
            }
            torn_down.insert(vf.to_string());
            actions.push(Action::ResetVf {
                address: vf,
                type_id: current,
                reason,
            });
        }
    }

    for r in &state.records {
        if live.holds(r) {
            continue;
        }
        let exists = match &r.device {
            Device::Mdev { uuid } => sysfs.mdev_exists(uuid),
            Device::Vf { address } => sysfs.pci_exists(*address),
        };
        let reason = if exists {
            format!("domain '{}' is not running", r.domain_name)
        } else {
            format!(
                "domain '{}' is not running and the device is gone",
                r.domain_name
            )
        };
        actions.push(Action::DropRecord {
            device: r.device.clone(),
            domain: r.domain_name.clone(),
            reason,
        });
    }
    actions
}

fn device_key(d: &Device) -> String {
    match d {
        Device::Mdev { uuid } => uuid.to_string(),
        Device::Vf { address } => address.to_string(),
    }
}

/// Runs reconcile: plans under the state lock and, unless `dry_run`, carries the plan out.
pub fn run(
    host: &Host,
    config: &Config,
    proc: &Procfs,
    dry_run: bool,
) -> Result<Report, StateError> {
    let live = Liveness::new(&host.libvirt_run_dir, config.timing.prepare_grace);
    if dry_run {
        let state = host.state.peek()?;
        let outcomes = plan(host, config, &state, &live, proc)
            .into_iter()
            .map(|action| Outcome {
                action,
                error: None,
            })
            .collect();
        return Ok(Report { dry_run, outcomes });
    }
    let locked = host.state.lock()?;
    let mut state = locked.load()?;
    let actions = plan(host, config, &state, &live, proc);
    let timing = &config.timing;
    let sysfs = &host.sysfs;
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut outcomes = Vec::new();
    for action in actions {
        let error = match &action {
            Action::RemoveMdev { uuid, .. } => {
                let r = sysfs.remove_mdev(uuid, timing.remove_timeout);
                let deadline = Instant::now() + timing.device_wait;
                while r.is_ok() && sysfs.mdev_exists(uuid) && Instant::now() < deadline {
                    sleep(Duration::from_millis(20));
                }
                match r {
                    Err(e) => Some(e.to_string()),
                    Ok(()) if sysfs.mdev_exists(uuid) => Some(format!(
                        "still present {} s after remove",
                        timing.device_wait.as_secs()
                    )),
                    Ok(()) => None,
                }
            }
            Action::ResetVf { address, .. } => sysfs
                .set_current_vgpu_type(*address, 0, timing.remove_timeout)
                .err()
                .map(|e| e.to_string()),
            Action::DropRecord { device, .. } => {
                if failed.contains(&device_key(device)) {
                    Some("its device could not be freed; kept for the next run".into())
                } else {
                    state.remove(device);
                    None
                }
            }
            Action::Keep { .. } => None,
        };
        if error.is_some() {
            match &action {
                Action::RemoveMdev { uuid, .. } => {
                    failed.insert(uuid.to_string());
                }
                Action::ResetVf { address, .. } => {
                    failed.insert(address.to_string());
                }
                _ => {}
            }
        }
        outcomes.push(Outcome { action, error });
    }
    if outcomes
        .iter()
        .any(|o| matches!(o.action, Action::DropRecord { .. }) && o.error.is_none())
    {
        locked.save(&state)?;
    }
    Ok(Report { dry_run, outcomes })
}
