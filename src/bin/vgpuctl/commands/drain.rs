//! `drain` and `undrain`: the GPUs taken out of placement and given back.

use std::io::Write;
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use vgpu_hook::ctl::drain::{self, holders, holders_line};
use vgpu_hook::ctl::report::utc;
use vgpu_hook::host::drains::Drains;
use vgpu_hook::host::state::State;
use vgpu_hook::host::Host;
use vgpu_hook::model::config::Config;

use super::{emit, load_config};
use crate::cli::{DrainArgs, UndrainArgs};
use crate::error::CtlError;

/// How often `drain --wait` looks again.
const POLL: Duration = Duration::from_secs(1);

/// `vgpuctl drain`.
pub fn drain(host: &Host, args: &DrainArgs, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    let config = load_config(host)?;
    let gpus = drain::targets(&config, &args.which.gpus, args.which.all, &[])?;
    let changed = drain::drain(&host.state, &config, &gpus, args.reason.as_deref())?;
    let on = still_on(host, &config, &gpus);
    for ((gpu, now), (_, on)) in changed.done.iter().zip(&on) {
        let what = match changed.list.of(gpu) {
            Some(d) if !*now => format!("drained already (since {})", utc(d.since)),
            _ => "drained: it takes no new vGPU".to_string(),
        };
        emit(writeln!(out, "{gpu}: {what}; {}", holders_line(on)))?;
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    wait_empty(host, &config, &gpus, deadline, out)
}

/// `vgpuctl undrain`.
pub fn undrain(host: &Host, args: &UndrainArgs, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    let config = load_config(host)?;
    let drained = Drains::of_config(&config).map_err(CtlError::Drains)?;
    let listed: Vec<String> = drained.gpus.into_iter().map(|d| d.gpu).collect();
    let gpus = drain::targets(&config, &args.which.gpus, args.which.all, &listed)?;
    for (gpu, was) in drain::undrain(&host.state, &config, &gpus)?.done {
        let line = if was {
            "undrained: it takes new vGPUs again"
        } else {
            "was not drained"
        };
        emit(writeln!(out, "{gpu}: {line}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Each of `gpus` with the domains holding a vGPU on it now, from one read of the state
/// (unknown holders when it cannot be read: said on stderr, and counted as none).
fn still_on(host: &Host, config: &Config, gpus: &[String]) -> Vec<(String, Vec<String>)> {
    let state = host.state.peek().unwrap_or_else(|e| {
        super::note(&format!("{e}; who holds a vGPU is unknown"));
        State::default()
    });
    let live = host.liveness(config.timing.prepare_grace);
    gpus.iter()
        .map(|g| (g.clone(), holders(&host.sysfs, &state, &live, g)))
        .collect()
}

/// Waits until no VM holds a vGPU on any of `gpus`, saying who is waited for whenever that
/// changes; fails at `deadline` naming who is left.
fn wait_empty(
    host: &Host,
    config: &Config,
    gpus: &[String],
    deadline: Option<Instant>,
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    let mut said: Option<Vec<(String, Vec<String>)>> = None;
    loop {
        let left: Vec<(String, Vec<String>)> = still_on(host, config, gpus)
            .into_iter()
            .filter(|(_, on)| !on.is_empty())
            .collect();
        if left.is_empty() {
            emit(writeln!(out, "no VM holds a vGPU on {}", gpus.join(", ")))?;
            return Ok(ExitCode::SUCCESS);
        }
        let text: Vec<String> = left
            .iter()
            .map(|(g, on)| format!("{g} {}", holders_line(on)))
            .collect();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(CtlError::failed(format!(
                "timed out: {}; stop or migrate those VMs, or wait longer",
                text.join("; ")
            )));
        }
        if said.as_ref() != Some(&left) {
            emit(writeln!(out, "waiting: {}", text.join("; ")))?;
            said = Some(left);
        }
        sleep(POLL);
    }
}
