//! Attribute files: what each one reads as, who may open it, and which rule a write goes to.
//!
//! The filesystem layout names files by [`Attr`]; this module is the single place that turns an
//! attribute into text (`%u\n`, `0x10de\n`, NVIDIA's tables) and routes a write to the rule that
//! decides it. Modes mirror sysfs: read-only `0444`, write-only `0200`, read-write `0644`; the
//! kernel refuses to open an attribute in a direction it does not support with `EACCES`.

use super::{Errno, Model, Role, WriteOutcome};

/// An attribute of a PCI function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PciAttr {
    /// `vendor`.
    Vendor,
    /// `device`.
    Device,
    /// `class`.
    Class,
    /// `numa_node`.
    NumaNode,
    /// `driver_override`.
    DriverOverride,
    /// `sriov_totalvfs`.
    SriovTotalvfs,
    /// `sriov_numvfs`.
    SriovNumvfs,
    /// `sriov_drivers_autoprobe`.
    SriovAutoprobe,
    /// `sriov_offset`: routing-id offset of the first VF.
    SriovOffset,
    /// `sriov_stride`: routing-id distance between VFs.
    SriovStride,
    /// `sriov_vf_device`: the VFs' device id.
    SriovVfDevice,
    /// `config`: the binary PCI configuration space.
    Config,
}

/// An attribute of an mdev type directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeAttr {
    /// `name`.
    Name,
    /// `description`.
    Description,
    /// `device_api`.
    DeviceApi,
    /// `available_instances`.
    AvailableInstances,
    /// `create`.
    Create,
}

/// An attribute of a kernel-6.8+ NVIDIA VF's `nvidia/` directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VfioAttr {
    /// `creatable_vgpu_types`.
    Creatable,
    /// `current_vgpu_type`.
    Current,
    /// `vgpu_params`.
    Params,
    /// `gpu_instance_id`.
    GpuInstanceId,
    /// `placement_id`.
    PlacementId,
    /// `warm_update`.
    WarmUpdate,
}

/// An attribute of a PCI driver directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverAttr {
    /// `bind`.
    Bind,
    /// `unbind`.
    Unbind,
    /// `new_id`.
    NewId,
    /// `remove_id`.
    RemoveId,
}

/// Every kind of regular file in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attr {
    /// An attribute of the PCI function at this address.
    Pci(String, PciAttr),
    /// An attribute of a type of a parent.
    Type {
        /// Parent device name.
        parent: String,
        /// Type id.
        type_id: String,
        /// Which file.
        attr: TypeAttr,
    },
    /// `<uuid>/remove`.
    MdevRemove(String),
    /// `<uuid>/nvidia/vgpu_params`.
    MdevParams(String),
    /// A file of a kernel-6.8+ NVIDIA VF.
    Vfio(String, VfioAttr),
    /// A file of a PCI driver.
    Driver(String, DriverAttr),
    /// `sys/bus/pci/drivers_probe`.
    DriversProbe,
    /// `sys/module/<name>/initstate`.
    ModuleInitstate(String),
    /// A read-only file whose text the host file fixes (a driver's version, a NUMA node's CPUs
    /// and distances).
    Fixed(String),
    /// `sim/control`.
    Control,
    /// `sim/events`.
    Events,
    /// `sim/nvml/<PF>/vgpu_heterogeneous_mode`: NVML's mixed-size mode of the GPU (read and
    /// set by the stand-in `nvidia-smi`).
    Heterogeneous(String),
    /// `sim/nvml/<PF>/placements`: NVML's placement lists of each type.
    Placements(String),
    /// `sim/requests`: how many filesystem requests have been served, so a benchmark can tell
    /// the simulator's own share of a measured time from its client's.
    Requests,
}

impl Attr {
    /// Whether the file can be opened for reading.
    pub fn readable(&self) -> bool {
        !matches!(
            self,
            Attr::Type {
                attr: TypeAttr::Create,
                ..
            } | Attr::MdevRemove(_)
                | Attr::Driver(..)
                | Attr::DriversProbe
                | Attr::Control
        )
    }

    /// Whether the file can be opened for writing.
    pub fn writable(&self) -> bool {
        match self {
            Attr::Pci(_, a) => matches!(
                a,
                PciAttr::DriverOverride | PciAttr::SriovNumvfs | PciAttr::SriovAutoprobe
            ),
            Attr::Type { attr, .. } => *attr == TypeAttr::Create,
            Attr::MdevRemove(_)
            | Attr::MdevParams(_)
            | Attr::Driver(..)
            | Attr::DriversProbe
            | Attr::Control => true,
            Attr::Vfio(_, a) => matches!(
                a,
                VfioAttr::Current | VfioAttr::Params | VfioAttr::PlacementId
            ),
            Attr::Heterogeneous(_) => true,
            Attr::Placements(_) => false,
            Attr::ModuleInitstate(_) | Attr::Fixed(_) | Attr::Events | Attr::Requests => false,
        }
    }

    /// Permission bits, as sysfs shows them.
    pub fn mode(&self) -> u16 {
        match (self.readable(), self.writable()) {
            (true, true) => 0o644,
            (true, false) => 0o444,
            (false, _) => 0o200,
        }
    }
}

/// NVIDIA's `VGPU_CONFIG_PARAMS_MAX_LENGTH` (nvidia-vgpu-vfio): longer writes are `E2BIG`.
pub const VGPU_PARAMS_MAX: usize = 1024;

/// What NVIDIA's `vgpu_params_store` keeps of a write: `snprintf(params, count, "%s", buf)`
/// holds at most `count - 1` bytes and stops at a NUL, so the last byte written is dropped
/// (`frame_rate_limiter=0` stores `frame_rate_limiter=`; with a trailing `\n` it stores the
/// value). No syntax check: nvidia-vgpu-mgr parses the text when the VM starts.
fn stored_params(data: &[u8]) -> Result<String, Errno> {
    if data.len() > VGPU_PARAMS_MAX {
        return Err(libc::E2BIG);
    }
    let kept = &data[..data.len().saturating_sub(1)];
    let kept = kept.split(|&b| b == 0).next().unwrap_or(&[]);
    Ok(String::from_utf8_lossy(kept).into_owned())
}

/// `vgpu_params_show`: `"%s\n"`, a lone newline when empty.
fn params_text(p: &str) -> String {
    format!("{p}\n")
}

impl Model {
    /// The contents of an attribute now; `ENODEV` if its object is gone, `EIO` for files
    /// that cannot be read.
    pub fn read(&self, attr: &Attr) -> Result<String, Errno> {
        Ok(match attr {
            Attr::Pci(addr, a) => {
                let d = self.pci.get(addr).ok_or(libc::ENODEV)?;
                let spec = &self.gpus[d.gpu].spec;
                match a {
                    PciAttr::Vendor => format!("0x{:04x}\n", d.vendor),
                    PciAttr::Device => format!("0x{:04x}\n", d.device),
                    PciAttr::Class => format!("0x{:06x}\n", d.class),
                    PciAttr::NumaNode => format!("{}\n", d.numa_node),
                    PciAttr::DriverOverride => {
                        format!("{}\n", d.driver_override.as_deref().unwrap_or("(null)"))
                    }
                    PciAttr::SriovTotalvfs => format!("{}\n", spec.totalvfs),
                    PciAttr::SriovNumvfs => match d.role {
                        Role::Pf { numvfs, .. } => format!("{numvfs}\n"),
                        Role::Vf { .. } => return Err(libc::ENODEV),
                    },
                    PciAttr::SriovAutoprobe => match d.role {
                        Role::Pf { autoprobe, .. } => format!("{}\n", u8::from(autoprobe)),
                        Role::Vf { .. } => return Err(libc::ENODEV),
                    },
                    PciAttr::SriovOffset => format!("{}\n", spec.vf_offset),
                    PciAttr::SriovStride => format!("{}\n", spec.vf_stride),
                    PciAttr::SriovVfDevice => format!("{:x}\n", spec.vf_device),
                    // Binary: served by `read_bytes`.
                    PciAttr::Config => return Err(libc::EIO),
                }
            }
            Attr::Type {
                parent,
                type_id,
                attr,
            } => {
                let t = self
                    .parent_types(parent)
                    .iter()
                    .find(|t| &t.id == type_id)
                    .ok_or(libc::ENODEV)?;
                match attr {
                    TypeAttr::Name => format!("{}\n", t.name.as_deref().unwrap_or("")),
                    TypeAttr::Description => {
                        format!("{}\n", t.description.as_deref().unwrap_or(""))
                    }
                    TypeAttr::DeviceApi => format!("{}\n", t.device_api),
                    TypeAttr::AvailableInstances => {
                        format!("{}\n", self.available_instances(parent, type_id))
                    }
                    TypeAttr::Create => return Err(libc::EIO),
                }
            }
            Attr::MdevParams(uuid) => params_text(&self.mdev(uuid).ok_or(libc::ENODEV)?.params),
            Attr::Vfio(addr, a) => return self.read_vfio(addr, a),
            Attr::ModuleInitstate(_) => "live\n".to_string(),
            Attr::Fixed(text) => text.clone(),
            Attr::Events => self.events_text(),
            Attr::Heterogeneous(pf) => self.heterogeneous_text(pf)?,
            Attr::Placements(pf) => self.placements_text(pf)?,
            Attr::Requests => format!("{}\n", self.requests),
            Attr::MdevRemove(_) | Attr::Driver(..) | Attr::DriversProbe | Attr::Control => {
                return Err(libc::EIO)
            }
        })
    }

    /// Applies a write of `data` (the whole value, from one write call) to an attribute.
    pub fn write(&mut self, attr: &Attr, data: &[u8]) -> WriteOutcome {
        let done = |r: Result<(), Errno>| WriteOutcome::Done(r);
        if !attr.writable() {
            return done(Err(libc::EACCES));
        }
        match attr {
            Attr::Type {
                parent, type_id, ..
            } => self.write_create(parent, type_id, data),
            Attr::MdevRemove(uuid) => self.write_remove(uuid, data),
            Attr::MdevParams(uuid) => done(self.write_mdev_params(uuid, data)),
            Attr::Pci(addr, a) => done(match a {
                PciAttr::DriverOverride => self.write_driver_override(addr, data),
                PciAttr::SriovNumvfs => self.write_numvfs(addr, data),
                PciAttr::SriovAutoprobe => self.write_autoprobe(addr, data),
                _ => Err(libc::EACCES),
            }),
            Attr::Vfio(addr, a) => {
                if !self.vfio_dir_visible(addr) {
                    return done(Err(libc::ENODEV));
                }
                match a {
                    VfioAttr::Current => self.write_current_type(addr, data),
                    VfioAttr::Params => done(self.write_vf_params(addr, data)),
                    VfioAttr::PlacementId => done(self.write_placement(addr, data)),
                    _ => done(Err(libc::EACCES)),
                }
            }
            Attr::Driver(drv, a) => done(match a {
                DriverAttr::Bind => self.write_bind(drv, data),
                DriverAttr::Unbind => self.write_unbind(drv, data),
                DriverAttr::NewId => self.write_new_id(drv, data),
                DriverAttr::RemoveId => self.write_remove_id(drv, data),
            }),
            Attr::DriversProbe => done(self.write_drivers_probe(data)),
            Attr::Control => done(self.write_control(data)),
            Attr::Heterogeneous(pf) => done(self.write_heterogeneous(pf, data)),
            Attr::ModuleInitstate(_)
            | Attr::Fixed(_)
            | Attr::Events
            | Attr::Requests
            | Attr::Placements(_) => done(Err(libc::EACCES)),
        }
    }

    /// The bytes of an attribute: the binary `config`, or the text of any other.
    pub fn read_bytes(&self, attr: &Attr) -> Result<Vec<u8>, Errno> {
        match attr {
            Attr::Pci(addr, PciAttr::Config) => self.config_space(addr),
            _ => self.read(attr).map(String::into_bytes),
        }
    }

    /// A file of a kernel-6.8+ VF's `nvidia/`. As in the real L40S capture, a VF without a
    /// vGPU reads `gpu_instance_id`, `placement_id`, `vgpu_params` and `warm_update` as empty
    /// files (NVIDIA: they are only readable once a type is set).
    fn read_vfio(&self, addr: &str, a: &VfioAttr) -> Result<String, Errno> {
        if !self.vfio_dir_visible(addr) {
            return Err(libc::ENODEV);
        }
        let slot = self
            .pci
            .get(addr)
            .and_then(|d| d.vgpu.as_ref())
            .ok_or(libc::ENODEV)?;
        Ok(match a {
            VfioAttr::Creatable => self.creatable_text(addr),
            VfioAttr::Current => format!("{}\n", slot.current.as_deref().unwrap_or("0")),
            VfioAttr::Params if slot.current.is_some() => params_text(&slot.params),
            VfioAttr::PlacementId if slot.placement.is_some() => {
                format!("{}\n", slot.placement.unwrap_or_default())
            }
            VfioAttr::Params
            | VfioAttr::GpuInstanceId
            | VfioAttr::PlacementId
            | VfioAttr::WarmUpdate => String::new(),
        })
    }

    /// `<uuid>/nvidia/vgpu_params`: `E2BIG` over the driver's limit, `EPERM` while a VM holds
    /// the device (`usage_count != 0`), else the write minus its last byte is kept.
    fn write_mdev_params(&mut self, uuid: &str, data: &[u8]) -> Result<(), Errno> {
        let p = stored_params(data)?;
        let d = self.mdevs.get_mut(uuid).ok_or(libc::ENODEV)?;
        if d.held {
            return Err(libc::EPERM);
        }
        d.params = p;
        Ok(())
    }

    /// A kernel-6.8+ VF's `nvidia/vgpu_params`, with the mdev file's rules.
    fn write_vf_params(&mut self, addr: &str, data: &[u8]) -> Result<(), Errno> {
        let p = stored_params(data)?;
        let d = self.pci.get_mut(addr).ok_or(libc::ENODEV)?;
        if d.held {
            return Err(libc::EPERM);
        }
        d.vgpu.as_mut().ok_or(libc::ENODEV)?.params = p;
        Ok(())
    }
}
