//! The in-memory device model: PCI functions, mdev parents and devices, drivers, holds, faults.
//!
//! Everything the filesystem shows is computed from this state, and every write is decided
//! here, errno for errno, so the rules can be unit-tested without FUSE. The model is a plain
//! state machine driven by the caller's clock: [`Model::advance`] moves time forward and fires
//! the timers (driver self-clean-up, delayed parent registration, reset-busy windows) lazily,
//! which keeps it deterministic in tests. Operations that must wait (a remove of a held device,
//! a slow create) are returned as [`WriteOutcome::Blocked`] / [`WriteOutcome::Delayed`] for the
//! caller to finish later, so the model itself never blocks.
//!
//! The rules are split by interface: `mdev` (mdev core and NVIDIA capacity), `pci` (SR-IOV and
//! driver binding), `vfio` (NVIDIA's kernel-6.8+ per-VF interface), `mixed` (its mixed-size
//! mode and placements), `attrs` (reading and
//! writing attribute files) and `commands` (what `sim/control` makes the outside world do).

mod attrs;
mod commands;
mod mdev;
mod mixed;
mod pci;
mod vfio;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::host::{Gpu, Host, Kind, Location};
use crate::kparse;
use crate::typespec::TypeSpec;

pub use attrs::{Attr, DriverAttr, PciAttr, TypeAttr, VfioAttr};

pub use crate::kparse::Errno;

/// What a write did: finished, or left for the caller to complete later.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Finished with this result.
    Done(Result<(), Errno>),
    /// A remove of a held device: it completes (successfully) once the device is released;
    /// poll [`Model::remove_pending`] after each change.
    Blocked {
        /// The device being removed.
        uuid: String,
        /// Identifies this incarnation of the device.
        serial: u64,
    },
    /// A clear of a kernel-6.8+ VF's `current_vgpu_type` while NVIDIA's driver still waits
    /// for the vGPU task to exit: call [`Model::finish_clear`] after `delay`.
    Waiting {
        /// The VF.
        addr: String,
        /// How long the write blocks.
        delay: Duration,
    },
    /// A create on a parent with a `create-delay` fault: call [`Model::finish_create`] after
    /// `delay`; the device stays invisible but reserved until then.
    Delayed {
        /// The device being created.
        uuid: String,
        /// Identifies this incarnation of the device.
        serial: u64,
        /// How long the create takes.
        delay: Duration,
    },
}

/// Where a PCI function sits in the SR-IOV hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A physical function.
    Pf {
        /// VFs currently enabled.
        numvfs: u16,
        /// `sriov_drivers_autoprobe`.
        autoprobe: bool,
    },
    /// A virtual function of `pf`.
    Vf {
        /// Address of the physical function.
        pf: String,
        /// VF index (`virtfn<index>`).
        index: u16,
    },
}

/// A present PCI function.
#[derive(Clone, Debug)]
pub struct PciDevice {
    /// Its address, also its directory name.
    pub address: String,
    /// Index of the host file's `[[gpu]]` it belongs to.
    pub gpu: usize,
    /// PF or VF.
    pub role: Role,
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
    /// PCI class code.
    pub class: u32,
    /// NUMA node, -1 when unknown.
    pub numa_node: i32,
    /// Bound driver.
    pub driver: Option<String>,
    /// `driver_override`.
    pub driver_override: Option<String>,
    /// IOMMU group.
    pub iommu_group: u32,
    /// Opened by a VM (`hold`).
    pub held: bool,
    released_at: Option<Instant>,
    /// kernel-6.8+ NVIDIA VFs: the vGPU configured on this VF.
    pub vgpu: Option<VgpuSlot>,
}

/// The kernel-6.8+ NVIDIA per-VF vGPU state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VgpuSlot {
    /// `current_vgpu_type` (None reads as 0).
    pub current: Option<String>,
    /// `nvidia/vgpu_params`.
    pub params: String,
    /// `nvidia/placement_id`: the first framebuffer slot the vGPU takes, on boards with
    /// placement ids.
    pub placement: Option<u32>,
}

/// The life cycle of an mdev.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MdevState {
    /// A slow create is in progress: reserved but not visible yet.
    Creating,
    /// Present.
    Live,
    /// A remove waits for the holder to release it; still visible.
    Removing,
}

/// A mediated device.
#[derive(Clone, Debug)]
pub struct Mdev {
    /// Lower-case UUID, its directory name.
    pub uuid: String,
    /// Parent device name (PCI address or virtual name).
    pub parent: String,
    /// Type id.
    pub type_id: String,
    /// Life-cycle state.
    pub state: MdevState,
    /// Opened by a VM (`hold`).
    pub held: bool,
    cleanup_at: Option<Instant>,
    /// `nvidia/vgpu_params`.
    pub params: String,
    /// IOMMU group allocated at create.
    pub iommu_group: u32,
    serial: u64,
}

#[derive(Debug)]
struct GpuState {
    spec: Gpu,
    plugged: bool,
    appear_at: Instant,
    pf_group: u32,
    /// NVIDIA's mixed-size ("heterogeneous") vGPU mode: resource-manager state, lost when the
    /// PF leaves its driver.
    mixed: bool,
}

/// The simulated host.
#[derive(Debug)]
pub struct Model {
    modules: Vec<String>,
    gpus: Vec<GpuState>,
    pci: BTreeMap<String, PciDevice>,
    mdevs: BTreeMap<String, Mdev>,
    dyn_ids: BTreeMap<String, BTreeSet<(u16, u16)>>,
    explicit_groups: BTreeSet<u32>,
    vfio_pci_enable_sriov: bool,
    nvidia_version: String,
    nvidia_registry: (String, String),
    nodes: Vec<crate::host::Node>,
    next_group: u32,
    next_serial: u64,
    create_eio: BTreeMap<String, u32>,
    create_delay: BTreeMap<String, Duration>,
    remove_eio: BTreeSet<String>,
    events: Vec<String>,
    /// Filesystem requests served so far (`sim/requests`).
    pub requests: u64,
    now: Instant,
}

impl Model {
    /// Builds the host as it looks right after boot: PFs bound, configured VFs enabled.
    pub fn new(host: Host, now: Instant) -> Model {
        let explicit_groups: BTreeSet<u32> =
            host.gpus.iter().filter_map(|g| g.iommu_group).collect();
        let mut m = Model {
            modules: host.modules,
            gpus: Vec::new(),
            pci: BTreeMap::new(),
            mdevs: BTreeMap::new(),
            dyn_ids: BTreeMap::new(),
            explicit_groups,
            vfio_pci_enable_sriov: host.vfio_pci_enable_sriov,
            nvidia_version: host.nvidia_version,
            nvidia_registry: host.nvidia_registry,
            nodes: host.nodes,
            next_group: 1,
            next_serial: 1,
            create_eio: BTreeMap::new(),
            create_delay: BTreeMap::new(),
            remove_eio: BTreeSet::new(),
            events: Vec::new(),
            requests: 0,
            now,
        };
        for spec in host.gpus {
            let pf_group = match spec.iommu_group {
                Some(g) => g,
                None => m.alloc_group(),
            };
            m.gpus.push(GpuState {
                appear_at: now + Duration::from_millis(spec.appear_after_ms),
                spec,
                plugged: true,
                pf_group,
                mixed: false,
            });
        }
        for i in 0..m.gpus.len() {
            m.bring_up(i);
        }
        m
    }

    /// Moves the clock to `now` (never backwards) and fires due timers: an mdev whose driver
    /// cleans up by itself disappears `self_cleanup_ms` after its release.
    pub fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
        let now = self.now;
        self.mdevs.retain(|_, d| {
            !(d.state != MdevState::Creating && !d.held && d.cleanup_at.is_some_and(|t| t <= now))
        });
    }

    /// The model's current time.
    pub fn now(&self) -> Instant {
        self.now
    }

    fn alloc_group(&mut self) -> u32 {
        while self.explicit_groups.contains(&self.next_group) {
            self.next_group += 1;
        }
        let g = self.next_group;
        self.next_group += 1;
        g
    }

    fn alloc_serial(&mut self) -> u64 {
        let s = self.next_serial;
        self.next_serial += 1;
        s
    }

    /// Creates a GPU's devices as after a (re)probe: the PF bound to its driver, VFs enabled.
    fn bring_up(&mut self, gi: usize) {
        let g = &self.gpus[gi];
        let Location::Pci(addr) = &g.spec.location else {
            return;
        };
        let spec = &g.spec;
        let pf = PciDevice {
            address: addr.clone(),
            gpu: gi,
            role: Role::Pf {
                numvfs: 0,
                autoprobe: true,
            },
            vendor: spec.vendor,
            device: spec.device,
            class: spec.class,
            numa_node: spec.numa_node,
            driver: spec.driver.clone(),
            driver_override: None,
            iommu_group: g.pf_group,
            held: false,
            released_at: None,
            vgpu: None,
        };
        let numvfs = if spec.kind.has_sriov() {
            spec.numvfs
        } else {
            0
        };
        let addr = addr.clone();
        self.pci.insert(addr.clone(), pf);
        if numvfs > 0 {
            self.enable_vfs(&addr, numvfs);
        }
    }

    // ----- queries used by the filesystem layout -----

    /// Kernel modules shown under `sys/module`.
    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// What `sys/module/nvidia/version` reads.
    pub fn nvidia_version(&self) -> &str {
        &self.nvidia_version
    }

    /// `proc/driver/nvidia/params` as `nv_procfs_read_params` prints it (open-gpu-kernel-modules
    /// `kernel-open/nvidia/nv-procfs.c`): `Name: value` lines, string options quoted; only the
    /// lines vgpu-hook reads and their neighbours.
    pub fn nvidia_params(&self) -> String {
        let (global, per_device) = &self.nvidia_registry;
        format!(
            "ResmanDebugLevel: 4294967295\nEnableMSI: 1\nCoherentGPUMemoryMode: \"\"\nRegistryDwords: \"{global}\"\nRegistryDwordsPerDevice: \"{per_device}\"\nRmMsg: \"\"\nGpuBlacklist: \"\"\nTemporaryFilePath: \"\"\n"
        )
    }

    /// The NUMA nodes under `sys/devices/system/node`.
    pub fn nodes(&self) -> &[crate::host::Node] {
        &self.nodes
    }

    /// Whether the `mdev` module is loaded: without it there is no mdev bus, class or parent.
    pub fn mdev_loaded(&self) -> bool {
        self.modules.iter().any(|m| m == "mdev")
    }

    /// Present PCI functions, by address.
    pub fn pci_devices(&self) -> impl Iterator<Item = &PciDevice> {
        self.pci.values()
    }

    /// A present PCI function.
    pub fn pci_device(&self, addr: &str) -> Option<&PciDevice> {
        self.pci.get(addr)
    }

    /// The host file's description of the GPU a device belongs to.
    pub fn gpu_spec(&self, index: usize) -> &Gpu {
        &self.gpus[index].spec
    }

    /// Names of the present virtual (non-PCI) devices.
    pub fn virtual_devices(&self) -> Vec<&str> {
        self.gpus
            .iter()
            .filter(|g| g.plugged)
            .filter_map(|g| match &g.spec.location {
                Location::Virtual(n) => Some(n.as_str()),
                Location::Pci(_) => None,
            })
            .collect()
    }

    /// The path of a device directory relative to the mount: a PCI address, a virtual device
    /// name or a visible mdev's UUID.
    pub fn device_path(&self, name: &str) -> Option<String> {
        if self.pci.contains_key(name) {
            return Some(format!("sys/devices/pci0000:00/{name}"));
        }
        if self.virtual_devices().contains(&name) {
            return Some(format!("sys/devices/virtual/{name}/{name}"));
        }
        let d = self.mdev(name)?;
        Some(format!("{}/{}", self.device_path(&d.parent)?, d.uuid))
    }

    /// The GPU that registers `parent` as an mdev parent, if its device exists and is of a kind
    /// that does (whether or not it is registered right now).
    fn gpu_of_parent(&self, parent: &str) -> Option<usize> {
        if let Some(dev) = self.pci.get(parent) {
            let kind = self.gpus[dev.gpu].spec.kind;
            let is_parent = matches!(
                (&dev.role, kind),
                (Role::Pf { .. }, Kind::NvidiaClassic | Kind::Mdev)
                    | (Role::Vf { .. }, Kind::NvidiaSriov)
            );
            return is_parent.then_some(dev.gpu);
        }
        self.gpus.iter().position(|g| {
            g.plugged && matches!(&g.spec.location, Location::Virtual(n) if n == parent)
        })
    }

    /// Whether `parent` is a registered mdev parent now: present, bound to its vendor driver,
    /// past its `appear_after_ms`, and the mdev module loaded.
    pub fn parent_registered(&self, parent: &str) -> bool {
        let Some(gi) = self.gpu_of_parent(parent) else {
            return false;
        };
        let g = &self.gpus[gi];
        if !self.mdev_loaded() || self.now < g.appear_at {
            return false;
        }
        match self.pci.get(parent) {
            None => true,
            Some(dev) => dev.driver.is_some() && dev.driver == self.home_driver(dev),
        }
    }

    /// Registered mdev parents (what `sys/class/mdev_bus` lists).
    pub fn parents(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .pci
            .keys()
            .cloned()
            .chain(self.virtual_devices().into_iter().map(str::to_string))
            .filter(|p| self.parent_registered(p))
            .collect();
        out.sort();
        out
    }

    /// The types a registered parent supports.
    pub fn parent_types(&self, parent: &str) -> &[TypeSpec] {
        match self.gpu_of_parent(parent) {
            Some(gi) if self.parent_registered(parent) => &self.gpus[gi].spec.types,
            _ => &[],
        }
    }

    /// Whether a parent's GPU is an NVIDIA one (its mdevs get an `nvidia/` directory).
    pub fn parent_is_nvidia(&self, parent: &str) -> bool {
        self.gpu_of_parent(parent)
            .is_some_and(|gi| self.gpus[gi].spec.kind.is_nvidia())
    }

    /// A visible mdev (not one still being created).
    pub fn mdev(&self, uuid: &str) -> Option<&Mdev> {
        self.mdevs
            .get(uuid)
            .filter(|d| d.state != MdevState::Creating)
    }

    /// All visible mdevs, by UUID.
    pub fn mdevs(&self) -> impl Iterator<Item = &Mdev> {
        self.mdevs
            .values()
            .filter(|d| d.state != MdevState::Creating)
    }

    /// Visible mdevs of one parent.
    pub fn mdevs_of(&self, parent: &str) -> Vec<&Mdev> {
        self.mdevs().filter(|d| d.parent == parent).collect()
    }

    /// Registered PCI drivers: every driver a host device uses, plus `vfio-pci` when the
    /// `vfio_pci` module is loaded.
    pub fn drivers(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for g in &self.gpus {
            out.extend(g.spec.driver.iter().cloned());
            if g.spec.kind.has_sriov() {
                out.extend(g.spec.vf_driver.iter().cloned());
            }
        }
        if self.modules.iter().any(|m| m == "vfio_pci") {
            out.insert("vfio-pci".to_string());
        }
        if self.modules.iter().any(|m| m == "pci_pf_stub") {
            out.insert("pci-pf-stub".to_string());
        }
        out
    }

    /// IOMMU groups and their members (PCI addresses and mdev UUIDs).
    pub fn iommu_groups(&self) -> BTreeMap<u32, Vec<String>> {
        let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for d in self.pci.values() {
            out.entry(d.iommu_group)
                .or_default()
                .push(d.address.clone());
        }
        for d in self.mdevs() {
            out.entry(d.iommu_group).or_default().push(d.uuid.clone());
        }
        out
    }

    /// The text of `sim/events`: one line per write made under `sys/`.
    pub fn events_text(&self) -> String {
        let mut s = String::new();
        for e in &self.events {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Appends an event line `<path> <value> -> ok|<ERRNO>`; the value loses one trailing
    /// newline and has other control characters escaped, so one write is always one line.
    pub fn record(&mut self, path: &str, data: &[u8], result: Result<(), Errno>) {
        let value = String::from_utf8_lossy(kparse::strip_newline(data));
        let value: String = if value.is_empty() {
            "\"\"".to_string()
        } else {
            value.chars().flat_map(char::escape_debug).collect()
        };
        let outcome = match result {
            Ok(()) => "ok".to_string(),
            Err(e) => kparse::errno_name(e),
        };
        self.events.push(format!("{path} {value} -> {outcome}"));
    }

    /// Drops mdevs whose parent is no longer registered (unplug, unbind, VFs disabled), as
    /// the kernel removes a parent's devices when it unregisters.
    fn reap_orphans(&mut self) {
        let gone: Vec<String> = self
            .mdevs
            .values()
            .filter(|d| !self.parent_registered(&d.parent))
            .map(|d| d.uuid.clone())
            .collect();
        for u in gone {
            self.mdevs.remove(&u);
        }
    }
}
