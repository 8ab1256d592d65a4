//! The host as the hook sees it: where sysfs, the state, libvirt's runtime files and the config
//! live.
//!
//! Every path the programs touch is derived from this one value, so tests and the simulator can
//! move all of them at once through the environment (`VGPU_HOOK_SYSFS_ROOT`,
//! `VGPU_HOOK_PROC_DIR`, `VGPU_HOOK_STATE_DIR`, `VGPU_HOOK_LIBVIRT_RUN_DIR`, `VGPU_HOOK_CONFIG`).

pub mod atomic;
pub mod counters;
pub mod drains;
pub mod errno;
pub mod journal;
pub mod learned;
pub mod lockfile;
pub mod logging;
pub mod lsm;
pub mod numa;
pub mod nvidia_smi;
pub mod procfs;
pub mod running;
pub mod sriov;
pub mod state;
pub mod sysfs;
pub mod tool;

use std::path::PathBuf;

use crate::host::state::{StateDir, DEFAULT_DIR, DEFAULT_LIBVIRT_RUN_DIR};
use crate::host::sysfs::Sysfs;

/// Paths of one host.
#[derive(Debug, Clone)]
pub struct Host {
    /// The kernel's device tree.
    pub sysfs: Sysfs,
    /// The process table (who runs, the host's uptime).
    pub procfs: procfs::Procfs,
    /// Ownership records.
    pub state: StateDir,
    /// libvirt's QEMU runtime directory (`<name>.pid`).
    pub libvirt_run_dir: PathBuf,
    /// The config file.
    pub config_path: PathBuf,
}

impl Host {
    /// The host from the environment, defaulting to the real paths.
    pub fn from_env() -> Host {
        let var = |k: &str, d: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(d), PathBuf::from)
        };
        Host {
            sysfs: Sysfs::new(&var("VGPU_HOOK_SYSFS_ROOT", "/")),
            procfs: procfs::Procfs::new(&var("VGPU_HOOK_PROC_DIR", "/proc")),
            state: StateDir::new(&var("VGPU_HOOK_STATE_DIR", DEFAULT_DIR)),
            libvirt_run_dir: var("VGPU_HOOK_LIBVIRT_RUN_DIR", DEFAULT_LIBVIRT_RUN_DIR),
            config_path: var("VGPU_HOOK_CONFIG", crate::model::config::DEFAULT_PATH),
        }
    }

    /// The same host, whose state lock is waited for at most `wait`.
    pub fn with_lock_wait(mut self, wait: std::time::Duration) -> Host {
        self.state = self.state.with_wait(wait);
        self
    }

    /// Who runs now, judged from this host's libvirt run dir and process table.
    pub fn liveness(&self, grace: std::time::Duration) -> crate::host::state::Liveness {
        crate::host::state::Liveness::with_procfs(&self.libvirt_run_dir, &self.procfs, grace)
    }
}
