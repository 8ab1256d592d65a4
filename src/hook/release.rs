//! `release end`: free what the domain's records say it owns, bounded, never failing.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::host::journal::VgpuMgrLog;
use crate::host::learned::{CleanupFacts, Seen};
use crate::host::state::Record;
use crate::host::state::{Device, Locked, Read, State, StateError};
use crate::host::sysfs::{Sysfs, SysfsError};
use crate::host::Host;
use crate::model::config::Timing;
use crate::model::domain::Domain;
use crate::model::names::MdevUuid;
use crate::model::pci::PciAddress;

/// Why the domain stopped, as libvirt 10.5+ passes it as `release end`'s last argument (older
/// libvirt passes `-`). Logged with the release; what is freed never depends on it: a domain
/// that was saved or migrated away holds its devices on this host no more than one destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// `-`: libvirt older than 10.5 does not say.
    NotGiven,
    /// One of libvirt's shutoff reasons (`shutdown`, `destroyed`, `crashed`, `migrated`,
    /// `saved`, `failed`, `from snapshot`, `daemon`, `unknown`).
    Known(&'static str),
    /// A reason this hook does not know yet (a later libvirt), printable.
    Other(String),
}

impl StopReason {
    const KNOWN: [&'static str; 9] = [
        "unknown",
        "shutdown",
        "destroyed",
        "crashed",
        "migrated",
        "saved",
        "failed",
        "from snapshot",
        "daemon",
    ];

    /// The reason from `release end`'s extra argument.
    pub fn from_arg(arg: &str) -> StopReason {
        match Self::KNOWN.iter().find(|k| **k == arg) {
            Some(k) => StopReason::Known(k),
            None if arg == "-" || arg.is_empty() => StopReason::NotGiven,
            None => StopReason::Other(crate::printable(arg, 40)),
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::NotGiven => f.write_str("reason not given"),
            StopReason::Known(k) => f.write_str(k),
            StopReason::Other(o) => write!(f, "{o} (a reason this vgpu-hook does not know)"),
        }
    }
}

/// How many times release waits out the lock's bound before it gives up (a stop cannot be
/// refused, so it tries longer than a start; what it leaves is for `vgpuctl reconcile`).
const LOCK_ROUNDS: u32 = 3;

/// The state lock, for release: a holder past the bound is logged by name and waited for
/// again, [`LOCK_ROUNDS`] times in all.
fn lock(host: &Host) -> Result<Locked, StateError> {
    let mut round = 1;
    loop {
        match host.state.lock() {
            Err(e @ StateError::Busy { .. }) if round < LOCK_ROUNDS => {
                log::warn!("release: {e}; waiting again ({round}/{LOCK_ROUNDS})");
                round += 1;
            }
            other => return other,
        }
    }
}

/// Whether a record belongs to the stopping domain: by UUID, or by name when the XML could not
/// be read (release then works from argv's domain name).
fn is_mine(r: &Record, dom: &Domain, domain_name: &str) -> bool {
    if dom.uuid.is_empty() {
        r.domain_name == domain_name
    } else {
        r.domain_uuid == dom.uuid
    }
}

/// The records of the stopping domain: by UUID, or by name when the XML could not be read.
fn records_of<'a>(state: &'a State, dom: &'a Domain, domain_name: &'a str) -> Vec<&'a Record> {
    if dom.uuid.is_empty() {
        state.named(domain_name).collect()
    } else {
        state.of_domain(&dom.uuid).collect()
    }
}

/// Whether `device` is still recorded for this domain.
fn still_ours(state: &State, dom: &Domain, domain_name: &str, device: &Device) -> bool {
    state
        .owner(device)
        .is_some_and(|r| is_mine(r, dom, domain_name))
}

/// `release end`: tear down what the domain's records say it owns. Never fails; problems go to
/// the log. A device the metadata names but that the hook never recorded (refused because it
/// had the wrong type, or made by someone else) is not ours to remove.
pub fn release(host: &Host, timing: &Timing, dom: &Domain, domain_name: &str) {
    release_selected(host, timing, dom, domain_name, |_| true);
}

/// [`release`] of the recorded devices `select` picks (vgpuctl's live detach frees one device
/// the same way a stop frees all). Returns the devices that are still there.
pub fn release_selected(
    host: &Host,
    timing: &Timing,
    dom: &Domain,
    domain_name: &str,
    select: impl Fn(&Device) -> bool,
) -> Vec<Device> {
    let mut held = Held::new(host, timing, domain_name);
    let Some(state) = held.state() else {
        return Vec::new();
    };
    let devices: Vec<(Device, bool)> = records_of(state, dom, domain_name)
        .into_iter()
        .filter(|r| select(&r.device))
        .map(|r| (r.device.clone(), r.created))
        .collect();
    let sysfs = &host.sysfs;
    wait_for_driver_cleanup(&mut held, timing, &devices);
    let mut left: Vec<Device> = Vec::new();
    for (device, created) in devices {
        let ours = |st: &State| still_ours(st, dom, domain_name, &device);
        let gone = match &device {
            Device::Mdev { uuid } => release_mdev(&mut held, timing, uuid, ours),
            Device::Vf { address } if created && sysfs.is_nvidia_vfio_vf(*address) => {
                release_nvidia_vf(&mut held, timing, *address, ours)
            }
            Device::Vf { .. } => true,
        };
        if gone {
            held.forget(&device, |r| is_mine(r, dom, domain_name));
        } else {
            left.push(device);
        }
    }
    if !left.is_empty() {
        if let Some((locked, _)) = held.take() {
            crate::host::counters::bump(locked, crate::host::counters::RELEASE_FAILED);
        }
    }
    held.let_go();
    left
}

/// The state under the lock while release reads what the domain holds and frees it device by
/// device: taken when needed, kept from one step to the next, saved and let go before any pause
/// (the wait for NVIDIA's driver, a retry's) and at the end. A stop that does not pause reads
/// the state once and writes it once however many devices it frees, and no other call can take
/// a device over between the check that it is still this domain's and its removal.
struct Held<'h> {
    host: &'h Host,
    timing: &'h Timing,
    domain_name: &'h str,
    now: Option<(Locked, State)>,
    /// A record was forgotten since the state was read.
    dirty: bool,
}

impl<'h> Held<'h> {
    fn new(host: &'h Host, timing: &'h Timing, domain_name: &'h str) -> Self {
        Held {
            host,
            timing,
            domain_name,
            now: None,
            dirty: false,
        }
    }

    /// The lock and the state, taken and read now if not held; `None` (logged) when either
    /// fails, and the device in question is left for `vgpuctl reconcile`.
    fn take(&mut self) -> Option<&mut (Locked, State)> {
        if self.now.is_none() {
            let (host, grace) = (self.host, self.timing.prepare_grace);
            let read = lock(host)
                .and_then(|l| super::load_state(host, &l, grace, Read::Lazy).map(|s| (l, s)));
            match read {
                Ok(held) => self.now = Some(held),
                Err(e) => log::error!("domain '{}': release: {e}", self.domain_name),
            }
        }
        self.now.as_mut()
    }

    /// The state, as [`Held::take`].
    fn state(&mut self) -> Option<&State> {
        self.take().map(|(_, state)| &*state)
    }

    /// Forgets `device`'s record if `whose` accepts it (saved when the lock is let go).
    fn forget(&mut self, device: &Device, whose: impl Fn(&Record) -> bool) {
        if let Some((_, state)) = self.take() {
            if state.remove_if(device, whose) {
                self.dirty = true;
            }
        }
    }

    /// Saves what was forgotten and lets the lock go (a failed save is logged: the records
    /// left name devices that are gone, which the next start or `vgpuctl reconcile` drops).
    fn let_go(&mut self) {
        let Some((locked, state)) = self.now.take() else {
            return;
        };
        if std::mem::take(&mut self.dirty) {
            if let Err(e) = locked.save(&state) {
                log::error!("domain '{}': release: {e}", self.domain_name);
            }
        }
    }
}

/// After a start that failed (libvirt 10.5+ says so at `release end`): for each of the domain's
/// NVIDIA vGPUs, what NVIDIA's vGPU manager said against it since the hook made it (see
/// [`crate::host::journal`]), for the journal beside the release. QEMU's error says only
/// `Input/output error`; the reason is in these lines. Read before the devices are freed, within
/// the journal's own bound, and only for a failed start.
pub fn failed_start_quotes(
    host: &Host,
    journalctl: &Path,
    dom: &Domain,
) -> Vec<(MdevUuid, Vec<String>)> {
    let Ok(state) = host.state.peek_lazy() else {
        return Vec::new();
    };
    let vgpus: Vec<(MdevUuid, u64)> = state
        .of_domain(&dom.uuid)
        .filter_map(|r| match &r.device {
            Device::Mdev { uuid } if is_nvidia_vgpu(&host.sysfs, uuid) => {
                Some((uuid.clone(), r.since))
            }
            _ => None,
        })
        .collect();
    let Some(first) = vgpus.iter().map(|(_, since)| *since).min() else {
        return Vec::new();
    };
    let log = VgpuMgrLog::read(journalctl, first.saturating_sub(5));
    vgpus
        .into_iter()
        .map(|(uuid, _)| {
            let lines = log.errors_about(&uuid);
            (uuid, lines)
        })
        .filter(|(_, lines)| !lines.is_empty())
        .collect()
}

/// Gives NVIDIA's driver the chance to remove the domain's vGPUs itself, all at once, as long as
/// this host has not learned that its driver version leaves that to us (see
/// [`crate::host::learned`]); records what the wait showed.
fn wait_for_driver_cleanup(held: &mut Held<'_>, timing: &Timing, devices: &[(Device, bool)]) {
    let sysfs = &held.host.sysfs;
    let vgpus: Vec<&MdevUuid> = devices
        .iter()
        .filter_map(|(d, _)| match d {
            Device::Mdev { uuid } if is_nvidia_vgpu(sysfs, uuid) => Some(uuid),
            _ => None,
        })
        .collect();
    if vgpus.is_empty() {
        return;
    }
    let driver = sysfs
        .nvidia_driver_version()
        .unwrap_or_else(|| "unknown".to_string());
    let Some(facts) = held.take().map(|(l, _)| CleanupFacts::load(l, &driver)) else {
        return;
    };
    if !facts.must_wait() {
        log::info!("not waiting for NVIDIA driver {driver} to clean up: it has left that to us at every stop seen");
        return;
    }
    held.let_go();
    // One window for all of them: when one vanishes the driver cleans up, and the others get
    // the rest of the same window.
    let deadline = Instant::now() + timing.cleanup_wait;
    let present = loop {
        let present = vgpus.iter().filter(|u| sysfs.mdev_exists(u)).count();
        if present == 0 || Instant::now() >= deadline {
            break present;
        }
        sleep(Duration::from_millis(50));
    };
    let seen = if present < vgpus.len() {
        log::info!("NVIDIA driver {driver} removed vGPUs by itself; stops keep waiting for it");
        Seen::CleanedItself
    } else {
        Seen::LeftToUs
    };
    if let Some((locked, _)) = held.take() {
        let mut facts = CleanupFacts::load(locked, &driver);
        facts.observe(seen);
        facts.save(locked);
    }
}

/// Whether an mdev is an NVIDIA vGPU (it has NVIDIA's `nvidia/` attribute directory).
fn is_nvidia_vgpu(sysfs: &Sysfs, uuid: &MdevUuid) -> bool {
    sysfs
        .vgpu_params_path(uuid)
        .parent()
        .is_some_and(|d| d.is_dir())
}

/// Removes an mdev with bounded retries. True when the mdev is gone. Each try checks ownership
/// and writes under the state lock, as for VFs: a prepare that takes the UUID over for another
/// domain cannot slip in between.
fn release_mdev(
    held: &mut Held<'_>,
    timing: &Timing,
    uuid: &MdevUuid,
    ours: impl Fn(&State) -> bool,
) -> bool {
    let sysfs = &held.host.sysfs;
    if !sysfs.mdev_exists(uuid) {
        log::info!("mdev {uuid} is gone already (removed by its driver)");
        return true;
    }
    for attempt in 1..=timing.retries {
        let Some(state) = held.state() else {
            return false;
        };
        if !ours(state) {
            log::info!("mdev {uuid} now belongs to another domain; left alone");
            return false;
        }
        match sysfs.remove_mdev(uuid, timing.remove_timeout) {
            Ok(()) => {}
            Err(e) if matches!(e.errno(), Some(libc::ENODEV) | Some(libc::ENOENT)) => {}
            Err(e @ SysfsError::Timeout { .. }) => {
                // The kernel waits for the holder; the pending write finishes the job then.
                log::error!("mdev {uuid}: {e}: still in use; it is removed once its user lets go");
                return false;
            }
            Err(e) => log::warn!(
                "mdev {uuid}: remove attempt {attempt}/{}: {e}",
                timing.retries
            ),
        }
        if !sysfs.mdev_exists(uuid) {
            log::info!("removed mdev {uuid}");
            return true;
        }
        held.let_go();
        if attempt < timing.retries {
            sleep(timing.retry_interval);
        }
    }
    log::error!("mdev {uuid} could not be removed; run `vgpuctl reconcile` once its user is gone");
    false
}

/// Resets a kernel-6.8+ VF's vGPU type to 0 with bounded retries, only while it is still ours.
/// Each try checks ownership and writes under the state lock, so a prepare that claims the VF
/// for another domain cannot slip in between; a try that blocks is not repeated (its write is
/// still pending in the kernel and lands once the VF is free).
fn release_nvidia_vf(
    held: &mut Held<'_>,
    timing: &Timing,
    vf: PciAddress,
    ours: impl Fn(&State) -> bool,
) -> bool {
    let sysfs = &held.host.sysfs;
    for attempt in 1..=timing.retries {
        let Some(state) = held.state() else {
            return false;
        };
        if !ours(state) {
            log::info!("VF {vf} now belongs to another domain; its vGPU type is left alone");
            return true;
        }
        match sysfs.current_vgpu_type(vf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if !sysfs.pci_exists(vf) => {
                log::info!("VF {vf} is gone ({e}); nothing to reset");
                return true;
            }
            Err(e) => {
                // Its type may still be set: the record stays for `vgpuctl reconcile`.
                log::error!("VF {vf}: {e}; its vGPU type is unknown, run `vgpuctl reconcile`");
                return false;
            }
        }
        match sysfs.set_current_vgpu_type(vf, 0, timing.remove_timeout) {
            Ok(()) => {
                log::info!("reset vGPU type of VF {vf}");
                return true;
            }
            Err(e @ SysfsError::Timeout { .. }) => {
                log::error!("VF {vf}: {e}; the reset lands once the VF is released");
                return false;
            }
            Err(e) => log::warn!("VF {vf}: reset attempt {attempt}/{}: {e}", timing.retries),
        }
        held.let_go();
        if attempt < timing.retries {
            sleep(timing.retry_interval);
        }
    }
    log::error!("VF {vf}: vGPU type could not be reset; run `vgpuctl reconcile`");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_libvirt_passes_is_known_and_a_dash_says_none() {
        for r in StopReason::KNOWN {
            assert_eq!(StopReason::from_arg(r), StopReason::Known(r));
        }
        assert_eq!(StopReason::from_arg("-"), StopReason::NotGiven);
        assert_eq!(
            StopReason::from_arg("from snapshot").to_string(),
            "from snapshot"
        );
    }

    #[test]
    fn a_later_libvirts_reason_is_kept_printable() {
        assert_eq!(
            StopReason::from_arg("new\nreason").to_string(),
            "new\\nreason (a reason this vgpu-hook does not know)"
        );
    }
}
