//! The confinement the hook runs in: the libvirt daemon's AppArmor profile or SELinux domain.
//!
//! libvirt runs hooks in the daemon's own confinement, so a profile that lets the daemon write
//! sysfs lets the hook make mdevs, and one that cannot run `/usr/lib/nvidia/sriov-manage`
//! (Debian's and Ubuntu's libvirtd profile) refuses the hook NVIDIA's VFs. The refusal shows up
//! only as a failed start and a kernel audit line; this check names the profile or domain, its
//! mode, and the one edit that is missing for the devices the config names.

use std::path::Path;

use super::{Context, Verdict};
use crate::ctl::daemon::{self, Daemon};
use crate::host::lsm::{self, AppArmorLabel, AppArmorMode, Lsm};
use crate::host::sriov::Switch;
use crate::model::pci::PciAddress;

/// The abstraction the package ships, as a profile includes it.
const ABSTRACTION: &str = "abstractions/vgpu-hook";

/// The SELinux boolean under which libvirt runs hooks unconfined.
const HOOKS_UNCONFINED: &str = "virt_hooks_unconfined";

/// Which module confines the daemon, how, and what the hook lacks under it.
pub fn confinement(ctx: &Context<'_>) -> Vec<Verdict> {
    let Some(dm) = daemon::find(ctx.inputs.proc, ctx.inputs.pid_files) else {
        return Vec::new(); // the daemon check says none runs
    };
    vec![match lsm::active(ctx.sysfs()) {
        Lsm::None => Verdict::ok(format!(
            "no AppArmor or SELinux: {} and the hook it runs are not confined",
            dm.name
        )),
        Lsm::AppArmor => apparmor(ctx, &dm),
        Lsm::SeLinux { enforcing } => selinux(ctx, &dm, enforcing),
    }]
}

/// The configured PFs whose VFs only NVIDIA's `sriov-manage` can switch on.
fn needing_sriov_manage(ctx: &Context<'_>) -> Vec<PciAddress> {
    let Some(c) = ctx.config() else {
        return Vec::new();
    };
    c.vf_pfs()
        .into_iter()
        .map(|(pf, _)| pf)
        .filter(|pf| matches!(Switch::for_pf(c, ctx.sysfs(), *pf), Switch::SriovManage(_)))
        .collect()
}

fn apparmor(ctx: &Context<'_>, dm: &Daemon) -> Verdict {
    let Some(label @ AppArmorLabel::Profile { mode, .. }) =
        lsm::apparmor_label(ctx.inputs.proc, dm.pid)
    else {
        return Verdict::ok(format!(
            "AppArmor is on; {} (pid {}) runs unconfined (no profile loaded for it), and so does the hook",
            dm.name, dm.pid
        ));
    };
    let shown = label.to_string();
    let local = local_profile(ctx.inputs.apparmor_dir, &dm.name);
    if includes_abstraction(&local) {
        return Verdict::ok(format!(
            "AppArmor: {} (pid {}) and the hook run in profile {shown}; {} includes {ABSTRACTION} (sriov-manage allowed)",
            dm.name, dm.pid, local.display()
        ));
    }
    let needing = needing_sriov_manage(ctx);
    if needing.is_empty() || mode != AppArmorMode::Enforce {
        return Verdict::ok(format!(
            "AppArmor: {} (pid {}) and the hook run in profile {shown}; {ABSTRACTION} is needed only for NVIDIA SR-IOV PFs",
            dm.name, dm.pid
        ));
    }
    let pfs: Vec<String> = needing.iter().map(ToString::to_string).collect();
    Verdict::fail(
        format!(
            "AppArmor profile {shown} of {} refuses the hook NVIDIA's sriov-manage, which {} need(s) for VFs",
            dm.name,
            pfs.join(", ")
        ),
        format!(
            "echo '#include <{ABSTRACTION}>' >> {}; apparmor_parser -r {}",
            local.display(),
            ctx.inputs
                .apparmor_dir
                .join(profile_file(&dm.name))
                .display()
        ),
    )
}

/// The file of the daemon's profile in `/etc/apparmor.d`, named after the binary's path
/// (`usr.sbin.libvirtd`) whatever the profile itself is called, as Debian and Ubuntu ship it.
fn profile_file(daemon: &str) -> String {
    format!("usr.sbin.{daemon}")
}

/// The operator's additions to the daemon's profile (`local/usr.sbin.libvirtd`).
fn local_profile(dir: &Path, daemon: &str) -> std::path::PathBuf {
    dir.join("local").join(profile_file(daemon))
}

/// Whether the file includes the abstraction: `#include <...>` (a directive, not a comment),
/// AppArmor 3's `include <...>` or `include if exists <...>`.
fn includes_abstraction(file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    text.lines().any(|l| {
        let l = l.trim();
        let Some(rest) = l
            .strip_prefix("#include")
            .or_else(|| l.strip_prefix("include"))
        else {
            return false;
        };
        let rest = rest.trim_start();
        let target = rest.strip_prefix("if exists").unwrap_or(rest).trim();
        target.trim_end_matches(',') == format!("<{ABSTRACTION}>")
    })
}

/// Fedora's and RHEL's policy make `virtd_t` (libvirtd) an unconfined domain, so its hooks run
/// as it; `virtqemud_t` may run a hook (`virt_hook_t`) only through the vgpu_hook module, which
/// adds the transition into `virt_hook_unconfined_t` under `virt_hooks_unconfined`, as the policy
/// has it for virtnetworkd.
fn selinux(ctx: &Context<'_>, dm: &Daemon, enforcing: bool) -> Verdict {
    let domain = lsm::selinux_type(ctx.inputs.proc, dm.pid).unwrap_or_else(|| "unknown".into());
    let mode = if enforcing { "enforcing" } else { "permissive" };
    if domain != "virtqemud_t" {
        return Verdict::ok(format!(
            "SELinux ({mode}): {} runs as {domain}, and the hook with it",
            dm.name
        ));
    }
    let unconfined = lsm::selinux_boolean(ctx.sysfs(), HOOKS_UNCONFINED) == Some(true);
    if enforcing && !unconfined {
        return Verdict::fail(
            format!(
                "SELinux ({mode}): {} runs as virtqemud_t, which runs the hook only with {HOOKS_UNCONFINED} on and the vgpu_hook module loaded",
                dm.name
            ),
            format!("setsebool -P {HOOKS_UNCONFINED} 1; {MODULE_BUILD}"),
        );
    }
    Verdict::ok(format!(
        "SELinux ({mode}): {} runs as virtqemud_t; {HOOKS_UNCONFINED} is {} (the hook also needs the vgpu_hook module: {MODULE_BUILD})",
        dm.name,
        if unconfined { "on" } else { "off" }
    ))
}

/// How the shipped SELinux module is built and loaded (the README's commands).
const MODULE_BUILD: &str = "cd /usr/share/vgpu-hook/selinux && make -f /usr/share/selinux/devel/Makefile vgpu_hook.pp && semodule -i vgpu_hook.pp";

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::testing::Fixture;
    use super::super::Severity;
    use super::*;

    /// A fixture with libvirtd (pid 40) in `label`, AppArmor on, and an NVIDIA SR-IOV PF
    /// configured when `nvidia` is set.
    fn apparmor_host(label: &str, nvidia: bool) -> Fixture {
        let f = Fixture::new();
        f.sys_file("module/apparmor/parameters/enabled", "Y\n");
        f.sys_dir("kernel/security/apparmor");
        f.process(40, "libvirtd");
        f.proc_file(40, "attr/current", &format!("{label}\n"));
        if nvidia {
            f.write_config("nvidia_vgpu_pfs = [\"82:00.0\"]\n");
        } else {
            f.write_config("sriov_pfs = [\"05:00.0\"]\n");
        }
        f
    }

    /// A fixture with SELinux enforcing, `virt_hooks_unconfined` off, and `daemon` (pid 41)
    /// labelled `label`.
    fn selinux_host(daemon: &str, label: &str) -> Fixture {
        let f = Fixture::new();
        f.sys_file("fs/selinux/enforce", "1");
        f.sys_file("fs/selinux/booleans/virt_hooks_unconfined", "0 0");
        f.process(41, daemon);
        f.proc_file(41, "attr/current", &format!("{label}\0"));
        f
    }

    fn include_abstraction(f: &Fixture, line: &str) {
        let local = f.root().join("etc/apparmor.d/local");
        fs::create_dir_all(&local).unwrap();
        fs::write(local.join("usr.sbin.libvirtd"), format!("{line}\n")).unwrap();
    }

    #[test]
    fn an_unconfined_host_says_so() {
        let f = Fixture::new();
        f.process(40, "libvirtd");
        let v = f.check(confinement);
        assert_eq!(v[0].severity, Severity::Ok);
        assert!(v[0].message.starts_with("no AppArmor or SELinux"), "{v:?}");
    }

    #[test]
    fn no_daemon_no_verdict() {
        let f = Fixture::new();
        assert!(f.check(confinement).is_empty());
    }

    #[test]
    fn the_daemons_profile_and_mode_are_named() {
        let f = apparmor_host("libvirtd (enforce)", false);
        let v = f.check(confinement);
        assert_eq!(v[0].severity, Severity::Ok);
        assert!(
            v[0].message
                .contains("libvirtd (pid 40) and the hook run in profile libvirtd (enforce)"),
            "{v:?}"
        );
    }

    #[test]
    fn an_nvidia_sriov_pf_under_an_enforcing_profile_needs_the_abstraction() {
        let f = apparmor_host("libvirtd (enforce)", true);
        let v = f.check(confinement);
        assert_eq!(v[0].severity, Severity::Error);
        assert!(v[0].message.contains("0000:82:00.0"), "{v:?}");
        let fix = v[0].fix.as_deref().unwrap();
        assert!(fix.contains("#include <abstractions/vgpu-hook>"), "{fix}");
        assert!(fix.contains("apparmor_parser -r"), "{fix}");
        assert!(fix.contains("etc/apparmor.d/usr.sbin.libvirtd"), "{fix}");
    }

    #[test]
    fn a_pf_in_two_lists_is_named_once() {
        let f = apparmor_host("libvirtd (enforce)", true);
        f.write_config("sriov_pfs = [\"82:00.0\"]\nnvidia_vgpu_pfs = [\"82:00.0\"]\n");
        let v = f.check(confinement);
        assert_eq!(v[0].severity, Severity::Error);
        assert_eq!(v[0].message.matches("0000:82:00.0").count(), 1, "{v:?}");
    }

    #[test]
    fn the_included_abstraction_is_seen_in_each_spelling() {
        for line in [
            "#include <abstractions/vgpu-hook>",
            "include <abstractions/vgpu-hook>",
            "  include if exists <abstractions/vgpu-hook>",
        ] {
            let f = apparmor_host("libvirtd (enforce)", true);
            include_abstraction(&f, line);
            let v = f.check(confinement);
            assert_eq!(v[0].severity, Severity::Ok, "{line}: {v:?}");
            assert!(v[0].message.contains("includes abstractions/vgpu-hook"));
        }
    }

    #[test]
    fn a_commented_include_does_not_count() {
        let f = apparmor_host("libvirtd (enforce)", true);
        include_abstraction(&f, "# include <abstractions/vgpu-hook>");
        assert_eq!(f.check(confinement)[0].severity, Severity::Error);
    }

    #[test]
    fn a_complaining_profile_refuses_nothing() {
        let f = apparmor_host("libvirtd (complain)", true);
        assert_eq!(f.check(confinement)[0].severity, Severity::Ok);
    }

    #[test]
    fn an_unconfined_daemon_under_apparmor_is_named() {
        let f = apparmor_host("unconfined", true);
        let v = f.check(confinement);
        assert_eq!(v[0].severity, Severity::Ok);
        assert!(v[0].message.contains("runs unconfined"), "{v:?}");
    }

    #[test]
    fn virtqemud_enforcing_with_hooks_confined_is_an_error() {
        let f = selinux_host("virtqemud", "system_u:system_r:virtqemud_t:s0");
        let v = f.check(confinement);
        assert_eq!(v[0].severity, Severity::Error);
        assert!(v[0].message.contains("runs as virtqemud_t"), "{v:?}");
        let fix = v[0].fix.as_deref().unwrap();
        assert!(
            fix.starts_with("setsebool -P virt_hooks_unconfined 1; "),
            "{fix}"
        );
        assert!(fix.contains("semodule -i vgpu_hook.pp"), "{fix}");
        f.sys_file("fs/selinux/booleans/virt_hooks_unconfined", "1 1");
        let v = f.check(confinement);
        assert_eq!(v[0].severity, Severity::Ok);
        assert!(v[0].message.contains("needs the vgpu_hook module"), "{v:?}");
    }

    #[test]
    fn libvirtd_under_selinux_runs_hooks_as_itself() {
        let f = selinux_host("libvirtd", "system_u:system_r:virtd_t:s0-s0:c0.c1023");
        assert_eq!(
            f.check(confinement),
            [Verdict::ok(
                "SELinux (enforcing): libvirtd runs as virtd_t, and the hook with it"
            )]
        );
    }
}
