//! libvirt-side checks: the hook file, the daemon that must have read it, and libvirt's
//! version. A hook that is installed but not executable, outdated, unseen by a daemon started
//! before it, or in `qemu.d` of a libvirt too old to look there, never runs, and nothing else
//! tells the operator so.

use std::path::Path;

use super::{version_text, Context, LibvirtProbe, Verdict, QEMU_D_MIN_VERSION};
use crate::ctl::daemon::{self, Daemon};

/// Whether the hook is installed, and executable.
pub fn hook_installed(ctx: &Context<'_>) -> Vec<Verdict> {
    let Some(p) = &ctx.installed else {
        return vec![Verdict::fail(
            format!(
                "vgpu-hook is not installed ({} absent)",
                ctx.in_qemu_d.display()
            ),
            "vgpuctl install",
        )];
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p).map_or(0, |m| m.permissions().mode());
    vec![if mode & 0o100 == 0 {
        Verdict::fail(
            format!("{} is not executable, so libvirt skips it", p.display()),
            format!("chmod 755 {}", p.display()),
        )
    } else {
        Verdict::ok(format!("installed as {}", p.display()))
    }]
}

/// Whether the installed hook is the one that came with this vgpuctl.
pub fn hook_current(ctx: &Context<'_>) -> Vec<Verdict> {
    let (Some(p), Some(expected)) = (&ctx.installed, ctx.inputs.expected_hook) else {
        return Vec::new();
    };
    let same = std::fs::read(expected).ok() == std::fs::read(p).ok();
    if !expected.exists() || same {
        return Vec::new();
    }
    vec![Verdict::warn(
        format!(
            "{} differs from {} that came with this vgpuctl (another version?)",
            p.display(),
            expected.display()
        ),
        "vgpuctl install",
    )]
}

/// Whether a libvirt daemon runs and has read the installed hook.
pub fn daemon(ctx: &Context<'_>) -> Vec<Verdict> {
    let inputs = ctx.inputs;
    let found = daemon::find(inputs.proc, inputs.pid_files);
    vec![match (&found, &ctx.installed) {
        (None, _) => Verdict::warn(
            "no libvirt daemon (libvirtd or virtqemud) is running",
            "systemctl start libvirtd (or virtqemud); it reads the hooks when it starts",
        ),
        (Some(dm), Some(hook)) => seen_hook(ctx, dm, hook),
        (Some(dm), None) => Verdict::ok(format!("{} runs (pid {})", dm.name, dm.pid)),
    }]
}

fn seen_hook(ctx: &Context<'_>, dm: &Daemon, hook: &Path) -> Verdict {
    let state_dir = ctx.inputs.host.state.path();
    let mtime = std::fs::metadata(hook).and_then(|m| m.modified()).ok();
    let seen = mtime.and_then(|m| daemon::has_seen(dm, ctx.inputs.proc, state_dir, m));
    match seen {
        Some(true) => Verdict::ok(format!(
            "{} (pid {}) has seen the installed hook",
            dm.name, dm.pid
        )),
        Some(false) => Verdict::fail(
            format!(
                "{} (pid {}) started before the hook was installed and was not reloaded since, so it does not run the hook",
                dm.name, dm.pid
            ),
            daemon::reload_command(Some(dm)),
        ),
        None => Verdict::warn(
            format!(
                "{} (pid {}) runs; cannot tell whether it has seen the hook",
                dm.name, dm.pid
            ),
            daemon::reload_command(Some(dm)),
        ),
    }
}

/// Whether libvirt answers, and runs `qemu.d` hooks when that is where the hook is.
pub fn libvirt(ctx: &Context<'_>) -> Vec<Verdict> {
    match &ctx.inputs.libvirt {
        LibvirtProbe::Reachable { uri, version } => {
            let too_old = *version < QEMU_D_MIN_VERSION
                && ctx.installed.as_deref() == Some(ctx.in_qemu_d.as_path());
            vec![if too_old {
                Verdict::fail(
                    format!(
                        "libvirt {} at {uri} predates qemu.d hooks (6.5.0), so it never runs {}",
                        version_text(*version),
                        ctx.in_qemu_d.display()
                    ),
                    "vgpuctl uninstall && vgpuctl install --as-qemu (or upgrade libvirt)",
                )
            } else {
                Verdict::ok(format!("libvirt {} at {uri}", version_text(*version)))
            }]
        }
        LibvirtProbe::Unreachable { uri, error } => vec![Verdict::warn(
            format!("cannot reach libvirt at {uri}: {error}"),
            "start the daemon (systemctl start libvirtd) or pass --connect URI",
        )],
        LibvirtProbe::NotChecked => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::super::testing::Fixture;
    use super::super::Severity;
    use super::*;

    /// Installs a file that passes for vgpu-hook into `qemu.d`, with `mode`.
    fn install_hook(f: &Fixture, mode: u32) -> std::path::PathBuf {
        let p = crate::ctl::install::hook_target(&f.hooks_dir(), false);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut bytes = b"\x7fELF-fake-".to_vec();
        bytes.extend_from_slice(crate::model::domain::NAMESPACE.as_bytes());
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn the_hook_must_be_installed_and_executable() {
        let f = Fixture::new();
        assert_eq!(
            f.check(hook_installed)[0].fix.as_deref(),
            Some("vgpuctl install")
        );
        let p = install_hook(&f, 0o644);
        let v = f.check(hook_installed);
        assert_eq!(v[0].severity, Severity::Error);
        assert_eq!(v[0].fix, Some(format!("chmod 755 {}", p.display())));
        install_hook(&f, 0o755);
        assert_eq!(f.check(hook_installed)[0].severity, Severity::Ok);
    }

    #[test]
    fn no_daemon_is_a_warning_that_says_how_to_start_one() {
        let f = Fixture::new();
        let v = f.check(daemon);
        assert_eq!(v[0].severity, Severity::Warning);
        assert!(v[0].message.starts_with("no libvirt daemon"), "{v:?}");
    }

    #[test]
    fn a_libvirt_older_than_qemu_d_fails_only_when_the_hook_is_there() {
        let mut f = Fixture::new();
        f.libvirt = LibvirtProbe::Reachable {
            uri: "qemu:///system".into(),
            version: 6_000_000,
        };
        assert_eq!(
            f.check(libvirt),
            [Verdict::ok("libvirt 6.0.0 at qemu:///system")]
        );
        install_hook(&f, 0o755);
        let v = f.check(libvirt);
        assert_eq!(v[0].severity, Severity::Error);
        assert!(v[0].message.contains("predates qemu.d hooks"), "{v:?}");
        f.libvirt = LibvirtProbe::NotChecked;
        assert!(f.check(libvirt).is_empty());
    }
}
