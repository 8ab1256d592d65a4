//! NVIDIA's mixed-size ("heterogeneous") vGPU mode and placements on kernel-6.8+ VFs.
//!
//! The mode is resource-manager state per physical GPU, set through NVML
//! (`nvmlDeviceSetVgpuHeterogeneousMode`, `nvidia-smi vgpu -i N -shm 1`): RM's
//! `deviceCtrlCmdGpuSetVgpuHeterogeneousMode_IMPL` (open-gpu-kernel-modules @df1c9a3d,
//! `src/nvidia/src/kernel/gpu/device_ctrl.c`) refuses it on a GPU without SR-IOV vGPU support
//! (NOT_SUPPORTED) and once any vGPU has been created (IN_USE: a VF with a type counts, running
//! or not). No registry key keeps it, so it is lost when the PF leaves the driver, which
//! `sriov-manage` does (measured by CubeCOS on RTX PRO 6000, bigstack-oss/cubecos#1338).
//! With the mode on, a GPU hosts several sizes at once, each vGPU on the placement the
//! [`crate::placement`] rules give its type; `creatable_vgpu_types` lists the types that keep
//! a free placement. NVML's side of it (the mode, each type's placements) is what
//! `sim/nvml/<PF>/` shows, for the stand-in `nvidia-smi`.

use super::{Errno, Model, Role};
use crate::kparse;
use crate::placement::{self, Generation};
use crate::typespec::TypeSpec;

/// One vGPU's slots: the VF holding it, its first slot and its size.
type Taken = (String, u32, u32);

impl Model {
    /// The GPU behind a PF address, if the PF is present.
    fn pf_gpu(&self, pf: &str) -> Option<usize> {
        let d = self.pci.get(pf)?;
        matches!(d.role, Role::Pf { .. }).then_some(d.gpu)
    }

    /// Whether mixed-size mode is on for the PF's GPU.
    pub fn mixed(&self, pf: &str) -> bool {
        self.pf_gpu(pf).is_some_and(|gi| self.gpus[gi].mixed)
    }

    /// The board's placement region: its largest profile's size in slots.
    fn region(&self, gi: usize) -> u32 {
        let top = self.gpus[gi]
            .spec
            .types
            .iter()
            .filter_map(|t| t.framebuffer_mb)
            .max()
            .unwrap_or(0);
        u32::try_from(top / 1024).unwrap_or(0)
    }

    /// Slots a vGPU of `t` takes on GPU `gi`.
    fn slots_of(&self, gi: usize, t: &TypeSpec) -> u32 {
        placement::size(t.framebuffer_mb.unwrap_or(0), self.region(gi))
    }

    /// The placement ids `t` supports on GPU `gi` in its current mode; empty on a board
    /// without placement ids.
    pub fn supported_placements(&self, gi: usize, t: &TypeSpec) -> Vec<u32> {
        let g = &self.gpus[gi];
        let Some(gen) = g.spec.generation else {
            return Vec::new();
        };
        placement::supported(
            gen,
            g.mixed,
            self.region(gi),
            self.slots_of(gi, t),
            t.max_instances,
        )
    }

    /// The vGPUs on the PF's VFs that hold a placement.
    fn taken(&self, pf: &str) -> Vec<Taken> {
        let Some(gi) = self.pf_gpu(pf) else {
            return Vec::new();
        };
        let types = &self.gpus[gi].spec.types;
        self.pci
            .values()
            .filter(|d| matches!(&d.role, Role::Vf { pf: p, .. } if p == pf))
            .filter_map(|d| {
                let s = d.vgpu.as_ref()?;
                let t = types.iter().find(|t| Some(&t.id) == s.current.as_ref())?;
                Some((d.address.clone(), s.placement?, self.slots_of(gi, t)))
            })
            .collect()
    }

    /// The ids of `t` whose slots no vGPU on the PF holds (the VF `except` left out).
    pub fn creatable_placements(&self, pf: &str, t: &TypeSpec, except: Option<&str>) -> Vec<u32> {
        let Some(gi) = self.pf_gpu(pf) else {
            return Vec::new();
        };
        let size = self.slots_of(gi, t);
        let taken = self.taken(pf);
        self.supported_placements(gi, t)
            .into_iter()
            .filter(|&id| {
                taken
                    .iter()
                    .filter(|(vf, ..)| Some(vf.as_str()) != except)
                    .all(|&(_, at, n)| !placement::overlaps(id, size, at, n))
            })
            .collect()
    }

    /// In mixed-size mode: the types a free VF of `pf` can take now (those that keep a free
    /// placement, below RM's 32 vGPUs per GPU).
    pub(super) fn mixed_creatable<'a>(
        &'a self,
        pf: &str,
        types: &'a [TypeSpec],
    ) -> Vec<&'a TypeSpec> {
        if self.taken(pf).len() >= placement::MAX_VGPUS as usize {
            return Vec::new();
        }
        types
            .iter()
            .filter(|t| !self.creatable_placements(pf, t, None).is_empty())
            .collect()
    }

    /// The placement a new vGPU of `t` on `pf` takes: the first creatable one
    /// (`kvgpumgrSetPlacementId` with no id asked), `None` on a board without placement ids.
    pub(super) fn first_placement(&self, pf: &str, t: &TypeSpec) -> Option<u32> {
        self.creatable_placements(pf, t, None).first().copied()
    }

    /// `sim/nvml/<PF>/vgpu_heterogeneous_mode`: `1` or `0`.
    pub fn heterogeneous_text(&self, pf: &str) -> Result<String, Errno> {
        self.pf_gpu(pf).ok_or(libc::ENODEV)?;
        Ok(format!("{}\n", u8::from(self.mixed(pf))))
    }

    /// A write of `0`/`1` to `sim/nvml/<PF>/vgpu_heterogeneous_mode`, as RM decides it:
    /// `ENODEV` while the PF is off its driver, `EOPNOTSUPP` on a board without the mode or
    /// without VFs (NOT_SUPPORTED), `EBUSY` once a vGPU exists on the GPU (IN_USE).
    pub(super) fn write_heterogeneous(&mut self, pf: &str, data: &[u8]) -> Result<(), Errno> {
        let on = match kparse::kstrtou16(data) {
            Ok(0) => false,
            Ok(1) => true,
            _ => return Err(libc::EINVAL),
        };
        let gi = self.pf_gpu(pf).ok_or(libc::ENODEV)?;
        let dev = &self.pci[pf];
        if dev.driver.is_none() || dev.driver != self.home_driver(dev) {
            return Err(libc::ENODEV);
        }
        let vfs = matches!(dev.role, Role::Pf { numvfs, .. } if numvfs > 0);
        if self.gpus[gi].spec.generation.is_none() || !vfs {
            return Err(libc::EOPNOTSUPP);
        }
        if !self.taken(pf).is_empty() || self.typed_vfs(pf) > 0 {
            return Err(libc::EBUSY);
        }
        self.gpus[gi].mixed = on;
        Ok(())
    }

    /// VFs of `pf` with a vGPU type set.
    fn typed_vfs(&self, pf: &str) -> usize {
        self.pci
            .values()
            .filter(|d| matches!(&d.role, Role::Vf { pf: p, .. } if p == pf))
            .filter(|d| d.vgpu.as_ref().is_some_and(|s| s.current.is_some()))
            .count()
    }

    /// `sim/nvml/<PF>/placements`: per type, NVML's `placementSize`, the supported ids
    /// (`nvmlDeviceGetVgpuTypeSupportedPlacements`) and the creatable ones
    /// (`...CreatablePlacements`): `<id> size=<n> supported=<a,b> creatable=<a>`.
    pub fn placements_text(&self, pf: &str) -> Result<String, Errno> {
        let gi = self.pf_gpu(pf).ok_or(libc::ENODEV)?;
        let list = |v: Vec<u32>| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let mut s = String::new();
        for t in &self.gpus[gi].spec.types {
            s.push_str(&format!(
                "{} size={} supported={} creatable={}\n",
                t.id,
                self.slots_of(gi, t),
                list(self.supported_placements(gi, t)),
                list(self.creatable_placements(pf, t, None)),
            ));
        }
        Ok(s)
    }

    /// A write to a VF's `nvidia/placement_id` (`kvgpumgrSetPlacementId`): the same id does
    /// nothing; `EPERM` while a VM holds the VF; `ENXIO` without a vGPU; `EINVAL` for an id the
    /// type cannot take now (INVALID_STATE) or a board without placement ids (NOT_SUPPORTED).
    pub(super) fn write_placement(&mut self, vf: &str, data: &[u8]) -> Result<(), Errno> {
        let id = u32::from(kparse::kstrtou16(data).map_err(|_| libc::EINVAL)?);
        let dev = self.pci.get(vf).ok_or(libc::ENODEV)?;
        if dev.held {
            return Err(libc::EPERM);
        }
        let Role::Vf { pf, .. } = &dev.role else {
            return Err(libc::ENODEV);
        };
        let slot = dev.vgpu.as_ref().ok_or(libc::ENODEV)?;
        let current = slot.current.as_deref().ok_or(libc::ENXIO)?;
        if slot.placement == Some(id) {
            return Ok(());
        }
        let t = self.gpus[dev.gpu]
            .spec
            .types
            .iter()
            .find(|t| t.id == current)
            .ok_or(libc::EINVAL)?;
        let others = self.creatable_placements(pf, t, Some(vf));
        let mine = slot.placement;
        let size = self.slots_of(dev.gpu, t);
        let free_of_me = |x: u32| mine.is_none_or(|m| !placement::overlaps(x, size, m, size));
        if !others.contains(&id) || !free_of_me(id) {
            return Err(libc::EINVAL);
        }
        if let Some(s) = self.pci.get_mut(vf).and_then(|d| d.vgpu.as_mut()) {
            s.placement = Some(id);
        }
        Ok(())
    }

    /// The PF left its driver: RM forgets the GPU's mixed-size mode.
    pub(super) fn forget_mode(&mut self, addr: &str) {
        if let Some(gi) = self.pf_gpu(addr) {
            self.gpus[gi].mixed = false;
        }
    }

    /// The generation of a PF's GPU, if it has placement ids.
    pub fn generation(&self, pf: &str) -> Option<Generation> {
        self.pf_gpu(pf).and_then(|gi| self.gpus[gi].spec.generation)
    }
}
