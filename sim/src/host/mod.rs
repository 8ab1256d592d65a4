//! The host description: a TOML file listing the GPUs (and other mdev parents) to simulate.
//!
//! A test states the host it needs in a few lines; this module turns those lines into a
//! validated [`Host`] with every default filled in (driver names, PCI ids, derived NVIDIA profile
//! lists, VF placement), so the device model never has to guess. Every error names the file,
//! the key (`gpu[1].framebuffer_mb`) and what is expected, because a typo in a host file should
//! cost seconds, not a debugging session.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::kparse;
use crate::profiles::{self, IdStyle};
use crate::typespec::TypeSpec;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    modules: Option<Vec<String>>,
    vfio_pci_enable_sriov: Option<bool>,
    #[serde(default)]
    gpu: Vec<RawGpu>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGpu {
    kind: Option<String>,
    address: Option<String>,
    name: Option<String>,
    board: Option<String>,
    name_prefix: Option<String>,
    framebuffer_mb: Option<u64>,
    types: Option<Vec<RawType>>,
    self_cleanup_ms: Option<u64>,
    remove_blocks: Option<bool>,
    appear_after_ms: Option<u64>,
    numvfs: Option<u16>,
    totalvfs: Option<u16>,
    sriov_configurable: Option<bool>,
    reset_busy_ms: Option<u64>,
    exit_timeout_ms: Option<u64>,
    available: Option<String>,
    pool: Option<u32>,
    gim: Option<String>,
    vf_offset: Option<u16>,
    vf_stride: Option<u16>,
    vendor: Option<toml::Value>,
    device: Option<toml::Value>,
    vf_device: Option<toml::Value>,
    class: Option<toml::Value>,
    numa_node: Option<i32>,
    iommu_group: Option<u32>,
    driver: Option<String>,
    vf_driver: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawType {
    id: String,
    name: Option<String>,
    description: Option<String>,
    device_api: Option<String>,
    framebuffer_mb: Option<u64>,
    max_instances: Option<u32>,
    units: Option<u32>,
}

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
        gpus.push(validate_gpu(i, g).map_err(err)?);
    }
    assign_distinct_bases(&raw.gpu, &mut gpus);
    check_names(&gpus).map_err(err)?;
    let modules = match raw.modules {
        Some(m) => {
            for (i, name) in m.iter().enumerate() {
                if name.is_empty() || name.contains('/') {
                    return Err(err(format!(
                        "modules[{i}]: expected a module name like \"vfio_pci\", got {name:?}"
                    )));
                }
            }
            m
        }
        None => {
            let mut m: Vec<String> = ["vfio", "vfio_pci", "vfio_iommu_type1"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if gpus.iter().any(|g| g.kind.uses_mdev()) {
                m.push("mdev".to_string());
            }
            // NVIDIA's sriov-manage loads pci-pf-stub to enable VFs.
            if gpus
                .iter()
                .any(|g| matches!(g.kind, Kind::NvidiaSriov | Kind::NvidiaVfio))
            {
                m.push("pci_pf_stub".to_string());
            }
            m
        }
    };
    Ok(Host {
        modules,
        gpus,
        vfio_pci_enable_sriov: raw.vfio_pci_enable_sriov.unwrap_or(false),
    })
}

fn number(key: &str, v: &Option<toml::Value>, max: u64) -> Result<Option<u64>, String> {
    let Some(v) = v else { return Ok(None) };
    let n = match v {
        toml::Value::Integer(i) => u64::try_from(*i).ok(),
        toml::Value::String(s) => {
            let t = s.trim();
            match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => None,
            }
        }
        _ => None,
    };
    match n {
        Some(n) if n <= max => Ok(Some(n)),
        _ => Err(format!(
            "{key}: expected a hex string like \"0x{max:x}\" or an integer up to {max}, got {v}"
        )),
    }
}

/// Keys that only make sense for some kinds: refused elsewhere instead of ignored, so a key
/// given to the wrong kind is a visible mistake.
fn check_keys(i: usize, kind: Kind, kind_s: &str, g: &RawGpu) -> Result<(), String> {
    let key = |k: &str| format!("gpu[{i}].{k}");
    let present: Vec<(&str, bool)> = vec![
        ("name", g.name.is_some()),
        ("board", g.board.is_some()),
        ("name_prefix", g.name_prefix.is_some()),
        ("framebuffer_mb", g.framebuffer_mb.is_some()),
        ("types", g.types.is_some()),
        ("self_cleanup_ms", g.self_cleanup_ms.is_some()),
        ("remove_blocks", g.remove_blocks.is_some()),
        ("numvfs", g.numvfs.is_some()),
        ("totalvfs", g.totalvfs.is_some()),
        ("sriov_configurable", g.sriov_configurable.is_some()),
        ("reset_busy_ms", g.reset_busy_ms.is_some()),
        ("exit_timeout_ms", g.exit_timeout_ms.is_some()),
        ("available", g.available.is_some()),
        ("pool", g.pool.is_some()),
        ("gim", g.gim.is_some()),
        ("vf_offset", g.vf_offset.is_some()),
        ("vf_stride", g.vf_stride.is_some()),
        ("vf_device", g.vf_device.is_some()),
        ("vf_driver", g.vf_driver.is_some()),
    ];
    let allowed: &[&str] = match kind {
        Kind::NvidiaClassic => &[
            "board",
            "name_prefix",
            "framebuffer_mb",
            "types",
            "self_cleanup_ms",
            "remove_blocks",
        ],
        Kind::NvidiaSriov => &[
            "board",
            "name_prefix",
            "framebuffer_mb",
            "types",
            "self_cleanup_ms",
            "remove_blocks",
            "numvfs",
            "totalvfs",
            "sriov_configurable",
            "vf_offset",
            "vf_stride",
            "vf_device",
            "vf_driver",
        ],
        Kind::NvidiaVfio => &[
            "board",
            "name_prefix",
            "framebuffer_mb",
            "types",
            "numvfs",
            "totalvfs",
            "sriov_configurable",
            "reset_busy_ms",
            "exit_timeout_ms",
            "vf_offset",
            "vf_stride",
            "vf_device",
            "vf_driver",
        ],
        Kind::AmdGim => &[
            "numvfs",
            "totalvfs",
            "sriov_configurable",
            "vf_offset",
            "vf_stride",
            "vf_device",
            "vf_driver",
            "gim",
        ],
        Kind::Sriov => &[
            "numvfs",
            "totalvfs",
            "sriov_configurable",
            "vf_offset",
            "vf_stride",
            "vf_device",
            "vf_driver",
        ],
        Kind::Mdev => &[
            "name",
            "types",
            "self_cleanup_ms",
            "remove_blocks",
            "available",
            "pool",
        ],
    };
    for (k, is) in &present {
        if *is && !allowed.contains(k) {
            return Err(format!("{}: not used by kind {kind_s:?}", key(k)));
        }
    }
    Ok(())
}

/// Where the device lives: a PCI address, or a virtual name for a non-PCI mdev parent; keys
/// that only PCI devices have are refused on a virtual one.
fn validate_location(i: usize, kind: Kind, g: &RawGpu) -> Result<Location, String> {
    let key = |k: &str| format!("gpu[{i}].{k}");
    let location = match (kind, &g.address, &g.name) {
        (Kind::Mdev, Some(_), Some(_)) => {
            return Err(format!(
                "{}: give either address (a PCI parent) or name (a virtual parent), not both",
                key("name")
            ))
        }
        (Kind::Mdev, None, Some(n)) => {
            if n.is_empty() || n.contains('/') || kparse::parse_pci_address(n).is_some() {
                return Err(format!(
                    "{}: expected a device name like \"mtty\", got {n:?}",
                    key("name")
                ));
            }
            Location::Virtual(n.clone())
        }
        (_, Some(a), _) => Location::Pci(kparse::parse_pci_address(a).ok_or_else(|| {
            format!(
                "{}: expected a PCI address like \"0000:82:00.0\", got {a:?}",
                key("address")
            )
        })?),
        (Kind::Mdev, None, None) => {
            return Err(format!(
                "{}: missing; kind \"mdev\" needs address (a PCI parent) or name (a virtual parent like \"mtty\")",
                key("name")
            ))
        }
        (_, None, _) => {
            return Err(format!(
                "{}: missing; expected a PCI address like \"0000:82:00.0\"",
                key("address")
            ))
        }
    };
    if !matches!(location, Location::Pci(_)) {
        for (k, v) in [
            ("vendor", g.vendor.is_some()),
            ("device", g.device.is_some()),
            ("class", g.class.is_some()),
            ("numa_node", g.numa_node.is_some()),
            ("iommu_group", g.iommu_group.is_some()),
            ("driver", g.driver.is_some()),
        ] {
            if v {
                return Err(format!(
                    "{}: not used by a virtual (non-PCI) parent",
                    key(k)
                ));
            }
        }
    }
    Ok(location)
}

/// PCI ids and drivers of a device with the kind's defaults applied.
struct Identity {
    vendor: u16,
    device: u16,
    vf_device: u16,
    class: u32,
    driver: Option<&'static str>,
    vf_driver: Option<&'static str>,
}

fn pci_identity(i: usize, kind: Kind, g: &RawGpu, extras: &Extras) -> Result<Identity, String> {
    let key = |k: &str| format!("gpu[{i}].{k}");
    let (def_vendor, def_class, def_driver, def_vf_driver): (u16, u32, Option<&str>, Option<&str>) =
        match kind {
            Kind::NvidiaClassic => (0x10de, 0x030200, Some("nvidia"), None),
            Kind::NvidiaSriov | Kind::NvidiaVfio => {
                (0x10de, 0x030200, Some("nvidia"), Some("nvidia"))
            }
            Kind::AmdGim => (0x1002, 0x038000, Some("gim"), None),
            Kind::Sriov => (0x8086, 0x038000, Some("i915"), None),
            Kind::Mdev => (0x8086, 0x030000, Some("i915"), None),
        };
    let def_device: u16 = match kind {
        k if k.is_nvidia() => g
            .board
            .as_deref()
            .and_then(profiles::board_device_id)
            .unwrap_or(0x0000),
        Kind::AmdGim if extras.gim_old => 0x6929,
        Kind::AmdGim => 0x74a1,
        Kind::Sriov => 0x56c0,
        _ => 0x3e92,
    };
    let vendor = number(&key("vendor"), &g.vendor, 0xffff)?.map_or(def_vendor, |v| v as u16);
    let device = number(&key("device"), &g.device, 0xffff)?.map_or(def_device, |v| v as u16);
    // MI300X VFs have their own id (0x74b5); NVIDIA VFs share the PF's.
    let def_vf_device = if kind == Kind::AmdGim && !extras.gim_old && g.device.is_none() {
        0x74b5
    } else {
        device
    };
    let vf_device =
        number(&key("vf_device"), &g.vf_device, 0xffff)?.map_or(def_vf_device, |v| v as u16);
    let class = number(&key("class"), &g.class, 0xff_ffff)?.map_or(def_class, |v| v as u32);
    for (k, d) in [("driver", &g.driver), ("vf_driver", &g.vf_driver)] {
        if let Some(d) = d {
            if d.is_empty() || d.contains('/') || d.contains(char::is_whitespace) {
                return Err(format!(
                    "{}: expected a driver name like \"vfio-pci\", got {d:?}",
                    key(k)
                ));
            }
        }
    }
    Ok(Identity {
        vendor,
        device,
        vf_device,
        class,
        driver: def_driver,
        vf_driver: def_vf_driver,
    })
}

fn validate_gpu(i: usize, g: &RawGpu) -> Result<Gpu, String> {
    let key = |k: &str| format!("gpu[{i}].{k}");
    let kind_s = g.kind.as_deref().ok_or_else(|| {
        format!(
            "{}: missing; expected one of nvidia-classic, nvidia-sriov, nvidia-vfio, amd-gim, sriov, mdev",
            key("kind")
        )
    })?;
    let kind = Kind::parse(kind_s).ok_or_else(|| {
        format!(
            "{}: expected one of nvidia-classic, nvidia-sriov, nvidia-vfio, amd-gim, sriov, mdev, got {kind_s:?}",
            key("kind")
        )
    })?;

    check_keys(i, kind, kind_s, g)?;

    let location = validate_location(i, kind, g)?;
    let is_pci = matches!(location, Location::Pci(_));

    let types = validate_types(i, kind, g)?;
    let extras = validate_extras(i, kind, g, &types)?;

    let ident = pci_identity(i, kind, g, &extras)?;
    let (def_driver, def_vf_driver) = (ident.driver, ident.vf_driver);
    let (vendor, device, vf_device, class) =
        (ident.vendor, ident.device, ident.vf_device, ident.class);

    let def_totalvfs = match kind {
        // The new GIM supports one VF per MI300X (amd/MxGPU-Virtualization README).
        Kind::AmdGim if !extras.gim_old => 1,
        k if k.has_sriov() => 16,
        _ => 0,
    };
    let totalvfs = g.totalvfs.unwrap_or(def_totalvfs);
    let numvfs = g.numvfs.unwrap_or(0);
    if numvfs > totalvfs {
        return Err(format!(
            "{}: expected at most totalvfs ({totalvfs}), got {numvfs}",
            key("numvfs")
        ));
    }
    let sriov_configurable = match (kind, g.sriov_configurable) {
        (Kind::AmdGim, Some(true)) => {
            return Err(format!(
                "{}: GIM has no sriov_configure callback, its VF count is fixed at load; remove this key",
                key("sriov_configurable")
            ))
        }
        (Kind::AmdGim, _) => false,
        // NVIDIA's PF driver has no sriov_configure: VFs are enabled through sriov-manage.
        (Kind::NvidiaSriov | Kind::NvidiaVfio, v) => v.unwrap_or(false),
        (_, v) => v.unwrap_or(true),
    };
    let vf_stride = g.vf_stride.unwrap_or(1);
    if kind.has_sriov() && vf_stride == 0 {
        return Err(format!("{}: expected at least 1, got 0", key("vf_stride")));
    }
    let gpu = Gpu {
        kind,
        location,
        types,
        self_cleanup_ms: g.self_cleanup_ms.unwrap_or(0),
        remove_blocks: g.remove_blocks.unwrap_or(true),
        appear_after_ms: g.appear_after_ms.unwrap_or(0),
        numvfs,
        totalvfs,
        sriov_configurable,
        reset_busy_ms: g.reset_busy_ms.unwrap_or(0),
        exit_timeout_ms: extras.exit_timeout_ms,
        available: extras.available,
        pool: extras.pool,
        gim_old: extras.gim_old,
        vf_offset: g.vf_offset.unwrap_or(4),
        vf_stride,
        vendor,
        device,
        vf_device,
        class,
        numa_node: g.numa_node.unwrap_or(-1),
        iommu_group: g.iommu_group,
        driver: if is_pci && !extras.gim_old {
            Some(
                g.driver
                    .clone()
                    .unwrap_or_else(|| def_driver.unwrap_or("").to_string()),
            )
        } else {
            None
        },
        vf_driver: g
            .vf_driver
            .clone()
            .or_else(|| def_vf_driver.map(str::to_string)),
    };
    if kind.has_sriov() {
        if let Some(last) = gpu.totalvfs.checked_sub(1) {
            if gpu.vf_address(last).is_none() {
                return Err(format!(
                    "{}: VF {last} would fall beyond bus ff with vf_offset {} and vf_stride {}",
                    key("totalvfs"),
                    gpu.vf_offset,
                    gpu.vf_stride
                ));
            }
        }
    }
    Ok(gpu)
}

/// Keys of one kind each: the mdev availability model, the GIM generation, the exit timeout.
struct Extras {
    available: Available,
    pool: Option<u32>,
    gim_old: bool,
    exit_timeout_ms: u64,
}

fn validate_extras(i: usize, kind: Kind, g: &RawGpu, types: &[TypeSpec]) -> Result<Extras, String> {
    let key = |k: &str| format!("gpu[{i}].{k}");
    let available = match g.available.as_deref() {
        None | Some("driver") => Available::Driver,
        Some("core") => Available::Core,
        Some(other) => {
            return Err(format!(
                "{}: expected \"driver\" (the driver has get_available) or \"core\", got {other:?}",
                key("available")
            ))
        }
    };
    let gim_old = match g.gim.as_deref() {
        None | Some("new") => false,
        Some("old") => true,
        Some(other) => {
            return Err(format!(
                "{}: expected \"new\" (MI300X) or \"old\" (S7150), got {other:?}",
                key("gim")
            ))
        }
    };
    // The mtty sample: one 24-port pool shared by its two types.
    let mtty = kind == Kind::Mdev && g.types.is_none() && g.name.as_deref() == Some("mtty");
    let pool = g.pool.or(mtty.then_some(MTTY_PORTS));
    if pool == Some(0) {
        return Err(format!("{}: expected at least 1, got 0", key("pool")));
    }
    if available == Available::Core && pool.is_none() {
        return Err(format!(
            "{}: missing; available = \"core\" counts instances per parent, give their number",
            key("pool")
        ));
    }
    if pool.is_none() && types.iter().any(|t| t.units != 1) {
        return Err(format!(
            "{}: units need a pool to take them from",
            key("pool")
        ));
    }
    let max_gim_vfs = if gim_old { 16 } else { 1 };
    if kind == Kind::AmdGim && g.totalvfs.or(g.numvfs).unwrap_or(0) > max_gim_vfs {
        return Err(format!(
            "{}: GIM supports at most {max_gim_vfs} VFs per GPU here",
            key(if g.totalvfs.is_some() {
                "totalvfs"
            } else {
                "numvfs"
            })
        ));
    }
    Ok(Extras {
        available,
        pool,
        gim_old,
        exit_timeout_ms: g.exit_timeout_ms.unwrap_or(VGPU_EXIT_TIMEOUT_MS),
    })
}

/// Ports of the mtty sample driver (`MAX_MTTYS`), shared by `mtty-1` and `mtty-2`.
const MTTY_PORTS: u32 = 24;

/// NVIDIA's `VGPU_EXIT_TIMEOUT_MILLISECONDS`: how long a destroy waits for the vGPU task.
const VGPU_EXIT_TIMEOUT_MS: u64 = 5000;

/// The mtty sample's types (samples/vfio-mdev/mtty.c): 1 and 2 ports per device.
fn mtty_types() -> Vec<TypeSpec> {
    [
        ("mtty-1", "Single port serial", 1),
        ("mtty-2", "Dual port serial", 2),
    ]
    .into_iter()
    .map(|(id, name, units)| TypeSpec {
        id: id.to_string(),
        name: Some(name.to_string()),
        description: None,
        device_api: "vfio-pci".to_string(),
        framebuffer_mb: None,
        max_instances: MTTY_PORTS / units,
        units,
    })
    .collect()
}

fn validate_types(i: usize, kind: Kind, g: &RawGpu) -> Result<Vec<TypeSpec>, String> {
    let key = |k: &str| format!("gpu[{i}].{k}");
    if let Some(raw) = &g.types {
        if g.framebuffer_mb.is_some() || g.board.is_some() || g.name_prefix.is_some() {
            return Err(format!(
                "{}: an explicit type list replaces board, name_prefix and framebuffer_mb; give one or the other",
                key("types")
            ));
        }
        if raw.is_empty() {
            return Err(format!("{}: expected at least one type", key("types")));
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (j, t) in raw.iter().enumerate() {
            let tkey = |k: &str| format!("gpu[{i}].types[{j}].{k}");
            let id_ok = match kind {
                Kind::NvidiaVfio => {
                    !t.id.is_empty() && t.id.bytes().all(|b| b.is_ascii_digit()) && t.id != "0"
                }
                _ => {
                    !t.id.is_empty()
                        && t.id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
                }
            };
            if !id_ok {
                let want = if kind == Kind::NvidiaVfio {
                    "a non-zero number like \"1145\""
                } else {
                    "a directory name like \"nvidia-46\" or \"mtty-2\""
                };
                return Err(format!("{}: expected {want}, got {:?}", tkey("id"), t.id));
            }
            if !seen.insert(t.id.clone()) {
                return Err(format!("{}: {:?} is listed twice", tkey("id"), t.id));
            }
            if kind.is_nvidia() && t.framebuffer_mb.is_none() {
                return Err(format!(
                    "{}: missing; NVIDIA types need their framebuffer size (MiB) for the one-size rule",
                    tkey("framebuffer_mb")
                ));
            }
            if kind.is_nvidia() && t.name.is_none() {
                return Err(format!(
                    "{}: missing; NVIDIA types need a name like \"GRID P40-1Q\"",
                    tkey("name")
                ));
            }
            if t.framebuffer_mb == Some(0) {
                return Err(format!("{}: expected more than 0", tkey("framebuffer_mb")));
            }
            let units = t.units.unwrap_or(1);
            if units == 0 {
                return Err(format!("{}: expected at least 1, got 0", tkey("units")));
            }
            let max_instances = match (t.max_instances, g.pool) {
                (Some(m), _) => m,
                (None, Some(pool)) => pool / units,
                (None, None) => {
                    return Err(format!(
                        "{}: missing; expected how many instances fit on an empty parent",
                        tkey("max_instances")
                    ))
                }
            };
            out.push(TypeSpec {
                id: t.id.clone(),
                name: t.name.clone(),
                description: t.description.clone(),
                device_api: t
                    .device_api
                    .clone()
                    .unwrap_or_else(|| "vfio-pci".to_string()),
                framebuffer_mb: t.framebuffer_mb,
                max_instances,
                units,
            });
        }
        return Ok(out);
    }
    match kind {
        k if k.is_nvidia() => derive_types(i, k, g, None),
        Kind::Mdev if g.name.as_deref() == Some("mtty") => Ok(mtty_types()),
        Kind::Mdev => Err(format!(
            "{}: missing; kind \"mdev\" needs a list like [{{ id = \"mtty-1\", name = \"Single port serial\", max_instances = 24 }}]",
            key("types")
        )),
        _ => Ok(Vec::new()),
    }
}

/// The board name and framebuffer (GB) of a derived NVIDIA list.
fn board_and_size(i: usize, g: &RawGpu) -> Result<(&str, u64), String> {
    let key = |k: &str| format!("gpu[{i}].{k}");
    let board = g.board.as_deref().ok_or_else(|| {
        format!(
            "{}: missing; expected a board name like \"P40\" (or an explicit types list)",
            key("board")
        )
    })?;
    if board.is_empty() || board.trim() != board || board.contains(char::is_control) {
        return Err(format!(
            "{}: expected a board name like \"A10\" or \"RTX Pro 6000 Blackwell DC\", got {board:?}",
            key("board")
        ));
    }
    let fb = g
        .framebuffer_mb
        .or_else(|| profiles::board_framebuffer_mb(board))
        .ok_or_else(|| {
            format!(
                "{}: missing; {board:?} is not a known board, give its framebuffer in MiB like 24576",
                key("framebuffer_mb")
            )
        })?;
    if fb == 0 || fb % 1024 != 0 || fb > 1024 * 1024 {
        return Err(format!(
            "{}: expected a whole number of GiB in MiB (a multiple of 1024 up to 1048576), got {fb}",
            key("framebuffer_mb")
        ));
    }
    Ok((board, fb / 1024))
}

/// Derives an NVIDIA board's list, with invented ids from `base` (default: the board's own).
fn derive_types(
    i: usize,
    kind: Kind,
    g: &RawGpu,
    base: Option<u32>,
) -> Result<Vec<TypeSpec>, String> {
    let (board, gb) = board_and_size(i, g)?;
    let prefix = g
        .name_prefix
        .clone()
        .unwrap_or_else(|| profiles::board_prefix(board).to_string());
    let style = if kind == Kind::NvidiaVfio {
        IdStyle::Numeric
    } else {
        IdStyle::Mdev
    };
    let base = base.unwrap_or_else(|| profiles::board_base(board));
    Ok(profiles::derive(board, &prefix, gb, base, style))
}

/// Moves derived id ranges of different boards apart so no two boards in one host share an id.
fn assign_distinct_bases(raw: &[RawGpu], gpus: &mut [Gpu]) {
    // (board, framebuffer GB, style) -> base; ranges already taken.
    let mut bases: BTreeMap<(String, u64, bool), u32> = BTreeMap::new();
    let mut taken: Vec<(u32, u32, String)> = Vec::new();
    for (i, (g, r)) in gpus.iter_mut().zip(raw).enumerate() {
        if !g.kind.is_nvidia() || r.types.is_some() {
            continue;
        }
        let Ok((board, gb)) = board_and_size(i, r) else {
            continue;
        };
        if profiles::has_real_ids(board, gb) {
            continue;
        }
        let numeric = g.kind == Kind::NvidiaVfio;
        let key = (board.to_ascii_uppercase(), gb, numeric);
        let count = profiles::derived_count(board, gb);
        let base = if let Some(&b) = bases.get(&key) {
            b
        } else {
            let mut b = profiles::board_base(board);
            while taken
                .iter()
                .any(|(s, e, other)| *other != key.0 && b < *e && *s < b + count)
            {
                b += profiles::BASE_STEP;
            }
            bases.insert(key.clone(), b);
            taken.push((b, b + count, key.0.clone()));
            b
        };
        if base != profiles::board_base(board) {
            if let Ok(types) = derive_types(i, g.kind, r, Some(base)) {
                g.types = types;
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> Result<Host, String> {
        parse(text, "host.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn classic_board_derives_profiles_and_defaults() {
        let h = host(
            "[[gpu]]\naddress = \"0000:82:00.0\"\nkind = \"nvidia-classic\"\nboard = \"P40\"\nframebuffer_mb = 24576\n",
        )
        .unwrap();
        let g = &h.gpus[0];
        // B 1-2, B4 1-2, Q and A at 8 sizes, C at 5 (4 GB and up).
        assert_eq!(g.types.len(), 25);
        assert_eq!(g.types[0].name.as_deref(), Some("GRID P40-1B"));
        assert_eq!(g.driver.as_deref(), Some("nvidia"));
        assert_eq!(g.vendor, 0x10de);
        assert_eq!(g.device, 0x1b38);
        assert!(g.remove_blocks);
        assert_eq!(h.modules, ["vfio", "vfio_pci", "vfio_iommu_type1", "mdev"]);
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let e = host("[[gpu]]\naddress = \"0000:82:00.0\"\nkind = \"nvidia-classic\"\nboard = \"P40\"\nframebuffer_mb = 1000\n")
            .unwrap_err();
        assert!(
            e.starts_with("host.toml: gpu[0].framebuffer_mb: expected"),
            "{e}"
        );
        let e = host("[[gpu]]\naddress = \"82:00.0\"\nkind = \"sriov\"\n").unwrap_err();
        assert!(e.contains("gpu[0].address: expected a PCI address"), "{e}");
        let e = host("[[gpu]]\naddress = \"0000:82:00.0\"\nkind = \"gpu\"\n").unwrap_err();
        assert!(e.contains("gpu[0].kind: expected one of"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e =
            host("[[gpu]]\naddress = \"0000:82:00.0\"\nkind = \"sriov\"\nnumvf = 2\n").unwrap_err();
        assert!(e.starts_with("host.toml: ") && e.contains("numvf"), "{e}");
    }

    #[test]
    fn keys_of_other_kinds_are_refused() {
        let e = host("[[gpu]]\naddress = \"0000:82:00.0\"\nkind = \"nvidia-classic\"\nboard = \"P40\"\nframebuffer_mb = 24576\nnumvfs = 2\n")
            .unwrap_err();
        assert!(
            e.contains("gpu[0].numvfs: not used by kind \"nvidia-classic\""),
            "{e}"
        );
    }

    #[test]
    fn amd_gim_is_never_sriov_configurable() {
        let h = host("[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"amd-gim\"\ngim = \"old\"\ntotalvfs = 8\n")
            .unwrap();
        assert_eq!(h.gpus[0].numvfs, 0);
        assert!(!h.gpus[0].sriov_configurable);
        assert_eq!(h.modules, ["vfio", "vfio_pci", "vfio_iommu_type1"]);
    }

    #[test]
    fn old_gim_pf_has_no_driver_and_new_gim_one_vf_with_its_own_id() {
        let old = host(
            "[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"amd-gim\"\ngim = \"old\"\nnumvfs = 16\n",
        )
        .unwrap();
        assert_eq!(
            (old.gpus[0].device, old.gpus[0].driver.as_deref()),
            (0x6929, None)
        );
        let new =
            host("[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"amd-gim\"\nnumvfs = 1\n").unwrap();
        let g = &new.gpus[0];
        assert_eq!((g.device, g.vf_device, g.totalvfs), (0x74a1, 0x74b5, 1));
        assert_eq!(g.driver.as_deref(), Some("gim"));
        let e = host("[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"amd-gim\"\nnumvfs = 2\n")
            .unwrap_err();
        assert!(e.contains("gpu[0].numvfs: GIM supports at most 1"), "{e}");
    }

    #[test]
    fn nvidia_pfs_are_not_sriov_configurable_by_default() {
        let h = host("[[gpu]]\naddress = \"0000:41:00.0\"\nkind = \"nvidia-sriov\"\nboard = \"A2\"\n[[gpu]]\naddress = \"0000:05:00.0\"\nkind = \"sriov\"\n").unwrap();
        assert!(!h.gpus[0].sriov_configurable);
        assert!(h.gpus[1].sriov_configurable);
        assert_eq!(
            h.gpus[0].types.len(),
            15,
            "framebuffer defaults to the board's 16 GB"
        );
        assert!(h.modules.contains(&"pci_pf_stub".to_string()));
        assert!(!h.vfio_pci_enable_sriov);
    }

    #[test]
    fn mtty_by_name_is_the_kernel_sample_with_a_shared_port_pool() {
        let h = host("[[gpu]]\nkind = \"mdev\"\nname = \"mtty\"\n").unwrap();
        let g = &h.gpus[0];
        assert_eq!(g.pool, Some(24));
        assert_eq!(g.available, Available::Driver);
        let t: Vec<(&str, u32, u32)> = g
            .types
            .iter()
            .map(|t| (t.id.as_str(), t.max_instances, t.units))
            .collect();
        assert_eq!(t, [("mtty-1", 24, 1), ("mtty-2", 12, 2)]);
        let e = host("[[gpu]]\nkind = \"mdev\"\nname = \"x\"\navailable = \"core\"\ntypes = [{ id = \"x-1\", max_instances = 2 }]\n").unwrap_err();
        assert!(e.contains("gpu[0].pool: missing"), "{e}");
    }

    #[test]
    fn vf_addresses_follow_offset_and_stride() {
        let h = host("[[gpu]]\naddress = \"0000:41:00.0\"\nkind = \"nvidia-vfio\"\nboard = \"L40S\"\nframebuffer_mb = 49152\n")
            .unwrap();
        let g = &h.gpus[0];
        assert_eq!(g.vf_address(0).as_deref(), Some("0000:41:00.4"));
        assert_eq!(g.vf_address(4).as_deref(), Some("0000:41:01.0"));
        assert_eq!(g.types[0].id, "1145");
    }

    #[test]
    fn overlapping_vfs_of_two_gpus_are_refused() {
        let e = host("[[gpu]]\naddress = \"0000:41:00.0\"\nkind = \"sriov\"\n[[gpu]]\naddress = \"0000:41:00.5\"\nkind = \"sriov\"\n")
            .unwrap_err();
        assert!(
            e.contains("gpu[1].address: device 0000:41:00.5 is already used by gpu[0]"),
            "{e}"
        );
    }

    #[test]
    fn mdev_kind_needs_types_and_a_name_or_address() {
        let e = host("[[gpu]]\nkind = \"mdev\"\nname = \"gvt\"\n").unwrap_err();
        assert!(e.contains("gpu[0].types: missing"), "{e}");
        let h = host("[[gpu]]\nkind = \"mdev\"\nname = \"mtty\"\ntypes = [{ id = \"mtty-1\", max_instances = 2 }]\n").unwrap();
        assert_eq!(h.gpus[0].location, Location::Virtual("mtty".into()));
        assert_eq!(h.gpus[0].driver, None);
    }

    #[test]
    fn two_boards_get_disjoint_type_ids() {
        let h = host("[[gpu]]\naddress = \"0000:01:00.0\"\nkind = \"nvidia-classic\"\nboard = \"P40\"\nframebuffer_mb = 24576\n[[gpu]]\naddress = \"0000:02:00.0\"\nkind = \"nvidia-classic\"\nboard = \"T4\"\nframebuffer_mb = 16384\n[[gpu]]\naddress = \"0000:03:00.0\"\nkind = \"nvidia-classic\"\nboard = \"P40\"\nframebuffer_mb = 24576\n")
            .unwrap();
        let a: BTreeSet<_> = h.gpus[0].types.iter().map(|t| &t.id).collect();
        let b: BTreeSet<_> = h.gpus[1].types.iter().map(|t| &t.id).collect();
        assert!(a.is_disjoint(&b));
        assert_eq!(h.gpus[0].types, h.gpus[2].types);
    }

    #[test]
    fn hex_ids_accept_strings_and_integers() {
        let h = host("[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"sriov\"\nvendor = \"0x15b3\"\ndevice = 4123\n").unwrap();
        assert_eq!(h.gpus[0].vendor, 0x15b3);
        assert_eq!(h.gpus[0].device, 4123);
        let e = host("[[gpu]]\naddress = \"0000:04:00.0\"\nkind = \"sriov\"\nvendor = \"15b3\"\n")
            .unwrap_err();
        assert!(e.contains("gpu[0].vendor: expected a hex string"), "{e}");
    }
}
