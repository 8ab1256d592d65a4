//! Moving domains: `migrate-check` reads this host's side (the domain, its live vGPU types) and
//! the destination's (versions, node devices) through libvirt, judged by `ctl::migrate_check`;
//! `resync` runs the hook's migrate filter on a persistent definition copied from another host.

use std::io::Write;
use std::process::ExitCode;

use vgpu_hook::ctl::doctor::{self, Finding};
use vgpu_hook::ctl::migrate_check::{self, Inputs, LiveType, Side};
use vgpu_hook::host::Host;
use vgpu_hook::model::domain::{Domain, Request};
use vgpu_hook::model::names::{ParentName, TypeId};

use super::{emit, load_config};
use crate::cli::{MigrateCheckArgs, ResyncArgs};
use crate::error::{CtlError, Exit};
use crate::libvirt::Libvirt;

/// Reads both sides, prints the findings, exits 1 when the domain cannot move.
pub fn check(
    uri: &str,
    host: &Host,
    args: &MigrateCheckArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    let here = Libvirt::open(uri)?;
    let dom = here.lookup(&args.domain)?;
    let xml = if dom.is_active()? {
        dom.live_xml()?
    } else {
        dom.inactive_xml()?
    };
    let domain = Domain::parse(&xml)?;
    let there = Libvirt::open(&args.dest_uri)?;
    let mut offers = Vec::new();
    for x in there.mdev_parent_xmls()? {
        offers.extend(migrate_check::offers_from_nodedev(&x));
    }
    let findings = migrate_check::check(&Inputs {
        domain: &domain,
        viommu: xml.contains("<iommu"),
        source: side(&here)?,
        dest: side(&there)?,
        live: live_types(host, &domain),
        offers,
    });
    write(out, &findings, args.json)?;
    Ok(if doctor::has_errors(&findings) {
        ExitCode::from(Exit::Failed as u8)
    } else {
        ExitCode::SUCCESS
    })
}

fn side(lv: &Libvirt) -> Result<Side, CtlError> {
    Ok(Side {
        host: lv.hostname()?,
        libvirt: lv.version()?,
        qemu: lv.hypervisor_version()?,
    })
}

/// Each mdev request's type as the live device here has it (`None` when it does not exist).
fn live_types(host: &Host, domain: &Domain) -> Vec<Option<LiveType>> {
    domain
        .mdev_requests()
        .map(|m| {
            let live = host.sysfs.mdev(&m.uuid)?;
            let name = ParentName::parse(&live.parent)
                .ok()
                .zip(TypeId::parse(&live.type_id).ok())
                .and_then(|(p, t)| host.sysfs.type_name(&p, &t));
            Some(LiveType {
                type_id: live.type_id,
                name,
            })
        })
        .collect()
}

fn write(out: &mut dyn Write, findings: &[Finding], json: bool) -> Result<(), CtlError> {
    emit(if json {
        vgpu_hook::ctl::report::write_json(
            out,
            &serde_json::json!({ "version": vgpu_hook::ctl::report::JSON_VERSION, "findings": findings }),
        )
    } else {
        doctor::write_findings(out, findings)
    })
}

/// The persistent definition, filtered as the hook filters a migrated one, and defined again
/// when that changed it.
pub fn resync(
    uri: &str,
    host: &Host,
    args: &ResyncArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    let config = load_config(host)?;
    let lv = Libvirt::open(uri)?;
    let dom = lv.lookup(&args.domain)?;
    let xml = dom.inactive_xml()?;
    let before = Domain::parse(&xml)?;
    let filtered = vgpu_hook::hook::filter(host, &config, &before, &xml)
        .map_err(|e| CtlError::Failed(format!("domain '{}': {e}", dom.name)))?;
    let Some(new_xml) = filtered else {
        emit(writeln!(
            out,
            "domain '{}': its devices fit this host as they are",
            dom.name
        ))?;
        return Ok(ExitCode::SUCCESS);
    };
    let after = Domain::parse(&new_xml)?;
    for (old, new) in before.requests.iter().zip(&after.requests) {
        if old != new {
            emit(writeln!(
                out,
                "domain '{}': {} becomes {}",
                dom.name,
                device(old),
                device(new)
            ))?;
        }
    }
    if !args.dry_run {
        lv.define(&dom.name, &new_xml)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn device(r: &Request) -> String {
    match r {
        Request::Mdev(m) => format!("mdev {}", m.uuid),
        Request::Vf(v) => format!("VF {}", v.address),
    }
}
