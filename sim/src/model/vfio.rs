//! NVIDIA's kernel-6.8+ interface: per-VF `nvidia/{creatable_vgpu_types,current_vgpu_type}`.
//!
//! Without mdev, a vGPU is a VF with a type written to `current_vgpu_type`. What a VF may take
//! depends on its siblings: the physical GPU still hosts one framebuffer size at a time, so
//! `creatable_vgpu_types` lists only the types that fit now and shrinks to its header on a full
//! card. Writes fail `EPERM` while a VM holds the VF (NVIDIA's `usage_count` check), and a
//! clear (`0`) right after the VM let go waits for the driver's vGPU task like the real driver
//! (`VGPU_EXIT_TIMEOUT_MILLISECONDS`) before it succeeds or fails `EBUSY`.

use std::time::Duration;

use super::{Errno, Model, Role, WriteOutcome};
use crate::host::Kind;
use crate::kparse;
use crate::typespec::TypeSpec;

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
        if self.mixed(pf) {
            return self.mixed_creatable(pf, types);
        }
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

    /// A write to `current_vgpu_type`, as NVIDIA's proprietary vfio-pci-core driver decides
    /// it: `kstrtol(buf, 10)` (`EINVAL`); `EPERM` while a VM holds the VF (`usage_count`);
    /// `0` on a VF without a vGPU `EPERM` ("No vGPU exists"); a type on a VF that has one
    /// `EPERM`; a type that cannot be created now `EIO` (the resource manager refuses it).
    /// Clearing within `reset_busy_ms` of the release waits for the vGPU task like the driver
    /// (up to `exit_timeout_ms`), then succeeds or fails `EBUSY`.
    pub(super) fn write_current_type(&mut self, addr: &str, data: &[u8]) -> WriteOutcome {
        let done = WriteOutcome::Done;
        let value = match kparse::kstrtol10(data) {
            Ok(v) => v,
            Err(_) => return done(Err(libc::EINVAL)),
        };
        let Some(dev) = self.pci.get(addr) else {
            return done(Err(libc::ENODEV));
        };
        if dev.held {
            return done(Err(libc::EPERM));
        }
        let has_vgpu = dev.vgpu.as_ref().is_some_and(|s| s.current.is_some());
        if value == 0 {
            if !has_vgpu {
                return done(Err(libc::EPERM));
            }
            let left = self.busy_left(addr);
            if left.is_zero() {
                return done(self.finish_clear(addr));
            }
            let timeout = Duration::from_millis(self.gpus[dev.gpu].spec.exit_timeout_ms);
            return WriteOutcome::Waiting {
                addr: addr.to_string(),
                delay: left.min(timeout),
            };
        }
        if has_vgpu {
            return done(Err(libc::EPERM));
        }
        let id = value.to_string();
        let Some(t) = self
            .creatable_types(addr)
            .into_iter()
            .find(|t| t.id == id && value > 0)
            .cloned()
        else {
            return done(Err(libc::EIO));
        };
        let placement = match &dev.role {
            Role::Vf { pf, .. } => self.first_placement(pf, &t),
            Role::Pf { .. } => None,
        };
        if let Some(slot) = self.pci.get_mut(addr).and_then(|d| d.vgpu.as_mut()) {
            slot.current = Some(id);
            slot.params.clear();
            slot.placement = placement;
        }
        done(Ok(()))
    }

    /// How much of the VF's reset-busy window (after its last release) is left.
    fn busy_left(&self, addr: &str) -> Duration {
        let Some(dev) = self.pci.get(addr) else {
            return Duration::ZERO;
        };
        let busy_for = Duration::from_millis(self.gpus[dev.gpu].spec.reset_busy_ms);
        dev.released_at.map_or(Duration::ZERO, |t| {
            (t + busy_for).saturating_duration_since(self.now)
        })
    }

    /// Completes a clear of `current_vgpu_type` once its wait is over: the vGPU is destroyed if
    /// the driver has finished with it, else `EBUSY` (and `EPERM` if a VM opened the VF again).
    pub fn finish_clear(&mut self, addr: &str) -> Result<(), Errno> {
        let dev = self.pci.get(addr).ok_or(libc::ENODEV)?;
        if dev.held {
            return Err(libc::EPERM);
        }
        if !self.busy_left(addr).is_zero() {
            return Err(libc::EBUSY);
        }
        let slot = self
            .pci
            .get_mut(addr)
            .and_then(|d| d.vgpu.as_mut())
            .ok_or(libc::ENODEV)?;
        slot.current = None;
        slot.params.clear();
        slot.placement = None;
        Ok(())
    }
}
