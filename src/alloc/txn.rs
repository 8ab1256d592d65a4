//! What one `prepare` did, so that a refusal can undo it.
//!
//! `prepare` is all or nothing: every device it created, every VF type it set and every PF whose
//! VFs it switched on is written down here as it happens, and undone if a later request of the
//! same domain cannot be met (or the state cannot be saved). Undo goes by kind, against the order
//! in which kinds depend on each other: the devices first (mdevs, including creates still
//! pending, then VF types), the PFs whose VFs were switched on last, since an mdev or a type may
//! live on one of those VFs. Within a kind the steps are independent, so they go in the order made.

use crate::host::sriov::Switch;
use crate::host::sysfs::Sysfs;
use crate::model::config::{Config, Timing};
use crate::model::names::MdevUuid;
use crate::model::pci::PciAddress;

/// What one `prepare` did, so it can be undone.
#[derive(Default)]
pub struct Txn {
    pub created_mdevs: Vec<MdevUuid>,
    /// Creates that did not return in time: (writer pid, uuid). Undo waits for them, bounded.
    pub pending_creates: Vec<(i32, MdevUuid)>,
    pub set_vf_types: Vec<PciAddress>,
    /// PFs whose VFs this call enabled from zero, and how.
    pub enabled_vfs: Vec<(PciAddress, Switch)>,
}

impl Txn {
    /// Undoes everything recorded, logging what could not be undone.
    pub fn undo(&self, sysfs: &Sysfs, config: &Config) {
        let timing = &config.timing;
        for (pid, uuid) in &self.pending_creates {
            if !crate::host::sysfs::wait_child(*pid, timing.device_wait) {
                log::error!("create of mdev {uuid} still pending; if it appears, `vgpuctl reconcile` removes it");
            } else if sysfs.mdev_exists(uuid) {
                self.remove(sysfs, timing, uuid);
            }
        }
        for uuid in &self.created_mdevs {
            self.remove(sysfs, timing, uuid);
        }
        for &vf in &self.set_vf_types {
            match sysfs.set_current_vgpu_type(vf, 0, timing.remove_timeout) {
                Ok(()) => log::info!("rolled back vGPU type of VF {vf}"),
                Err(e) => {
                    log::error!("rollback of VF {vf} type failed: {e}; run `vgpuctl reconcile`")
                }
            }
        }
        for (pf, switch) in &self.enabled_vfs {
            match switch.disable(sysfs, config, *pf) {
                Ok(()) => log::info!("disabled the VFs of {pf} again"),
                Err(e) => log::error!("could not disable the VFs of {pf} again: {e}"),
            }
        }
    }

    fn remove(&self, sysfs: &Sysfs, timing: &Timing, uuid: &MdevUuid) {
        match sysfs.remove_mdev(uuid, timing.remove_timeout) {
            Ok(()) => log::info!("rolled back mdev {uuid}"),
            Err(e) => log::error!("rollback of mdev {uuid} failed: {e}; run `vgpuctl reconcile`"),
        }
    }
}
