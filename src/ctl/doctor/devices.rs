//! Device checks: NVIDIA's manager, every configured GPU, parent and PF as it is now, and the
//! GPUs the operator drained.
//!
//! A configured device can be absent (mistyped address, card fallen off the bus), present but
//! not yet serving (vendor manager down, VFs not enabled), or fine; each state has its own
//! fix, the same advice the hook gives when it refuses a start.

use super::{Context, Verdict};
use crate::alloc::inventory::{self, MdevGpu, MdevState};
use crate::alloc::mixed::{ensure_mode, Mode};
use crate::ctl::catalogue;
use crate::ctl::drain;
use crate::ctl::scheduler::{self, Standing};
use crate::host::drains::Drains;
use crate::model::config::Config;
use crate::model::config::PfKind;
use crate::model::pci::PciAddress;

/// Whether `nvidia-vgpu-mgr` runs, when NVIDIA GPUs are configured.
pub fn nvidia_vgpu_mgr(ctx: &Context<'_>) -> Vec<Verdict> {
    if ctx.config().is_none_or(|c| c.nvidia_vgpu_pfs.is_empty()) {
        return Vec::new();
    }
    let running = ctx.inputs.proc.find_by_comm(&["nvidia-vgpu-mgr"]);
    let unit_known = ctx
        .inputs
        .unit_dirs
        .iter()
        .any(|d| d.join("nvidia-vgpu-mgr.service").exists());
    vec![match (running.first(), unit_known) {
        (Some((pid, _)), _) => Verdict::ok(format!("nvidia-vgpu-mgr runs (pid {pid})")),
        (None, true) => Verdict::fail(
            "nvidia-vgpu-mgr is installed but not running: NVIDIA GPUs register no vGPU types and VMs fail to open their vGPU",
            "systemctl enable --now nvidia-vgpu-mgr; journalctl -u nvidia-vgpu-mgr tells why it stopped",
        ),
        (None, false) => Verdict::fail(
            "nvidia-vgpu-mgr is not running and no systemd unit for it was found",
            "install NVIDIA's vGPU host driver (the KVM package, not the guest driver), then systemctl enable --now nvidia-vgpu-mgr",
        ),
    }]
}

/// One verdict per configured mdev source (NVIDIA GPU or other parent).
pub fn mdev_gpus(ctx: &Context<'_>) -> Vec<Verdict> {
    let Some(c) = ctx.config() else {
        return Vec::new();
    };
    inventory::mdev_gpus(c, ctx.sysfs())
        .iter()
        .map(|g| mdev_gpu(ctx, c, g))
        .collect()
}

fn mdev_gpu(ctx: &Context<'_>, c: &Config, g: &MdevGpu) -> Verdict {
    let sysfs = ctx.sysfs();
    let gen = g.state.label();
    let config_path = &ctx.config_path;
    match &g.state {
        MdevState::Parents(_, ps) => {
            let types = ps
                .iter()
                .map(|p| sysfs.mdev_types(p).len())
                .max()
                .unwrap_or(0);
            Verdict::ok(format!(
                "{}: {gen}, {} parent(s), {types} types",
                g.key,
                ps.len()
            ))
        }
        MdevState::NotMdev => Verdict::ok(format!(
            "{}: {gen} (kernel-6.8+ vGPU on VFs), {} VFs enabled",
            g.key,
            g.pf.map_or(0, |pf| sysfs.vfs(pf).len())
        )),
        MdevState::Missing => Verdict::fail(
            format!("{}: not present on this host", g.key),
            if g.pf.is_some() {
                format!("check the address with lspci -D, then fix it in {config_path}")
            } else {
                format!("load the parent's driver, or fix the name in {config_path} (ls /sys/class/mdev_bus)")
            },
        ),
        MdevState::Unregistered => Verdict::fail(
            format!("{}: present but not registered as an mdev parent", g.key),
            if g.nvidia {
                "systemctl start nvidia-vgpu-mgr (and check that the GPU is bound to the nvidia driver: lspci -k)"
            } else {
                "load the driver that registers it as an mdev parent"
            },
        ),
        MdevState::VfsDisabled => {
            let (runnable, how) = crate::host::sriov::nvidia_vfs_missing(&c.sriov_manage, &g.key);
            let message = format!("{}: SR-IOV GPU with no VFs enabled", g.key);
            if runnable {
                Verdict::warn(message, how)
            } else {
                Verdict::fail(message, how)
            }
        }
    }
}

/// One verdict per configured AMD or generic SR-IOV PF (NVIDIA GPUs are [`mdev_gpus`]'s).
pub fn sriov_pfs(ctx: &Context<'_>) -> Vec<Verdict> {
    let Some(c) = ctx.config() else {
        return Vec::new();
    };
    c.vf_pfs()
        .into_iter()
        .filter(|(_, kind)| *kind != PfKind::Nvidia)
        .map(|(pf, kind)| sriov_pf(ctx, pf, kind))
        .collect()
}

fn sriov_pf(ctx: &Context<'_>, pf: PciAddress, kind: PfKind) -> Verdict {
    let sysfs = ctx.sysfs();
    let config_path = &ctx.config_path;
    let total = sysfs.sriov_totalvfs(pf);
    let enabled = sysfs.vfs(pf).len();
    if !sysfs.pci_exists(pf) {
        Verdict::fail(
            format!("{pf}: not present on this host"),
            format!("check the address with lspci -D, then fix it in {config_path}"),
        )
    } else if total == 0 {
        Verdict::fail(
            format!("{pf}: has no SR-IOV capability (sriov_totalvfs is 0 or absent)"),
            format!("remove it from {} in {config_path}", kind.config_key()),
        )
    } else if enabled == 0 && kind == PfKind::Amd {
        Verdict::fail(
            format!("{pf}: no VFs; the gim driver fixes their number when it loads"),
            crate::host::sriov::amd_vf_num(sysfs, pf),
        )
    } else if enabled == 0 {
        Verdict::warn(
            format!("{pf}: no VFs enabled (of {total}); the hook enables them at the first start where the driver allows"),
            format!("echo {total} > /sys/bus/pci/devices/{pf}/sriov_numvfs"),
        )
    } else if let Some(p) = sysfs.amd_partition(pf).filter(|_| kind == PfKind::Amd) {
        Verdict::ok(format!(
            "{pf}: sriov, {enabled} of {total} VFs enabled; {}",
            p.describe(enabled)
        ))
    } else {
        Verdict::ok(format!("{pf}: sriov, {enabled} of {total} VFs enabled"))
    }
}

/// One warning per drained GPU (it takes no new vGPU), with the VMs still on it; a list that
/// cannot be read fails, since every start that asks for a vGPU is refused until it is fixed.
pub fn drains(ctx: &Context<'_>) -> Vec<Verdict> {
    let Some(c) = ctx.config() else {
        return Vec::new();
    };
    let host = ctx.inputs.host;
    let drains = match Drains::of_config(c) {
        Ok(d) => d,
        Err(e) => {
            return vec![Verdict::fail(
                format!("{e}: starts that ask for a vGPU are refused"),
                "fix the file, or remove it to end every drain",
            )]
        }
    };
    let state = host.state.peek().unwrap_or_default();
    let live = host.liveness(c.timing.prepare_grace);
    drains
        .gpus
        .iter()
        .map(|d| {
            let on = drain::holders(&host.sysfs, &state, &live, &d.gpu);
            let held = drain::holders_line(&on);
            Verdict::warn(
                format!(
                    "{} is drained since {}: it takes no new vGPU; {held}",
                    d.gpu,
                    crate::utc(d.since)
                ),
                format!("vgpuctl undrain {} once the work on it is done", d.gpu),
            )
        })
        .collect()
}

/// One verdict per GPU of `mixed_size_pfs`: its mode as the hook would find it (on; off but
/// switched on at the next start; off with a vGPU there, so one size only until it empties),
/// checked without changing it.
pub fn mixed_size(ctx: &Context<'_>) -> Vec<Verdict> {
    let Some(c) = ctx.config() else {
        return Vec::new();
    };
    let sysfs = &ctx.inputs.host.sysfs;
    c.mixed_size_pfs
        .iter()
        .map(|&pf| {
            if !sysfs.vfs(pf).iter().any(|&vf| sysfs.is_nvidia_vfio_vf(vf)) {
                return Verdict::warn(
                    format!("{pf} is in mixed_size_pfs but shows no kernel-6.8+ vGPU VFs (nvidia/current_vgpu_type): the hook places vGPUs slot by slot only there"),
                    format!("enable its VFs (`{} -e {pf}`, or `vgpuctl boot`), or remove it from mixed_size_pfs", c.sriov_manage.display()),
                );
            }
            match ensure_mode(c, sysfs, pf, true) {
                Mode::On => Verdict::ok(format!("{pf}: mixed-size mode on")),
                m @ Mode::WouldSwitchOn(_) => Verdict::warn(
                    format!("{pf}: {m}"),
                    "nothing to do: the hook switches it on at the next start (or run `vgpuctl boot`)",
                ),
                m @ Mode::OffInUse => Verdict::warn(
                    format!("{pf}: {m}"),
                    "stop the GPU's VMs, then `vgpuctl boot` (NVIDIA changes the mode only on an empty GPU)",
                ),
                m => Verdict::warn(format!("{pf}: {m}"), "check `nvidia-smi -q` on this GPU, or remove it from mixed_size_pfs"),
            }
        })
        .collect()
}

/// One verdict per GPU of `vgpu_scheduler`: whether it runs the policy the config asks for,
/// with the modprobe line that makes every configured policy come true.
pub fn schedulers(ctx: &Context<'_>) -> Vec<Verdict> {
    let Some(c) = ctx.config() else {
        return Vec::new();
    };
    let sysfs = &ctx.inputs.host.sysfs;
    c.vgpu_scheduler
        .iter()
        .filter_map(|&(pf, _)| {
            let s = scheduler::standing(c, sysfs, pf)?;
            Some(match s {
                Standing::Runs(_) => Verdict::ok(format!("{pf}: {s}")),
                _ => Verdict::warn(format!("{pf}: {s}"), scheduler::fix(c)),
            })
        })
        .collect()
}

/// After a driver change: each domain whose request meant a type the new driver no longer has,
/// with the closest types there are now; one ok line when none does.
pub fn catalogue(ctx: &Context<'_>) -> Vec<Verdict> {
    let Some(c) = ctx.config() else {
        return Vec::new();
    };
    let sysfs = &ctx.inputs.host.sysfs;
    let Some(live) = catalogue::snapshot(c, sysfs) else {
        return Vec::new();
    };
    let seen = match catalogue::Seen::load(&catalogue::Seen::path_for(&c.path)) {
        Ok(s) => s,
        Err(e) => {
            return vec![Verdict::warn(
                e.to_string(),
                "the next `vgpuctl boot` starts the record again",
            )]
        }
    };
    let now = seen.with_recorded(live);
    let Some(old) = seen.baseline(&now) else {
        return Vec::new();
    };
    let lost = catalogue::unresolved(ctx.inputs.domains, old, &now);
    if lost.is_empty() {
        let gone = catalogue::gone(old, &now).len();
        return vec![Verdict::ok(format!(
            "driver {} -> {}: {gone} type(s) gone, no defined domain asks for one",
            old.driver, now.driver
        ))];
    }
    lost.iter()
        .map(|u| {
            let was = u.was.name.as_deref().unwrap_or(&u.was.id);
            let fix = if u.closest.is_empty() {
                format!("vgpuctl detach {0} and vgpuctl attach {0} with a type `vgpuctl types` lists", u.domain)
            } else {
                format!("vgpuctl detach {0}, then vgpuctl attach {0} --profile '{1}' (closest now: {2})", u.domain, u.closest[0], u.closest.join(", "))
            };
            Verdict::warn(
                format!("domain '{}' asks for {} ({was} on driver {}), which driver {} no longer has: it will not start", u.domain, u.want, old.driver, now.driver),
                fix,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixture;
    use super::super::Severity;
    use super::*;
    use std::fs;

    #[test]
    fn a_gpu_running_another_scheduler_than_the_config_asks_gets_the_modprobe_line() {
        let f = Fixture::new();
        f.write_config(
            "nvidia_vgpu_pfs = [\"41:00.0\"]\nvgpu_scheduler = { \"41:00.0\" = \"fixed-share\" }\n",
        );
        f.proc_top_file(
            "driver/nvidia/params",
            "RegistryDwords: \"\"\nRegistryDwordsPerDevice: \"\"\n",
        );
        let v = f.check(schedulers);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].severity, Severity::Warning);
        assert!(
            v[0].message
                .contains("vGPU scheduler best-effort, the config asks for fixed-share"),
            "{}",
            v[0].message
        );
        assert!(v[0]
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("pci=0000:41:00.0;RmPVMRL=0x11"));
    }

    #[test]
    fn a_gpu_running_the_scheduler_the_config_asks_is_ok() {
        let f = Fixture::new();
        f.write_config(
            "nvidia_vgpu_pfs = [\"41:00.0\"]\nvgpu_scheduler = { \"41:00.0\" = \"equal-share\" }\n",
        );
        f.proc_top_file("driver/nvidia/params", "RegistryDwords: \"RmPVMRL=1\"\n");
        let v = f.check(schedulers);
        assert_eq!(v[0].severity, Severity::Ok, "{}", v[0].message);
    }

    #[test]
    fn the_nvidia_manager_is_checked_only_for_nvidia_gpus() {
        let f = Fixture::new();
        f.write_config("sriov_pfs = [\"05:00.0\"]\n");
        assert!(f.check(nvidia_vgpu_mgr).is_empty());
        f.write_config("nvidia_vgpu_pfs = [\"82:00.0\"]\n");
        let v = f.check(nvidia_vgpu_mgr);
        assert_eq!(v[0].severity, Severity::Error);
        assert!(v[0].message.contains("no systemd unit"), "{v:?}");
        f.process(1234, "nvidia-vgpu-mgr");
        assert_eq!(
            f.check(nvidia_vgpu_mgr),
            [Verdict::ok("nvidia-vgpu-mgr runs (pid 1234)")]
        );
    }

    #[test]
    fn a_drained_gpu_is_a_warning_naming_its_undrain_and_a_damaged_list_fails() {
        let f = Fixture::new();
        f.write_config("mdev_parents = [\"mtty\"]\n");
        assert!(f.check(drains).is_empty());
        let list = Drains::path_for(&f.host.config_path);
        let mut d = Drains::default();
        d.drain("mtty", 0, None);
        d.save(&list).unwrap();
        let v = f.check(drains);
        assert_eq!(v[0].severity, Severity::Warning);
        assert_eq!(
            v[0].message,
            "mtty is drained since 1970-01-01T00:00:00Z: it takes no new vGPU; no VM holds a vGPU there"
        );
        assert!(v[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("vgpuctl undrain mtty"));
        fs::write(&list, "gpu = 1\n").unwrap();
        assert_eq!(f.check(drains)[0].severity, Severity::Error);
    }

    #[test]
    fn configured_mdev_sources_are_found_or_missing() {
        let f = Fixture::new();
        f.write_config("mdev_parents = [\"mtty\", \"gone\"]\n");
        f.sys_file(
            "class/mdev_bus/mtty/mdev_supported_types/mtty-1/name",
            "x\n",
        );
        let v = f.check(mdev_gpus);
        assert_eq!(v[0], Verdict::ok("mtty: mdev, 1 parent(s), 1 types"));
        assert_eq!(v[1].severity, Severity::Error);
        assert_eq!(v[1].message, "gone: not present on this host");
        assert!(v[1]
            .fix
            .as_deref()
            .unwrap()
            .contains("ls /sys/class/mdev_bus"));
    }

    #[test]
    fn sriov_pfs_are_judged_by_their_vfs() {
        let f = Fixture::new();
        f.write_config("sriov_pfs = [\"05:00.0\", \"06:00.0\", \"07:00.0\"]\n");
        f.sys_file("bus/pci/devices/0000:05:00.0/sriov_totalvfs", "4\n");
        f.sys_file("bus/pci/devices/0000:06:00.0/sriov_totalvfs", "0\n");
        let v = f.check(sriov_pfs);
        assert_eq!(v[0].severity, Severity::Warning);
        assert_eq!(
            v[0].fix.as_deref(),
            Some("echo 4 > /sys/bus/pci/devices/0000:05:00.0/sriov_numvfs")
        );
        assert!(v[1].message.contains("has no SR-IOV capability"), "{v:?}");
        assert_eq!(v[2].message, "0000:07:00.0: not present on this host");
    }
}
