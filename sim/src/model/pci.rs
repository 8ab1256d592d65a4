//! PCI rules: SR-IOV enabling (`sriov_numvfs`) and driver binding.
//!
//! Follows drivers/pci/iov.c `sriov_numvfs_store` in its order of checks (`EINVAL` when
//! `kstrtou16` fails, `ERANGE` above the total, a no-op for the current count, `ENOENT` without
//! a driver or without an `sriov_configure` callback, `EBUSY` when changing one non-zero count
//! to another). Which drivers have the callback: `pci-pf-stub` (`pci_sriov_configure_simple`),
//! `vfio-pci` only with its `enable_sriov` parameter, a GPU's own driver per `sriov_configurable`
//! (NVIDIA's `nv_pci_driver` has none, hence `sriov-manage`). Also the driver core's
//! driver core's `bind`/`unbind`/`new_id`/`drivers_probe`, where a device matches a driver by
//! `driver_override` alone when it is set, else by the driver's own id table (here: the driver
//! the host file gives the device) or ids added through `new_id`.

use super::{Errno, Model, PciDevice, Role, VgpuSlot};
use crate::host::Kind;
use crate::kparse;

impl Model {
    /// The driver whose id table matches the device: the host file's driver for the PF or VFs.
    pub(super) fn home_driver(&self, dev: &PciDevice) -> Option<String> {
        let spec = &self.gpus[dev.gpu].spec;
        match dev.role {
            Role::Pf { .. } => spec.driver.clone(),
            Role::Vf { .. } => spec.vf_driver.clone(),
        }
    }

    fn driver_matches(&self, drv: &str, dev: &PciDevice) -> bool {
        if let Some(o) = &dev.driver_override {
            return o == drv;
        }
        self.home_driver(dev).as_deref() == Some(drv)
            || self
                .dyn_ids
                .get(drv)
                .is_some_and(|ids| ids.contains(&(dev.vendor, dev.device)))
    }

    /// The driver a probe binds the device to, if any registered driver matches.
    fn probe(&self, dev: &PciDevice) -> Option<String> {
        let drivers = self.drivers();
        if let Some(o) = &dev.driver_override {
            return drivers.contains(o).then(|| o.clone());
        }
        if let Some(h) = self.home_driver(dev).filter(|h| drivers.contains(h)) {
            return Some(h);
        }
        drivers.into_iter().find(|d| self.driver_matches(d, dev))
    }

    /// Creates VFs 0..n of `pf` (its count must be 0), probing drivers if autoprobe is on.
    pub(super) fn enable_vfs(&mut self, pf: &str, n: u16) {
        let Some(p) = self.pci.get(pf) else { return };
        let gi = p.gpu;
        let autoprobe = matches!(
            p.role,
            Role::Pf {
                autoprobe: true,
                ..
            }
        );
        let numa = p.numa_node;
        let spec = self.gpus[gi].spec.clone();
        for index in 0..n {
            let Some(addr) = spec.vf_address(index) else {
                continue;
            };
            let iommu_group = self.alloc_group();
            let mut vf = PciDevice {
                address: addr.clone(),
                gpu: gi,
                role: Role::Vf {
                    pf: pf.to_string(),
                    index,
                },
                vendor: spec.vendor,
                device: spec.vf_device,
                class: spec.class,
                numa_node: numa,
                driver: None,
                driver_override: None,
                iommu_group,
                held: false,
                released_at: None,
                vgpu: (spec.kind == Kind::NvidiaVfio).then(VgpuSlot::default),
            };
            if autoprobe {
                vf.driver = self.probe(&vf);
            }
            self.pci.insert(addr, vf);
        }
        if let Some(Role::Pf { numvfs, .. }) = self.pci.get_mut(pf).map(|p| &mut p.role) {
            *numvfs = n;
        }
    }

    fn vfs_of(&self, pf: &str) -> Vec<String> {
        self.pci
            .values()
            .filter(|d| matches!(&d.role, Role::Vf { pf: p, .. } if p == pf))
            .map(|d| d.address.clone())
            .collect()
    }

    /// A write to `sriov_numvfs`, checked in the kernel's order.
    pub(super) fn write_numvfs(&mut self, pf: &str, data: &[u8]) -> Result<(), Errno> {
        let n = kparse::kstrtou16(data).map_err(|_| libc::EINVAL)?;
        let dev = self.pci.get(pf).ok_or(libc::ENODEV)?;
        let spec = &self.gpus[dev.gpu].spec;
        let Role::Pf { numvfs, .. } = dev.role else {
            return Err(libc::ENODEV);
        };
        if n > spec.totalvfs {
            return Err(libc::ERANGE);
        }
        if n == numvfs {
            return Ok(());
        }
        let Some(driver) = &dev.driver else {
            return Err(libc::ENOENT);
        };
        let configurable = if Some(driver) == spec.driver.as_ref() {
            spec.sriov_configurable
        } else {
            match driver.as_str() {
                "pci-pf-stub" => true,
                "vfio-pci" => self.vfio_pci_enable_sriov,
                _ => false,
            }
        };
        if !configurable {
            return Err(libc::ENOENT);
        }
        if n == 0 {
            let vfs = self.vfs_of(pf);
            let busy = vfs.iter().any(|v| {
                self.pci.get(v).is_some_and(|d| d.held)
                    || self.mdevs.values().any(|m| &m.parent == v && m.held)
            });
            if busy {
                return Err(libc::EBUSY);
            }
            for v in vfs {
                self.pci.remove(&v);
            }
            if let Some(Role::Pf { numvfs, .. }) = self.pci.get_mut(pf).map(|p| &mut p.role) {
                *numvfs = 0;
            }
            self.reap_orphans();
            return Ok(());
        }
        if numvfs != 0 {
            return Err(libc::EBUSY);
        }
        self.enable_vfs(pf, n);
        Ok(())
    }

    /// A write to `sriov_drivers_autoprobe` (`kstrtobool`).
    pub(super) fn write_autoprobe(&mut self, pf: &str, data: &[u8]) -> Result<(), Errno> {
        let v = kparse::kstrtobool(data)?;
        match self.pci.get_mut(pf).map(|p| &mut p.role) {
            Some(Role::Pf { autoprobe, .. }) => {
                *autoprobe = v;
                Ok(())
            }
            _ => Err(libc::ENODEV),
        }
    }

    /// A write to `driver_override`: a driver name, or empty / a lone newline to clear.
    pub(super) fn write_driver_override(&mut self, addr: &str, data: &[u8]) -> Result<(), Errno> {
        if data.len() >= 4095 {
            return Err(libc::EINVAL);
        }
        let v = String::from_utf8_lossy(kparse::strip_newline(data)).into_owned();
        let dev = self.pci.get_mut(addr).ok_or(libc::ENODEV)?;
        dev.driver_override = (!v.is_empty()).then_some(v);
        Ok(())
    }

    fn device_named(&self, data: &[u8]) -> Result<String, Errno> {
        let name = String::from_utf8_lossy(kparse::strip_newline(data)).into_owned();
        if self.pci.contains_key(&name) {
            Ok(name)
        } else {
            Err(libc::ENODEV)
        }
    }

    /// `drivers/<drv>/bind`: `ENODEV` for an unknown or non-matching device, `EBUSY` if bound.
    pub(super) fn write_bind(&mut self, drv: &str, data: &[u8]) -> Result<(), Errno> {
        let addr = self.device_named(data)?;
        let dev = &self.pci[&addr];
        if !self.driver_matches(drv, dev) {
            return Err(libc::ENODEV);
        }
        if dev.driver.is_some() {
            return Err(libc::EBUSY);
        }
        if let Some(d) = self.pci.get_mut(&addr) {
            d.driver = Some(drv.to_string());
        }
        Ok(())
    }

    /// `drivers/<drv>/unbind`: `ENODEV` unless the device is bound to this driver. An mdev
    /// parent unbound from its vendor driver unregisters and loses its mdevs.
    pub(super) fn write_unbind(&mut self, drv: &str, data: &[u8]) -> Result<(), Errno> {
        let addr = self.device_named(data)?;
        let d = self.pci.get_mut(&addr).ok_or(libc::ENODEV)?;
        if d.driver.as_deref() != Some(drv) {
            return Err(libc::ENODEV);
        }
        d.driver = None;
        self.forget_mode(&addr);
        self.reap_orphans();
        Ok(())
    }

    /// `drivers/<drv>/new_id`: `"vvvv dddd ..."` in hex; `EEXIST` if the driver already matches
    /// that id; then every unbound matching device is bound, as `driver_attach` does.
    pub(super) fn write_new_id(&mut self, drv: &str, data: &[u8]) -> Result<(), Errno> {
        let id = parse_id(data).ok_or(libc::EINVAL)?;
        let static_match = self
            .pci
            .values()
            .any(|d| (d.vendor, d.device) == id && self.home_driver(d).as_deref() == Some(drv));
        let ids = self.dyn_ids.entry(drv.to_string()).or_default();
        if static_match || !ids.insert(id) {
            return Err(libc::EEXIST);
        }
        let unbound: Vec<String> = self
            .pci
            .values()
            .filter(|d| d.driver.is_none() && self.driver_matches(drv, d))
            .map(|d| d.address.clone())
            .collect();
        for a in unbound {
            if let Some(d) = self.pci.get_mut(&a) {
                d.driver = Some(drv.to_string());
            }
        }
        Ok(())
    }

    /// `drivers/<drv>/remove_id`: `"vvvv dddd"` in hex; `ENODEV` unless `new_id` added it.
    /// Devices already bound stay bound (the kernel does not unbind them).
    pub(super) fn write_remove_id(&mut self, drv: &str, data: &[u8]) -> Result<(), Errno> {
        let id = parse_id(data).ok_or(libc::EINVAL)?;
        let removed = self.dyn_ids.get_mut(drv).is_some_and(|ids| ids.remove(&id));
        if removed {
            Ok(())
        } else {
            Err(libc::ENODEV)
        }
    }

    /// The binary `config` of a function: a type-0 header and, on a PF with SR-IOV, the SR-IOV
    /// extended capability at 0x100 with the First VF Offset and VF Stride the VFs follow
    /// (PCIe spec 9.3.3; the kernel computes VF addresses from them). A VF reads vendor and
    /// device as 0xffff there, as real VFs do (the A2 VF capture).
    pub(super) fn config_space(&self, addr: &str) -> Result<Vec<u8>, Errno> {
        let d = self.pci.get(addr).ok_or(libc::ENODEV)?;
        let spec = &self.gpus[d.gpu].spec;
        let mut c = vec![0u8; 4096];
        let put16 =
            |c: &mut Vec<u8>, at: usize, v: u16| c[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let (vendor, device) = match d.role {
            Role::Vf { .. } => (0xffff, 0xffff),
            Role::Pf { .. } => (d.vendor, d.device),
        };
        put16(&mut c, 0x00, vendor);
        put16(&mut c, 0x02, device);
        put16(&mut c, 0x06, 0x0010); // status: capabilities list
        c[0x09..0x0c].copy_from_slice(&d.class.to_le_bytes()[..3]);
        c[0x34] = 0x40;
        c[0x40..0x44].copy_from_slice(&[0x10, 0x00, 0x02, 0x00]); // PCI Express capability v2
        if let (Role::Pf { numvfs, .. }, true) = (&d.role, spec.kind.has_sriov()) {
            c[0x100..0x104].copy_from_slice(&0x0001_0010u32.to_le_bytes());
            put16(&mut c, 0x108, u16::from(*numvfs > 0)); // control: VF Enable
            put16(&mut c, 0x10c, spec.totalvfs);
            put16(&mut c, 0x10e, spec.totalvfs);
            put16(&mut c, 0x110, *numvfs);
            put16(&mut c, 0x114, spec.vf_offset);
            put16(&mut c, 0x116, spec.vf_stride);
            put16(&mut c, 0x11a, spec.vf_device);
        }
        Ok(c)
    }

    /// `sys/bus/pci/drivers_probe`: binds an unbound device to the driver a probe finds (if
    /// none matches the write still succeeds, as in the kernel).
    pub(super) fn write_drivers_probe(&mut self, data: &[u8]) -> Result<(), Errno> {
        let addr = self.device_named(data)?;
        let dev = &self.pci[&addr];
        if dev.driver.is_none() {
            let drv = self.probe(dev);
            if let Some(d) = self.pci.get_mut(&addr) {
                d.driver = drv;
            }
        }
        Ok(())
    }
}

/// A `"vvvv dddd ..."` id as `new_id` and `remove_id` take it (hex, optional `0x`).
fn parse_id(data: &[u8]) -> Option<(u16, u16)> {
    let text = String::from_utf8_lossy(kparse::strip_newline(data)).into_owned();
    let mut fields = text.split_whitespace().map(|f| {
        let f = f
            .strip_prefix("0x")
            .or_else(|| f.strip_prefix("0X"))
            .unwrap_or(f);
        u32::from_str_radix(f, 16).ok()
    });
    let (Some(Some(vendor)), Some(Some(device))) = (fields.next(), fields.next()) else {
        return None;
    };
    Some(((vendor & 0xffff) as u16, (device & 0xffff) as u16))
}
