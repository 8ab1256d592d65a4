//! Checking a host for everything vgpu-hook depends on, each finding with the command that fixes
//! it.
//!
//! A vGPU start can fail for reasons far from the hook: IOMMU off, vfio not loaded, NVIDIA's
//! manager not running, a GPU address mistyped in the config, a hook installed but unseen by the
//! daemon, a libvirt too old for `qemu.d`. Each check here reads one such fact (sysfs through
//! the host's root, so it runs on the simulator too; processes through a `/proc` root) and says
//! what to run when it is wrong. Any error makes `vgpuctl doctor` exit non-zero.
//!
//! Each check is a small named unit ([`Check`]) that returns its verdicts with their fixes;
//! [`CHECKS`] lists them in report order and [`run`] goes down the list. The checks live by
//! what they look at: [`config`], [`kernel`] (IOMMU, modules), [`devices`] (the vendor's
//! manager, the configured GPUs and PFs), [`libvirt`] (the hook, the daemon, libvirt itself),
//! [`confinement`] (the daemon's AppArmor profile or SELinux domain, which the hook runs in) and
//! [`migration`] (whether this host's vGPU VMs can move: versions, dirty tracking, AMD VFs).

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ctl::install;
use crate::host::procfs::Procfs;
use crate::host::sysfs::Sysfs;
use crate::host::Host;
use crate::model::config::{Config, ConfigError};

mod config;
mod confinement;
mod devices;
mod kernel;
mod libvirt;
mod migration;
#[cfg(test)]
mod testing;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fine.
    Ok,
    /// Works, but something will likely bite.
    Warning,
    /// vGPU starts will fail.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Ok => "ok",
            Severity::Warning => "warn",
            Severity::Error => "FAIL",
        })
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check (`iommu`, `modules`, `config`, ...).
    pub check: &'static str,
    /// How bad.
    pub severity: Severity,
    /// What was found.
    pub message: String,
    /// The command (or edit) that fixes it.
    pub fix: Option<String>,
}

/// What libvirt said, as far as the caller could ask it (the library never links libvirt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibvirtProbe {
    /// Connected: the daemon's libvirt version as `major * 1_000_000 + minor * 1000 + micro`.
    Reachable {
        /// The URI.
        uri: String,
        /// The version number.
        version: u32,
    },
    /// Could not connect.
    Unreachable {
        /// The URI.
        uri: String,
        /// libvirt's message.
        error: String,
    },
    /// Not asked.
    NotChecked,
}

/// Everything doctor looks at.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// sysfs, state, config paths.
    pub host: &'a Host,
    /// The process table.
    pub proc: &'a Procfs,
    /// libvirt's hooks directory.
    pub hooks_dir: &'a Path,
    /// Where daemons keep their pid files.
    pub pid_files: &'a [(&'a str, PathBuf)],
    /// systemd unit directories, to tell "not installed" from "not running".
    pub unit_dirs: &'a [PathBuf],
    /// AppArmor's profile directory (`/etc/apparmor.d`), for the daemon's local additions.
    pub apparmor_dir: &'a Path,
    /// The hook executable this vgpuctl came with, to spot an outdated installed copy.
    pub expected_hook: Option<&'a Path>,
    /// What libvirt said.
    pub libvirt: LibvirtProbe,
    /// The QEMU version libvirt reports (`major * 1_000_000 + minor * 1000 + micro`), when asked.
    pub qemu_version: Option<u32>,
    /// Where the kernels' build configs are (`/boot`, holding `config-RELEASE`).
    pub boot_dir: &'a Path,
    /// The domains libvirt defines, by name with their definition (persistent, else running);
    /// empty when libvirt was not reached.
    pub domains: &'a [(String, String)],
}

/// libvirt's (and QEMU's) version number as `major.minor.micro`.
pub fn version_text(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000)
}

/// libvirt runs `qemu.d/*` hooks from this version on.
pub const QEMU_D_MIN_VERSION: u32 = 6_005_000;

/// One verdict of a check: how bad, what was found, and the command (or edit) that fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// How bad.
    pub severity: Severity,
    /// What was found.
    pub message: String,
    /// The fix, for anything but [`Severity::Ok`].
    pub fix: Option<String>,
}

impl Verdict {
    /// All is well.
    pub fn ok(message: impl Into<String>) -> Verdict {
        Verdict {
            severity: Severity::Ok,
            message: message.into(),
            fix: None,
        }
    }

    /// Works, but something will likely bite; `fix` says what to do.
    pub fn warn(message: impl Into<String>, fix: impl Into<String>) -> Verdict {
        Verdict {
            severity: Severity::Warning,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// vGPU starts will fail; `fix` says what to do.
    pub fn fail(message: impl Into<String>, fix: impl Into<String>) -> Verdict {
        Verdict {
            severity: Severity::Error,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// One diagnostic: the name it reports under (the `check` column) and the function that reads
/// its fact. A check returns no verdict when it does not apply (no NVIDIA GPU configured, say),
/// or one per device it looks at.
#[derive(Clone, Copy)]
pub struct Check {
    /// The name findings carry.
    pub name: &'static str,
    /// Reads the host and judges it.
    pub run: fn(&Context<'_>) -> Vec<Verdict>,
}

/// Every check, in the order the findings are listed: from the config down to the kernel, the
/// vendor stack, the configured devices, and up to the hook, the daemon that runs it and libvirt.
pub const CHECKS: [Check; 16] = [
    Check {
        name: "config",
        run: config::config,
    },
    Check {
        name: "iommu",
        run: kernel::iommu,
    },
    Check {
        name: "modules",
        run: kernel::modules,
    },
    Check {
        name: "nvidia-vgpu-mgr",
        run: devices::nvidia_vgpu_mgr,
    },
    Check {
        name: "device",
        run: devices::mdev_gpus,
    },
    Check {
        name: "device",
        run: devices::sriov_pfs,
    },
    Check {
        name: "drain",
        run: devices::drains,
    },
    Check {
        name: "mixed-size",
        run: devices::mixed_size,
    },
    Check {
        name: "scheduler",
        run: devices::schedulers,
    },
    Check {
        name: "catalogue",
        run: devices::catalogue,
    },
    Check {
        name: "hook",
        run: libvirt::hook_installed,
    },
    Check {
        name: "hook",
        run: libvirt::hook_current,
    },
    Check {
        name: "daemon",
        run: libvirt::daemon,
    },
    Check {
        name: "confinement",
        run: confinement::confinement,
    },
    Check {
        name: "libvirt",
        run: libvirt::libvirt,
    },
    Check {
        name: "migration",
        run: migration::migration,
    },
];

/// What the checks share: the inputs, and the facts several of them need (the config, where
/// the hook is installed), read once.
pub struct Context<'a> {
    /// What doctor was given.
    pub inputs: &'a Inputs<'a>,
    /// The config, or why it cannot be had.
    pub config: Result<Config, ConfigError>,
    /// The config path, for messages.
    pub config_path: String,
    /// Where the hook goes in `qemu.d`.
    pub in_qemu_d: PathBuf,
    /// Where a vgpu-hook executable is installed, if anywhere.
    pub installed: Option<PathBuf>,
}

impl<'a> Context<'a> {
    /// Reads the shared facts.
    pub fn new(inputs: &'a Inputs<'a>) -> Context<'a> {
        let host = inputs.host;
        let in_qemu_d = install::hook_target(inputs.hooks_dir, false);
        let as_qemu = install::hook_target(inputs.hooks_dir, true);
        let installed = [in_qemu_d.clone(), as_qemu]
            .into_iter()
            .find(|p| install::is_our_hook(p));
        Context {
            inputs,
            config: Config::load(&host.config_path),
            config_path: host.config_path.display().to_string(),
            in_qemu_d,
            installed,
        }
    }

    /// The config, when it loaded.
    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref().ok()
    }

    /// sysfs.
    pub fn sysfs(&self) -> &Sysfs {
        &self.inputs.host.sysfs
    }
}

/// Runs every check.
pub fn run(inputs: &Inputs<'_>) -> Vec<Finding> {
    let ctx = Context::new(inputs);
    CHECKS
        .iter()
        .flat_map(|check| {
            (check.run)(&ctx).into_iter().map(|v| Finding {
                check: check.name,
                severity: v.severity,
                message: v.message,
                fix: v.fix,
            })
        })
        .collect()
}

/// Writes findings as `ok|warn|FAIL  check  message` lines with their fixes.
pub fn write_findings(w: &mut dyn Write, findings: &[Finding]) -> io::Result<()> {
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    for f in findings {
        writeln!(
            w,
            "{:<4}  {:<width$}  {}",
            f.severity.to_string(),
            f.check,
            f.message
        )?;
        if let (Some(fix), true) = (&f.fix, f.severity != Severity::Ok) {
            writeln!(w, "{:<4}  {:<width$}  fix: {fix}", "", "")?;
        }
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    writeln!(
        w,
        "{}",
        match (errors, warnings) {
            (0, 0) => "all checks passed".to_string(),
            (0, w) => format!("no errors, {w} warning(s)"),
            (e, w) => format!("{e} error(s), {w} warning(s)"),
        }
    )
}

/// Whether the findings include an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}
