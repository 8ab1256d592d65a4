//! NVIDIA's kernel-6.8+ interface: per-VF `nvidia/{creatable_vgpu_types,current_vgpu_type}`.
//!
//! Without mdev, a vGPU is a VF with a type written to `current_vgpu_type`. What a VF may take
//! depends on its siblings: the physical GPU still hosts one framebuffer size at a time, so
//! `creatable_vgpu_types` lists only the types that fit now and shrinks to its header on a full
//! card. Writes fail `EBUSY` while a VM holds the VF, and clearing (`0`) also fails `EBUSY` for
//! `reset_busy_ms` after the VM let go, as the driver is still tearing the vGPU down then.

use std::time::Duration;

use super::{Errno, Model, Role};
use crate::host::{Kind, TypeSpec};
use crate::kparse;

/// Header line of `creatable_vgpu_types`.
pub const CREATABLE_HEADER: &str = "ID    : vGPU Name";

impl Model {
    /// Whether a VF shows the `nvidia/` directory: a kernel-6.8+ NVIDIA VF bound to its driver,
    /// once the GPU's `appear_after_ms` has passed.
    pub fn vfio_dir_visible(&self, addr: &str) -> bool {
        let Some(dev) = self.pci.get(addr) else {
            return false;
        };
        let g = &self.gpus[dev.gpu];
        dev.vgpu.is_some()
            && g.spec.kind == Kind::NvidiaVfio
            && self.now >= g.appear_at
            && dev.driver.is_some()
            && dev.driver == self.home_driver(dev)
    }

    /// The types `current_vgpu_type` accepts on this VF now.
    pub fn creatable_types(&self, addr: &str) -> Vec<&TypeSpec> {
        let Some(dev) = self.pci.get(addr) else {
            return Vec::new();
        };
        let Role::Vf { pf, .. } = &dev.role else {
            return Vec::new();
        };
        if dev.vgpu.as_ref().is_none_or(|s| s.current.is_some()) {
            return Vec::new();
        }
        let types = &self.gpus[dev.gpu].spec.types;
        let fb_of = |id: &str| {
            types
                .iter()
                .find(|t| t.id == id)
                .and_then(|t| t.framebuffer_mb)
                .unwrap_or(0)
        };
        let used: Vec<u64> = self
            .pci
            .values()
            .filter(|d| matches!(&d.role, Role::Vf { pf: p, .. } if p == pf))
            .filter_map(|d| d.vgpu.as_ref()?.current.as_deref())
            .map(fb_of)
            .collect();
        let n = u32::try_from(used.len()).unwrap_or(u32::MAX);
        types
            .iter()
            .filter(|t| {
                let fb = t.framebuffer_mb.unwrap_or(0);
                used.iter().all(|&u| u == fb) && t.max_instances > n
            })
            .collect()
    }

    /// The text of `creatable_vgpu_types`: NVIDIA's header, then `<id padded to 6> : <name>`.
    pub fn creatable_text(&self, addr: &str) -> String {
        let mut s = format!("{CREATABLE_HEADER}\n");
        for t in self.creatable_types(addr) {
            s.push_str(&format!(
                "{:<6}: {}\n",
                t.id,
                t.name.as_deref().unwrap_or("")
            ));
        }
        s
    }

    /// A write to `current_vgpu_type`.
    pub(super) fn write_current_type(&mut self, addr: &str, data: &[u8]) -> Result<(), Errno> {
        let value = kparse::kstrtoull(data).map_err(|_| libc::EINVAL)?;
        let dev = self.pci.get(addr).ok_or(libc::ENODEV)?;
        let busy_for = Duration::from_millis(self.gpus[dev.gpu].spec.reset_busy_ms);
        if dev.held {
            return Err(libc::EBUSY);
        }
        if value == 0 {
            if dev.released_at.is_some_and(|t| self.now < t + busy_for) {
                return Err(libc::EBUSY);
            }
            if let Some(slot) = self.pci.get_mut(addr).and_then(|d| d.vgpu.as_mut()) {
                slot.current = None;
            }
            return Ok(());
        }
        let id = value.to_string();
        if !self.creatable_types(addr).iter().any(|t| t.id == id) {
            return Err(libc::EINVAL);
        }
        if let Some(slot) = self.pci.get_mut(addr).and_then(|d| d.vgpu.as_mut()) {
            slot.current = Some(id);
        }
        Ok(())
    }
}
