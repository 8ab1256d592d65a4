//! `install`, `uninstall`, `reconcile`, `doctor`: the host side of vgpu-hook.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vgpu_hook::ctl::daemon;
use vgpu_hook::ctl::doctor::{self, LibvirtProbe};
use vgpu_hook::ctl::install::{self, InstallOptions};
use vgpu_hook::ctl::reconcile;
use vgpu_hook::host::counters;
use vgpu_hook::host::state::now_secs;
use vgpu_hook::host::Host;

use super::{emit, load_config};
use crate::cli::{DoctorArgs, InstallArgs, UninstallArgs};
use crate::error::{CtlError, Exit};
use crate::libvirt::Libvirt;

/// The vgpu-hook executable shipped with this vgpuctl: next to it (a source build), else where
/// the packages put it (`/usr/lib/vgpu-hook`, off PATH: it is a hook, not a command).
fn sibling_hook() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?.join("vgpu-hook");
    let packaged = PathBuf::from(install::PACKAGED_HOOK);
    Some(if !beside.exists() && packaged.exists() {
        packaged
    } else {
        beside
    })
}

/// Makes the daemon notice a changed hooks directory, or says how.
fn reload(host: &Host, wanted: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let d = daemon::find_system(&host.procfs);
    let line = match (&d, wanted) {
        (None, _) => "no libvirt daemon is running; it runs the hook from its next start".to_string(),
        (Some(d), false) => format!(
            "reload the libvirt daemon so that it notices the change: {}",
            daemon::reload_command(Some(d))
        ),
        (Some(d), true) => match daemon::reload(d, host.state.path()) {
            Ok(()) => format!(
                "reloaded {} (pid {}, SIGHUP): it rescans its hooks, running domains are not affected",
                d.name, d.pid
            ),
            Err(e) => {
                return Err(CtlError::failed(format!(
                    "could not signal {} (pid {}): {e}; run: {}",
                    d.name,
                    d.pid,
                    daemon::reload_command(Some(d))
                )))
            }
        },
    };
    emit(writeln!(out, "{line}"))
}

/// `vgpuctl install`.
pub fn install(host: &Host, args: &InstallArgs, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    let hook_binary = match &args.hook_binary {
        Some(p) => p.clone(),
        None => sibling_hook().ok_or_else(|| {
            CtlError::failed("cannot locate vgpu-hook next to vgpuctl; pass --hook-binary PATH")
        })?,
    };
    if !hook_binary.exists() {
        return Err(CtlError::NotFound(format!(
            "{} does not exist; build it (cargo build --release) or pass --hook-binary PATH",
            hook_binary.display()
        )));
    }
    let opts = InstallOptions {
        hooks_dir: args.hooks_dir.clone(),
        as_qemu: args.as_qemu,
        hook_binary,
        config_path: host.config_path.clone(),
        probe: true,
        units: (!args.no_units)
            .then(|| std::env::current_exe().ok())
            .flatten()
            .map(|exe| (args.units_dir.clone(), exe)),
    };
    let done = install::install(&opts, &host.sysfs)?;
    for m in &done.messages {
        emit(writeln!(out, "{m}"))?;
    }
    let seen = daemon::find_system(&host.procfs).and_then(|d| {
        let mtime = std::fs::metadata(&done.target)
            .and_then(|m| m.modified())
            .ok()?;
        daemon::has_seen(&d, &host.procfs, host.state.path(), mtime)
    });
    if done.hook_changed || seen == Some(false) {
        reload(host, !args.no_reload, out)?;
    } else {
        emit(writeln!(out, "the libvirt daemon already runs this hook"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `vgpuctl uninstall`.
pub fn uninstall(
    host: &Host,
    args: &UninstallArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    let (mut messages, removed) =
        install::uninstall(&args.hooks_dir, &host.config_path, args.purge)?;
    messages.extend(install::uninstall_boot_unit(&args.units_dir)?);
    for m in &messages {
        emit(writeln!(out, "{m}"))?;
    }
    if removed {
        reload(host, !args.no_reload, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `vgpuctl reconcile`.
pub fn reconcile(host: &Host, dry_run: bool, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    let config = load_config(host)?;
    let report = reconcile::run(host, &config, &host.procfs, dry_run)?;
    if !dry_run && !report.failed() {
        // For `vgpuctl metrics`: when the host was last brought back in line (not a run that
        // left something it could not fix).
        if let Ok(locked) = host.state.lock() {
            counters::set(&locked, counters::LAST_RECONCILE, now_secs());
        }
    }
    for line in report.lines() {
        emit(writeln!(out, "{line}"))?;
    }
    Ok(if report.failed() {
        ExitCode::from(Exit::Failed as u8)
    } else {
        ExitCode::SUCCESS
    })
}

/// `vgpuctl doctor`.
pub fn doctor(
    uri: &str,
    host: &Host,
    args: &DoctorArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    let opened = Libvirt::open(uri);
    let qemu_version = opened
        .as_ref()
        .ok()
        .and_then(|lv| lv.hypervisor_version().ok());
    let domains: Vec<(String, String)> = opened
        .as_ref()
        .ok()
        .and_then(|lv| lv.all_definitions().ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| Some((d.name, d.inactive.or(d.live)?)))
        .collect();
    let libvirt = match opened {
        Ok(lv) => match lv.version() {
            Ok(version) => LibvirtProbe::Reachable {
                uri: lv.uri().to_string(),
                version,
            },
            Err(e) => LibvirtProbe::Unreachable {
                uri: uri.to_string(),
                error: e.message(),
            },
        },
        Err(e) => LibvirtProbe::Unreachable {
            uri: uri.to_string(),
            error: e.message(),
        },
    };
    let pid_files: Vec<(&str, PathBuf)> = daemon::PID_FILES
        .iter()
        .map(|(n, f)| (*n, PathBuf::from(f)))
        .collect();
    let unit_dirs: Vec<PathBuf> = [
        "/etc/systemd/system",
        "/run/systemd/system",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let expected = sibling_hook();
    let findings = doctor::run(&doctor::Inputs {
        host,
        proc: &host.procfs,
        hooks_dir: &args.hooks_dir,
        apparmor_dir: Path::new("/etc/apparmor.d"),
        pid_files: &pid_files,
        unit_dirs: &unit_dirs,
        expected_hook: expected.as_deref(),
        libvirt,
        qemu_version,
        boot_dir: Path::new("/boot"),
        domains: &domains,
    });
    emit(if args.json {
        vgpu_hook::ctl::report::write_json(
            out,
            &serde_json::json!({ "version": vgpu_hook::ctl::report::JSON_VERSION, "findings": findings }),
        )
    } else {
        doctor::write_findings(out, &findings)
    })?;
    Ok(if doctor::has_errors(&findings) {
        ExitCode::from(Exit::Failed as u8)
    } else {
        ExitCode::SUCCESS
    })
}
