//! `vgpu-hook`: libvirt's QEMU hook. libvirt runs it as `HOOK DOMAIN OPERATION SUB-OPERATION
//! EXTRA...` with the domain XML on stdin, whatever the file is called (`qemu`, `50-vgpu-hook`).
//!
//! Read top to bottom: classify the call, read stdin, leave at once for domains that ask for
//! nothing (the common case, and it must cost no more than a bare exec), then hand the call to the
//! library. Exit 0 unless a `prepare` or filter request cannot be met; then exactly one line on
//! stderr, which `virsh start` shows the operator.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::ExitCode;

use vgpu_hook::hook;
use vgpu_hook::hook::StopReason;
use vgpu_hook::host::Host;
use vgpu_hook::model::config::{Config, ConfigError, Timing};
use vgpu_hook::model::domain::{self, Domain};

/// libvirt caps domain XML at 10 MiB; anything larger is not from libvirt.
const MAX_STDIN: u64 = 16 << 20;

enum Call {
    Prepare,
    /// `release end`, with why the domain stopped (libvirt 10.5+; logged, never relied on).
    Release(StopReason),
    Reconnect,
    Filter,
    Other,
}

fn classify(op: &OsString, sub: &OsString, extra: Option<&OsString>) -> Call {
    match (op.to_str(), sub.to_str()) {
        (Some("prepare"), Some("begin")) => Call::Prepare,
        (Some("release"), Some("end")) => {
            let extra = extra.map(|e| e.to_string_lossy());
            Call::Release(StopReason::from_arg(extra.as_deref().unwrap_or("-")))
        }
        (Some("reconnect"), Some("begin")) => Call::Reconnect,
        (Some("migrate"), Some("begin")) | (Some("restore"), Some("begin")) => Call::Filter,
        _ => Call::Other,
    }
}

fn fail(domain: &str, message: impl std::fmt::Display) -> ExitCode {
    let line = format!(
        "vgpu-hook: domain '{}': {message}",
        vgpu_hook::printable(domain, 80)
    );
    let _ = writeln!(std::io::stderr(), "{}", line.replace('\n', " "));
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.len() < 4 {
        eprintln!("vgpu-hook: libvirt QEMU hook; libvirt runs it as: vgpu-hook DOMAIN OPERATION SUB-OPERATION EXTRA (install with `vgpuctl install`)");
        return ExitCode::from(2);
    }
    let domain_arg = args[1].to_string_lossy().into_owned();
    let call = classify(&args[2], &args[3], args.get(4));
    let Some(stdin) = read_stdin() else {
        // Nothing can be decided from the XML; a stop still frees what the state records for
        // the domain by name, as for XML that does not parse.
        release_leftovers(&call, &domain_arg);
        return ExitCode::SUCCESS;
    };
    if matches!(call, Call::Other) {
        return ExitCode::SUCCESS;
    }
    if !domain::mentions_namespace(&stdin.bytes) {
        release_leftovers(&call, &domain_arg);
        return ExitCode::SUCCESS;
    }
    vgpu_hook::host::logging::init();
    let refuses = matches!(call, Call::Prepare | Call::Filter);
    if stdin.oversize {
        log::error!("domain '{domain_arg}': stdin exceeds {MAX_STDIN} bytes");
        let why = format!("domain XML on stdin exceeds {} MiB", MAX_STDIN >> 20);
        return if refuses {
            fail(&domain_arg, why)
        } else {
            ExitCode::SUCCESS
        };
    }
    let (xml, dom) = match parse(&stdin.bytes) {
        Ok((_, d)) if !d.has_metadata => {
            release_leftovers(&call, &domain_arg);
            return ExitCode::SUCCESS;
        }
        Ok(v) => v,
        Err(e) if refuses => return fail(&domain_arg, e),
        Err(e) => {
            log::error!("domain '{domain_arg}': {e}");
            release_by_name(&call, &domain_arg);
            return ExitCode::SUCCESS;
        }
    };
    if asks_nothing(&call, &dom) {
        return ExitCode::SUCCESS;
    }
    let (host, config) = host_and_config();
    match call {
        Call::Prepare => run_prepare(&host, config, &dom),
        Call::Filter => run_filter(&host, config, &dom, xml),
        Call::Release(_) => run_release(&host, config, &dom, &call, &domain_arg),
        Call::Reconnect => run_reconnect(&host, config, &dom),
        Call::Other => ExitCode::SUCCESS,
    }
}

/// What libvirt wrote on stdin, read whole (so libvirt never blocks on the pipe), up to a cap.
struct Stdin {
    bytes: Vec<u8>,
    oversize: bool,
}

/// `None` when stdin cannot be read (nothing can be decided from it; a stop then frees what
/// the state records for the domain by name).
fn read_stdin() -> Option<Stdin> {
    let mut bytes = Vec::new();
    let mut stdin = std::io::stdin().lock();
    let n = stdin
        .by_ref()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    let oversize = n as u64 > MAX_STDIN;
    if oversize {
        let _ = std::io::copy(&mut stdin, &mut std::io::sink());
    }
    Some(Stdin { bytes, oversize })
}

fn parse(input: &[u8]) -> Result<(&str, Domain), domain::DomainError> {
    std::str::from_utf8(input)
        .map_err(|e| domain::DomainError::Syntax {
            position: e.valid_up_to() as u64,
            message: "not UTF-8".into(),
        })
        .and_then(|xml| Domain::parse(xml).map(|d| (xml, d)))
}

/// A call that has nothing to do for this domain needs no config and cannot fail.
fn asks_nothing(call: &Call, dom: &Domain) -> bool {
    match call {
        Call::Prepare | Call::Reconnect | Call::Filter => dom.requests.is_empty(),
        _ => false,
    }
}

/// The host from the environment and its config; the state lock is waited for as long as the
/// config says (the default when it cannot be read).
fn host_and_config() -> (Host, Result<Config, ConfigError>) {
    let host = Host::from_env();
    let config = Config::load(&host.config_path);
    let host = host.with_lock_wait(timing_of(&config).lock_wait);
    (host, config)
}

fn timing_of(config: &Result<Config, ConfigError>) -> Timing {
    config
        .as_ref()
        .map_or_else(|_| Timing::default(), |c| c.timing.clone())
}

fn run_prepare(host: &Host, config: Result<Config, ConfigError>, dom: &Domain) -> ExitCode {
    match config
        .map_err(hook::HookError::from)
        .and_then(|c| hook::prepare(host, &c, dom))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&dom.name, e),
    }
}

fn run_filter(
    host: &Host,
    config: Result<Config, ConfigError>,
    dom: &Domain,
    xml: &str,
) -> ExitCode {
    match config
        .map_err(hook::HookError::from)
        .and_then(|c| hook::filter(host, &c, dom, xml))
    {
        Ok(Some(out)) => {
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(out.as_bytes())
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return fail(&dom.name, "could not write the rewritten XML to stdout");
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => fail(&dom.name, e),
    }
}

fn run_release(
    host: &Host,
    config: Result<Config, ConfigError>,
    dom: &Domain,
    call: &Call,
    domain_name: &str,
) -> ExitCode {
    log_stop(call, domain_name);
    if matches!(call, Call::Release(StopReason::Known("failed"))) {
        quote_failed_start(host, &config, dom);
    }
    hook::release(host, &timing_of(&config), dom, domain_name);
    ExitCode::SUCCESS
}

/// Logs what NVIDIA's vGPU manager said about each vGPU of a domain whose start failed.
fn quote_failed_start(host: &Host, config: &Result<Config, ConfigError>, dom: &Domain) {
    let journalctl = config.as_ref().map_or_else(
        |_| std::path::PathBuf::from(vgpu_hook::model::config::DEFAULT_JOURNALCTL),
        |c| c.journalctl.clone(),
    );
    for (uuid, lines) in hook::failed_start_quotes(host, &journalctl, dom) {
        log::error!(
            "domain '{}': its start failed; NVIDIA's vGPU manager said about mdev {uuid}: {}",
            dom.name,
            lines.join(" | ")
        );
    }
}

/// Says in the log that a domain stopped and why, as libvirt said.
fn log_stop(call: &Call, domain_name: &str) {
    if let Call::Release(reason) = call {
        let name = vgpu_hook::printable(domain_name, 80);
        log::info!("domain '{name}' stopped ({reason}): releasing its devices");
    }
}

fn run_reconnect(host: &Host, config: Result<Config, ConfigError>, dom: &Domain) -> ExitCode {
    if let Err(e) = hook::reconnect(host, config.as_ref().ok(), dom) {
        log::error!("domain '{}': reconnect: {e}", dom.name);
    }
    ExitCode::SUCCESS
}

/// At `release end` for a domain whose XML cannot be read: release still frees what the state
/// says this domain holds, found by name.
fn release_by_name(call: &Call, domain_name: &str) {
    if !matches!(call, Call::Release(_)) {
        return;
    }
    log_stop(call, domain_name);
    let (host, config) = host_and_config();
    hook::release(&host, &timing_of(&config), &Domain::default(), domain_name);
}

/// At `release end` for a domain whose XML carries none of our metadata (removed while it ran):
/// whatever the state still records for it by name is released all the same.
fn release_leftovers(call: &Call, domain_name: &str) {
    if !matches!(call, Call::Release(_)) {
        return;
    }
    // The common case (a domain that never asked for anything) reads the state only: the
    // config is loaded when there is something to release.
    let recorded = Host::from_env()
        .state
        .peek_lazy()
        .is_ok_and(|st| st.named(domain_name).next().is_some());
    if recorded {
        vgpu_hook::host::logging::init();
        log_stop(call, domain_name);
        let (host, config) = host_and_config();
        hook::release(&host, &timing_of(&config), &Domain::default(), domain_name);
    }
}
