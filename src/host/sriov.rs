//! Switching a PF's SR-IOV VFs on and off, the way its driver allows.
//!
//! The kernel's `sriov_numvfs` works only where the PF's driver has a `sriov_configure` hook.
//! NVIDIA's GPU driver has none (every write is ENOENT), so NVIDIA's VFs (Ampere SR-IOV mdev
//! parents, kernel-6.8+ vGPU VFs) come only from NVIDIA's `sriov-manage -e <PF>`, which parks the
//! GPU on `pci-pf-stub` to write the count and rebinds it. AMD's GIM fixes its VF count when it
//! loads (`vf_num`), and vfio-pci refuses unless loaded with `enable_sriov=1`. This unit picks the
//! way for a PF, runs it bounded, and, where it cannot work, says exactly what the operator must
//! run instead, in words that the hook, `doctor` and `attach` share.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::host::sysfs::{Sysfs, SysfsError};
use crate::host::tool::{is_executable, run_bounded, RunError};
use crate::model::config::Config;
use crate::model::config::PfKind;
use crate::model::pci::PciAddress;

/// PCI vendor id of NVIDIA.
const NVIDIA: u16 = 0x10de;

/// How a PF's VFs are switched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch {
    /// Writing `sriov_numvfs` (drivers with `sriov_configure`).
    Sysfs,
    /// NVIDIA's `sriov-manage` at this path.
    SriovManage(PathBuf),
}

/// Why VFs could not be switched on or off.
#[derive(Debug, thiserror::Error)]
pub enum SriovError {
    /// `sriov_numvfs` refused.
    #[error("{source}{}", advice.as_deref().map(|a| format!("; {a}")).unwrap_or_default())]
    Sysfs {
        /// The refused write.
        source: SysfsError,
        /// What to do instead, for this PF's driver.
        advice: Option<String>,
    },
    /// NVIDIA's tool is not installed where the config says.
    #[error("NVIDIA's sriov-manage is not at {} (install NVIDIA's vGPU manager package, or set sriov_manage in the config), then run `{} {flag} {pf}`", path.display(), path.display())]
    ManageAbsent {
        /// Where it was looked for.
        path: PathBuf,
        /// `-e` or `-d`.
        flag: &'static str,
        /// The PF.
        pf: PciAddress,
    },
    /// NVIDIA's tool ran and failed.
    #[error("`{} {flag} {pf}` failed ({status}){}; run it by hand to see why", path.display(), if output.is_empty() { String::new() } else { format!(": {output}") })]
    ManageFailed {
        /// The tool.
        path: PathBuf,
        /// `-e` or `-d`.
        flag: &'static str,
        /// The PF.
        pf: PciAddress,
        /// Its exit status.
        status: String,
        /// The last line it printed.
        output: String,
    },
    /// NVIDIA's tool did not finish in time and was killed.
    #[error("`{} {flag} {pf}` did not finish within {secs} s and was stopped; run it by hand (or raise sriov_manage_timeout_secs)", path.display())]
    ManageTimeout {
        /// The tool.
        path: PathBuf,
        /// `-e` or `-d`.
        flag: &'static str,
        /// The PF.
        pf: PciAddress,
        /// The bound.
        secs: u64,
    },
}

impl Switch {
    /// The way for `pf`: NVIDIA's tool for NVIDIA GPUs (configured as such or with NVIDIA's
    /// vendor id), `sriov_numvfs` for everything else.
    pub fn for_pf(config: &Config, sysfs: &Sysfs, pf: PciAddress) -> Switch {
        if config.nvidia_vgpu_pfs.contains(&pf) || sysfs.pci_vendor(pf) == Some(NVIDIA) {
            Switch::SriovManage(config.sriov_manage.clone())
        } else {
            Switch::Sysfs
        }
    }

    /// Enables the VFs of a PF that has none (never touches a non-zero count). True when it
    /// changed the count, so a refused prepare knows to switch them off again.
    pub fn enable(
        &self,
        sysfs: &Sysfs,
        config: &Config,
        pf: PciAddress,
        kind: PfKind,
    ) -> Result<bool, SriovError> {
        let sysfs_err = |source| SriovError::Sysfs {
            advice: sysfs_advice(sysfs, pf, kind, &source),
            source,
        };
        if sysfs.sriov_numvfs(pf).map_err(sysfs_err)? != 0 {
            return Ok(false);
        }
        match self {
            Switch::Sysfs => {
                let total = sysfs.sriov_totalvfs(pf);
                let want = match config.vf_count {
                    0 => total,
                    n => n.min(total),
                };
                sysfs
                    .set_sriov_numvfs(pf, want, config.timing.device_wait)
                    .map_err(sysfs_err)?;
                log::info!("enabled {want} VFs on {pf}");
            }
            Switch::SriovManage(tool) => {
                run_manage(tool, "-e", pf, config.timing.sriov_manage)?;
                log::info!("enabled the VFs of {pf} with {}", tool.display());
            }
        }
        Ok(true)
    }

    /// Switches the VFs of a PF off again (undoing [`Switch::enable`]).
    pub fn disable(
        &self,
        sysfs: &Sysfs,
        config: &Config,
        pf: PciAddress,
    ) -> Result<(), SriovError> {
        match self {
            Switch::Sysfs => sysfs
                .set_sriov_numvfs(pf, 0, config.timing.remove_timeout)
                .map_err(|source| SriovError::Sysfs {
                    source,
                    advice: None,
                }),
            Switch::SriovManage(tool) => run_manage(tool, "-d", pf, config.timing.sriov_manage),
        }
    }
}

/// What an operator must do about a PF of NVIDIA's that has no VFs, as one line: the exact
/// command, and whether the hook can run it itself. Shared by the hook, `doctor` and `attach`.
pub fn nvidia_vfs_missing(tool: &Path, pf: impl std::fmt::Display) -> (bool, String) {
    if is_executable(tool) {
        (
            true,
            format!(
                "the hook runs `{} -e {pf}` at the first start that needs it (or run it at boot)",
                tool.display()
            ),
        )
    } else {
        (
            false,
            format!(
                "NVIDIA's sriov-manage is not at {} (install NVIDIA's vGPU manager package, or set sriov_manage), then run `{} -e {pf}`",
                tool.display(),
                tool.display()
            ),
        )
    }
}

/// What the operator does instead when `sriov_numvfs` answers ENOENT, for this PF's driver.
fn sysfs_advice(sysfs: &Sysfs, pf: PciAddress, kind: PfKind, e: &SysfsError) -> Option<String> {
    if e.errno() != Some(libc::ENOENT) {
        return None;
    }
    Some(match (kind, sysfs.driver(pf).as_deref()) {
        (PfKind::Amd, _) => amd_vf_num(sysfs, pf),
        (_, Some("vfio-pci")) => {
            "vfio-pci enables VFs only when loaded with enable_sriov=1 (modprobe vfio-pci enable_sriov=1)".to_string()
        }
        (_, None) => "no driver is bound to the PF, so nothing can enable its VFs".to_string(),
        (_, Some(d)) => format!("its driver '{d}' does not enable VFs through sysfs"),
    })
}

/// How many VFs AMD's GIM gives, and how to ask for them, for the GIM in front of this card.
/// The Instinct GIM (amd/MxGPU-Virtualization) sets the count with its `vf_num` parameter (or
/// `amd-smi set --num-vf N`), never through `sriov_numvfs`, and the compute partition follows
/// it: an MI300X takes 1 VF (SPX) or, since GIM 8.5, 8 (CPX, with the multi-VF firmware); an
/// MI350 1, 2 or 8 (GIM 9.1); a V710 1 to 12 (GIM 9.2) (GIM release notes; `support_vf_num` per
/// profile in `libgv/core/hw/AI/mi300/mi300_gpumon.c`). The S7150 GIM (GPUOpen
/// MxGPU-Virtualization) takes `vf_num` 0 to 16 (0: the SR-IOV capability's count) and binds no
/// driver to the PF.
pub fn amd_vf_num(sysfs: &Sysfs, pf: PciAddress) -> String {
    let reported = sysfs
        .amd_partition(pf)
        .map(|p| format!("{}; ", p.describe(sysfs.vfs(pf).len())))
        .unwrap_or_default();
    format!("{reported}{}", amd_vf_num_for(sysfs, pf))
}

/// [`amd_vf_num`] for the card's device id alone.
fn amd_vf_num_for(sysfs: &Sysfs, pf: PciAddress) -> String {
    let device = sysfs
        .read(&sysfs.pci_dir(pf).join("device"))
        .ok()
        .and_then(|d| u16::from_str_radix(d.trim_start_matches("0x"), 16).ok());
    match device {
        Some(0x6929) => "the S7150 GIM sets the VF count when it loads: modprobe -r gim && modprobe gim vf_num=N (1 to 16, or 0 for as many as the card offers; or set it in /etc/modprobe.d/gim.conf)".to_string(),
        Some(0x74a1) => "the MI300X GIM sets the VF count, and with it the compute partition: 1 VF (SPX) or 8 VFs (CPX, GIM 8.5+ with the multi-VF firmware); amd-smi set --num-vf 1 (or 8) while no VM holds a VF, or modprobe -r gim && modprobe gim vf_num=1 (or set it in /etc/gim_config)".to_string(),
        _ => "the gim driver sets the VF count: set its vf_num parameter to what this card supports (GIM release notes: MI300X 1 or 8, MI350 1, 2 or 8, V710 1 to 12; amd-smi set --num-vf N on GIM 8.5+) and reload gim".to_string(),
    }
}

/// Runs `tool flag pf` with nothing inherited but the environment, within `limit`; its output
/// goes to the log, never to libvirt.
fn run_manage(
    tool: &Path,
    flag: &'static str,
    pf: PciAddress,
    limit: Duration,
) -> Result<(), SriovError> {
    if !is_executable(tool) {
        return Err(SriovError::ManageAbsent {
            path: tool.to_path_buf(),
            flag,
            pf,
        });
    }
    let failed = |status: String, output: String| SriovError::ManageFailed {
        path: tool.to_path_buf(),
        flag,
        pf,
        status,
        output,
    };
    let mut command = Command::new(tool);
    command.arg(flag).arg(pf.to_string());
    let ran = match run_bounded(command, limit) {
        Ok(ran) => ran,
        Err(RunError::NotStarted(e)) => return Err(failed("not started".into(), e)),
        Err(RunError::Timeout) => {
            return Err(SriovError::ManageTimeout {
                path: tool.to_path_buf(),
                flag,
                pf,
                secs: limit.as_secs(),
            })
        }
    };
    let text = ran.stdout + &ran.stderr;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        log::info!(
            "{} {flag} {pf}: {}",
            tool.display(),
            crate::printable(line, 200)
        );
    }
    if ran.status.success() {
        return Ok(());
    }
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(failed(
        ran.status.to_string(),
        crate::printable(last.trim(), 160),
    ))
}
