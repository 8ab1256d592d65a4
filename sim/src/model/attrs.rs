//! Attribute files: what each one reads as, who may open it, and which rule a write goes to.
//!
//! The filesystem layout names files by [`Attr`]; this module is the single place that turns an
//! attribute into text (`%u\n`, `0x10de\n`, NVIDIA's tables) and routes a write to the rule that
//! decides it. Modes mirror sysfs: read-only `0444`, write-only `0200`, read-write `0644`; the
//! kernel refuses to open an attribute in a direction it does not support with `EACCES`.

use super::{Errno, Model, Role, WriteOutcome};
use crate::control;
use crate::kparse;

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
    /// `sim/control`.
    Control,
    /// `sim/events`.
    Events,
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
            Attr::Vfio(_, a) => *a != VfioAttr::Creatable,
            Attr::ModuleInitstate(_) | Attr::Events | Attr::Requests => false,
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

/// Validates `vgpu_params`: blank clears, else comma-separated `key=value` with non-empty keys.
fn parse_params(data: &[u8]) -> Result<String, Errno> {
    let text = std::str::from_utf8(kparse::strip_newline(data)).map_err(|_| libc::EINVAL)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    for item in text.split(',') {
        let (k, _) = item.split_once('=').ok_or(libc::EINVAL)?;
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(libc::EINVAL);
        }
    }
    Ok(text.to_string())
}

fn params_text(p: &str) -> String {
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}\n")
    }
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
            Attr::Vfio(addr, a) => {
                if !self.vfio_dir_visible(addr) {
                    return Err(libc::ENODEV);
                }
                let slot = self
                    .pci
                    .get(addr)
                    .and_then(|d| d.vgpu.as_ref())
                    .ok_or(libc::ENODEV)?;
                match a {
                    VfioAttr::Creatable => self.creatable_text(addr),
                    VfioAttr::Current => {
                        format!("{}\n", slot.current.as_deref().unwrap_or("0"))
                    }
                    VfioAttr::Params => params_text(&slot.params),
                }
            }
            Attr::ModuleInitstate(_) => "live\n".to_string(),
            Attr::Events => self.events_text(),
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
            Attr::MdevParams(uuid) => done(parse_params(data).and_then(|p| {
                let d = self.mdevs.get_mut(uuid).ok_or(libc::ENODEV)?;
                d.params = p;
                Ok(())
            })),
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
                done(match a {
                    VfioAttr::Current => self.write_current_type(addr, data),
                    VfioAttr::Params => parse_params(data).and_then(|p| {
                        let slot = self
                            .pci
                            .get_mut(addr)
                            .and_then(|d| d.vgpu.as_mut())
                            .ok_or(libc::ENODEV)?;
                        slot.params = p;
                        Ok(())
                    }),
                    VfioAttr::Creatable => Err(libc::EACCES),
                })
            }
            Attr::Driver(drv, a) => done(match a {
                DriverAttr::Bind => self.write_bind(drv, data),
                DriverAttr::Unbind => self.write_unbind(drv, data),
                DriverAttr::NewId => self.write_new_id(drv, data),
            }),
            Attr::DriversProbe => done(self.write_drivers_probe(data)),
            Attr::Control => done(control::execute(self, data)),
            Attr::ModuleInitstate(_) | Attr::Events | Attr::Requests => done(Err(libc::EACCES)),
        }
    }
}
