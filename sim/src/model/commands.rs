//! The outside world's moves: what a `sim/control` command does to the model.
//!
//! Some changes on a real host come from neither sysfs writes nor the clock: QEMU opens and
//! closes a device, a vendor probe fails or stalls, a GPU falls off the bus. Tests play those
//! parts through `sim/control`; [`crate::control`] parses the commands and this module carries
//! them out with the errnos a test can rely on (`ENOENT` for a device the host does not have,
//! `EBUSY` for a second hold). Keeping them apart from the sysfs rules keeps those rules about
//! what the kernel does.

use std::time::Duration;

use super::{Errno, MdevState, Model};
use crate::control::{self, Command};
use crate::host::Location;
use crate::kparse;

impl Model {
    /// A write to `sim/control`: parses every line first, then runs the commands in order,
    /// stopping at the first failure, whose errno the write returns.
    pub(super) fn write_control(&mut self, data: &[u8]) -> Result<(), Errno> {
        for c in &control::parse_write(data)? {
            self.run(c)?;
        }
        Ok(())
    }

    /// Carries out one command.
    pub fn run(&mut self, command: &Command) -> Result<(), Errno> {
        match command {
            Command::Hold(t) => self.hold(t),
            Command::Release(t) => self.release(t),
            Command::CreateEio(p, n) => self.fault_create_eio(p, *n),
            Command::CreateDelay(p, ms) => self.fault_create_delay(p, Duration::from_millis(*ms)),
            Command::RemoveEio(u) => self.fault_remove_eio(u),
            Command::Unplug(a) => self.unplug(a),
            Command::Plug(a) => self.plug(a),
        }
    }

    /// A VM opened the device (an mdev UUID or a PCI address): removes block, VF
    /// reconfiguration fails `EBUSY`. A second hold is `EBUSY` (VFIO devices open once).
    pub fn hold(&mut self, target: &str) -> Result<(), Errno> {
        if let Some(uuid) = kparse::parse_uuid(target) {
            let d = self
                .mdevs
                .get_mut(&uuid)
                .filter(|d| d.state != MdevState::Creating)
                .ok_or(libc::ENOENT)?;
            if d.state == MdevState::Removing {
                return Err(libc::ENODEV);
            }
            if d.held {
                return Err(libc::EBUSY);
            }
            d.held = true;
            d.cleanup_at = None;
            return Ok(());
        }
        let addr = kparse::parse_pci_address(target).ok_or(libc::EINVAL)?;
        let d = self.pci.get_mut(&addr).ok_or(libc::ENOENT)?;
        if d.held {
            return Err(libc::EBUSY);
        }
        d.held = true;
        Ok(())
    }

    /// The VM closed the device: a blocked remove completes now; otherwise the driver's
    /// self-clean-up (mdev) or reset-busy window (kernel-6.8+ VF) starts.
    pub fn release(&mut self, target: &str) -> Result<(), Errno> {
        let now = self.now;
        if let Some(uuid) = kparse::parse_uuid(target) {
            let d = self
                .mdevs
                .get(&uuid)
                .filter(|d| d.state != MdevState::Creating)
                .ok_or(libc::ENOENT)?;
            if !d.held {
                return Err(libc::EINVAL);
            }
            if d.state == MdevState::Removing {
                self.mdevs.remove(&uuid);
                return Ok(());
            }
            let cleanup = self
                .gpu_of_parent(&d.parent)
                .map_or(0, |gi| self.gpus[gi].spec.self_cleanup_ms);
            if let Some(d) = self.mdevs.get_mut(&uuid) {
                d.held = false;
                d.cleanup_at = (cleanup > 0).then(|| now + Duration::from_millis(cleanup));
            }
            return Ok(());
        }
        let addr = kparse::parse_pci_address(target).ok_or(libc::EINVAL)?;
        let d = self.pci.get_mut(&addr).ok_or(libc::ENOENT)?;
        if !d.held {
            return Err(libc::EINVAL);
        }
        d.held = false;
        d.released_at = Some(now);
        Ok(())
    }

    fn known_parent_name(&self, parent: &str) -> bool {
        kparse::parse_pci_address(parent).is_some()
            || self
                .gpus
                .iter()
                .any(|g| g.spec.location == Location::Virtual(parent.to_string()))
    }

    /// The next `count` creates on `parent` fail `EIO` (the vendor probe failing).
    pub fn fault_create_eio(&mut self, parent: &str, count: u32) -> Result<(), Errno> {
        let parent = kparse::parse_pci_address(parent).unwrap_or_else(|| parent.to_string());
        if !self.known_parent_name(&parent) {
            return Err(libc::ENOENT);
        }
        if count == 0 {
            self.create_eio.remove(&parent);
        } else {
            self.create_eio.insert(parent, count);
        }
        Ok(())
    }

    /// Creates on `parent` take `delay` before the device appears (zero: immediate again).
    pub fn fault_create_delay(&mut self, parent: &str, delay: Duration) -> Result<(), Errno> {
        let parent = kparse::parse_pci_address(parent).unwrap_or_else(|| parent.to_string());
        if !self.known_parent_name(&parent) {
            return Err(libc::ENOENT);
        }
        if delay.is_zero() {
            self.create_delay.remove(&parent);
        } else {
            self.create_delay.insert(parent, delay);
        }
        Ok(())
    }

    /// The next remove of `uuid` fails `EIO`.
    pub fn fault_remove_eio(&mut self, uuid: &str) -> Result<(), Errno> {
        let uuid = kparse::parse_uuid(uuid).ok_or(libc::EINVAL)?;
        self.remove_eio.insert(uuid);
        Ok(())
    }

    fn gpu_by_name(&self, name: &str) -> Result<usize, Errno> {
        let name = kparse::parse_pci_address(name).unwrap_or_else(|| name.to_string());
        self.gpus
            .iter()
            .position(|g| g.spec.location.name() == name)
            .ok_or(libc::ENOENT)
    }

    /// The GPU falls off the bus: its PF, VFs, parents and mdevs vanish at once
    /// (`ENODEV` if it is already gone, `ENOENT` if the host has no such device).
    pub fn unplug(&mut self, name: &str) -> Result<(), Errno> {
        let gi = self.gpu_by_name(name)?;
        if !self.gpus[gi].plugged {
            return Err(libc::ENODEV);
        }
        self.gpus[gi].plugged = false;
        self.pci.retain(|_, d| d.gpu != gi);
        self.reap_orphans();
        Ok(())
    }

    /// The GPU comes back as after a fresh probe: bound to its driver, the host file's VFs
    /// enabled, no mdevs; its parent registers `appear_after_ms` from now.
    pub fn plug(&mut self, name: &str) -> Result<(), Errno> {
        let gi = self.gpu_by_name(name)?;
        if self.gpus[gi].plugged {
            return Err(libc::EEXIST);
        }
        let g = &mut self.gpus[gi];
        g.plugged = true;
        g.appear_at = self.now + Duration::from_millis(g.spec.appear_after_ms);
        self.bring_up(gi);
        Ok(())
    }
}
