//! `attach` and `detach`: rewrite a domain's persistent definition (through libvirt, or offline
//! on a file with `--xml`), and with `--live` make or free the device now and hot-plug it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vgpu_hook::alloc::vf::mdevs_on_vfs;
use vgpu_hook::ctl::plan::{self, Ask, MdevAsk, Taken, VfAsk};
use vgpu_hook::ctl::xmledit::{self, DeviceKey, NewDevice, Selector};
use vgpu_hook::host::state::Device;
use vgpu_hook::host::Host;
use vgpu_hook::model::config::{Config, Timing};
use vgpu_hook::model::domain::{Domain, Hostdev, MdevWant, Request, VfWant};
use vgpu_hook::model::names::{MdevUuid, Params, Profile, TypeId};
use vgpu_hook::model::pci::PciAddress;

use super::{emit, load_config, note, read_xml};
use crate::cli::{AttachArgs, DetachArgs, Target};
use crate::error::CtlError;
use crate::libvirt::{Dom, Libvirt};

/// How long `--live` waits for a guest to release an unplugged device.
const UNPLUG_WAIT: Duration = Duration::from_secs(10);

fn usage(e: impl std::fmt::Display) -> CtlError {
    CtlError::usage(e)
}

fn pci_arg(flag: &str, s: &str) -> Result<PciAddress, CtlError> {
    s.parse().map_err(|e| usage(format!("{flag}: {e}")))
}

fn ask_from(args: &AttachArgs) -> Result<Ask, CtlError> {
    if args.vf && args.display {
        return Err(usage(
            "--display: a VF is passed through whole as <hostdev type='pci'>, which libvirt cannot make a display (display= is for vfio-pci mdevs); attach an mdev vGPU with --display, or keep the VF and a display device beside it",
        ));
    }
    if args.vf {
        let want = match (&args.profile, &args.type_id) {
            (Some(p), _) => Some(VfWant::Profile(
                Profile::parse(p).map_err(|e| usage(format!("--profile: {e}")))?,
            )),
            (None, Some(t)) => Some(VfWant::Type(t.trim().parse().map_err(|_| {
                usage(format!(
                    "--type '{}' with --vf must be NVIDIA's numeric vGPU type id (like 1145, from creatable_vgpu_types)",
                    vgpu_hook::printable(t, 40)
                ))
            })?)),
            (None, None) => None,
        };
        return Ok(Ask::Vf(VfAsk {
            count: args.count,
            pf: args.pf.as_deref().map(|p| pci_arg("--pf", p)).transpose()?,
            address: args
                .address
                .as_deref()
                .map(|a| pci_arg("--address", a))
                .transpose()?,
            want,
            numa: Default::default(),
        }));
    }
    let want = match (&args.profile, &args.type_id) {
        (Some(p), _) => {
            MdevWant::Profile(Profile::parse(p).map_err(|e| usage(format!("--profile: {e}")))?)
        }
        (None, Some(t)) => {
            MdevWant::Type(TypeId::parse(t).map_err(|e| usage(format!("--type: {e}")))?)
        }
        (None, None) => return Err(usage("say what to attach: --profile P, --type T or --vf")),
    };
    Ok(Ask::Mdev(MdevAsk {
        want,
        count: args.count,
        parents: args.parent.clone(),
        params: args
            .params
            .as_deref()
            .map(|p| Params::parse(p).map_err(|e| usage(format!("--params: {e}"))))
            .transpose()?,
    }))
}

fn describe(dev: &NewDevice) -> String {
    match dev {
        NewDevice::Mdev(m) => {
            let mut s = format!(
                "mdev {} ({}",
                m.uuid,
                match &m.want {
                    MdevWant::Type(t) => format!("type {t}"),
                    MdevWant::Profile(p) => format!("profile '{p}'"),
                }
            );
            if !m.parents.is_empty() {
                let ps: Vec<&str> = m.parents.iter().map(|p| p.as_str()).collect();
                s.push_str(&format!(" on {}", ps.join(",")));
            }
            if let Some(p) = &m.params {
                s.push_str(&format!(", params {p}"));
            }
            s.push(')');
            s
        }
        NewDevice::Vf { request, managed } => {
            let mut s = format!(
                "VF {} (managed='{}'",
                request.address,
                if *managed { "yes" } else { "no" }
            );
            match &request.want {
                Some(VfWant::Type(t)) => s.push_str(&format!(", vGPU type {t}")),
                Some(VfWant::Profile(p)) => s.push_str(&format!(", profile '{p}'")),
                None => {}
            }
            s.push(')');
            s
        }
    }
}

/// VFs held right now according to the state, and VFs a vGPU mdev lives on (whoever runs).
fn taken_from_state(host: &Host, grace: Duration) -> Taken {
    let live = host.liveness(grace);
    let state = host.state.peek().unwrap_or_default();
    let mut taken: Taken = state
        .records
        .iter()
        .filter(|r| live.holds(r))
        .filter_map(|r| match r.device {
            Device::Vf { address } => Some((address, r.domain_name.clone())),
            _ => None,
        })
        .collect();
    for (vf, m) in mdevs_on_vfs(&host.sysfs, &state) {
        let by = m.domain.unwrap_or_else(|| format!("vGPU mdev {}", m.uuid));
        taken.entry(vf).or_insert(by);
    }
    taken
}

/// VFs named by any domain's definition (persistent or running).
fn taken_from_libvirt(lv: &Libvirt) -> Result<Taken, CtlError> {
    let mut taken = Taken::new();
    for d in lv.all_definitions()? {
        for xml in [&d.inactive, &d.live].into_iter().flatten() {
            for a in xmledit::referenced_pci(xml).unwrap_or_default() {
                taken.entry(a).or_insert_with(|| d.name.clone());
            }
        }
    }
    Ok(taken)
}

fn config_for_check(host: &Host, force: bool) -> Result<Option<Config>, CtlError> {
    if force {
        return Ok(Config::load(&host.config_path).ok());
    }
    load_config(host)
        .map(Some)
        .map_err(|e| CtlError::Unchecked(Box::new(e)))
}

fn check_name(target: &Target, xml: &str) -> Result<(), CtlError> {
    if let Some(want) = &target.domain {
        let dom = Domain::parse(xml).ok();
        let name = dom.as_ref().map_or("", |d| d.name.as_str());
        if name != want && dom.as_ref().is_none_or(|d| &d.uuid != want) {
            return Err(usage(format!(
                "{} defines domain '{}', not '{}'",
                target
                    .xml
                    .as_deref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                vgpu_hook::printable(name, 60),
                vgpu_hook::printable(want, 60)
            )));
        }
    }
    Ok(())
}

/// `vgpuctl attach`.
pub fn attach(
    uri: &str,
    host: &Host,
    args: &AttachArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    let ask = ask_from(args)?;
    let config = config_for_check(host, args.force)?;
    let grace = config.as_ref().map_or_else(
        || Timing::default().prepare_grace,
        |c| c.timing.prepare_grace,
    );
    let request = Attach {
        host,
        args,
        ask: &ask,
        config: config.as_ref(),
        grace,
    };
    match &args.target.xml {
        Some(path) => request.offline(path, out),
        None => request.defined(uri, out),
    }
}

/// One `attach`, between parsing the command line and editing a definition.
struct Attach<'a> {
    host: &'a Host,
    args: &'a AttachArgs,
    ask: &'a Ask,
    config: Option<&'a Config>,
    grace: Duration,
}

impl Attach<'_> {
    /// What makes the vGPU usable from the guest side: with `--display` the new mdevs become the
    /// domain's display; unless `--no-agent-channel`, the guest agent's channel is added when
    /// missing (recorded, so the detach that removes the last device removes it again).
    fn guest_side(&self, xml: String, devices: &[NewDevice]) -> Result<String, CtlError> {
        let mut xml = xml;
        if self.args.display {
            for d in devices {
                if let NewDevice::Mdev(m) = d {
                    refuse_non_pci_display(self.host, &m.want)?;
                }
            }
            let keys: Vec<DeviceKey> = devices.iter().map(NewDevice::key).collect();
            xml = xmledit::set_display(&xml, &keys)?;
        }
        if !self.args.no_agent_channel {
            if let Some(with) = xmledit::add_agent_channel(&xml)? {
                // Offline, the printed document shows it; through libvirt, say so.
                if self.args.target.xml.is_none() {
                    note("added the QEMU guest agent channel (org.qemu.guest_agent.0), so `vgpuctl guest` can reach the guest once qemu-guest-agent runs in it; --no-agent-channel to leave it out");
                }
                xml = with;
            }
        }
        Ok(xml)
    }

    /// Plans for the domain defined by `xml` against VFs taken by `taken` and prints the
    /// plan's notes.
    fn plan(&self, xml: &str, taken: &Taken) -> Result<plan::Plan, CtlError> {
        let numa = Domain::parse(xml).map(|d| d.numa).unwrap_or_default();
        let plan = plan::plan(
            self.config,
            &self.host.sysfs,
            &self.ask.for_domain(&numa),
            taken,
            !self.args.force,
        )?;
        for n in &plan.notes {
            note(n);
        }
        Ok(plan)
    }

    /// `--xml FILE`: prints the rewritten document.
    fn offline(&self, path: &Path, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
        let xml = read_xml(path)?;
        check_name(&self.args.target, &xml)?;
        let mut taken = taken_from_state(self.host, self.grace);
        for a in xmledit::referenced_pci(&xml)? {
            taken.entry(a).or_insert_with(|| "this document".into());
        }
        let plan = self.plan(&xml, &taken)?;
        if matches!(self.ask, Ask::Vf(VfAsk { address: None, .. })) {
            note("offline: other domains' definitions were not checked for the VF");
        }
        let new = self.guest_side(xmledit::attach(&xml, &plan.devices)?, &plan.devices)?;
        emit(out.write_all(new.as_bytes()))?;
        Ok(ExitCode::SUCCESS)
    }

    /// A domain libvirt knows: its persistent definition, and with `--live` the running domain.
    fn defined(&self, uri: &str, out: &mut dyn Write) -> Result<ExitCode, CtlError> {
        let name = self.args.target.domain.as_deref().unwrap_or_default();
        let lv = Libvirt::open(uri)?;
        let dom = lv.lookup(name)?;
        if self.args.live && !dom.is_active()? {
            return Err(CtlError::failed(format!(
                "domain '{}' is not running; drop --live (the hook makes the device when the domain starts)",
                dom.name
            )));
        }
        let xml = dom.inactive_xml()?;
        let mut taken = taken_from_libvirt(&lv)?;
        for (a, n) in taken_from_state(self.host, self.grace) {
            taken.entry(a).or_insert(n);
        }
        let plan = self.plan(&xml, &taken)?;
        if self.args.live && self.args.display {
            return Err(usage(
                "--display cannot be hot-plugged (QEMU sets up a vGPU's display and ramfb at start); attach without --live and restart the domain",
            ));
        }
        if self.args.live {
            let config = self.config.ok_or(CtlError::NeedsConfig(
                "--live needs the config to create the device",
            ))?;
            let live = LiveDomain {
                lv: &lv,
                host: self.host,
                dom: &dom,
            };
            return attach_live(&live, config, &plan.devices, out);
        }
        let new = self.guest_side(xmledit::attach(&xml, &plan.devices)?, &plan.devices)?;
        lv.define(&dom.name, &new)?;
        for d in &plan.devices {
            emit(writeln!(
                out,
                "added {} to domain '{}'",
                describe(d),
                dom.name
            ))?;
        }
        if dom.is_active()? {
            note(&format!(
                "'{}' is running: the device takes effect at its next start (or attach with --live to hot-plug it now)",
                dom.name
            ));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Refuses `--display` for an mdev type whose device is not a PCI device (`device_api` other
/// than vfio-pci, as vfio-ccw or vfio-ap): libvirt shows displays of vfio-pci mdevs only.
fn refuse_non_pci_display(host: &Host, want: &MdevWant) -> Result<(), CtlError> {
    let MdevWant::Type(t) = want else {
        return Ok(());
    };
    for parent in host.sysfs.mdev_parents() {
        let api = host.sysfs.root_path(&format!(
            "class/mdev_bus/{parent}/mdev_supported_types/{t}/device_api"
        ));
        if let Ok(api) = std::fs::read_to_string(&api) {
            let api = api.trim();
            if api != "vfio-pci" {
                return Err(CtlError::Edit(xmledit::EditError::Unsupported(format!(
                    "--display: type {t} on {parent} is a {api} device; libvirt shows displays of vfio-pci mdevs only"
                ))));
            }
        }
    }
    Ok(())
}

/// A running domain, with the connection and host it lives on.
struct LiveDomain<'a> {
    lv: &'a Libvirt,
    host: &'a Host,
    dom: &'a Dom,
}

fn request_of(dev: &NewDevice) -> (Request, Hostdev) {
    match dev {
        NewDevice::Mdev(m) => (
            Request::Mdev(m.clone()),
            Hostdev::Mdev {
                uuid: m.uuid.to_string(),
                source_span: 0..0,
            },
        ),
        NewDevice::Vf { request, managed } => (
            Request::Vf(request.clone()),
            Hostdev::Pci {
                address: request.address,
                managed: *managed,
                source_span: 0..0,
            },
        ),
    }
}

/// After a hot-plug: libvirt added the `<hostdev>`s to both definitions; our metadata goes into
/// both too, so the hook frees the devices when this run ends and makes them at the next start.
fn record_metadata(lv: &Libvirt, dom: &Dom, devices: &[NewDevice]) -> Result<(), CtlError> {
    let inactive = dom.inactive_xml()?;
    let new = xmledit::attach_parts(&inactive, devices, false, true)?;
    lv.define(&dom.name, &new)?;
    let live_xml = dom.live_xml()?;
    let live_new = xmledit::attach_parts(&live_xml, devices, false, true)?;
    if let Some(element) = xmledit::metadata_element(&live_new)? {
        dom.set_live_metadata(Some(&element))?;
    }
    Ok(())
}

/// `attach --live`: makes the devices now as the hook would, hot-plugs them (undoing all on a
/// failure) and records them in both definitions' metadata.
fn attach_live(
    live: &LiveDomain<'_>,
    config: &Config,
    devices: &[NewDevice],
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    let LiveDomain { lv, host, dom } = *live;
    let (requests, hostdevs) = devices.iter().map(request_of).unzip();
    // The running domain's NUMA and scheduling wishes decide where its new devices go, as at
    // its start.
    let live_dom = dom
        .live_xml()
        .ok()
        .and_then(|xml| Domain::parse(&xml).ok())
        .unwrap_or_default();
    let partial = Domain {
        name: dom.name.clone(),
        uuid: dom.uuid.clone(),
        has_metadata: true,
        requests,
        hostdevs,
        numa: live_dom.numa,
        scheduler: live_dom.scheduler,
    };
    vgpu_hook::hook::prepare(host, config, &partial).map_err(CtlError::Prepare)?;
    let keys: Vec<DeviceKey> = devices.iter().map(NewDevice::key).collect();
    let undo = |plugged: &[NewDevice]| {
        // Unplug what was plugged from both definitions, then free everything this call made:
        // no definition is left with a <hostdev> the hook would not make at the next start.
        for d in plugged {
            let _ = dom.detach_live_and_config(&xmledit::hostdev_xml(d));
        }
        for p in free_now(host, &config.timing, &dom.uuid, &keys) {
            note(&p);
        }
    };
    for (i, d) in devices.iter().enumerate() {
        if let Err(e) = dom.attach_live_and_config(&xmledit::hostdev_xml(d)) {
            undo(&devices[..i]);
            return Err(e);
        }
    }
    if let Err(e) = record_metadata(lv, dom, devices) {
        undo(devices);
        return Err(e);
    }
    let state = host.state.peek().unwrap_or_default();
    for d in devices {
        emit(writeln!(
            out,
            "added {} to domain '{}', created{} and hot-plugged",
            describe(d),
            dom.name,
            placed(&state, d)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// ` on PARENT as TYPE`, where the state says the device was made; empty when it does not.
fn placed(state: &vgpu_hook::host::state::State, d: &NewDevice) -> String {
    let device = match d.key() {
        DeviceKey::Mdev(u) => MdevUuid::parse(&u).ok().map(|uuid| Device::Mdev { uuid }),
        DeviceKey::Vf(a) => Some(Device::Vf { address: a }),
    };
    device
        .and_then(|dv| state.owner(&dv).cloned())
        .map(|r| {
            format!(
                " on {}{}",
                r.parent,
                r.type_id.map(|t| format!(" as {t}")).unwrap_or_default()
            )
        })
        .unwrap_or_default()
}

/// Frees devices of `dom_uuid` now, exactly as the hook's release does at stop (NVIDIA's own
/// clean-up awaited, bounded retries, only what the records say is this domain's), and drops
/// their records. Returns what could not be done.
fn free_now(host: &Host, timing: &Timing, dom_uuid: &str, keys: &[DeviceKey]) -> Vec<String> {
    let dom = vgpu_hook::model::domain::Domain {
        uuid: dom_uuid.to_string(),
        ..Default::default()
    };
    let wanted = |d: &Device| {
        keys.iter().any(|k| match (k, d) {
            (DeviceKey::Mdev(u), Device::Mdev { uuid }) => u == uuid.as_str(),
            (DeviceKey::Vf(a), Device::Vf { address }) => a == address,
            _ => false,
        })
    };
    vgpu_hook::hook::release_selected(host, timing, &dom, "", wanted)
        .into_iter()
        .map(|d| format!("{d} could not be freed now; run `vgpuctl reconcile` later"))
        .collect()
}

fn selector_from(args: &DetachArgs) -> Result<Selector, CtlError> {
    Ok(if args.all {
        Selector::All
    } else if let Some(u) = &args.uuid {
        Selector::Uuid(MdevUuid::parse(u).map_err(|e| usage(format!("--uuid: {e}")))?)
    } else if let Some(a) = &args.address {
        Selector::Address(pci_arg("--address", a)?)
    } else {
        Selector::Only
    })
}

fn key_selector(key: &DeviceKey) -> Option<Selector> {
    match key {
        DeviceKey::Mdev(u) => MdevUuid::parse(u).ok().map(Selector::Uuid),
        DeviceKey::Vf(a) => Some(Selector::Address(*a)),
    }
}

/// `vgpuctl detach`.
pub fn detach(
    uri: &str,
    host: &Host,
    args: &DetachArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, CtlError> {
    let selector = selector_from(args)?;
    if let Some(path) = &args.target.xml {
        let xml = read_xml(path)?;
        check_name(&args.target, &xml)?;
        let d = xmledit::detach_parts(&xml, &selector, true, !args.keep_agent_channel)?;
        emit(out.write_all(d.xml.as_bytes()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let name = args.target.domain.as_deref().unwrap_or_default();
    let lv = Libvirt::open(uri)?;
    let dom = lv.lookup(name)?;
    let xml = dom.inactive_xml()?;
    let detached = xmledit::detach_parts(&xml, &selector, true, !args.keep_agent_channel)?;
    let active = dom.is_active()?;
    let mut freed: Vec<DeviceKey> = Vec::new();
    if args.live && active {
        freed = detach_live(host, &dom, &detached.removed)?;
    } else if args.live {
        note(&format!(
            "'{}' is not running; --live has nothing to unplug",
            dom.name
        ));
    }
    lv.define(&dom.name, &detached.xml)?;
    for r in &detached.removed {
        let what = if r.hostdev {
            "and its <hostdev>"
        } else {
            "(it had no <hostdev>)"
        };
        let live = if freed.contains(&r.key) {
            ", unplugged and freed"
        } else {
            ""
        };
        emit(writeln!(
            out,
            "removed {} {what} from domain '{}'{live}",
            r.key, dom.name
        ))?;
    }
    if detached.agent_channel {
        emit(writeln!(
            out,
            "removed the QEMU guest agent channel vgpuctl attach had added to domain '{}' (--keep-agent-channel keeps it)",
            dom.name
        ))?;
    }
    if active && !args.live {
        note(&format!(
            "'{}' is running and keeps the device until it stops (or detach with --live)",
            dom.name
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Unplugs the removed devices from the running domain, frees those the guest released and
/// takes them out of the live metadata. Returns the freed ones.
fn detach_live(
    host: &Host,
    dom: &Dom,
    removed: &[xmledit::Removed],
) -> Result<Vec<DeviceKey>, CtlError> {
    let live = dom.live_xml()?;
    let mut pending: Vec<DeviceKey> = Vec::new();
    for r in removed {
        if let Some(h) = xmledit::hostdev_element(&live, &r.key)? {
            dom.detach_live(&h)?;
            pending.push(r.key.clone());
        }
    }
    let deadline = Instant::now() + UNPLUG_WAIT;
    let mut gone: Vec<DeviceKey> = loop {
        let now_live = dom.live_xml()?;
        let released: Vec<DeviceKey> = pending
            .iter()
            .filter(|k| {
                xmledit::hostdev_element(&now_live, k)
                    .ok()
                    .flatten()
                    .is_none()
            })
            .cloned()
            .collect();
        if released.len() == pending.len() || Instant::now() >= deadline {
            break released;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for k in pending.iter().filter(|k| !gone.contains(k)) {
        note(&format!(
            "the guest has not released {k} yet; it is freed when the domain stops"
        ));
    }
    // Devices without a live <hostdev> (attached to the definition only) need no unplug.
    for r in removed {
        if !pending.contains(&r.key) {
            gone.push(r.key.clone());
        }
    }
    let timing = Config::load(&host.config_path).map_or_else(|_| Timing::default(), |c| c.timing);
    for p in free_now(host, &timing, &dom.uuid, &gone) {
        note(&p);
    }
    let mut live_xml = dom.live_xml()?;
    for k in &gone {
        if let Some(sel) = key_selector(k) {
            if let Ok(d) = xmledit::detach_parts(&live_xml, &sel, false, false) {
                live_xml = d.xml;
            }
        }
    }
    dom.set_live_metadata(xmledit::metadata_element(&live_xml)?.as_deref())?;
    Ok(gone)
}
