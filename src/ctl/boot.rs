//! `vgpuctl boot`: readies the configured GPUs at boot, before libvirt's daemons and
//! `libvirt-guests` start, so that autostarted domains find their devices.
//!
//! For each configured GPU it looks at what the GPU offers now (the hook's own classification,
//! [`crate::alloc::inventory`]) and does the one thing that helps: an NVIDIA GPU whose SR-IOV
//! VFs are off gets them from NVIDIA's `sriov-manage` (the same [`Switch`] the hook uses; never
//! `sriov_numvfs`, which NVIDIA's driver refuses); a GPU whose vGPU manager has not registered
//! it yet is waited for, within one bound for the whole run, but only when the manager is
//! installed (waiting for a service that does not exist only delays the boot); a missing GPU
//! (fell off the bus, or a wrong address) is reported and never waited for. Everything it finds
//! is one line per GPU on stdout, which the unit's journal keeps. It changes nothing that is
//! already right, so running it twice is running it once, and it never fails: a boot must go
//! on without GPUs rather than stop for them. `--check` says what a boot would run or wait for
//! and does neither.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::alloc::inventory::{classify_nvidia, MdevState};
use crate::alloc::mixed::ensure_mode;
use crate::host::drains::Drains;
use crate::host::sriov::{amd_vf_num, Switch};
use crate::host::sysfs::Sysfs;
use crate::model::config::Config;
use crate::model::config::PfKind;
use crate::model::pci::PciAddress;

/// Where NVIDIA's vGPU manager daemon is installed by NVIDIA's host driver package.
pub const VGPU_MGR_PATHS: &[&str] = &["/usr/bin/nvidia-vgpu-mgr", "/usr/sbin/nvidia-vgpu-mgr"];

/// How `boot` runs.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The bound on all waiting together.
    pub wait: Duration,
    /// Whether NVIDIA's vGPU manager is installed (then unregistered NVIDIA GPUs are waited for).
    pub vgpu_mgr_installed: bool,
    /// Poll interval while waiting.
    pub poll: Duration,
    /// Only say what a boot would do (`vgpuctl boot --check`): nothing is run, written or
    /// waited for.
    pub check: bool,
}

impl BootOptions {
    /// The defaults for this host: the config's `parent_wait_secs`, the manager looked for at
    /// its usual paths.
    pub fn for_host(config: &Config) -> BootOptions {
        BootOptions {
            wait: config.timing.parent_wait,
            vgpu_mgr_installed: VGPU_MGR_PATHS.iter().any(|p| Path::new(p).exists()),
            poll: Duration::from_millis(500),
            check: false,
        }
    }
}

/// What `boot` found for one configured GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The config entry (PF address or parent name).
    pub gpu: String,
    /// Whether it is ready for the hook.
    pub ready: bool,
    /// What was found or done, and what to do when it is not ready.
    pub detail: String,
}

/// Readies every configured GPU (or, with `check`, says what that would take); one finding
/// each, in config order.
pub fn run(config: &Config, sysfs: &Sysfs, opts: &BootOptions) -> Vec<Finding> {
    let deadline = Instant::now()
        + if opts.check {
            Duration::ZERO
        } else {
            opts.wait
        };
    let mut out: Vec<Finding> = config
        .nvidia_vgpu_pfs
        .iter()
        .map(|&pf| nvidia(config, sysfs, pf, opts, deadline))
        .collect();
    out.extend(config.mdev_parents.iter().map(|p| {
        let registered = || sysfs.is_mdev_parent(p);
        wait_until(deadline, opts.poll, registered);
        Finding {
            gpu: p.to_string(),
            ready: registered(),
            detail: if registered() {
                format!("ready: mdev parent, {} types", sysfs.mdev_types(p).len())
            } else if opts.check {
                format!("not registered as an mdev parent yet: a boot would wait up to {} s for it (is its driver loaded?)", opts.wait.as_secs())
            } else {
                "missing: not registered as an mdev parent (is its driver loaded?)".into()
            },
        }
    }));
    out.extend(
        config
            .vf_pfs()
            .into_iter()
            .filter(|(_, kind)| *kind != PfKind::Nvidia)
            .map(|(pf, kind)| vf_pf(sysfs, pf, kind)),
    );
    out
}

/// Polls `done` until it holds or the deadline passes.
fn wait_until(deadline: Instant, poll: Duration, done: impl Fn() -> bool) {
    while !done() && Instant::now() < deadline {
        sleep(poll.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// One NVIDIA GPU: VFs on where they are off, then (when the manager is installed) wait for it
/// to register the GPU.
fn nvidia(
    config: &Config,
    sysfs: &Sysfs,
    pf: PciAddress,
    opts: &BootOptions,
    deadline: Instant,
) -> Finding {
    let finding = |ready: bool, detail: String| Finding {
        gpu: pf.to_string(),
        ready,
        detail,
    };
    let mut enabled = String::new();
    match classify_nvidia(sysfs, pf) {
        MdevState::Missing => {
            return finding(
                false,
                "missing: not on the PCI bus (fell off the bus, or a wrong address in the config); see lspci and dmesg".into(),
            )
        }
        MdevState::VfsDisabled if opts.check => {
            let (_, how) = crate::host::sriov::nvidia_vfs_missing(&config.sriov_manage, pf);
            let mut run = format!("`{} -e {pf}`", config.sriov_manage.display());
            if config.mixed_size_pfs.contains(&pf) {
                let shm = crate::host::nvidia_smi::Smi::new(&config.nvidia_smi).switch_on_command(pf);
                run.push_str(&format!(", then `{shm}` (after it: sriov-manage wipes the mode)"));
            }
            return finding(false, format!("SR-IOV VFs off: a boot would run {run} ({how})"));
        }
        MdevState::VfsDisabled => {
            let switch = Switch::for_pf(config, sysfs, pf);
            match switch.enable(sysfs, config, pf, PfKind::Nvidia) {
                Ok(_) => enabled = format!("enabled {} VFs; ", sysfs.vfs(pf).len()),
                Err(e) => return finding(false, format!("SR-IOV VFs not enabled: {e}")),
            }
        }
        _ => {}
    }
    let registered = || {
        matches!(
            classify_nvidia(sysfs, pf),
            MdevState::Parents(..) | MdevState::NotMdev
        )
    };
    if opts.vgpu_mgr_installed {
        wait_until(deadline, opts.poll, registered);
    }
    match classify_nvidia(sysfs, pf) {
        MdevState::Parents(g, ps) => finding(
            true,
            format!(
                "{enabled}ready: {}, {} mdev parent(s){}",
                g.label(),
                ps.len(),
                scheduler_clause(config, sysfs, pf)
            ),
        ),
        MdevState::NotMdev => finding(
            true,
            format!(
                "{enabled}ready: nvidia-vfio, {} VFs{}{}",
                sysfs.vfs(pf).len(),
                mixed_size(config, sysfs, pf, opts.check),
                scheduler_clause(config, sysfs, pf)
            ),
        ),
        _ if opts.check && opts.vgpu_mgr_installed => finding(
            false,
            format!("not registered as an mdev parent yet: a boot would wait up to {} s for nvidia-vgpu-mgr to register it", opts.wait.as_secs()),
        ),
        _ if !opts.vgpu_mgr_installed => finding(
            false,
            format!("{enabled}not registered as an mdev parent, and NVIDIA's vGPU manager (nvidia-vgpu-mgr) is not installed: install NVIDIA's vGPU host driver"),
        ),
        _ => finding(
            false,
            format!("{enabled}not registered as an mdev parent within {} s: systemctl status nvidia-vgpu-mgr; journalctl -u nvidia-vgpu-mgr", opts.wait.as_secs()),
        ),
    }
}

/// For a GPU of `mixed_size_pfs`, after its VFs are on (NVIDIA's order: `sriov-manage -e`
/// wipes the mode, so it comes after): the mode asserted, as a clause of the GPU's line.
fn mixed_size(config: &Config, sysfs: &Sysfs, pf: PciAddress, check: bool) -> String {
    if !config.mixed_size_pfs.contains(&pf) {
        return String::new();
    }
    format!("; {}", ensure_mode(config, sysfs, pf, check))
}

/// For a GPU of `vgpu_scheduler`: the policy it runs, and the fix when the config asks for
/// another (a boot cannot change it: NVIDIA reads it when its module loads).
fn scheduler_clause(config: &Config, sysfs: &Sysfs, pf: PciAddress) -> String {
    match crate::ctl::scheduler::standing(config, sysfs, pf) {
        None => String::new(),
        Some(s @ crate::ctl::scheduler::Standing::Runs(_)) => format!("; {s}"),
        Some(s) => format!("; {s}: {}", crate::ctl::scheduler::fix(config)),
    }
}

/// One AMD or generic SR-IOV PF: present, and how many VFs it has. The hook enables a generic
/// PF's VFs at first use; AMD's come only from GIM's module parameter.
fn vf_pf(sysfs: &Sysfs, pf: PciAddress, kind: PfKind) -> Finding {
    let (ready, detail) = if !sysfs.pci_exists(pf) {
        (false, "missing: not on the PCI bus (fell off the bus, or a wrong address in the config); see lspci and dmesg".to_string())
    } else {
        let n = sysfs.vfs(pf).len();
        match (n, kind) {
            (0, PfKind::Amd) => (false, format!("no VFs: {}", amd_vf_num(sysfs, pf))),
            (0, _) => (
                true,
                format!(
                    "ready: no VFs enabled yet (of {}); the hook enables them at first use",
                    sysfs.sriov_totalvfs(pf)
                ),
            ),
            _ => (true, format!("ready: {n} VFs")),
        }
    };
    Finding {
        gpu: pf.to_string(),
        ready,
        detail,
    }
}

/// The lines `vgpuctl boot` prints: one per GPU (with its drain, which a boot keeps), then a
/// summary.
pub fn lines(findings: &[Finding], drains: &Drains, check: bool) -> Vec<String> {
    let mut out: Vec<String> = findings
        .iter()
        .map(|f| match drains.of(&f.gpu) {
            Some(d) => format!("{}: {}; {d}", f.gpu, f.detail),
            None => format!("{}: {}", f.gpu, f.detail),
        })
        .collect();
    let ready = findings.iter().filter(|f| f.ready).count();
    let checked = if check {
        " (checked only: nothing was run or changed)"
    } else {
        ""
    };
    out.push(format!(
        "{ready} of {} configured GPUs ready{checked}",
        findings.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BootOptions {
        BootOptions {
            wait: Duration::from_millis(300),
            vgpu_mgr_installed: false,
            poll: Duration::from_millis(50),
            check: false,
        }
    }

    #[test]
    fn a_gpu_that_fell_off_the_bus_is_reported_without_waiting() {
        let t = tempfile::tempdir().unwrap();
        let c = Config::parse(
            "nvidia_vgpu_pfs = [\"82:00.0\"]\nsriov_pfs = [\"05:00.0\"]\n",
            Path::new("c"),
        )
        .unwrap();
        let mut o = opts();
        o.wait = Duration::from_secs(30);
        o.vgpu_mgr_installed = true;
        let t0 = Instant::now();
        let f = run(&c, &Sysfs::new(t.path()), &o);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert_eq!(f.len(), 2);
        assert!(
            f.iter()
                .all(|f| !f.ready && f.detail.starts_with("missing: not on the PCI bus")),
            "{f:?}"
        );
        let none = Drains::default();
        assert_eq!(
            lines(&f, &none, false).last().unwrap(),
            "0 of 2 configured GPUs ready"
        );
    }

    #[test]
    fn a_missing_mdev_parent_is_waited_for_within_the_bound() {
        let t = tempfile::tempdir().unwrap();
        let c = Config::parse("mdev_parents = [\"mtty\"]\n", Path::new("c")).unwrap();
        let t0 = Instant::now();
        let f = run(&c, &Sysfs::new(t.path()), &opts());
        assert!(t0.elapsed() >= Duration::from_millis(250));
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert!(
            !f[0].ready && f[0].detail.contains("not registered"),
            "{f:?}"
        );
    }
}
