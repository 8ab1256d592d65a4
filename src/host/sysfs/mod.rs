//! The kernel's device interfaces as files: the mdev core, NVIDIA's vGPU attributes, PCI SR-IOV.
//!
//! Every path hangs off one root (`VGPU_HOOK_SYSFS_ROOT`, default `/`), so the same code runs on the
//! real `/sys`, on a fixture tree and on the simulator. Reads are re-done whenever a decision depends
//! on them (sysfs is the truth; nothing here caches). Writes are single `write(2)` calls on an
//! existing attribute, never creating files, and their errors keep the errno because the errno is
//! the kernel's whole answer (`EEXIST`, `EINVAL`, `EBUSY` ...). Writes that may block (a `remove`
//! while QEMU still holds the device) run under a time bound ([`write`]); where a PF's VFs will
//! appear is read from its config space ([`pci_config`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod pci_config;
mod write;

pub use write::{wait_child, write_attr, write_bounded};

use crate::host::errno::Attr;
use crate::model::names::{MdevUuid, Params, ParentName, TypeId};
use crate::model::pci::PciAddress;

/// An error talking to sysfs, carrying the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// A read failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The attribute.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A write was refused by the kernel.
    #[error("writing '{value}' to {path} failed: {}", crate::host::errno::explain(*.attr, *.errno))]
    Write {
        /// The attribute.
        path: PathBuf,
        /// What was written (printable).
        value: String,
        /// The errno, 0 when unknown.
        errno: i32,
        /// Which attribute it was, which decides what the errno means.
        attr: Attr,
    },
    /// A write did not return within its bound (the kernel is waiting for something).
    #[error("writing '{value}' to {path} did not return within {secs} s")]
    Timeout {
        /// The attribute.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The bound.
        secs: u64,
        /// The child still doing the write (0 when none), for [`wait_child`].
        pid: i32,
    },
    /// An attribute holds something unexpected.
    #[error("{path} holds '{content}', expected {expected}")]
    Malformed {
        /// The attribute.
        path: PathBuf,
        /// What it held (shortened).
        content: String,
        /// What was expected.
        expected: &'static str,
    },
}

impl SysfsError {
    /// The errno of a refused write, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SysfsError::Write { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl SysfsError {
    /// The same error, known to come from `attr` (a refused write's message then says what its
    /// errno means there).
    pub fn from_attr(self, attr: Attr) -> Self {
        match self {
            SysfsError::Write {
                path, value, errno, ..
            } => SysfsError::Write {
                path,
                value,
                errno,
                attr,
            },
            other => other,
        }
    }
}

/// A live mediated device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMdev {
    /// Its UUID.
    pub uuid: MdevUuid,
    /// The parent device's sysfs name.
    pub parent: String,
    /// The type id it was created with.
    pub type_id: String,
}

/// One `mdev_supported_types` entry of a parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevType {
    /// Sysfs type id (`nvidia-46`).
    pub id: String,
    /// Pretty name (`GRID P40-1Q`), if the driver gives one.
    pub name: Option<String>,
    /// The driver's description line, if any.
    pub description: Option<String>,
}

impl MdevType {
    /// The framebuffer size in MiB from NVIDIA's description (`framebuffer=1024M`).
    pub fn framebuffer_mb(&self) -> Option<u64> {
        desc_field(self.description.as_deref()?, "framebuffer")
            .and_then(|v| v.trim_end_matches(['M', 'm']).parse().ok())
    }

    /// The per-GPU instance limit from NVIDIA's description (`max_instance=24`).
    pub fn max_instances(&self) -> Option<u32> {
        desc_field(self.description.as_deref()?, "max_instance").and_then(|v| v.parse().ok())
    }

    /// What to call this type in messages: its name when it has one.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// A count attribute (`available_instances`, `sriov_numvfs`, ...): an unsigned decimal, already
/// trimmed.
pub fn parse_count(text: &str) -> Option<u32> {
    text.parse().ok()
}

/// The text of `nvidia/creatable_vgpu_types`: one `id : name` per line (a header line and lines
/// that do not parse are skipped).
pub fn parse_creatable(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .filter_map(|l| {
            let (id, name) = l.split_once(':')?;
            Some((id.trim().parse().ok()?, name.trim().to_string()))
        })
        .collect()
}

fn desc_field<'a>(desc: &'a str, key: &str) -> Option<&'a str> {
    desc.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then_some(v.trim())
    })
}

/// The sysfs tree under a root.
#[derive(Debug, Clone)]
pub struct Sysfs {
    sys: PathBuf,
}

/// The partition modes of an AMD Instinct GPU under GIM (amd/MxGPU-Virtualization
/// `gim_shim/sysfs/gim_monitor.c`). GIM chooses the VF count first (`vf_num`,
/// `amd-smi set --num-vf`) and the count limits the compute modes (`support_vf_num` in
/// `libgv/core/hw/AI/mi300/mi300_gpumon.c`: MI300X 1 VF in SPX or CPX, 2 in DPX or CPX, 4 in QPX
/// or CPX, 8 in CPX only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdPartition {
    /// `SPX`, `DPX`, `QPX` or `CPX`; `None` on a card without spatial partitions (V710).
    pub compute: Option<String>,
    /// `NPS1` .. `NPS8`, when readable.
    pub memory: Option<String>,
}

impl AmdPartition {
    /// How many compute partitions the mode splits the GPU into; `None` for CPX, which makes one
    /// per XCD (8 on an MI300X, fewer on smaller parts).
    pub fn partitions(&self) -> Option<u32> {
        match self.compute.as_deref()? {
            "SPX" => Some(1),
            "DPX" => Some(2),
            "QPX" => Some(4),
            _ => None,
        }
    }

    /// One line for reports: the modes, and what the VF count means in them.
    pub fn describe(&self, vfs: usize) -> String {
        let memory = self.memory.as_deref().unwrap_or("memory mode unknown");
        let Some(compute) = self.compute.as_deref() else {
            return format!("no spatial partitions ({memory}): the VF count is GIM's vf_num alone");
        };
        let n = self.partitions();
        let count = n.map_or_else(
            || "one per XCD".to_string(),
            |n| format!("{n} partition(s)"),
        );
        // GIM gives CPX at most one VF per partition, so more than one VF there is one each.
        let per = match (vfs, n) {
            (0, _) => "no VFs".to_string(),
            (1, Some(1)) => "1 VF, the whole GPU".to_string(),
            (1, _) => "1 VF holding every partition".to_string(),
            (v, None) => format!("{v} VFs, one per partition"),
            (v, Some(n)) if v as u32 == n => format!("{v} VFs, one per partition"),
            (v, _) => format!("{v} VFs"),
        };
        format!("compute partition {compute} ({count}), memory {memory}: {per}")
    }
}

impl Sysfs {
    /// Sysfs under `root` (`/` for the real one): paths are `root/sys/...`.
    pub fn new(root: &Path) -> Self {
        Sysfs {
            sys: root.join("sys"),
        }
    }

    // ---- reading helpers ----

    /// A path below `/sys` (`devices/system/node`).
    pub fn root_path(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }

    /// Reads an attribute, trimmed.
    pub fn read(&self, path: &Path) -> Result<String, SysfsError> {
        fs::File::open(path)
            .and_then(read_attribute)
            .map(|s| s.trim().to_string())
            .map_err(|source| SysfsError::Read {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Reads an unsigned decimal attribute.
    pub fn read_u32(&self, path: &Path) -> Result<u32, SysfsError> {
        let s = self.read(path)?;
        parse_count(&s).ok_or_else(|| SysfsError::Malformed {
            path: path.to_path_buf(),
            content: crate::printable(&s, 40),
            expected: "an unsigned number",
        })
    }

    fn link_basename(path: &Path) -> Option<String> {
        fs::read_link(path)
            .ok()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    }

    fn list_dir(path: &Path) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(path) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    // ---- the mdev core ----

    /// `/sys/class/mdev_bus/<parent>`.
    pub fn mdev_parent_dir(&self, parent: &ParentName) -> PathBuf {
        self.sys.join("class/mdev_bus").join(parent.as_str())
    }

    /// Whether a parent is registered with the mdev core now.
    pub fn is_mdev_parent(&self, parent: &ParentName) -> bool {
        self.mdev_parent_dir(parent)
            .join("mdev_supported_types")
            .is_dir()
    }

    /// Whether a parent is an NVIDIA GPU (PCI vendor 10de), for NVIDIA-specific guidance.
    pub fn is_nvidia_parent(&self, parent: &ParentName) -> bool {
        self.read(&self.mdev_parent_dir(parent).join("vendor"))
            .is_ok_and(|v| v.eq_ignore_ascii_case("0x10de"))
    }

    /// Every registered mdev parent.
    pub fn mdev_parents(&self) -> Vec<String> {
        Self::list_dir(&self.sys.join("class/mdev_bus"))
    }

    fn type_dir(&self, parent: &ParentName, type_id: &TypeId) -> PathBuf {
        self.type_attr(parent, type_id, "")
    }

    /// `/sys/class/mdev_bus/<parent>/mdev_supported_types/<type>/<attr>` (the type's directory
    /// for an empty `attr`), built in one allocation: a survey of a big host builds hundreds.
    fn type_attr(&self, parent: &ParentName, type_id: &TypeId, attr: &str) -> PathBuf {
        let parts = [
            "class/mdev_bus",
            parent.as_str(),
            "mdev_supported_types",
            type_id.as_str(),
            attr,
        ];
        let len = self.sys.as_os_str().len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut path = PathBuf::with_capacity(len);
        path.push(&self.sys);
        for part in parts.iter().filter(|p| !p.is_empty()) {
            path.push(part);
        }
        path
    }

    /// The types a parent supports, with names and descriptions.
    pub fn mdev_types(&self, parent: &ParentName) -> Vec<MdevType> {
        self.mdev_type_ids(parent)
            .into_iter()
            .map(|id| self.mdev_type(parent, id))
            .collect()
    }

    /// The type ids a parent supports.
    pub fn mdev_type_ids(&self, parent: &ParentName) -> Vec<String> {
        Self::list_dir(&self.mdev_parent_dir(parent).join("mdev_supported_types"))
    }

    /// One type of a parent, with its name and description.
    pub fn mdev_type(&self, parent: &ParentName, id: String) -> MdevType {
        let t = self
            .mdev_parent_dir(parent)
            .join("mdev_supported_types")
            .join(&id);
        let attr = |name: &str| self.read(&t.join(name)).ok().filter(|s| !s.is_empty());
        MdevType {
            name: attr("name"),
            description: attr("description"),
            id,
        }
    }

    /// The type ids of a parent with their `name` (only the name: matching a profile needs
    /// nothing else). The directory is resolved once and every name read relative to it, which
    /// keeps path walks (and, on the simulator, FUSE round trips) to a minimum.
    pub fn type_names(&self, parent: &ParentName) -> Vec<(String, Option<String>)> {
        use std::os::fd::AsRawFd;
        let dir = self.mdev_parent_dir(parent).join("mdev_supported_types");
        let Ok(handle) = fs::File::open(&dir) else {
            return Vec::new();
        };
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
        let mut ids = Self::list_dir(&fd_path);
        if ids.is_empty() {
            ids = Self::list_dir(&dir);
        }
        ids.into_iter()
            .map(|id| {
                let name = read_at(&handle, &format!("{id}/name")).filter(|n| !n.is_empty());
                (id, name)
            })
            .collect()
    }

    /// One type's `name`, if the type exists and has one.
    pub fn type_name(&self, parent: &ParentName, type_id: &TypeId) -> Option<String> {
        self.read(&self.type_attr(parent, type_id, "name"))
            .ok()
            .filter(|n| !n.is_empty())
    }

    /// Whether a parent offers a type id.
    pub fn has_type(&self, parent: &ParentName, type_id: &TypeId) -> bool {
        self.type_dir(parent, type_id).is_dir()
    }

    /// A type's `available_instances`, read now.
    pub fn available_instances(
        &self,
        parent: &ParentName,
        type_id: &TypeId,
    ) -> Result<u32, SysfsError> {
        self.read_u32(&self.type_attr(parent, type_id, "available_instances"))
    }

    /// Whether `/sys/bus/mdev/devices/<uuid>` exists.
    pub fn mdev_exists(&self, uuid: &MdevUuid) -> bool {
        self.sys
            .join("bus/mdev/devices")
            .join(uuid.as_str())
            .exists()
    }

    /// A live mdev's parent and type, or `None` when it does not exist. The parent is the
    /// directory the bus's link points into (`../../../devices/.../PARENT/UUID`): sysfs links
    /// name the device's own directory, so one `readlink` says it, where resolving the whole
    /// path took one per component.
    pub fn mdev(&self, uuid: &MdevUuid) -> Option<LiveMdev> {
        let dir = fs::File::open(self.sys.join("bus/mdev/devices")).ok()?;
        live_mdev_at(&dir, uuid.clone())
    }

    /// Every live mdev. Both links of each are read relative to the bus directory, opened once:
    /// a host of hundreds of vGPUs reads this at every start.
    pub fn live_mdevs(&self) -> Vec<LiveMdev> {
        let path = self.sys.join("bus/mdev/devices");
        let Ok(dir) = fs::File::open(&path) else {
            return Vec::new();
        };
        Self::list_dir(&path)
            .iter()
            .filter_map(|n| MdevUuid::parse(n).ok())
            .filter_map(|uuid| live_mdev_at(&dir, uuid))
            .collect()
    }

    /// Writes the UUID to the type's `create`, bounded by `timeout`.
    pub fn create_mdev(
        &self,
        parent: &ParentName,
        type_id: &TypeId,
        uuid: &MdevUuid,
        timeout: Duration,
    ) -> Result<(), SysfsError> {
        write_bounded(
            &self.type_dir(parent, type_id).join("create"),
            uuid.as_str(),
            timeout,
        )
        .map_err(|e| {
            e.from_attr(Attr::Create {
                nvidia: self.is_nvidia_parent(parent),
            })
        })
    }

    /// Writes `1` to the device's `remove`, bounded by `timeout`.
    pub fn remove_mdev(&self, uuid: &MdevUuid, timeout: Duration) -> Result<(), SysfsError> {
        let path = self
            .sys
            .join("bus/mdev/devices")
            .join(uuid.as_str())
            .join("remove");
        write_bounded(&path, "1", timeout).map_err(|e| e.from_attr(Attr::Remove))
    }

    /// NVIDIA's per-mdev `vgpu_params`, if the device has one.
    pub fn vgpu_params_path(&self, uuid: &MdevUuid) -> PathBuf {
        self.sys
            .join("bus/mdev/devices")
            .join(uuid.as_str())
            .join("nvidia/vgpu_params")
    }

    /// Writes NVIDIA's `vgpu_params` of an mdev. The driver stores a write of `count` bytes
    /// with `snprintf(buf, count, ...)`, which keeps `count - 1` of them: the last byte written
    /// is dropped. So the value goes with a trailing newline, as `echo` writes it; without
    /// one, `frame_rate_limiter=0` would be stored as `frame_rate_limiter=`.
    pub fn set_vgpu_params(
        &self,
        uuid: &MdevUuid,
        params: &Params,
        timeout: Duration,
    ) -> Result<(), SysfsError> {
        write_bounded(
            &self.vgpu_params_path(uuid),
            &format!("{params}\n"),
            timeout,
        )
        .map_err(|e| e.from_attr(Attr::VgpuParams))
    }

    // ---- PCI and SR-IOV ----

    /// `/sys/bus/pci/devices/<addr>`.
    pub fn pci_dir(&self, addr: PciAddress) -> PathBuf {
        self.sys.join("bus/pci/devices").join(addr.to_string())
    }

    /// Whether the PCI device exists.
    pub fn pci_exists(&self, addr: PciAddress) -> bool {
        self.pci_dir(addr).exists()
    }

    /// The VFs of a PF, in `virtfn` index order.
    pub fn vfs(&self, pf: PciAddress) -> Vec<PciAddress> {
        let dir = self.pci_dir(pf);
        let mut vfs: Vec<(u32, PciAddress)> = Self::list_dir(&dir)
            .iter()
            .filter_map(|n| {
                let idx: u32 = n.strip_prefix("virtfn")?.parse().ok()?;
                let addr = Self::link_basename(&dir.join(n))?.parse().ok()?;
                Some((idx, addr))
            })
            .collect();
        vfs.sort();
        vfs.into_iter().map(|(_, a)| a).collect()
    }

    /// The PF of a VF, if it is one.
    pub fn physfn(&self, vf: PciAddress) -> Option<PciAddress> {
        Self::link_basename(&self.pci_dir(vf).join("physfn"))?
            .parse()
            .ok()
    }

    /// The driver a device is bound to, if any.
    pub fn driver(&self, addr: PciAddress) -> Option<String> {
        Self::link_basename(&self.pci_dir(addr).join("driver"))
    }

    /// `sriov_totalvfs` (0 when the device has no SR-IOV capability).
    pub fn sriov_totalvfs(&self, pf: PciAddress) -> u32 {
        self.read_u32(&self.pci_dir(pf).join("sriov_totalvfs"))
            .unwrap_or(0)
    }

    /// `sriov_numvfs`.
    pub fn sriov_numvfs(&self, pf: PciAddress) -> Result<u32, SysfsError> {
        self.read_u32(&self.pci_dir(pf).join("sriov_numvfs"))
    }

    /// Writes `sriov_numvfs`.
    pub fn set_sriov_numvfs(
        &self,
        pf: PciAddress,
        n: u32,
        timeout: Duration,
    ) -> Result<(), SysfsError> {
        write_bounded(
            &self.pci_dir(pf).join("sriov_numvfs"),
            &n.to_string(),
            timeout,
        )
        .map_err(|e| e.from_attr(Attr::SriovNumvfs))
    }

    /// A kernel-6.8+ NVIDIA VF's `nvidia/` directory.
    pub fn nvidia_vf_dir(&self, vf: PciAddress) -> PathBuf {
        self.pci_dir(vf).join("nvidia")
    }

    /// Whether a VF speaks NVIDIA's kernel-6.8+ interface (`nvidia/current_vgpu_type`).
    pub fn is_nvidia_vfio_vf(&self, vf: PciAddress) -> bool {
        self.nvidia_vf_dir(vf).join("current_vgpu_type").exists()
    }

    /// `nvidia/creatable_vgpu_types`: (id, name) pairs creatable on this VF now.
    pub fn creatable_vgpu_types(&self, vf: PciAddress) -> Result<Vec<(u32, String)>, SysfsError> {
        let text = self.read(&self.nvidia_vf_dir(vf).join("creatable_vgpu_types"))?;
        Ok(parse_creatable(&text))
    }

    /// `nvidia/current_vgpu_type` (0 when free).
    pub fn current_vgpu_type(&self, vf: PciAddress) -> Result<u32, SysfsError> {
        self.read_u32(&self.nvidia_vf_dir(vf).join("current_vgpu_type"))
    }

    /// Writes `nvidia/current_vgpu_type`.
    pub fn set_current_vgpu_type(
        &self,
        vf: PciAddress,
        id: u32,
        timeout: Duration,
    ) -> Result<(), SysfsError> {
        let attr = if id == 0 {
            Attr::ClearVgpuType
        } else {
            Attr::SetVgpuType
        };
        write_bounded(
            &self.nvidia_vf_dir(vf).join("current_vgpu_type"),
            &id.to_string(),
            timeout,
        )
        .map_err(|e| e.from_attr(attr))
    }

    /// `nvidia/placement_id`: the first framebuffer slot the VF's vGPU takes; `None` while the
    /// VF has no vGPU (NVIDIA's driver answers ENXIO or an empty file then) or on a board
    /// without placements.
    pub fn placement_id(&self, vf: PciAddress) -> Option<u32> {
        self.read(&self.nvidia_vf_dir(vf).join("placement_id"))
            .ok()?
            .parse()
            .ok()
    }

    /// Moves the VF's vGPU to slot `id` (mixed-size mode; the driver takes only a free one).
    pub fn set_placement_id(&self, vf: PciAddress, id: u32) -> Result<(), SysfsError> {
        write_bounded(
            &self.nvidia_vf_dir(vf).join("placement_id"),
            &id.to_string(),
            Duration::from_secs(5),
        )
        .map_err(|e| e.from_attr(Attr::PlacementId))
    }
}

impl Sysfs {
    // ---- host-wide views (inventory, install, doctor) ----

    /// Every PCI device, sorted by address.
    pub fn pci_devices(&self) -> Vec<PciAddress> {
        let mut out: Vec<PciAddress> = Self::list_dir(&self.sys.join("bus/pci/devices"))
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        out.sort();
        out
    }

    /// The PCI vendor id (`0x10de` NVIDIA, `0x1002` AMD), if readable.
    pub fn pci_vendor(&self, addr: PciAddress) -> Option<u16> {
        let v = self.read(&self.pci_dir(addr).join("vendor")).ok()?;
        u16::from_str_radix(v.trim_start_matches("0x"), 16).ok()
    }

    /// The `nvidia` module's parameters as it loaded with them (`/proc/driver/nvidia/params`,
    /// under the same root as `/sys`: the module shows no parameter in sysfs), if it is loaded.
    pub fn nvidia_params(&self) -> Option<String> {
        let root = self.sys.parent()?;
        std::fs::read_to_string(root.join("proc/driver/nvidia/params")).ok()
    }

    /// The vGPU scheduling policy `pf` runs under: what the `nvidia` module loaded with (best
    /// effort when it names none); `None` when the module is not loaded.
    pub fn running_scheduler(&self, pf: PciAddress) -> Option<crate::model::scheduler::Scheduler> {
        self.nvidia_params()
            .map(|p| crate::model::scheduler::running(&p, pf))
    }

    /// The partition modes AMD's Instinct GIM reports on its PF (`spatial_partition_mode`,
    /// `memory_partition_mode`), when it has them.
    pub fn amd_partition(&self, pf: PciAddress) -> Option<AmdPartition> {
        let dir = self.pci_dir(pf);
        let compute = self.read(&dir.join("spatial_partition_mode")).ok()?;
        let memory = self.read(&dir.join("memory_partition_mode")).ok();
        let memory = memory
            .as_deref()
            .and_then(|m| m.lines().next()?.strip_prefix("memory_partition_mode:"))
            .map(|m| m.trim().to_string())
            .filter(|m| m.starts_with("NPS"));
        let compute = Some(compute).filter(|c| ["SPX", "DPX", "QPX", "CPX"].contains(&c.as_str()));
        Some(AmdPartition { compute, memory })
    }

    /// The NVIDIA driver's version (`/sys/module/nvidia/version`), if it is loaded.
    pub fn nvidia_driver_version(&self) -> Option<String> {
        self.read(&self.sys.join("module/nvidia/version")).ok()
    }

    /// Whether `/sys/module/<name>` exists: the module is loaded (or built in with parameters).
    pub fn module_loaded(&self, name: &str) -> bool {
        self.sys.join("module").join(name).is_dir()
    }

    /// How many IOMMU groups exist; 0 means the IOMMU is off.
    pub fn iommu_groups(&self) -> usize {
        Self::list_dir(&self.sys.join("kernel/iommu_groups")).len()
    }

    /// The addresses the first `count` VFs of a PF will have once enabled, computed from the
    /// SR-IOV capability in its config space (First VF Offset, VF Stride). `None` when the
    /// config space cannot be read that far (it needs root) or has no SR-IOV capability.
    pub fn future_vfs(&self, pf: PciAddress, count: u32) -> Option<Vec<PciAddress>> {
        let config = fs::read(self.pci_dir(pf).join("config")).ok()?;
        pci_config::future_vfs(&config, pf, count)
    }
}

/// An attribute's text, read whole in as few calls as sysfs needs: a sysfs file hands over all
/// it has (at most a page) in one read, so a read shorter than the room left is the end, and no
/// size query comes first (three calls per attribute, where `read_to_string` made five).
/// Most attributes are a number or a name, so the first read goes to a small buffer on the
/// stack and only a longer one (a description) spills into a growing one.
fn read_attribute(mut f: fs::File) -> io::Result<String> {
    use std::io::Read;
    let mut small = [0u8; 128];
    let n = f.read(&mut small)?;
    let mut buf = small[..n].to_vec();
    if n == small.len() {
        let mut chunk = vec![0u8; 4096];
        loop {
            let n = f.read(&mut chunk)?;
            buf.extend_from_slice(&chunk[..n]);
            if n < chunk.len() {
                break;
            }
        }
    }
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The mdev `uuid` as the bus directory `dir` shows it, or `None` when it does not exist.
fn live_mdev_at(dir: &fs::File, uuid: MdevUuid) -> Option<LiveMdev> {
    let target = read_link_at(dir, &[uuid.as_str()])?;
    let parent = target.rsplit('/').nth(1)?.to_string();
    let type_link = read_link_at(dir, &[uuid.as_str(), "/mdev_type"])?;
    let type_id = type_link.rsplit('/').next()?.to_string();
    Some(LiveMdev {
        uuid,
        parent,
        type_id,
    })
}

/// The target of the symlink at `parts` (joined) relative to an open directory. sysfs paths
/// and links are short: a longer one is not ours to read.
fn read_link_at(dir: &fs::File, parts: &[&str]) -> Option<String> {
    use std::os::fd::AsRawFd;
    let mut path = [0u8; 256];
    let mut len = 0;
    for part in parts {
        let bytes = part.as_bytes();
        if bytes.contains(&0) || len + bytes.len() >= path.len() {
            return None;
        }
        path[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    }
    let mut buf = [0u8; 512];
    // SAFETY: `path` is NUL-terminated (zeroed past `len`, which stays below its size), and
    // readlinkat writes at most buf.len() bytes into buf.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            path.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok().filter(|&n| n < buf.len())?;
    String::from_utf8(buf[..n].to_vec()).ok()
}

/// Reads `rel` relative to an open directory, trimmed.
fn read_at(dir: &fs::File, rel: &str) -> Option<String> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = CString::new(rel).ok()?;
    // SAFETY: openat on a descriptor we own; the new descriptor is handed to a File at once.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh, owned descriptor.
    let f = unsafe { fs::File::from_raw_fd(fd) };
    read_attribute(f).ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_description_fields_are_read() {
        let t = MdevType {
            id: "nvidia-46".into(),
            name: Some("GRID P40-1Q".into()),
            description: Some(
                "num_heads=4, frl_config=60, framebuffer=1024M, max_resolution=5120x2880, max_instance=24".into(),
            ),
        };
        assert_eq!(t.framebuffer_mb(), Some(1024));
        assert_eq!(t.max_instances(), Some(24));
    }

    #[test]
    fn future_vfs_follow_offset_and_stride_of_the_sriov_capability() {
        let dir = tempfile::tempdir().unwrap();
        let pf_dir = dir.path().join("sys/bus/pci/devices/0000:04:00.0");
        fs::create_dir_all(&pf_dir).unwrap();
        let mut config = vec![0u8; 0x200];
        // an AER capability at 0x100 pointing to SR-IOV at 0x140
        config[0x100..0x104].copy_from_slice(&(0x0001u32 | (0x140 << 20)).to_le_bytes());
        config[0x140..0x144].copy_from_slice(&0x0001_0010u32.to_le_bytes());
        config[0x154..0x156].copy_from_slice(&0x80u16.to_le_bytes());
        config[0x156..0x158].copy_from_slice(&2u16.to_le_bytes());
        fs::write(pf_dir.join("config"), &config).unwrap();
        let s = Sysfs::new(dir.path());
        let got: Vec<String> = s
            .future_vfs("04:00.0".parse().unwrap(), 3)
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["0000:04:10.0", "0000:04:10.2", "0000:04:10.4"]);
    }

    #[test]
    fn future_vfs_need_a_readable_config_space() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sysfs::new(dir.path());
        assert_eq!(s.future_vfs("04:00.0".parse().unwrap(), 1), None);
    }

    #[test]
    fn vf_links_are_listed_in_index_order() {
        let dir = tempfile::tempdir().unwrap();
        let devs = dir.path().join("sys/bus/pci/devices");
        fs::create_dir_all(devs.join("0000:04:00.0")).unwrap();
        for (i, vf) in [(10, "0000:04:01.2"), (2, "0000:04:00.2")] {
            std::os::unix::fs::symlink(
                format!("../{vf}"),
                devs.join("0000:04:00.0").join(format!("virtfn{i}")),
            )
            .unwrap();
        }
        let s = Sysfs::new(dir.path());
        let got: Vec<String> = s
            .vfs("04:00.0".parse().unwrap())
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["0000:04:00.2", "0000:04:01.2"]);
    }
}
