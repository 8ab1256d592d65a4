//! `types`, `list` and `status`: the library's reports, as tables or JSON.

use std::io::Write;
use std::process::ExitCode;

use vgpu_hook::ctl::report;
use vgpu_hook::host::drains::Drains;
use vgpu_hook::host::journal::VgpuMgrLog;
use vgpu_hook::host::state::{now_secs, State};
use vgpu_hook::host::Host;
use vgpu_hook::model::config::{Timing, DEFAULT_JOURNALCTL};
use vgpu_hook::model::domain::Domain;
use vgpu_hook::model::names::Profile;

use super::{emit, load_config, note, read_xml};
use crate::cli::{StatusArgs, TypesArgs};
use crate::error::CtlError;
use crate::libvirt::Libvirt;

/// `vgpuctl types`.
pub fn types(host: &Host, args: &TypesArgs, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    let json = args.json;
    let config = load_config(host)?;
    // Capacity comes from sysfs; the state only tells which VFs are held, so an unreadable
    // state (not root) costs that column, not the whole report.
    let state = host.state.peek().unwrap_or_else(|e| {
        note(&format!(
            "{e}; VFs held by running domains are counted as free"
        ));
        State::default()
    });
    let live = host.liveness(config.timing.prepare_grace);
    let mut r = report::types_report(&config, &host.sysfs, &state, &live);
    let drains = Drains::of_config(&config).map_err(CtlError::Drains)?;
    r.mark_drains(&drains);
    if let Some(p) = &args.fit {
        let profile = Profile::parse(p).map_err(|e| CtlError::Usage(format!("--fit: {e}")))?;
        let fit = r.fit(&profile);
        let anywhere = if json {
            emit(report::write_json(out, &fit))?;
            fit.fits_anywhere()
        } else {
            fit.write_fit(&profile, out).map_err(CtlError::output)?
        };
        return Ok(if anywhere {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    emit(if json {
        report::write_json(out, &r)
    } else {
        r.write_table(out)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `vgpuctl list`.
pub fn list(host: &Host, json: bool, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
    let config = load_config(host)?;
    let state = host.state.peek()?;
    let live = host.liveness(config.timing.prepare_grace);
    let r = report::list_report(&config, &host.sysfs, &state, &live);
    emit(if json {
        report::write_json(out, &r)
    } else {
        r.write_table(out)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// How far back `status` reads what NVIDIA's vGPU manager said: a start that failed minutes ago
/// is still the one the operator is asking about.
const VGPU_MGR_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// `vgpuctl status`.
pub fn status(
    uri: &str,
    host: &Host,
    args: &StatusArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    let (xml, running) = match &args.target.xml {
        Some(path) => {
            let xml = read_xml(path)?;
            let name = Domain::parse(&xml)?.name;
            let grace = Timing::default().prepare_grace;
            let running = host.liveness(grace).running(&name);
            (xml, running)
        }
        None => {
            let lv = Libvirt::open(uri)?;
            let dom = lv.lookup(args.target.domain.as_deref().unwrap_or_default())?;
            (dom.inactive_xml()?, dom.is_active()?)
        }
    };
    let dom = Domain::parse(&xml)?;
    let state = host.state.peek()?;
    let mut r = report::status_report(&dom, running, &host.sysfs, &state);
    report::mark_displays(&mut r, &xml);
    let journalctl = load_config(host).map_or_else(
        |_| std::path::PathBuf::from(DEFAULT_JOURNALCTL),
        |c| c.journalctl,
    );
    let since = now_secs().saturating_sub(VGPU_MGR_WINDOW.as_secs());
    // Read once, and only when the domain has an mdev to ask about.
    let log = std::cell::OnceCell::new();
    r.quote_vgpu_mgr(|uuid| {
        log.get_or_init(|| VgpuMgrLog::read(&journalctl, since))
            .errors_about(uuid)
    });
    emit(if args.json {
        report::write_json(out, &r)
    } else {
        r.write_table(out)
    })?;
    Ok(ExitCode::SUCCESS)
}
