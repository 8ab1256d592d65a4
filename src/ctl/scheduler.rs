//! The vGPU scheduling policy the config asks for, against what each GPU runs.
//!
//! NVIDIA reads the policy (`RmPVMRL`) when the `nvidia` module loads, from the module's
//! options, so the config's wish comes true through one modprobe line naming every configured GPU
//! (`NVreg_RegistryDwordsPerDevice`), applied at the next load: a reboot, or reloading the module
//! while no vGPU exists. `doctor` and `boot` compare, and give that line when they differ.

use std::fmt;

use crate::host::sysfs::Sysfs;
use crate::model::config::Config;
use crate::model::pci::PciAddress;
use crate::model::scheduler::{modprobe_line, Scheduler};

/// Where modprobe reads the line from, as vgpu-hook's advice names it.
pub const MODPROBE_FILE: &str = "/etc/modprobe.d/nvidia-vgpu-scheduler.conf";

/// How a configured GPU's policy stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// It runs what the config asks.
    Runs(Scheduler),
    /// It runs another one.
    Differs {
        /// What it runs.
        runs: Scheduler,
        /// What the config asks.
        wants: Scheduler,
    },
    /// The `nvidia` module's parameters cannot be read (module not loaded).
    Unknown(Scheduler),
}

impl fmt::Display for Standing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Standing::Runs(s) => write!(f, "vGPU scheduler {s}"),
            Standing::Differs { runs, wants } => {
                write!(f, "vGPU scheduler {runs}, the config asks for {wants}")
            }
            Standing::Unknown(w) => write!(f, "vGPU scheduler unknown (no /proc/driver/nvidia/params: the nvidia module is not loaded), the config asks for {w}"),
        }
    }
}

/// How `pf`'s policy stands, if the config names one for it.
pub fn standing(config: &Config, sysfs: &Sysfs, pf: PciAddress) -> Option<Standing> {
    let wants = config.scheduler_of(pf)?;
    Some(match sysfs.running_scheduler(pf) {
        Some(runs) if runs == wants => Standing::Runs(runs),
        Some(runs) => Standing::Differs { runs, wants },
        None => Standing::Unknown(wants),
    })
}

/// What makes every configured policy come true: the modprobe line and when it takes effect.
pub fn fix(config: &Config) -> String {
    format!(
        "put `{}` in {MODPROBE_FILE} (with any other RegistryDwordsPerDevice keys you use), then reboot, or reload the nvidia module while no vGPU exists",
        modprobe_line(&config.vgpu_scheduler)
    )
}
