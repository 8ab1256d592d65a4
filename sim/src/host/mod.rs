//! The host description: a TOML file listing the GPUs (and other mdev parents) to simulate.
//!
//! A test states the host it needs in a few lines; this module turns those lines into a
//! validated [`Host`] with every default filled in (driver names, PCI ids, derived NVIDIA profile
//! lists, VF placement), so the device model never has to guess. Every error names the file,
//! the key (`gpu[1].framebuffer_mb`) and what is expected, because a typo in a host file should
//! cost seconds, not a debugging session.
//!
//! The file is read in its raw form (`raw`), each `[[gpu]]` is checked against the keys its kind
//! takes (`keys`) and validated concern by concern (`gpu`, with its types in `type_list`); what
//! only the whole file can tell (distinct type ids, no device named twice, the module list) is
//! decided here.

mod gpu;
mod keys;
mod raw;
mod type_list;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::kparse;
use crate::typespec::TypeSpec;
use raw::RawHost;

/// A validated host description.
#[derive(Clone, Debug)]
pub struct Host {
    /// Kernel modules listed under `/sys/module`; `mdev` also gates the mdev bus and class.
    pub modules: Vec<String>,
    /// Devices in file order.
    pub gpus: Vec<Gpu>,
    /// vfio-pci's `enable_sriov` module parameter: without it a PF bound to vfio-pci has no
    /// working `sriov_configure` (`ENOENT`).
    pub vfio_pci_enable_sriov: bool,
    /// `sys/module/nvidia/version`: what the NVIDIA driver's version reads (the hook keys what
    /// it learns about the driver's clean-up on it).
    pub nvidia_version: String,
    /// The `nvidia` module's `NVreg_RegistryDwords` and `NVreg_RegistryDwordsPerDevice` (the
    /// vGPU scheduling policy's `RmPVMRL` among them), shown in `proc/driver/nvidia/params`.
    pub nvidia_registry: (String, String),
    /// NUMA nodes under `sys/devices/system/node` (none: a host that shows no node directory).
    pub nodes: Vec<Node>,
}

/// The NVIDIA driver version a host shows unless the host file says otherwise.
pub const DEFAULT_NVIDIA_VERSION: &str = "570.133.10";

/// A NUMA node: its CPUs (a kernel cpulist, `0-7,16-23`) and its distances to every node in id
/// order (`10 21`), as `nodeN/cpulist` and `nodeN/distance` show them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node number.
    pub id: u32,
    /// `cpulist`.
    pub cpus: String,
    /// `distance`.
    pub distance: Vec<u32>,
}

/// Who answers `available_instances` for a generic mdev parent, which decides the errno of a
/// create on a full parent (kernel 6.1+ `mdev_device_create`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Available {
    /// The vendor driver has `get_available` (mtty, mbochs, GVT-g): it counts, and its own
    /// create refuses a full parent with `ENOSPC` (`mtty_init_dev`, GVT-g).
    Driver,
    /// The driver has none (mdpy, vfio-ap, vfio-ccw): the core counts per parent from the
    /// driver's `max_instances` and refuses with `EUSERS`.
    Core,
}

/// The driver model a GPU follows; decides which sysfs interfaces it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// NVIDIA before Ampere: the physical function is the mdev parent.
    NvidiaClassic,
    /// NVIDIA Ampere and later with mdev: every VF is an mdev parent hosting at most one vGPU.
    NvidiaSriov,
    /// NVIDIA vGPU 17+ on kernel 6.8+: no mdev, per-VF `nvidia/current_vgpu_type`.
    NvidiaVfio,
    /// AMD MxGPU with the GIM driver: fixed VFs, no sysfs SR-IOV configuration.
    AmdGim,
    /// Any SR-IOV physical function configurable through `sriov_numvfs`.
    Sriov,
    /// A generic mdev parent, PCI or not (like the kernel's mtty sample or Intel GVT-g).
    Mdev,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "nvidia-classic" => Kind::NvidiaClassic,
            "nvidia-sriov" => Kind::NvidiaSriov,
            "nvidia-vfio" => Kind::NvidiaVfio,
            "amd-gim" => Kind::AmdGim,
            "sriov" => Kind::Sriov,
            "mdev" => Kind::Mdev,
            _ => return None,
        })
    }

    /// The name used in host files.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NvidiaClassic => "nvidia-classic",
            Kind::NvidiaSriov => "nvidia-sriov",
            Kind::NvidiaVfio => "nvidia-vfio",
            Kind::AmdGim => "amd-gim",
            Kind::Sriov => "sriov",
            Kind::Mdev => "mdev",
        }
    }

    /// NVIDIA kinds refuse a create without capacity with `EINVAL` from their probe and share
    /// a GPU between vGPUs of one framebuffer size only.
    pub fn is_nvidia(self) -> bool {
        matches!(
            self,
            Kind::NvidiaClassic | Kind::NvidiaSriov | Kind::NvidiaVfio
        )
    }

    /// Kinds whose physical function has an SR-IOV capability.
    pub fn has_sriov(self) -> bool {
        matches!(
            self,
            Kind::NvidiaSriov | Kind::NvidiaVfio | Kind::AmdGim | Kind::Sriov
        )
    }

    /// Kinds that register mdev parents.
    pub fn uses_mdev(self) -> bool {
        matches!(self, Kind::NvidiaClassic | Kind::NvidiaSriov | Kind::Mdev)
    }
}

/// Where a device lives in the device tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A PCI function under `sys/devices/pci0000:00/<address>`.
    Pci(String),
    /// A virtual device under `sys/devices/virtual/<name>/<name>`.
    Virtual(String),
}

impl Location {
    /// The device's name: its PCI address or virtual name (what `mdev_bus` lists).
    pub fn name(&self) -> &str {
        match self {
            Location::Pci(a) | Location::Virtual(a) => a,
        }
    }
}

/// A validated `[[gpu]]` entry with every default applied.
#[derive(Clone, Debug)]
pub struct Gpu {
    /// Driver model.
    pub kind: Kind,
    /// PCI address or virtual name.
    pub location: Location,
    /// mdev types (or kernel-6.8+ vGPU types); empty for kinds without profiles.
    pub types: Vec<TypeSpec>,
    /// >0: the driver removes an mdev by itself this long after its holder releases it.
    pub self_cleanup_ms: u64,
    /// Removing a held mdev blocks until release (true) or fails `EBUSY` (false).
    pub remove_blocks: bool,
    /// The parent (or the kernel-6.8+ `nvidia/` directory) appears this long after mount.
    pub appear_after_ms: u64,
    /// VFs enabled at mount.
    pub numvfs: u16,
    /// `sriov_totalvfs`.
    pub totalvfs: u16,
    /// Whether the PF driver has an `sriov_configure` callback (else `sriov_numvfs` writes `ENOENT`).
    pub sriov_configurable: bool,
    /// kernel-6.8+: writing 0 to `current_vgpu_type` fails `EBUSY` this long after release.
    pub reset_busy_ms: u64,
    /// kernel-6.8+: how long a clear inside the reset-busy window waits for the vGPU task
    /// before failing `EBUSY` (NVIDIA's `VGPU_EXIT_TIMEOUT_MILLISECONDS`, 5000).
    pub exit_timeout_ms: u64,
    /// Generic mdev parents: who counts instances (decides the full-parent errno).
    pub available: Available,
    /// Generic mdev parents: capacity shared by all types (mtty: 24 ports), if any.
    pub pool: Option<u32>,
    /// AMD: the old GIM (S7150), which probes its PFs by hand, so they show no `driver` link.
    pub gim_old: bool,
    /// AMD's Instinct GIM: the PF's `spatial_partition_mode` and `memory_partition_mode`
    /// (`None`: the card has no spatial partitions, and the file says it failed).
    pub partition: Option<(String, String)>,
    /// NVIDIA kernel-6.8+: the generation whose placement rules apply; `None` for a board
    /// without mixed-size mode or placement ids.
    pub generation: Option<crate::placement::Generation>,
    /// Routing-id offset of the first VF from the PF.
    pub vf_offset: u16,
    /// Routing-id distance between VFs.
    pub vf_stride: u16,
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id of the PF.
    pub device: u16,
    /// PCI device id of the VFs.
    pub vf_device: u16,
    /// PCI class code.
    pub class: u32,
    /// `numa_node` (-1 when unknown).
    pub numa_node: i32,
    /// IOMMU group of the PF; allocated when absent.
    pub iommu_group: Option<u32>,
    /// Driver the PF is bound to at mount (and probes to).
    pub driver: Option<String>,
    /// Driver VFs probe to when `sriov_drivers_autoprobe` is 1.
    pub vf_driver: Option<String>,
}

impl Gpu {
    /// The PCI address of VF `index`, from the PF's routing id, `vf_offset` and `vf_stride`.
    pub fn vf_address(&self, index: u16) -> Option<String> {
        let Location::Pci(addr) = &self.location else {
            return None;
        };
        let (domain, bus, dev, func) = kparse::pci_address_parts(addr)?;
        let rid = (u32::from(bus) << 8) | (u32::from(dev) << 3) | u32::from(func);
        let vf = rid + u32::from(self.vf_offset) + u32::from(index) * u32::from(self.vf_stride);
        let bus = u8::try_from(vf >> 8).ok()?;
        Some(kparse::format_pci_address(
            domain,
            bus,
            ((vf >> 3) & 0x1f) as u8,
            (vf & 7) as u8,
        ))
    }
}

/// A host file that cannot be used: says which file, which key and what was expected.
#[derive(Debug)]
pub struct HostError {
    /// The host file.
    pub file: String,
    /// What is wrong, starting with the key.
    pub message: String,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

impl std::error::Error for HostError {}

/// Reads and validates a host file.
pub fn load(path: &Path) -> Result<Host, HostError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| HostError {
        file: file.clone(),
        message: format!("cannot read the host file: {e}"),
    })?;
    parse(&text, &file)
}

/// Parses and validates host TOML; `file` is only used in error messages.
pub fn parse(text: &str, file: &str) -> Result<Host, HostError> {
    let err = |message: String| HostError {
        file: file.to_string(),
        message,
    };
    let raw: RawHost = toml::from_str(text).map_err(|e| err(e.to_string().trim().to_string()))?;
    let mut gpus = Vec::new();
    for (i, g) in raw.gpu.iter().enumerate() {
        gpus.push(gpu::validate(i, g).map_err(err)?);
    }
    type_list::assign_distinct_bases(&raw.gpu, &mut gpus);
    check_names(&gpus).map_err(err)?;
    let modules = match raw.modules {
        Some(m) => check_modules(m).map_err(err)?,
        None => default_modules(&gpus),
    };
    let nodes = check_nodes(raw.node).map_err(err)?;
    Ok(Host {
        modules,
        gpus,
        vfio_pci_enable_sriov: raw.vfio_pci_enable_sriov.unwrap_or(false),
        nvidia_version: raw
            .nvidia_version
            .unwrap_or_else(|| DEFAULT_NVIDIA_VERSION.to_string()),
        nvidia_registry: (
            raw.nvidia_registry_dwords.unwrap_or_default(),
            raw.nvidia_registry_dwords_per_device.unwrap_or_default(),
        ),
        nodes,
    })
}

/// Nodes have distinct ids, a cpulist of digits, `-` and `,`, and one distance per node.
fn check_nodes(raw: Vec<raw::RawNode>) -> Result<Vec<Node>, String> {
    let count = raw.len();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, n) in raw.into_iter().enumerate() {
        if nodes.iter().any(|m| m.id == n.id) {
            return Err(format!("node[{i}]: id {} is given twice", n.id));
        }
        if n.cpus.is_empty()
            || !n
                .cpus
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
        {
            return Err(format!(
                "node[{i}]: cpus: expected a cpulist like \"0-7,16-23\", got {:?}",
                n.cpus
            ));
        }
        if n.distance.len() != count {
            return Err(format!(
                "node[{i}]: distance: expected {count} numbers (one per node), got {}",
                n.distance.len()
            ));
        }
        nodes.push(Node {
            id: n.id,
            cpus: n.cpus,
            distance: n.distance,
        });
    }
    Ok(nodes)
}

/// A listed module must be usable as a directory name under `sys/module`.
fn check_modules(modules: Vec<String>) -> Result<Vec<String>, String> {
    for (i, name) in modules.iter().enumerate() {
        if name.is_empty() || name.contains('/') {
            return Err(format!(
                "modules[{i}]: expected a module name like \"vfio_pci\", got {name:?}"
            ));
        }
    }
    Ok(modules)
}

/// The modules a host with these GPUs loads: VFIO always, mdev for mdev kinds, and
/// pci_pf_stub where NVIDIA's sriov-manage needs it to enable VFs.
fn default_modules(gpus: &[Gpu]) -> Vec<String> {
    let mut m: Vec<String> = ["vfio", "vfio_pci", "vfio_iommu_type1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if gpus.iter().any(|g| g.kind.uses_mdev()) {
        m.push("mdev".to_string());
    }
    if gpus
        .iter()
        .any(|g| matches!(g.kind, Kind::NvidiaSriov | Kind::NvidiaVfio))
    {
        m.push("pci_pf_stub".to_string());
    }
    if gpus.iter().any(|g| {
        matches!(
            g.kind,
            Kind::NvidiaClassic | Kind::NvidiaSriov | Kind::NvidiaVfio
        )
    }) {
        m.push("nvidia".to_string());
    }
    m
}

/// No device (PF address, virtual name or VF address) may belong to two entries.
fn check_names(gpus: &[Gpu]) -> Result<(), String> {
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (i, g) in gpus.iter().enumerate() {
        let mut names = vec![g.location.name().to_string()];
        if g.kind.has_sriov() {
            names.extend((0..g.totalvfs).filter_map(|v| g.vf_address(v)));
        }
        for n in names {
            if let Some(&j) = owner.get(&n) {
                let what = if n == g.location.name() {
                    "address"
                } else {
                    "totalvfs"
                };
                return Err(format!(
                    "gpu[{i}].{what}: device {n} is already used by gpu[{j}] (as its address or one of its VFs)"
                ));
            }
            owner.insert(n, i);
        }
    }
    Ok(())
}
