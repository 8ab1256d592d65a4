//! Validation of one `[[gpu]]` entry into a [`Gpu`] with every default applied.
//!
//! The defaults of an entry depend on each other (the GIM generation decides the device id and
//! the VF count, the location decides whether there is a driver at all), and every error must
//! name the entry's key. Each concern (kind, location, PCI identity, SR-IOV, per-kind extras)
//! is one validator on [`Entry`], which carries what they all need, so that the order in which
//! they depend on each other is visible in [`validate`] alone.

use super::keys;
use super::raw::{number, RawGpu};
use super::{Available, Gpu, Kind, Location};
use crate::kparse;
use crate::placement::Generation;
use crate::typespec::TypeSpec;

/// Ports of the mtty sample driver (`MAX_MTTYS`), shared by `mtty-1` and `mtty-2`.
pub(super) const MTTY_PORTS: u32 = 24;

/// NVIDIA's `VGPU_EXIT_TIMEOUT_MILLISECONDS`: how long a destroy waits for the vGPU task.
const VGPU_EXIT_TIMEOUT_MS: u64 = 5000;

const KINDS: &str = "nvidia-classic, nvidia-sriov, nvidia-vfio, amd-gim, sriov, mdev";

/// One raw entry with its position (for error messages) and its parsed kind.
#[derive(Clone, Copy)]
pub(super) struct Entry<'a> {
    /// Index in the file's `[[gpu]]` list.
    pub(super) index: usize,
    /// The driver model.
    pub(super) kind: Kind,
    /// The entry as written.
    pub(super) raw: &'a RawGpu,
}

/// PCI ids and drivers of a device with the kind's defaults applied.
struct Identity {
    vendor: u16,
    device: u16,
    vf_device: u16,
    class: u32,
    driver: Option<String>,
    vf_driver: Option<String>,
}

/// Keys of one kind each: the mdev availability model, the GIM generation, the exit timeout.
struct Extras {
    available: Available,
    pool: Option<u32>,
    gim_old: bool,
    exit_timeout_ms: u64,
}

/// The SR-IOV capability of the physical function.
struct Sriov {
    numvfs: u16,
    totalvfs: u16,
    configurable: bool,
    vf_offset: u16,
    vf_stride: u16,
}

/// Validates entry `index` of the file.
pub(super) fn validate(index: usize, raw: &RawGpu) -> Result<Gpu, String> {
    let e = Entry {
        index,
        kind: kind(index, raw)?,
        raw,
    };
    if let Some(k) = keys::unused_key(e.kind, raw) {
        return Err(format!(
            "{}: not used by kind {:?}",
            e.key(k),
            e.kind.as_str()
        ));
    }
    let location = e.location()?;
    let types = e.types()?;
    let extras = e.extras(&types)?;
    let ident = e.identity(&extras, matches!(location, Location::Pci(_)))?;
    let sriov = e.sriov(&extras)?;
    let gpu = Gpu {
        kind: e.kind,
        location,
        types,
        self_cleanup_ms: raw.self_cleanup_ms.unwrap_or(0),
        remove_blocks: raw.remove_blocks.unwrap_or(true),
        appear_after_ms: raw.appear_after_ms.unwrap_or(0),
        numvfs: sriov.numvfs,
        totalvfs: sriov.totalvfs,
        sriov_configurable: sriov.configurable,
        reset_busy_ms: raw.reset_busy_ms.unwrap_or(0),
        exit_timeout_ms: extras.exit_timeout_ms,
        available: extras.available,
        pool: extras.pool,
        gim_old: extras.gim_old,
        generation: e.generation()?,
        partition: e.partition(sriov.numvfs, extras.gim_old)?,
        vf_offset: sriov.vf_offset,
        vf_stride: sriov.vf_stride,
        vendor: ident.vendor,
        device: ident.device,
        vf_device: ident.vf_device,
        class: ident.class,
        numa_node: raw.numa_node.unwrap_or(-1),
        iommu_group: raw.iommu_group,
        driver: ident.driver,
        vf_driver: ident.vf_driver,
    };
    e.check_vf_range(&gpu)?;
    Ok(gpu)
}

/// The entry's `kind`, which every other key depends on.
fn kind(index: usize, raw: &RawGpu) -> Result<Kind, String> {
    let key = format!("gpu[{index}].kind");
    let s = raw
        .kind
        .as_deref()
        .ok_or_else(|| format!("{key}: missing; expected one of {KINDS}"))?;
    Kind::parse(s).ok_or_else(|| format!("{key}: expected one of {KINDS}, got {s:?}"))
}

impl Entry<'_> {
    /// The full name of key `k` of this entry (`gpu[1].numvfs`).
    pub(super) fn key(&self, k: &str) -> String {
        format!("gpu[{}].{k}", self.index)
    }

    /// Where the device lives: a PCI address, or a virtual name for a non-PCI mdev parent; keys
    /// that only PCI devices have are refused on a virtual one.
    fn location(&self) -> Result<Location, String> {
        let g = self.raw;
        let location = match (self.kind, &g.address, &g.name) {
            (Kind::Mdev, Some(_), Some(_)) => {
                return Err(format!(
                    "{}: give either address (a PCI parent) or name (a virtual parent), not both",
                    self.key("name")
                ))
            }
            (Kind::Mdev, None, Some(n)) => self.virtual_name(n)?,
            (_, Some(a), _) => Location::Pci(kparse::parse_pci_address(a).ok_or_else(|| {
                format!(
                    "{}: expected a PCI address like \"0000:82:00.0\", got {a:?}",
                    self.key("address")
                )
            })?),
            (Kind::Mdev, None, None) => {
                return Err(format!(
                    "{}: missing; kind \"mdev\" needs address (a PCI parent) or name (a virtual parent like \"mtty\")",
                    self.key("name")
                ))
            }
            (_, None, _) => {
                return Err(format!(
                    "{}: missing; expected a PCI address like \"0000:82:00.0\"",
                    self.key("address")
                ))
            }
        };
        if !matches!(location, Location::Pci(_)) {
            self.refuse_pci_keys()?;
        }
        Ok(location)
    }

    /// A virtual parent's name: a single path component that is not a PCI address.
    fn virtual_name(&self, n: &str) -> Result<Location, String> {
        if n.is_empty() || n.contains('/') || kparse::parse_pci_address(n).is_some() {
            return Err(format!(
                "{}: expected a device name like \"mtty\", got {n:?}",
                self.key("name")
            ));
        }
        Ok(Location::Virtual(n.to_string()))
    }

    /// A virtual parent has no PCI ids, NUMA node, IOMMU group or PCI driver.
    fn refuse_pci_keys(&self) -> Result<(), String> {
        let g = self.raw;
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
                    self.key(k)
                ));
            }
        }
        Ok(())
    }

    /// PCI ids and drivers: the kind's (and board's, and GIM generation's) defaults unless
    /// given. A virtual parent, and the old GIM's hand-probed PF, have no driver.
    fn identity(&self, extras: &Extras, is_pci: bool) -> Result<Identity, String> {
        let g = self.raw;
        let (def_vendor, def_class, def_driver, def_vf_driver) = self.default_ids();
        let vendor = self.id16("vendor", &g.vendor)?.unwrap_or(def_vendor);
        let device = self
            .id16("device", &g.device)?
            .unwrap_or_else(|| self.default_device(extras));
        // MI300X VFs have their own id (0x74b5); NVIDIA VFs share the PF's.
        let def_vf_device = if self.kind == Kind::AmdGim && !extras.gim_old && g.device.is_none() {
            0x74b5
        } else {
            device
        };
        let vf_device = self
            .id16("vf_device", &g.vf_device)?
            .unwrap_or(def_vf_device);
        let class =
            number(&self.key("class"), &g.class, 0xff_ffff)?.map_or(def_class, |v| v as u32);
        self.check_driver_names()?;
        let driver = (is_pci && !extras.gim_old).then(|| {
            g.driver
                .clone()
                .unwrap_or_else(|| def_driver.unwrap_or("").to_string())
        });
        Ok(Identity {
            vendor,
            device,
            vf_device,
            class,
            driver,
            vf_driver: g
                .vf_driver
                .clone()
                .or_else(|| def_vf_driver.map(str::to_string)),
        })
    }

    /// A 16-bit PCI id under key `k`, if given.
    fn id16(&self, k: &str, v: &Option<toml::Value>) -> Result<Option<u16>, String> {
        Ok(number(&self.key(k), v, 0xffff)?.map(|v| v as u16))
    }

    /// The kind's vendor, class, PF driver and VF driver.
    fn default_ids(&self) -> (u16, u32, Option<&'static str>, Option<&'static str>) {
        match self.kind {
            Kind::NvidiaClassic => (0x10de, 0x030200, Some("nvidia"), None),
            Kind::NvidiaSriov | Kind::NvidiaVfio => {
                (0x10de, 0x030200, Some("nvidia"), Some("nvidia"))
            }
            Kind::AmdGim => (0x1002, 0x038000, Some("gim"), None),
            Kind::Sriov => (0x8086, 0x038000, Some("i915"), None),
            Kind::Mdev => (0x8086, 0x030000, Some("i915"), None),
        }
    }

    /// The PF's device id: the NVIDIA board's, the GIM generation's card, or a stand-in.
    fn default_device(&self, extras: &Extras) -> u16 {
        match self.kind {
            k if k.is_nvidia() => self
                .raw
                .board
                .as_deref()
                .and_then(crate::profiles::board_device_id)
                .unwrap_or(0x0000),
            Kind::AmdGim if extras.gim_old => 0x6929,
            Kind::AmdGim => 0x74a1,
            Kind::Sriov => 0x56c0,
            _ => 0x3e92,
        }
    }

    /// `driver` and `vf_driver` must be usable as a directory name under `drivers/`.
    fn check_driver_names(&self) -> Result<(), String> {
        for (k, d) in [
            ("driver", &self.raw.driver),
            ("vf_driver", &self.raw.vf_driver),
        ] {
            if let Some(d) = d {
                if d.is_empty() || d.contains('/') || d.contains(char::is_whitespace) {
                    return Err(format!(
                        "{}: expected a driver name like \"vfio-pci\", got {d:?}",
                        self.key(k)
                    ));
                }
            }
        }
        Ok(())
    }

    /// VF counts, whether `sriov_numvfs` works, and where the VFs sit.
    fn sriov(&self, extras: &Extras) -> Result<Sriov, String> {
        let g = self.raw;
        let def_totalvfs = match self.kind {
            // A production MI300X reads sriov_totalvfs 1 (its 1-VF firmware; `amd-smi static
            // --num-vf` captures in amd/MxGPU-Virtualization's smi-lib docs); 8 VFs (CPX) need
            // the multi-VF firmware (GIM 8.5.0.K release notes), set with `totalvfs`.
            Kind::AmdGim if !extras.gim_old => 1,
            k if k.has_sriov() => 16,
            _ => 0,
        };
        let totalvfs = g.totalvfs.unwrap_or(def_totalvfs);
        let numvfs = g.numvfs.unwrap_or(0);
        if numvfs > totalvfs {
            return Err(format!(
                "{}: expected at most totalvfs ({totalvfs}), got {numvfs}",
                self.key("numvfs")
            ));
        }
        let configurable = self.sriov_configurable()?;
        let vf_stride = g.vf_stride.unwrap_or(1);
        if self.kind.has_sriov() && vf_stride == 0 {
            return Err(format!(
                "{}: expected at least 1, got 0",
                self.key("vf_stride")
            ));
        }
        Ok(Sriov {
            numvfs,
            totalvfs,
            configurable,
            vf_offset: g.vf_offset.unwrap_or(4),
            vf_stride,
        })
    }

    /// Whether the PF driver has `sriov_configure`: GIM never, NVIDIA not by default (VFs are
    /// enabled through sriov-manage), everything else by default.
    fn sriov_configurable(&self) -> Result<bool, String> {
        Ok(match (self.kind, self.raw.sriov_configurable) {
            (Kind::AmdGim, Some(true)) => {
                return Err(format!(
                    "{}: GIM has no sriov_configure callback, its VF count is fixed at load; remove this key",
                    self.key("sriov_configurable")
                ))
            }
            (Kind::AmdGim, _) => false,
            (Kind::NvidiaSriov | Kind::NvidiaVfio, v) => v.unwrap_or(false),
            (_, v) => v.unwrap_or(true),
        })
    }

    /// Every VF must have a PCI address: the last one may not fall beyond bus ff.
    fn check_vf_range(&self, gpu: &Gpu) -> Result<(), String> {
        if !self.kind.has_sriov() {
            return Ok(());
        }
        let Some(last) = gpu.totalvfs.checked_sub(1) else {
            return Ok(());
        };
        if gpu.vf_address(last).is_none() {
            return Err(format!(
                "{}: VF {last} would fall beyond bus ff with vf_offset {} and vf_stride {}",
                self.key("totalvfs"),
                gpu.vf_offset,
                gpu.vf_stride
            ));
        }
        Ok(())
    }

    /// The keys only one kind has: `available` and `pool` (mdev), `gim` (AMD) and the exit
    /// timeout (kernel-6.8+ NVIDIA), checked against each other and the types.
    fn extras(&self, types: &[TypeSpec]) -> Result<Extras, String> {
        let g = self.raw;
        let available = self.available()?;
        let gim_old = self.gim_old()?;
        // The mtty sample: one 24-port pool shared by its two types.
        let mtty =
            self.kind == Kind::Mdev && g.types.is_none() && g.name.as_deref() == Some("mtty");
        let pool = g.pool.or(mtty.then_some(MTTY_PORTS));
        self.check_pool(pool, available, types)?;
        // The S7150 GIM's vf_num range; the Instinct GIM's largest count (an MI300X or MI350 in
        // CPX, GIM 8.5+ release notes; a V710's 12 is a card this simulator does not model).
        let max_gim_vfs = if gim_old { 16 } else { 8 };
        if self.kind == Kind::AmdGim && g.totalvfs.or(g.numvfs).unwrap_or(0) > max_gim_vfs {
            return Err(format!(
                "{}: GIM supports at most {max_gim_vfs} VFs per GPU here",
                self.key(if g.totalvfs.is_some() {
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

    /// The Instinct GIM's partition modes: `compute_partition` (SPX, DPX, QPX, CPX, or "none"
    /// for a card without spatial partitions), by default the one GIM resets to for the VF
    /// count (`amdgv_gpumon_reset_partition_mode`: 1 VF SPX, 2 DPX, 4 QPX, 8 CPX), and
    /// `memory_partition` (NPS1, NPS2, NPS4, NPS8; default NPS1). The old GIM has neither.
    fn partition(&self, numvfs: u16, gim_old: bool) -> Result<Option<(String, String)>, String> {
        if self.kind != Kind::AmdGim || gim_old {
            return Ok(None);
        }
        let default = match numvfs {
            1 => "SPX",
            2 => "DPX",
            4 => "QPX",
            8 => "CPX",
            _ => "none",
        };
        let compute = self.raw.compute_partition.as_deref().unwrap_or(default);
        if !["SPX", "DPX", "QPX", "CPX", "none"].contains(&compute) {
            return Err(format!(
                "{}: expected \"SPX\", \"DPX\", \"QPX\", \"CPX\" or \"none\", got {compute:?}",
                self.key("compute_partition")
            ));
        }
        let memory = self.raw.memory_partition.as_deref().unwrap_or("NPS1");
        if !["NPS1", "NPS2", "NPS4", "NPS8"].contains(&memory) {
            return Err(format!(
                "{}: expected \"NPS1\", \"NPS2\", \"NPS4\" or \"NPS8\", got {memory:?}",
                self.key("memory_partition")
            ));
        }
        if compute == "none" {
            return Ok(Some((String::new(), memory.to_string())));
        }
        Ok(Some((compute.to_string(), memory.to_string())))
    }

    /// `generation`: whose placement rules the board follows (mixed-size mode).
    fn generation(&self) -> Result<Option<Generation>, String> {
        self.raw
            .generation
            .as_deref()
            .map(|s| {
                Generation::parse(s).ok_or_else(|| {
                    format!(
                        "{}: expected \"ampere\", \"ada\", \"hopper\" or \"blackwell\", got {s:?}",
                        self.key("generation")
                    )
                })
            })
            .transpose()
    }

    /// `available`: who counts a generic parent's instances.
    fn available(&self) -> Result<Available, String> {
        match self.raw.available.as_deref() {
            None | Some("driver") => Ok(Available::Driver),
            Some("core") => Ok(Available::Core),
            Some(other) => Err(format!(
                "{}: expected \"driver\" (the driver has get_available) or \"core\", got {other:?}",
                self.key("available")
            )),
        }
    }

    /// `gim`: whether the AMD GPU runs the old GIM.
    fn gim_old(&self) -> Result<bool, String> {
        match self.raw.gim.as_deref() {
            None | Some("new") => Ok(false),
            Some("old") => Ok(true),
            Some(other) => Err(format!(
                "{}: expected \"new\" (MI300X) or \"old\" (S7150), got {other:?}",
                self.key("gim")
            )),
        }
    }

    /// A pool is never empty, the core needs one to count from, and units are taken from one.
    fn check_pool(
        &self,
        pool: Option<u32>,
        available: Available,
        types: &[TypeSpec],
    ) -> Result<(), String> {
        if pool == Some(0) {
            return Err(format!("{}: expected at least 1, got 0", self.key("pool")));
        }
        if available == Available::Core && pool.is_none() {
            return Err(format!(
                "{}: missing; available = \"core\" counts instances per parent, give their number",
                self.key("pool")
            ));
        }
        if pool.is_none() && types.iter().any(|t| t.units != 1) {
            return Err(format!(
                "{}: units need a pool to take them from",
                self.key("pool")
            ));
        }
        Ok(())
    }
}
