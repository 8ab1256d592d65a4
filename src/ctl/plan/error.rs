//! Why a request cannot be planned, as typed reasons.
//!
//! Each refusal names what it is about (the VF, the PF, the type, the config file) and carries
//! the lists it shows the operator; the one-line text is built from those by `Display`. Callers
//! decide the exit status with [`PlanError::is_not_found`] and tests match the variant, so the
//! wording can be improved without touching either.

use std::fmt;
use std::path::PathBuf;

use crate::model::config::PfKind;
use crate::model::domain::{MdevWant, VfWant};
use crate::model::names::{NameError, ParentName};
use crate::model::pci::PciAddress;

/// Why a request cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    // ---- Nothing on this host matches (a type, a parent, a PF, a VF). ----
    /// The config lists no device at all.
    #[error("{} lists no GPUs (add them to nvidia_vgpu_pfs or mdev_parents)", .config.display())]
    NoGpus {
        /// The config file.
        config: PathBuf,
    },
    /// `--parent` names something that is not configured.
    #[error("--parent {parent} is not a configured mdev parent (configured: {})", listing(.configured))]
    UnknownParent {
        /// What was given.
        parent: ParentName,
        /// The configured GPUs and parents.
        configured: Vec<String>,
    },
    /// No allowed parent offers the type or profile.
    #[error("{}", not_offered(.label, *.by_parent, .offered, .unavailable))]
    NotOffered {
        /// The type or profile asked for.
        label: String,
        /// Whether `--parent` narrowed the search.
        by_parent: bool,
        /// What the allowed parents offer instead, one entry per GPU.
        offered: Vec<String>,
        /// GPUs that offer nothing now and so could not be checked.
        unavailable: Vec<String>,
    },
    /// The VF's PF is not in the config.
    #[error("VF {vf} belongs to PF {pf}, which {} does not list (add it to sriov_pfs, amd_vgpu_pfs or nvidia_vgpu_pfs)", .config.display())]
    UnlistedPf {
        /// The VF.
        vf: PciAddress,
        /// Its PF.
        pf: PciAddress,
        /// The config file.
        config: PathBuf,
    },
    /// The address is a PCI device but not a VF.
    #[error("{address} is not an SR-IOV VF (it has no physfn)")]
    NotAVf {
        /// The device.
        address: PciAddress,
    },
    /// The address is neither a VF nor one a configured PF will have.
    #[error("VF {vf} does not exist and is not a future VF of a configured PF (configured: {})", listing(.configured))]
    NoSuchVf {
        /// The address.
        vf: PciAddress,
        /// The configured PFs.
        configured: Vec<PciAddress>,
    },
    /// The config lists no PF whose VFs are handed out.
    #[error("{} lists no SR-IOV PFs (add them to amd_vgpu_pfs, sriov_pfs or nvidia_vgpu_pfs)", .config.display())]
    NoPfs {
        /// The config file.
        config: PathBuf,
    },
    /// `--pf` names a PF that is not configured.
    #[error("--pf {pf} is not a configured PF (configured: {})", listing(.configured))]
    UnknownPf {
        /// What was given.
        pf: PciAddress,
        /// The configured PFs.
        configured: Vec<PciAddress>,
    },
    /// The VFs' GPU does not offer this vGPU type at all.
    #[error("'{want}' is not a vGPU type of this GPU (creatable now: {})", .creatable.join(", "))]
    NotCreatable {
        /// The type asked for.
        want: VfWant,
        /// What the GPU can create now, as `name (id)`.
        creatable: Vec<String>,
    },

    // ---- It matches, but cannot be given (ambiguous, taken, wrong kind). ----
    /// `--parent` is malformed.
    #[error("--parent: {0}")]
    BadParent(#[source] NameError),
    /// A profile matches several types of one parent.
    #[error("'{label}' matches {} on {parent}; use --type with one of them", .types.join(", "))]
    Ambiguous {
        /// The profile asked for.
        label: String,
        /// The parent.
        parent: ParentName,
        /// The type ids it matches.
        types: Vec<String>,
    },
    /// No configured GPU offers any type now, so nothing can be checked.
    #[error("cannot check '{label}': no configured GPU offers types now ({}); start the vendor's manager (for NVIDIA: systemctl start nvidia-vgpu-mgr) or pass --force", .unavailable.join(", "))]
    CannotCheck {
        /// The type or profile asked for.
        label: String,
        /// The GPUs and why they offer nothing.
        unavailable: Vec<String>,
    },
    /// A kernel-6.8+ VF type was asked with mdev-only options.
    #[error("'{want}' is a kernel-6.8+ NVIDIA vGPU type, given as a whole VF: --parent and --params do not apply (use --vf [--pf ADDR])")]
    MdevOptionsOnVf {
        /// The type or profile asked for.
        want: MdevWant,
    },
    /// `--address` with a count other than one.
    #[error("--address names one VF; drop --count")]
    AddressWithCount,
    /// Another domain uses the VF.
    #[error("VF {vf} is already used by domain '{owner}'")]
    Taken {
        /// The VF.
        vf: PciAddress,
        /// The domain's name.
        owner: String,
    },
    /// A named VF is to be checked but there is no config.
    #[error("no config to check the VF against; pass --force")]
    NoConfigToCheck,
    /// The VF belongs to another PF than `--pf` says.
    #[error("VF {vf} belongs to PF {pf}, not {asked}")]
    OtherPf {
        /// The VF.
        vf: PciAddress,
        /// Its PF.
        pf: PciAddress,
        /// The PF given.
        asked: PciAddress,
    },
    /// An NVIDIA kernel-6.8+ VF was asked without a vGPU type.
    #[error("VF {vf} is an NVIDIA vGPU VF: say which vGPU with --profile or --type")]
    NeedsVgpuType {
        /// The VF.
        vf: PciAddress,
    },
    /// A vGPU type was asked for a VF without NVIDIA's interface.
    #[error("VF {vf} has no NVIDIA vGPU interface, so '{want}' cannot be given to it; drop --profile/--type")]
    NoVgpuInterface {
        /// The VF.
        vf: PciAddress,
        /// The type asked for.
        want: VfWant,
    },
    /// A VF is to be picked but there is no config to pick from.
    #[error("picking a VF needs the config (or name one with --address)")]
    PickNeedsConfig,
    /// The NVIDIA GPU that could serve the type has no VFs yet.
    #[error(
        "NVIDIA GPU {pf} has no VFs enabled yet, so none can be chosen; {how}; then attach again"
    )]
    NvidiaVfsDisabled {
        /// The GPU.
        pf: PciAddress,
        /// How to enable them.
        how: String,
    },
    /// A vGPU type on a VF was asked, and no candidate PF is a kernel-6.8+ NVIDIA GPU.
    #[error("a vGPU type on a VF needs a kernel-6.8+ NVIDIA GPU, and {} has none (configured: {})", scope(.pf), pf_listing(.configured))]
    NoVfioGpu {
        /// The PF given with `--pf`, if any.
        pf: Option<PciAddress>,
        /// The candidate PFs.
        configured: Vec<(PciAddress, PfKind)>,
    },
    /// Whole VFs were asked, and the only candidates are kernel-6.8+ NVIDIA GPUs.
    #[error("NVIDIA kernel-6.8+ VFs need a vGPU type: add --profile or --type")]
    VfioNeedsType,
    /// Whole VFs were asked, and no candidate PF hands them out.
    #[error("no configured PF hands out whole VFs (configured: {}); NVIDIA GPUs with mdev types take --profile/--type without --vf", pf_listing(.configured))]
    NoWholeVfs {
        /// The candidate PFs.
        configured: Vec<(PciAddress, PfKind)>,
    },
    /// Fewer free VFs than asked.
    #[error("{found} free VF{} found, {asked} asked: {}", if *.found == 1 { "" } else { "s" }, join(.shortfalls, ", "))]
    TooFewVfs {
        /// How many were found.
        found: usize,
        /// How many were asked.
        asked: u32,
        /// Why each PF gave no more.
        shortfalls: Vec<Shortfall>,
    },
}

impl PlanError {
    /// Whether nothing on this host matches the request (as opposed to a request that matches
    /// but cannot be given): the difference between "not found" and "failed" exit statuses.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            PlanError::NoGpus { .. }
                | PlanError::UnknownParent { .. }
                | PlanError::NotOffered { .. }
                | PlanError::UnlistedPf { .. }
                | PlanError::NotAVf { .. }
                | PlanError::NoSuchVf { .. }
                | PlanError::NoPfs { .. }
                | PlanError::UnknownPf { .. }
                | PlanError::NotCreatable { .. }
        )
    }
}

/// Why one PF gave fewer VFs than asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Shortfall {
    /// The PF is not on this host.
    #[error("{0} (missing)")]
    Missing(PciAddress),
    /// The PF has no SR-IOV capability.
    #[error("{0} (not SR-IOV capable)")]
    NotSriov(PciAddress),
    /// An AMD PF whose driver made no VFs.
    #[error("{pf} (no VFs: {advice})")]
    AmdNoVfs {
        /// The PF.
        pf: PciAddress,
        /// What to do about it.
        advice: String,
    },
    /// An NVIDIA PF without VFs.
    #[error("{0} (no VFs enabled: run /usr/lib/nvidia/sriov-manage -e {0})")]
    NvidiaNoVfs(PciAddress),
    /// A generic PF without VFs, whose future VFs cannot be computed.
    #[error("{pf} (no VFs enabled, and its SR-IOV layout is unreadable: echo {count} > /sys/bus/pci/devices/{pf}/sriov_numvfs)")]
    LayoutUnreadable {
        /// The PF.
        pf: PciAddress,
        /// How many VFs it would get.
        count: u32,
    },
    /// The PF's VFs are used, or cannot take the type.
    #[error("{pf} ({})", busy(.used, *.not_creatable, .want))]
    Busy {
        /// The PF.
        pf: PciAddress,
        /// VFs other domains use, with the domain's name.
        used: Vec<(PciAddress, String)>,
        /// How many free VFs cannot take the type now.
        not_creatable: usize,
        /// The type asked for.
        want: Option<VfWant>,
    },
}

/// `a, b, c`, or `none`.
fn listing<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        join(items, ", ")
    }
}

fn join<T: fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// `addr (config key), ...`, or `none`.
fn pf_listing(pfs: &[(PciAddress, PfKind)]) -> String {
    let labels: Vec<String> = pfs
        .iter()
        .map(|(a, k)| format!("{a} ({})", k.config_key()))
        .collect();
    listing(&labels)
}

fn scope(pf: &Option<PciAddress>) -> String {
    pf.map_or_else(|| "the config".to_string(), |p| format!("PF {p}"))
}

fn not_offered(label: &str, by_parent: bool, offered: &[String], unavailable: &[String]) -> String {
    let mut msg = format!(
        "no configured parent{} offers '{label}'",
        if by_parent {
            " allowed by --parent"
        } else {
            ""
        }
    );
    if offered.is_empty() {
        msg.push_str("; none offers any type now");
    } else {
        msg.push_str(&format!("; available: {}", offered.join("; ")));
    }
    if !unavailable.is_empty() {
        msg.push_str(&format!(
            "; not available now, so not checked: {} (pass --force if one of those offers it)",
            unavailable.join(", ")
        ));
    }
    msg
}

fn busy(used: &[(PciAddress, String)], not_creatable: usize, want: &Option<VfWant>) -> String {
    let mut why = Vec::new();
    if !used.is_empty() {
        let list: Vec<String> = used
            .iter()
            .map(|(vf, owner)| format!("{vf} by '{owner}'"))
            .collect();
        why.push(format!("used: {}", list.join(", ")));
    }
    if not_creatable > 0 {
        why.push(format!(
            "{not_creatable} cannot take '{}' now",
            want.as_ref().map(|w| w.to_string()).unwrap_or_default()
        ));
    }
    if why.is_empty() {
        why.push("no VFs".into());
    }
    why.join("; ")
}
