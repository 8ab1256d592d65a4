//! `boot` and `metrics`: what the packaged systemd units run.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use vgpu_hook::ctl::boot::{self, BootOptions};
use vgpu_hook::ctl::catalogue;
use vgpu_hook::ctl::{install, metrics};
use vgpu_hook::host::drains::Drains;
use vgpu_hook::host::state::State;
use vgpu_hook::host::Host;

use super::{emit, load_config, note};
use crate::cli::{BootArgs, MetricsArgs};
use crate::error::CtlError;

/// `vgpuctl boot`: always exit 0 (a config that cannot be read is reported, not fatal);
/// `--check`: exit 1 when a GPU is not ready, so that a boot would have work to do.
pub fn boot(host: &Host, args: &BootArgs, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    let config = match load_config(host) {
        Ok(c) => c,
        Err(e) => {
            emit(writeln!(out, "nothing to ready: {e}"))?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut opts = BootOptions::for_host(&config);
    if let Some(s) = args.wait_secs {
        opts.wait = Duration::from_secs(s);
    }
    opts.check = args.check;
    // A list that cannot be read is the hook's and doctor's to report; a boot goes on.
    let drains = Drains::of_config(&config).unwrap_or_default();
    let findings = boot::run(&config, &host.sysfs, &opts);
    for line in boot::lines(&findings, &drains, opts.check) {
        emit(writeln!(out, "{line}"))?;
    }
    if let Some(line) = catalogue::boot_step(&config, &host.sysfs, opts.check) {
        emit(writeln!(out, "{line}"))?;
    }
    let all_ready = findings.iter().all(|f| f.ready);
    Ok(if opts.check && !all_ready {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `vgpuctl metrics [--output FILE]`.
pub fn metrics(host: &Host, args: &MetricsArgs, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    let config = load_config(host)?;
    let state = host.state.peek().unwrap_or_else(|e| {
        note(&format!("{e}; devices are shown without their holders"));
        State::default()
    });
    let live = host.liveness(config.timing.prepare_grace);
    let text = metrics::render(&config, &host.sysfs, &state, &live, host.state.path());
    match &args.output {
        None => emit(out.write_all(text.as_bytes()))?,
        Some(path) => write_file(path, text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the metrics file atomically, creating its directory.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CtlError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| CtlError::io(dir.display(), e))?;
    install::atomic_write(path, &dir, bytes, 0o644).map_err(|e| CtlError::io(path.display(), e))
}
