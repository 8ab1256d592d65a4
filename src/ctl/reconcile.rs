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
use crate::host::state::{Device, Liveness, Read, State, StateError};
use crate::host::sysfs::Sysfs;
use crate::host::Host;
use crate::model::config::{Config, Timing};
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

/// Plans the actions from a snapshot: leaked mdevs, leaked NVIDIA VF types, then the records
/// of domains that are gone.
pub fn plan(
    host: &Host,
    config: &Config,
    state: &State,
    live: &Liveness,
    proc: &Procfs,
) -> Vec<Action> {
    let snapshot = Snapshot {
        sysfs: &host.sysfs,
        state,
        live,
        proc,
    };
    let mut actions = snapshot.leaked_mdevs(config);
    actions.extend(snapshot.leaked_vf_types(config));
    actions.extend(snapshot.stale_records());
    actions
}

/// What a plan is made from: the devices, the records, who runs, who uses what.
struct Snapshot<'a> {
    sysfs: &'a Sysfs,
    state: &'a State,
    live: &'a Liveness,
    proc: &'a Procfs,
}

impl Snapshot<'_> {
    /// Why a device counts as leaked, or `None` when a running domain holds it.
    fn leak_reason(&self, device: &Device) -> Option<String> {
        match self.state.owner(device) {
            Some(r) if self.live.holds(r) => None,
            Some(r) => Some(format!(
                "held by domain '{}', which is not running",
                r.domain_name
            )),
            None => Some("no ownership record explains it".to_string()),
        }
    }

    /// Removes a leaked device, unless a QEMU process names it: then it is left alone.
    fn free_or_keep(&self, label: String, needle: &str, reason: String, free: Action) -> Action {
        match in_use(self.proc, needle) {
            Some(user) => Action::Keep {
                device: label,
                reason: format!("{reason}, but {user}"),
            },
            None => free,
        }
    }

    /// mdevs on configured parents that no running domain holds.
    fn leaked_mdevs(&self, config: &Config) -> Vec<Action> {
        let parents: BTreeSet<String> = inventory::mdev_gpus(config, self.sysfs)
            .into_iter()
            .filter_map(|g| match g.state {
                MdevState::Parents(_, ps) => Some(ps),
                _ => None,
            })
            .flatten()
            .map(|p| p.to_string())
            .collect();
        let mut actions = Vec::new();
        for m in self.sysfs.live_mdevs() {
            if !parents.contains(&m.parent) {
                continue;
            }
            let device = Device::Mdev {
                uuid: m.uuid.clone(),
            };
            let Some(reason) = self.leak_reason(&device) else {
                continue;
            };
            let free = Action::RemoveMdev {
                uuid: m.uuid.clone(),
                parent: m.parent.clone(),
                type_id: m.type_id.clone(),
                reason: reason.clone(),
            };
            actions.push(self.free_or_keep(
                format!("mdev {}", m.uuid),
                m.uuid.as_str(),
                reason,
                free,
            ));
        }
        actions
    }

    /// NVIDIA kernel-6.8+ VFs of configured PFs holding a vGPU type no running domain holds.
    fn leaked_vf_types(&self, config: &Config) -> Vec<Action> {
        let mut actions = Vec::new();
        for (pf, _) in config.vf_pfs() {
            for vf in self.sysfs.vfs(pf) {
                if !self.sysfs.is_nvidia_vfio_vf(vf) {
                    continue;
                }
                let current = match self.sysfs.current_vgpu_type(vf) {
                    Ok(t) if t != 0 => t,
                    _ => continue,
                };
                let Some(reason) = self.leak_reason(&Device::Vf { address: vf }) else {
                    continue;
                };
                let free = Action::ResetVf {
                    address: vf,
                    type_id: current,
                    reason: reason.clone(),
                };
                actions.push(self.free_or_keep(format!("VF {vf}"), &vf.to_string(), reason, free));
            }
        }
        actions
    }

    /// Records of domains that do not run.
    fn stale_records(&self) -> Vec<Action> {
        self.state
            .records
            .iter()
            .filter(|r| !self.live.holds(r))
            .map(|r| {
                let exists = match &r.device {
                    Device::Mdev { uuid } => self.sysfs.mdev_exists(uuid),
                    Device::Vf { address } => self.sysfs.pci_exists(*address),
                };
                let reason = if exists {
                    format!("domain '{}' is not running", r.domain_name)
                } else {
                    format!(
                        "domain '{}' is not running and the device is gone",
                        r.domain_name
                    )
                };
                Action::DropRecord {
                    device: r.device.clone(),
                    domain: r.domain_name.clone(),
                    reason,
                }
            })
            .collect()
    }
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
    let live = host.liveness(config.timing.prepare_grace);
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
    let mut state =
        crate::hook::load_state(host, &locked, config.timing.prepare_grace, Read::Whole)?;
    let actions = plan(host, config, &state, &live, proc);
    let outcomes = carry_out(&host.sysfs, &config.timing, &mut state, actions);
    if outcomes
        .iter()
        .any(|o| matches!(o.action, Action::DropRecord { .. }) && o.error.is_none())
    {
        locked.save(&state)?;
    }
    Ok(Report { dry_run, outcomes })
}

/// Carries the actions out in order. A record is dropped only when its device was freed (or
/// needed no freeing), so a failed removal is retried by the next run.
fn carry_out(
    sysfs: &Sysfs,
    timing: &Timing,
    state: &mut State,
    actions: Vec<Action>,
) -> Vec<Outcome> {
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut outcomes = Vec::new();
    for action in actions {
        let error = match &action {
            Action::RemoveMdev { uuid, .. } => remove_mdev(sysfs, timing, uuid),
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
    outcomes
}

/// Removes an mdev and waits (bounded) for it to go; why not, if it did not.
fn remove_mdev(sysfs: &Sysfs, timing: &Timing, uuid: &MdevUuid) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::*;
    use crate::host::state::{Record, StateDir};

    const UUID: &str = "6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b";

    /// A host whose `mtty` parent has one live mdev, and whose `/proc` has no process.
    fn host(root: &Path) -> Host {
        let sys = root.join("sys");
        let types = sys.join("class/mdev_bus/mtty/mdev_supported_types/mtty-1");
        fs::create_dir_all(&types).unwrap();
        let dev = sys.join("devices/virtual/mtty").join(UUID);
        fs::create_dir_all(&dev).unwrap();
        symlink(&types, dev.join("mdev_type")).unwrap();
        fs::create_dir_all(sys.join("bus/mdev/devices")).unwrap();
        symlink(&dev, sys.join("bus/mdev/devices").join(UUID)).unwrap();
        fs::create_dir_all(root.join("run")).unwrap();
        fs::create_dir_all(root.join("proc")).unwrap();
        Host {
            sysfs: Sysfs::new(root),
            procfs: Procfs::new(&root.join("proc")),
            state: StateDir::new(&root.join("state")),
            libvirt_run_dir: root.join("run"),
            config_path: root.join("config.toml"),
        }
    }

    fn gone_domains_record() -> Record {
        Record {
            domain_uuid: "u".into(),
            domain_name: "gone".into(),
            device: Device::Vf {
                address: "05:00.1".parse().unwrap(),
            },
            parent: "0000:05:00.0".into(),
            type_id: None,
            since: 0,
            created: false,
            numa_note: None,
        }
    }

    #[test]
    fn an_unexplained_mdev_is_removed_and_a_gone_domains_record_dropped() {
        let t = tempfile::tempdir().unwrap();
        let host = host(t.path());
        let config = Config::parse("mdev_parents = [\"mtty\"]\n", Path::new("c")).unwrap();
        let state = State::from_records(vec![gone_domains_record()]);
        let live = Liveness::with_procfs(&host.libvirt_run_dir, &host.procfs, Duration::ZERO);
        let actions = plan(&host, &config, &state, &live, &host.procfs);
        assert_eq!(
            actions,
            [
                Action::RemoveMdev {
                    uuid: MdevUuid::parse(UUID).unwrap(),
                    parent: "mtty".into(),
                    type_id: "mtty-1".into(),
                    reason: "no ownership record explains it".into(),
                },
                Action::DropRecord {
                    device: gone_domains_record().device,
                    domain: "gone".into(),
                    reason: "domain 'gone' is not running and the device is gone".into(),
                },
            ]
        );
    }

    #[test]
    fn an_mdev_a_qemu_process_names_is_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let host = host(t.path());
        let pid = t.path().join("proc/4242");
        fs::create_dir_all(&pid).unwrap();
        let argv = format!("/usr/bin/qemu-system-x86_64\0-name\0guest=web\0-device\0vfio-pci,sysfsdev=/sys/bus/mdev/devices/{UUID}\0");
        fs::write(pid.join("cmdline"), argv).unwrap();
        let config = Config::parse("mdev_parents = [\"mtty\"]\n", Path::new("c")).unwrap();
        let live = Liveness::with_procfs(&host.libvirt_run_dir, &host.procfs, Duration::ZERO);
        let actions = plan(&host, &config, &State::default(), &live, &host.procfs);
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(
            matches!(&actions[0], Action::Keep { device, reason }
                if device == &format!("mdev {UUID}") && reason.ends_with("but QEMU pid 4242 (domain 'web') uses it")),
            "{actions:?}"
        );
    }
}
