//! Checking a host for everything vgpu-hook depends on, each finding with the command that fixes
//! it.
//!
//! A vGPU start can fail for reasons far from the hook: IOMMU off, vfio not loaded, NVIDIA's
//! manager not running, a GPU address mistyped in the config, a hook installed but unseen by the
//! daemon, a libvirt too old for `qemu.d`. Each check here reads one such fact (sysfs through
//! the host's root, so it runs on the simulator too; processes through a `/proc` root) and says
//! what to run when it is wrong. Any error makes `vgpuctl doctor` exit non-zero.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::alloc::inventory::{self, MdevState, PfKind};
use crate::ctl::daemon;
use crate::ctl::install;
use crate::host::procfs::Procfs;
use crate::host::Host;
use crate::model::config::{Config, ConfigError};

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
    /// The hook executable this vgpuctl came with, to spot an outdated installed copy.
    pub expected_hook: Option<&'a Path>,
    /// What libvirt said.
    pub libvirt: LibvirtProbe,
}

/// libvirt runs `qemu.d/*` hooks from this version on.
pub const QEMU_D_MIN_VERSION: u32 = 6_005_000;

fn finding(
    check: &'static str,
    severity: Severity,
    message: String,
    fix: Option<String>,
) -> Finding {
    Finding {
        check,
        severity,
        message,
        fix,
    }
}

fn version_text(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000)
}

/// Runs every check.
pub fn run(inputs: &Inputs<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let host = inputs.host;
    let sysfs = &host.sysfs;
    let config_path = host.config_path.display().to_string();

    // config
    let config = match Config::load(&host.config_path) {
        Ok(c) => {
            let n = |k: usize, what: &str| format!("{k} {what}");
            out.push(finding(
                "config",
                Severity::Ok,
                format!(
                    "{config_path} is valid: {}, {}, {}, {}",
                    n(c.nvidia_vgpu_pfs.len(), "NVIDIA GPU(s)"),
                    n(c.amd_vgpu_pfs.len(), "AMD PF(s)"),
                    n(c.mdev_parents.len(), "other mdev parent(s)"),
                    n(c.sriov_pfs.len(), "other SR-IOV PF(s)")
                ),
                None,
            ));
            if c.nvidia_vgpu_pfs.is_empty()
                && c.amd_vgpu_pfs.is_empty()
                && c.mdev_parents.is_empty()
                && c.sriov_pfs.is_empty()
            {
                out.push(finding(
                    "config",
                    Severity::Warning,
                    "the config lists no devices, so every vGPU request will be refused".into(),
                    Some(format!(
                        "uncomment or add devices in {config_path} (vgpuctl install lists what this host has)"
                    )),
                ));
            }
            Some(c)
        }
        Err(e @ ConfigError::Missing { .. }) => {
            out.push(finding(
                "config",
                Severity::Error,
                e.to_string(),
                Some("vgpuctl install (writes a commented skeleton)".into()),
            ));
            None
        }
        Err(e) => {
            out.push(finding(
                "config",
                Severity::Error,
                e.to_string(),
                Some(format!("edit {config_path} as the message says")),
            ));
            None
        }
    };

    // iommu
    let groups = sysfs.iommu_groups();
    out.push(if groups > 0 {
        finding(
            "iommu",
            Severity::Ok,
            format!("IOMMU enabled ({groups} groups)"),
            None,
        )
    } else {
        finding(
            "iommu",
            Severity::Error,
            "IOMMU is off: /sys/kernel/iommu_groups is empty, so no device can be given to a VM".into(),
            Some("add intel_iommu=on iommu=pt (Intel) or amd_iommu=on (AMD) to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub, reboot".into()),
        )
    });

    // modules
    let wants_mdev = config
        .as_ref()
        .is_none_or(|c| !c.nvidia_vgpu_pfs.is_empty() || !c.mdev_parents.is_empty());
    let mut modules = vec!["vfio", "vfio_pci", "vfio_iommu_type1"];
    if wants_mdev {
        modules.push("mdev");
    }
    let missing: Vec<&str> = modules
        .iter()
        .copied()
        .filter(|m| !sysfs.module_loaded(m))
        .collect();
    out.push(if missing.is_empty() {
        finding(
            "modules",
            Severity::Ok,
            format!("loaded: {}", modules.join(", ")),
            None,
        )
    } else {
        finding(
            "modules",
            Severity::Error,
            format!("not loaded: {}", missing.join(", ")),
            Some(format!(
                "modprobe -a {0}; to load them at boot: printf '%s\\n' {0} > /etc/modules-load.d/vfio.conf",
                missing.join(" ")
            )),
        )
    });

    // vendor manager
    if config
        .as_ref()
        .is_some_and(|c| !c.nvidia_vgpu_pfs.is_empty())
    {
        let running = inputs.proc.find_by_comm(&["nvidia-vgpu-mgr"]);
        let unit_known = inputs
            .unit_dirs
            .iter()
            .any(|d| d.join("nvidia-vgpu-mgr.service").exists());
        out.push(match (running.first(), unit_known) {
            (Some((pid, _)), _) => finding(
                "nvidia-vgpu-mgr",
                Severity::Ok,
                format!("nvidia-vgpu-mgr runs (pid {pid})"),
                None,
            ),
            (None, true) => finding(
                "nvidia-vgpu-mgr",
                Severity::Error,
                "nvidia-vgpu-mgr is installed but not running: NVIDIA GPUs register no vGPU types and VMs fail to open their vGPU".into(),
                Some("systemctl enable --now nvidia-vgpu-mgr; journalctl -u nvidia-vgpu-mgr tells why it stopped".into()),
            ),
            (None, false) => finding(
                "nvidia-vgpu-mgr",
                Severity::Error,
                "nvidia-vgpu-mgr is not running and no systemd unit for it was found".into(),
                Some("install NVIDIA's vGPU host driver (the KVM package, not the guest driver), then systemctl enable --now nvidia-vgpu-mgr".into()),
            ),
        });
    }

    // configured devices
    if let Some(c) = &config {
        for g in inventory::mdev_gpus(c, sysfs) {
            let gen = g.state.label();
            let f = match &g.state {
                MdevState::Parents(_, ps) => {
                    let types: usize = ps
                        .iter()
                        .map(|p| sysfs.mdev_types(p).len())
                        .max()
                        .unwrap_or(0);
                    finding(
                        "device",
                        Severity::Ok,
                        format!("{}: {gen}, {} parent(s), {types} types", g.key, ps.len()),
                        None,
                    )
                }
                MdevState::NotMdev => finding(
                    "device",
                    Severity::Ok,
                    format!(
                        "{}: {gen} (kernel-6.8+ vGPU on VFs), {} VFs enabled",
                        g.key,
                        g.pf.map_or(0, |pf| sysfs.vfs(pf).len())
                    ),
                    None,
                ),
                MdevState::Missing => finding(
                    "device",
                    Severity::Error,
                    format!("{}: not present on this host", g.key),
                    Some(if g.pf.is_some() {
                        format!("check the address with lspci -D, then fix it in {config_path}")
                    } else {
                        format!("load the parent's driver, or fix the name in {config_path} (ls /sys/class/mdev_bus)")
                    }),
                ),
                MdevState::Unregistered => finding(
                    "device",
                    Severity::Error,
                    format!("{}: present but not registered as an mdev parent", g.key),
                    Some(if g.nvidia {
                        "systemctl start nvidia-vgpu-mgr (and check that the GPU is bound to the nvidia driver: lspci -k)".to_string()
                    } else {
                        "load the driver that registers it as an mdev parent".to_string()
                    }),
                ),
                MdevState::VfsDisabled => {
                    let (runnable, how) =
                        crate::host::sriov::nvidia_vfs_missing(&c.sriov_manage, &g.key);
                    finding(
                        "device",
                        if runnable {
                            Severity::Warning
                        } else {
                            Severity::Error
                        },
                        format!("{}: SR-IOV GPU with no VFs enabled", g.key),
                        Some(how),
                    )
                }
            };
            out.push(f);
        }
        for (pf, kind) in inventory::vf_pfs(c) {
            if kind == PfKind::Nvidia {
                continue;
            }
            let total = sysfs.sriov_totalvfs(pf);
            let enabled = sysfs.vfs(pf).len();
            out.push(if !sysfs.pci_exists(pf) {
                finding(
                    "device",
                    Severity::Error,
                    format!("{pf}: not present on this host"),
                    Some(format!("check the address with lspci -D, then fix it in {config_path}")),
                )
            } else if total == 0 {
                finding(
                    "device",
                    Severity::Error,
                    format!("{pf}: has no SR-IOV capability (sriov_totalvfs is 0 or absent)"),
                    Some(format!("remove it from {} in {config_path}", inventory::pf_kind_label(kind))),
                )
            } else if enabled == 0 && kind == PfKind::Amd {
                finding(
                    "device",
                    Severity::Error,
                    format!("{pf}: no VFs; the gim driver fixes their number when it loads"),
                    Some(crate::host::sriov::amd_vf_num(sysfs, pf)),
                )
            } else if enabled == 0 {
                finding(
                    "device",
                    Severity::Warning,
                    format!("{pf}: no VFs enabled (of {total}); the hook enables them at the first start where the driver allows"),
                    Some(format!("echo {total} > /sys/bus/pci/devices/{pf}/sriov_numvfs")),
                )
            } else {
                finding(
                    "device",
                    Severity::Ok,
                    format!("{pf}: sriov, {enabled} of {total} VFs enabled"),
                    None,
                )
            });
        }
    }

    // hook
    let in_qemu_d = install::hook_target(inputs.hooks_dir, false);
    let as_qemu = install::hook_target(inputs.hooks_dir, true);
    let installed: Option<PathBuf> = [in_qemu_d.clone(), as_qemu.clone()]
        .into_iter()
        .find(|p| install::is_our_hook(p));
    match &installed {
        None => out.push(finding(
            "hook",
            Severity::Error,
            format!(
                "vgpu-hook is not installed ({} absent)",
                in_qemu_d.display()
            ),
            Some("vgpuctl install".into()),
        )),
        Some(p) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p).map_or(0, |m| m.permissions().mode());
            if mode & 0o100 == 0 {
                out.push(finding(
                    "hook",
                    Severity::Error,
                    format!("{} is not executable, so libvirt skips it", p.display()),
                    Some(format!("chmod 755 {}", p.display())),
                ));
            } else {
                out.push(finding(
                    "hook",
                    Severity::Ok,
                    format!("installed as {}", p.display()),
                    None,
                ));
            }
            if let Some(expected) = inputs.expected_hook {
                let same = std::fs::read(expected).ok() == std::fs::read(p).ok();
                if expected.exists() && !same {
                    out.push(finding(
                        "hook",
                        Severity::Warning,
                        format!(
                            "{} differs from {} that came with this vgpuctl (another version?)",
                            p.display(),
                            expected.display()
                        ),
                        Some("vgpuctl install".into()),
                    ));
                }
            }
        }
    }

    // daemon
    let d = daemon::find(inputs.proc, inputs.pid_files);
    match (&d, &installed) {
        (None, _) => out.push(finding(
            "daemon",
            Severity::Warning,
            "no libvirt daemon (libvirtd or virtqemud) is running".into(),
            Some(
                "systemctl start libvirtd (or virtqemud); it reads the hooks when it starts".into(),
            ),
        )),
        (Some(dm), Some(hook)) => {
            let mtime = std::fs::metadata(hook).and_then(|m| m.modified()).ok();
            let seen = mtime.and_then(|m| daemon::has_seen(dm, inputs.proc, host.state.path(), m));
            out.push(match seen {
                Some(true) => finding(
                    "daemon",
                    Severity::Ok,
                    format!("{} (pid {}) has seen the installed hook", dm.name, dm.pid),
                    None,
                ),
                Some(false) => finding(
                    "daemon",
                    Severity::Error,
                    format!(
                        "{} (pid {}) started before the hook was installed and was not reloaded since, so it does not run the hook",
                        dm.name, dm.pid
                    ),
                    Some(daemon::reload_command(Some(dm))),
                ),
                None => finding(
                    "daemon",
                    Severity::Warning,
                    format!("{} (pid {}) runs; cannot tell whether it has seen the hook", dm.name, dm.pid),
                    Some(daemon::reload_command(Some(dm))),
                ),
            });
        }
        (Some(dm), None) => out.push(finding(
            "daemon",
            Severity::Ok,
            format!("{} runs (pid {})", dm.name, dm.pid),
            None,
        )),
    }

    // libvirt
    match &inputs.libvirt {
        LibvirtProbe::Reachable { uri, version } => {
            let too_old =
                *version < QEMU_D_MIN_VERSION && installed.as_deref() == Some(in_qemu_d.as_path());
            out.push(if too_old {
                finding(
                    "libvirt",
                    Severity::Error,
                    format!(
                        "libvirt {} at {uri} predates qemu.d hooks (6.5.0), so it never runs {}",
                        version_text(*version),
                        in_qemu_d.display()
                    ),
                    Some(
                        "vgpuctl uninstall && vgpuctl install --as-qemu (or upgrade libvirt)"
                            .into(),
                    ),
                )
            } else {
                finding(
                    "libvirt",
                    Severity::Ok,
                    format!("libvirt {} at {uri}", version_text(*version)),
                    None,
                )
            });
        }
        LibvirtProbe::Unreachable { uri, error } => out.push(finding(
            "libvirt",
            Severity::Warning,
            format!("cannot reach libvirt at {uri}: {error}"),
            Some("start the daemon (systemctl start libvirtd) or pass --connect URI".into()),
        )),
        LibvirtProbe::NotChecked => {}
    }
    out
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
