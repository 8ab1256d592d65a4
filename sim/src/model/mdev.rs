//! The mdev core's rules: `create`, `remove`, `available_instances`, NVIDIA's one-size rule.
//!
//! Follows drivers/vfio/mdev (`create_store`, `mdev_device_create`, `remove_store`): length and
//! UUID checks first (`EINVAL`), then the global duplicate check (`EEXIST`), then the core's own
//! per-parent count for drivers without `get_available` (`EUSERS`, kernel 6.1+), then the vendor
//! probe: NVIDIA's resource manager refuses a create it has no room for and the vfio glue turns
//! that into `EIO` (`nv_vgpu_vfio_create`); mtty and GVT-g refuse a full parent with `ENOSPC`.
//! NVIDIA time-slices a physical GPU between vGPUs of one framebuffer size, so capacity is
//! computed over every mdev sharing the physical GPU: the PF's own (classic) or all its VFs'
//! (SR-IOV, one vGPU per VF).

use std::time::Duration;

use super::{Errno, Mdev, MdevState, Model, Role, WriteOutcome};
use crate::host::{Available, Kind};
use crate::kparse;
use crate::typespec::TypeSpec;

/// Instances of `t` still creatable when vGPUs of sizes `used` share its physical GPU.
fn nvidia_room(used: &[u64], t: &TypeSpec) -> u32 {
    let fb = t.framebuffer_mb.unwrap_or(0);
    if used.iter().any(|&u| u != fb) {
        return 0;
    }
    let n = u32::try_from(used.len()).unwrap_or(u32::MAX);
    t.max_instances.saturating_sub(n)
}

impl Model {
    fn type_of(&self, parent: &str, type_id: &str) -> Option<&TypeSpec> {
        self.gpu_of_parent(parent)
            .and_then(|gi| self.gpus[gi].spec.types.iter().find(|t| t.id == type_id))
    }

    /// Framebuffer sizes of the vGPUs (in any state) sharing `parent`'s physical GPU.
    fn shared_sizes(&self, parent: &str) -> Vec<u64> {
        let pf_of = |name: &str| -> Option<String> {
            match &self.pci.get(name)?.role {
                Role::Vf { pf, .. } => Some(pf.clone()),
                Role::Pf { .. } => None,
            }
        };
        let my_pf = pf_of(parent);
        self.mdevs
            .values()
            .filter(|d| d.parent == parent || (my_pf.is_some() && pf_of(&d.parent) == my_pf))
            .filter_map(|d| self.type_of(&d.parent, &d.type_id))
            .map(|t| t.framebuffer_mb.unwrap_or(0))
            .collect()
    }

    /// `available_instances` of a type on a parent, with every rule applied; 0 for unknown ones.
    pub fn available_instances(&self, parent: &str, type_id: &str) -> u32 {
        let (Some(gi), Some(t)) = (self.gpu_of_parent(parent), self.type_of(parent, type_id))
        else {
            return 0;
        };
        match self.gpus[gi].spec.kind {
            Kind::NvidiaClassic => nvidia_room(&self.shared_sizes(parent), t),
            Kind::NvidiaSriov => {
                if self.mdevs.values().any(|d| d.parent == parent) {
                    0
                } else {
                    nvidia_room(&self.shared_sizes(parent), t).min(1)
                }
            }
            _ => self.generic_room(gi, parent, t),
        }
    }

    /// Room on a generic parent: a shared pool (the core's per-parent count, or the driver's
    /// own like mtty's ports) or, without one, each type's own count.
    fn generic_room(&self, gi: usize, parent: &str, t: &TypeSpec) -> u32 {
        let spec = &self.gpus[gi].spec;
        let here = self.mdevs.values().filter(|d| d.parent == parent);
        match spec.pool {
            Some(pool) => {
                let used: u32 = here
                    .map(|d| match spec.available {
                        Available::Core => 1,
                        Available::Driver => {
                            self.type_of(parent, &d.type_id).map_or(1, |x| x.units)
                        }
                    })
                    .sum();
                let free = pool.saturating_sub(used);
                match spec.available {
                    Available::Core => free,
                    Available::Driver => free / t.units.max(1),
                }
            }
            None => {
                let used = here.filter(|d| d.type_id == t.id).count();
                t.max_instances
                    .saturating_sub(u32::try_from(used).unwrap_or(u32::MAX))
            }
        }
    }

    /// A write to `mdev_supported_types/<type>/create`.
    pub(super) fn write_create(
        &mut self,
        parent: &str,
        type_id: &str,
        data: &[u8],
    ) -> WriteOutcome {
        match self.start_create(parent, type_id, data) {
            Ok((_, _, None)) => WriteOutcome::Done(Ok(())),
            Ok((uuid, serial, Some(delay))) => WriteOutcome::Delayed {
                uuid,
                serial,
                delay,
            },
            Err(e) => WriteOutcome::Done(Err(e)),
        }
    }

    fn start_create(
        &mut self,
        parent: &str,
        type_id: &str,
        data: &[u8],
    ) -> Result<(String, u64, Option<Duration>), Errno> {
        // The kernel checks only the length and the first 36 bytes: any 37th byte passes.
        if !(36..=37).contains(&data.len()) {
            return Err(libc::EINVAL);
        }
        let text = std::str::from_utf8(&data[..36]).map_err(|_| libc::EINVAL)?;
        let uuid = kparse::parse_uuid(text).ok_or(libc::EINVAL)?;
        if self.mdevs.contains_key(&uuid) {
            return Err(libc::EEXIST);
        }
        let gi = self.gpu_of_parent(parent).ok_or(libc::ENODEV)?;
        if !self.parent_registered(parent) || self.type_of(parent, type_id).is_none() {
            return Err(libc::ENODEV);
        }
        let spec = &self.gpus[gi].spec;
        let core_counts = !spec.kind.is_nvidia() && spec.available == Available::Core;
        let room = self.available_instances(parent, type_id);
        if core_counts && room == 0 {
            return Err(libc::EUSERS);
        }
        let full_errno = if spec.kind.is_nvidia() {
            libc::EIO
        } else {
            libc::ENOSPC
        };
        if let Some(n) = self.create_eio.get_mut(parent) {
            *n -= 1;
            if *n == 0 {
                self.create_eio.remove(parent);
            }
            return Err(libc::EIO);
        }
        if room == 0 {
            return Err(full_errno);
        }
        let delay = self.create_delay.get(parent).copied();
        let serial = self.alloc_serial();
        let iommu_group = self.alloc_group();
        self.mdevs.insert(
            uuid.clone(),
            Mdev {
                uuid: uuid.clone(),
                parent: parent.to_string(),
                type_id: type_id.to_string(),
                state: if delay.is_some() {
                    MdevState::Creating
                } else {
                    MdevState::Live
                },
                held: false,
                cleanup_at: None,
                params: String::new(),
                iommu_group,
                serial,
            },
        );
        Ok((uuid, serial, delay))
    }

    /// Completes a delayed create: the device appears, or `ENODEV` if its parent went away
    /// meanwhile.
    pub fn finish_create(&mut self, uuid: &str, serial: u64) -> Result<(), Errno> {
        match self.mdevs.get_mut(uuid) {
            Some(d) if d.serial == serial && d.state == MdevState::Creating => {
                d.state = MdevState::Live;
                Ok(())
            }
            _ => Err(libc::ENODEV),
        }
    }

    /// Whether a blocked remove of this device incarnation is still waiting for its release.
    pub fn remove_pending(&self, uuid: &str, serial: u64) -> bool {
        self.mdevs
            .get(uuid)
            .is_some_and(|d| d.serial == serial && d.state == MdevState::Removing)
    }

    /// A write to `<uuid>/remove`: any non-zero number removes, `0` does nothing, non-numbers
    /// are `EINVAL`; a device still being created is `EAGAIN` (`!mdev->active`), one already
    /// going away `ENODEV`. A held device blocks the remove
    /// until release (or refuses it with `EBUSY` when the GPU has `remove_blocks = false`).
    pub(super) fn write_remove(&mut self, uuid: &str, data: &[u8]) -> WriteOutcome {
        let value = match kparse::kstrtoull(data) {
            Ok(v) => v,
            Err(_) => return WriteOutcome::Done(Err(libc::EINVAL)),
        };
        if value == 0 {
            return WriteOutcome::Done(Ok(()));
        }
        let Some(d) = self.mdevs.get(uuid) else {
            return WriteOutcome::Done(Err(libc::ENODEV));
        };
        if d.state == MdevState::Creating {
            return WriteOutcome::Done(Err(libc::EAGAIN));
        }
        if d.state == MdevState::Removing {
            return WriteOutcome::Done(Err(libc::ENODEV));
        }
        if self.remove_eio.remove(uuid) {
            return WriteOutcome::Done(Err(libc::EIO));
        }
        if d.held {
            let blocks = self
                .gpu_of_parent(&d.parent)
                .is_none_or(|gi| self.gpus[gi].spec.remove_blocks);
            if !blocks {
                return WriteOutcome::Done(Err(libc::EBUSY));
            }
            let serial = d.serial;
            if let Some(d) = self.mdevs.get_mut(uuid) {
                d.state = MdevState::Removing;
            }
            return WriteOutcome::Blocked {
                uuid: uuid.to_string(),
                serial,
            };
        }
        self.mdevs.remove(uuid);
        WriteOutcome::Done(Ok(()))
    }
}
