//! `guest`: what NVIDIA's driver and licence look like inside domains, read through the QEMU
//! guest agent, and handing a guest its licence (token or legacy server).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vgpu_hook::ctl::guest::agent::{self, Os};
use vgpu_hook::ctl::guest::license::{self, Server};
use vgpu_hook::ctl::guest::probe;
use vgpu_hook::ctl::guest::push::{self, Licence};
use vgpu_hook::ctl::guest::report::{GuestReport, GuestRow};
use vgpu_hook::ctl::guest::GuestError;
use vgpu_hook::ctl::xmledit;
use vgpu_hook::host::Host;

use super::emit;
use crate::cli::GuestArgs;
use crate::error::CtlError;
use crate::libvirt::{Dom, Libvirt};

/// How long the host waits for a TCP connection to a licence server.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `vgpuctl guest`.
pub fn guest(
    uri: &str,
    host: &Host,
    args: &GuestArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    if args.license_token.is_some() || args.license_server.is_some() {
        return license_guest(uri, args, out);
    }
    if args.dry_run {
        return Err(CtlError::usage(
            "--dry-run goes with --license-token or --license-server",
        ));
    }
    let lv = Libvirt::open(uri)?;
    let doms = match &args.domain {
        Some(name) => vec![lv.lookup(name)?],
        None => vgpu_domains(&lv, host)?,
    };
    let rows: Vec<GuestRow> = doms.iter().map(read_row).collect();
    let report = GuestReport::new(rows);
    emit(if args.json {
        report.write_json(out)
    } else {
        report.write_table(out)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Running (or paused) domains holding a vGPU, by vgpu-hook's state or their metadata.
fn vgpu_domains(lv: &Libvirt, host: &Host) -> Result<Vec<Dom>, CtlError> {
    let state = host.state.peek().unwrap_or_default();
    let mut out = Vec::new();
    for d in lv.all_definitions()? {
        let Some(live) = &d.live else { continue };
        let in_metadata = xmledit::entries(live).is_ok_and(|e| !e.is_empty());
        let in_state = state.records.iter().any(|r| r.domain_name == d.name);
        if in_metadata || in_state {
            out.push(lv.lookup(&d.name)?);
        }
    }
    Ok(out)
}

/// One domain's row: read through the agent when it runs, else one line saying why not.
fn read_row(dom: &Dom) -> GuestRow {
    let state = dom.state_name().unwrap_or("unknown");
    let mut row = GuestRow::new(&dom.name, state);
    match state {
        "running" => probe::probe(dom, &mut row, now()),
        "paused" => row.problem(
            "paused",
            "the domain is paused; its guest agent cannot answer",
            format!("virsh resume {}", dom.name),
        ),
        _ => row.problem(
            "not_running",
            "the domain is not running",
            format!("virsh start {}", dom.name),
        ),
    }
    row
}

/// The licence to hand over, checked on the host before anything is written in the guest.
fn checked_licence(args: &GuestArgs) -> Result<Licence, CtlError> {
    if let Some(path) = &args.license_token {
        let bytes = std::fs::read(path).map_err(|e| CtlError::io(path.display(), e))?;
        let token =
            license::check_token(&path.display().to_string(), &bytes).map_err(CtlError::usage)?;
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
        return Ok(Licence::Token {
            name: push::token_name(file.as_deref().unwrap_or("")),
            token,
        });
    }
    let spec = args.license_server.as_deref().unwrap_or_default();
    let server = Server::parse(spec).map_err(CtlError::usage)?;
    let feature_type = license::check_feature_type(args.feature_type).map_err(CtlError::usage)?;
    server
        .check_reachable(REACH_TIMEOUT)
        .map_err(|e| CtlError::failed(e.to_string()))?;
    Ok(Licence::Server {
        server,
        feature_type,
    })
}

fn guest_failed(dom: &str, e: GuestError) -> CtlError {
    let fix = match &e {
        GuestError::NoChannel(_) => {
            " (add the guest agent channel: see `vgpuctl guest` for the XML)"
        }
        GuestError::NotConnected(_) => " (install and start qemu-guest-agent in the guest)",
        _ => "",
    };
    CtlError::failed(format!("guest of '{dom}': {e}{fix}"))
}

/// `--license-token` / `--license-server`: check, plan, write, restart, wait, show.
fn license_guest(uri: &str, args: &GuestArgs, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    let licence = checked_licence(args)?;
    let lv = Libvirt::open(uri)?;
    let dom = lv.lookup(args.domain.as_deref().unwrap_or_default())?;
    let state = dom.state_name()?;
    if state != "running" {
        let fix = if state == "paused" { "resume" } else { "start" };
        return Err(CtlError::failed(format!(
            "domain '{}' is {state}; its guest agent cannot answer (virsh {fix} {})",
            dom.name, dom.name
        )));
    }
    let info = agent::info(&dom).map_err(|e| guest_failed(&dom.name, e))?;
    if !info.exec_enabled {
        return Err(CtlError::failed(format!(
            "the guest agent of '{}' does not allow guest-exec; allow it in the agent's configuration",
            dom.name
        )));
    }
    let (os, _) = agent::os(&dom).map_err(|e| guest_failed(&dom.name, e))?;
    let stamp: String = vgpu_hook::ctl::report::utc(now() as u64)
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let plan = push::plan(&dom, os, &licence, &stamp).map_err(|e| guest_failed(&dom.name, e))?;
    if args.dry_run {
        emit(writeln!(
            out,
            "dry run: nothing written in the guest of '{}' ({})",
            dom.name,
            os_name(os)
        ))?;
        for l in plan.describe() {
            emit(writeln!(out, "{l}"))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    for l in plan.apply(&dom).map_err(|e| guest_failed(&dom.name, e))? {
        emit(writeln!(out, "{l}"))?;
    }
    let row = push::wait_licensed(&dom, &dom.name, Duration::from_secs(args.wait_secs), now);
    let report = GuestReport::new(vec![row]);
    emit(if args.json {
        report.write_json(out)
    } else {
        report.write_table(out)
    })?;
    let row = &report.guests[0];
    if row.license.as_deref() == Some("licensed") {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CtlError::failed(format!(
            "the guest of '{}' is not licensed {} s after the restart ({}); see the licensing service's log in the guest ({})",
            dom.name,
            args.wait_secs,
            row.license_text.as_deref().unwrap_or("no status"),
            if os == Os::Windows { "Event Viewer, NVIDIA Display Container LS" } else { "journalctl -u nvidia-gridd" }
        )))
    }
}

fn os_name(os: Os) -> &'static str {
    match os {
        Os::Linux => "Linux",
        Os::Windows => "Windows",
    }
}
