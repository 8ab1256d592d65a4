//! Why a `prepare` is refused, as typed reasons.
//!
//! The operator meets a refusal as the one line `virsh start` prints, so each reason renders
//! what was asked, what was tried and what would fix it. Keeping the reasons typed means a rule
//! is written once (here, in `Display`), tests can match the reason instead of its words, and
//! vgpuctl can tell the same story from the same value.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use crate::host::drains::Drain;
use crate::host::sriov::SriovError;
use crate::host::sysfs::SysfsError;
use crate::model::names::{MdevUuid, ParentName};
use crate::model::pci::PciAddress;
use crate::model::scheduler::Scheduler;

/// Why one configured GPU (or one of its parents) could not take an mdev request; shown in
/// parentheses after the GPU's name.
#[derive(Debug)]
pub enum GpuReason {
    /// Its SR-IOV VFs are off and could not be switched on.
    VfsNotEnabled(SriovError),
    /// Its SR-IOV VFs are off and were left so (what it offers shows once they are on).
    VfsOff,
    /// The device is not on the PCI bus.
    Missing,
    /// The device exists but no mdev parent is registered for it.
    Unregistered {
        /// An NVIDIA GPU (its vGPU manager registers the parents).
        nvidia: bool,
    },
    /// A kernel-6.8+ NVIDIA GPU: its vGPUs are asked for with `vgpu:vf`.
    NotMdev,
    /// The profile names several types on one parent.
    Ambiguous {
        /// The request, as written.
        want: String,
        /// The type ids it matches.
        ids: Vec<String>,
    },
    /// No type of the GPU is the one asked for.
    NoSuchType,
    /// Full because it hosts other types (NVIDIA's one-size rule).
    Hosts(BTreeSet<String>),
    /// Full; who holds its instances.
    Exhausted(Holders),
    /// Not on the VM's NUMA nodes, and `numa = "require"`.
    Remote {
        /// The GPU's node, if known.
        node: Option<u32>,
        /// The VM's nodes.
        wanted: String,
    },
    /// The asked type's `available_instances` cannot be read (the error's text): its room is
    /// unknown, not zero.
    Unreadable(String),
    /// The create was refused by the driver (the errno's text).
    CreateFailed(String),
    /// The create did not return within the bound.
    CreateTimeout {
        /// The bound.
        secs: u64,
    },
    /// The operator drained it (`vgpuctl drain`).
    Drained(Drain),
    /// It runs another vGPU scheduling policy than the VM asks for (`None`: unknown, the
    /// `nvidia` module's parameters unreadable).
    Scheduler {
        /// What it runs.
        runs: Option<Scheduler>,
        /// What the VM asks for.
        wants: Scheduler,
    },
}

/// Who holds the instances of a full GPU.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Holders {
    /// Running domains.
    pub running: BTreeSet<String>,
    /// Instances this domain's earlier requests took.
    pub own: usize,
    /// Instances of stopped domains not yet released.
    pub stopped: usize,
    /// Instances nobody recorded (made by hand or by another tool).
    pub unowned: usize,
}

impl GpuReason {
    /// Whether waiting may help: the GPU may still appear or register (boot).
    pub fn waitable(&self) -> bool {
        matches!(self, GpuReason::Missing | GpuReason::Unregistered { .. })
    }
}

/// `'a', 'b'`.
pub fn quoted_list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Holders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0 left")?;
        if !self.running.is_empty() {
            write!(f, ", held by {}", quoted_list(&self.running))?;
        }
        if self.own > 0 {
            write!(f, ", {} taken by this domain's earlier requests", self.own)?;
        }
        if self.stopped > 0 {
            write!(f, ", {} of stopped domains, being released", self.stopped)?;
        }
        if self.unowned > 0 {
            write!(f, ", {} not made by vgpu-hook", self.unowned)?;
        }
        Ok(())
    }
}

impl fmt::Display for GpuReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuReason::VfsNotEnabled(e) => write!(f, "SR-IOV VFs not enabled: {e}"),
            GpuReason::VfsOff => f.write_str("SR-IOV VFs off (switched on at start)"),
            GpuReason::Missing => {
                f.write_str("missing: not on the PCI bus, see lspci; or drop it from the config")
            }
            GpuReason::Unregistered { nvidia } => write!(
                f,
                "not registered as an mdev parent{}",
                if *nvidia {
                    "; is nvidia-vgpu-mgr running?"
                } else {
                    ""
                }
            ),
            GpuReason::NotMdev => f.write_str("kernel-6.8+ vGPU: ask for it with vgpu:vf"),
            GpuReason::Ambiguous { want, ids } => {
                write!(f, "'{want}' matches {}; use type= instead", ids.join(", "))
            }
            GpuReason::NoSuchType => f.write_str("no such type"),
            GpuReason::Hosts(others) => write!(f, "hosts {}", quoted_list(others)),
            GpuReason::Exhausted(h) => write!(f, "{h}"),
            GpuReason::Remote { node, wanted } => match node {
                Some(n) => write!(f, "on NUMA node {n}, not the VM's node {wanted}; numa = \"require\""),
                None => write!(f, "NUMA node unknown, the VM wants node {wanted}; numa = \"require\""),
            },
            GpuReason::Unreadable(why) => write!(f, "room unknown: {why}"),
            GpuReason::CreateFailed(why) => write!(f, "create failed: {why}"),
            GpuReason::CreateTimeout { secs } => write!(
                f,
                "create did not return within {secs} s; raise device_wait_secs or check the vendor's manager service"
            ),
            GpuReason::Drained(d) => write!(f, "{d}"),
            GpuReason::Scheduler { runs, wants } => write!(f, "{}", SchedulerWhy(*runs, *wants)),
        }
    }
}

/// Why a GPU's scheduling policy does not serve a VM, said once for mdevs and VFs.
struct SchedulerWhy(Option<Scheduler>, Scheduler);

impl fmt::Display for SchedulerWhy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SchedulerWhy(runs, wants) = self;
        match runs {
            Some(r) => write!(f, "runs the {r} vGPU scheduler, the VM asks for {wants}"),
            None => write!(f, "runs no NVIDIA vGPU scheduler that can be read (not an NVIDIA vGPU GPU, or no /proc/driver/nvidia/params: the nvidia module is not loaded), the VM asks for {wants}"),
        }
    }
}

/// Each GPU tried, with why it could not take the request.
#[derive(Debug, Default)]
pub struct Tried(pub Vec<(String, GpuReason)>);

impl fmt::Display for Tried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(g, r)| format!("{g} ({r})")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Why a `prepare` cannot give a domain what it asks for.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// `numa = "require"` and the domain's NUMA wishes cannot be used.
    #[error("the domain's NUMA placement cannot be used ({why}) and {} says numa = \"require\"; fix <numatune>/<vcpu cpuset>/<cputune> in the definition, or set numa = \"prefer\"", config.display())]
    NumaUnusable {
        /// Why.
        why: super::numa::WishError,
        /// The config file.
        config: PathBuf,
    },
    /// The domain XML has no name or UUID the hook can use.
    #[error("domain XML has no usable <name>/<uuid> ('{0}')")]
    UnusableDomain(String),
    /// A running domain without our record uses the mdev (its live definition names it).
    #[error("mdev {uuid} is in use by running domain '{user}' (a <hostdev> of its definition names it), so it is not taken over; give this domain another UUID (vgpuctl detach --uuid {uuid}, then vgpuctl attach)")]
    MdevInUse {
        /// The UUID.
        uuid: MdevUuid,
        /// The running domain using it.
        user: String,
    },
    /// A running domain without our record uses the VF (a PCI hostdev of its definition).
    #[error("VF {vf} is in use by running domain '{user}' (a <hostdev> of its definition names it), so it is not claimed; pick another VF (vgpuctl attach DOMAIN --vf picks a free one)")]
    VfInUse {
        /// The VF.
        vf: PciAddress,
        /// The running domain using it.
        user: String,
    },
    /// Another running domain holds the same mdev UUID.
    #[error("mdev {uuid} is held by domain '{other}' (two domains name the same UUID; give one a new UUID)")]
    MdevHeld {
        /// The UUID.
        uuid: MdevUuid,
        /// The holder.
        other: String,
    },
    /// The config lists no mdev parents at all.
    #[error("'{label}' asked, but {} lists no mdev parents (add GPUs to nvidia_vgpu_pfs or parents to mdev_parents)", config.display())]
    NoParentsConfigured {
        /// The request.
        label: String,
        /// The config file.
        config: PathBuf,
    },
    /// `parent=` names nothing configured.
    #[error("parent={} names no configured mdev parent (configured: {})", names(wanted), configured.join(", "))]
    ParentNotConfigured {
        /// What `parent=` says.
        wanted: Vec<ParentName>,
        /// The configured GPUs and parents.
        configured: Vec<String>,
    },
    /// The UUID exists already as something else.
    #[error("mdev {uuid} already exists as {type_id} on {parent}, which is not '{label}' on an allowed parent; remove it (echo 1 > /sys/bus/mdev/devices/{uuid}/remove) or give the domain a new UUID")]
    ExistsOtherwise {
        /// The UUID.
        uuid: MdevUuid,
        /// Its type.
        type_id: String,
        /// Its parent.
        parent: String,
        /// The request.
        label: String,
    },
    /// `params` on a device without NVIDIA's `vgpu_params`.
    #[error("params given for mdev {0}, but its parent has no nvidia/vgpu_params (not an NVIDIA vGPU); drop params")]
    ParamsNotNvidia(MdevUuid),
    /// NVIDIA refused the params.
    #[error("mdev {uuid}: {source}")]
    Params {
        /// The mdev.
        uuid: MdevUuid,
        /// The refused write.
        source: SysfsError,
    },
    /// No GPU could take the request.
    #[error("no free '{label}' on {tried}{}", meanings.iter().map(|m| format!("; {m}")).collect::<String>())]
    NoRoom {
        /// The request.
        label: String,
        /// Each GPU and why not.
        tried: Tried,
        /// What the drivers' errnos mean, said once.
        meanings: BTreeSet<String>,
    },
    /// A create did not return in time (it may still complete; it is undone then).
    #[error("'{label}': {tried}")]
    CreateStuck {
        /// The request.
        label: String,
        /// Each GPU and why not, the last one the stuck create.
        tried: Tried,
    },
    /// The device never appeared after a successful create.
    #[error("created mdev {uuid} on {parent} but it did not appear within {secs} s")]
    DidNotAppear {
        /// The UUID.
        uuid: MdevUuid,
        /// Where.
        parent: ParentName,
        /// The bound.
        secs: u64,
    },
    /// Another running domain holds the VF.
    #[error("VF {vf} is held by domain '{other}'")]
    VfHeld {
        /// The VF.
        vf: PciAddress,
        /// The holder.
        other: String,
    },
    /// A vGPU mdev lives on the VF.
    #[error("VF {vf} hosts {mdev}: a VF with a vGPU on it cannot also be passed through whole; name another VF (vgpuctl attach --vf picks a free one) or stop that domain")]
    VfHostsMdev {
        /// The VF.
        vf: PciAddress,
        /// The mdev on it.
        mdev: super::vf::MdevOnVf,
    },
    /// The device would be on a GPU the operator drained (a VF of a drained PF, an existing mdev
    /// on a drained GPU).
    #[error("{device} is on GPU {}, which is {drain}", drain.gpu)]
    Drained {
        /// The device asked for.
        device: String,
        /// The GPU's drain.
        drain: Drain,
    },
    /// The VF's GPU runs another scheduling policy than the VM asks for.
    #[error("VF {vf} is on GPU {pf}, which {}; name a VF of a GPU that runs it, or set vgpu_scheduler for this one (vgpuctl doctor gives the nvidia module option)", SchedulerWhy(*runs, *wants))]
    VfScheduler {
        /// The VF.
        vf: PciAddress,
        /// Its PF.
        pf: PciAddress,
        /// What the PF runs.
        runs: Option<Scheduler>,
        /// What the VM asks for.
        wants: Scheduler,
    },
    /// The VF's PF is not in the config.
    #[error("VF {vf} belongs to PF {pf}, which {} does not list (add it to sriov_pfs, amd_vgpu_pfs or nvidia_vgpu_pfs)", config.display())]
    VfPfNotConfigured {
        /// The VF.
        vf: PciAddress,
        /// Its PF.
        pf: PciAddress,
        /// The config file.
        config: PathBuf,
    },
    /// The address is a device, but not a VF.
    #[error("{0} is not an SR-IOV VF (no physfn); use a plain PCI hostdev without vgpu:vf")]
    NotAVf(PciAddress),
    /// The VF does not exist and no configured PF could bring it.
    #[error("VF {vf} does not exist: {}", if tried.is_empty() { "no configured PF has it, and none has VFs left to enable".to_string() } else { tried.join(", ") })]
    VfAbsent {
        /// The VF.
        vf: PciAddress,
        /// Each PF tried and what happened.
        tried: Vec<String>,
    },
    /// A vGPU type asked for a VF that is not NVIDIA's kernel-6.8+ kind.
    #[error("VF {vf} has no NVIDIA vGPU interface (nvidia/current_vgpu_type), so type/profile '{want}' cannot be set; drop it from vgpu:vf")]
    VfNotNvidia {
        /// The VF.
        vf: PciAddress,
        /// The type asked.
        want: String,
    },
    /// `managed='no'` on a VF not bound to vfio-pci.
    #[error("VF {vf} is bound to {} and its <hostdev> is managed='no': bind it to vfio-pci (driverctl set-override {vf} vfio-pci) or set managed='yes'", driver.as_ref().map_or_else(|| "no driver".to_string(), |d| format!("'{d}'")))]
    VfNotOnVfio {
        /// The VF.
        vf: PciAddress,
        /// Its driver.
        driver: Option<String>,
    },
    /// An NVIDIA vGPU VF with `managed='yes'`.
    #[error("VF {0} is an NVIDIA vGPU VF: its <hostdev> must be managed='no' (it must stay on the nvidia driver)")]
    NvidiaVfManaged(PciAddress),
    /// An NVIDIA vGPU VF without a type.
    #[error("VF {0} is an NVIDIA vGPU VF: say which vGPU with type= or profile= on its vgpu:vf")]
    NvidiaVfNeedsType(PciAddress),
    /// Reading or writing the VF's NVIDIA attributes failed.
    #[error("VF {vf}: {source}")]
    VfSysfs {
        /// The VF.
        vf: PciAddress,
        /// The failure.
        source: SysfsError,
    },
    /// The VF keeps a type from an earlier user.
    #[error("VF {vf} still has vGPU type {current} from an earlier user and it could not be cleared ({source}); stop whatever uses the VF or run `vgpuctl reconcile`")]
    VfLeftover {
        /// The VF.
        vf: PciAddress,
        /// Its type.
        current: u32,
        /// Why clearing failed.
        source: SysfsError,
    },
    /// The profile names several creatable types.
    #[error(
        "'{want}' matches {} on VF {vf}; use type= with one of those ids",
        pairs(matches)
    )]
    VfAmbiguous {
        /// The request.
        want: String,
        /// The VF.
        vf: PciAddress,
        /// The types it matches.
        matches: Vec<(u32, String)>,
    },
    /// The type is not creatable on the VF now.
    #[error("'{want}' is not creatable on VF {vf} now (creatable: {})", if creatable.is_empty() { "nothing: the GPU is full or hosts another size".to_string() } else { pairs(creatable) })]
    VfNotCreatable {
        /// The request.
        want: String,
        /// The VF.
        vf: PciAddress,
        /// What is creatable.
        creatable: Vec<(u32, String)>,
    },
}

impl Refusal {
    /// Every [`Refusal::label`], so a metrics reader can show a zero for reasons never met.
    pub const LABELS: &'static [&'static str] = &[
        "unusable_domain",
        "mdev_held",
        "no_parents_configured",
        "parent_not_configured",
        "exists_otherwise",
        "params_not_nvidia",
        "params",
        "no_room",
        "create_stuck",
        "did_not_appear",
        "vf_held",
        "vf_hosts_mdev",
        "vf_pf_not_configured",
        "not_a_vf",
        "vf_absent",
        "vf_not_nvidia",
        "vf_not_on_vfio",
        "nvidia_vf_managed",
        "nvidia_vf_needs_type",
        "vf_sysfs",
        "vf_leftover",
        "vf_ambiguous",
        "vf_not_creatable",
        "numa_unusable",
        "mdev_in_use",
        "vf_in_use",
        "drained",
        "vf_scheduler",
    ];

    /// A stable snake_case name of the reason, for counters and metrics: it never changes
    /// with the wording of the message, and a new reason gets a new name.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NumaUnusable { .. } => "numa_unusable",
            Refusal::UnusableDomain(_) => "unusable_domain",
            Refusal::MdevHeld { .. } => "mdev_held",
            Refusal::MdevInUse { .. } => "mdev_in_use",
            Refusal::VfInUse { .. } => "vf_in_use",
            Refusal::NoParentsConfigured { .. } => "no_parents_configured",
            Refusal::ParentNotConfigured { .. } => "parent_not_configured",
            Refusal::ExistsOtherwise { .. } => "exists_otherwise",
            Refusal::ParamsNotNvidia(_) => "params_not_nvidia",
            Refusal::Params { .. } => "params",
            Refusal::NoRoom { .. } => "no_room",
            Refusal::CreateStuck { .. } => "create_stuck",
            Refusal::DidNotAppear { .. } => "did_not_appear",
            Refusal::VfHeld { .. } => "vf_held",
            Refusal::VfHostsMdev { .. } => "vf_hosts_mdev",
            Refusal::VfPfNotConfigured { .. } => "vf_pf_not_configured",
            Refusal::Drained { .. } => "drained",
            Refusal::VfScheduler { .. } => "vf_scheduler",
            Refusal::NotAVf(_) => "not_a_vf",
            Refusal::VfAbsent { .. } => "vf_absent",
            Refusal::VfNotNvidia { .. } => "vf_not_nvidia",
            Refusal::VfNotOnVfio { .. } => "vf_not_on_vfio",
            Refusal::NvidiaVfManaged(_) => "nvidia_vf_managed",
            Refusal::NvidiaVfNeedsType(_) => "nvidia_vf_needs_type",
            Refusal::VfSysfs { .. } => "vf_sysfs",
            Refusal::VfLeftover { .. } => "vf_leftover",
            Refusal::VfAmbiguous { .. } => "vf_ambiguous",
            Refusal::VfNotCreatable { .. } => "vf_not_creatable",
        }
    }
}

fn names(list: &[ParentName]) -> String {
    list.iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn pairs(list: &[(u32, String)]) -> String {
    list.iter()
        .map(|(i, n)| format!("{i} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_snake_case_unique_and_listed() {
        let mut seen = std::collections::BTreeSet::new();
        for l in Refusal::LABELS {
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l}"
            );
            assert!(seen.insert(*l), "{l} twice");
        }
        let some = [
            Refusal::UnusableDomain("x".into()),
            Refusal::NotAVf("0000:01:00.0".parse().unwrap()),
            Refusal::NoRoom {
                label: "P40-2Q".into(),
                tried: Tried::default(),
                meanings: BTreeSet::new(),
            },
        ];
        for r in &some {
            assert!(Refusal::LABELS.contains(&r.label()), "{}", r.label());
        }
        assert_eq!(some[2].label(), "no_room");
    }

    #[test]
    fn a_full_gpu_says_who_holds_it() {
        let h = Holders {
            running: ["a".to_string(), "b".to_string()].into(),
            own: 1,
            stopped: 0,
            unowned: 2,
        };
        assert_eq!(
            h.to_string(),
            "0 left, held by 'a', 'b', 1 taken by this domain's earlier requests, 2 not made by vgpu-hook"
        );
    }

    #[test]
    fn only_absent_or_unregistered_gpus_are_worth_waiting_for() {
        assert!(GpuReason::Missing.waitable());
        assert!(GpuReason::Unregistered { nvidia: true }.waitable());
        assert!(!GpuReason::NoSuchType.waitable());
        assert!(!GpuReason::Exhausted(Holders::default()).waitable());
    }

    #[test]
    fn an_errno_meaning_is_said_once_after_every_gpu() {
        let r = Refusal::NoRoom {
            label: "P40-2Q".into(),
            tried: Tried(vec![
                ("0000:82:00.0".into(), GpuReason::CreateFailed("EIO".into())),
                ("0000:83:00.0".into(), GpuReason::CreateFailed("EIO".into())),
            ]),
            meanings: ["EIO: see the journal".to_string()].into(),
        };
        assert_eq!(
            r.to_string(),
            "no free 'P40-2Q' on 0000:82:00.0 (create failed: EIO), 0000:83:00.0 (create failed: EIO); EIO: see the journal"
        );
    }
}
