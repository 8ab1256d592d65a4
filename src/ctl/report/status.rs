//! `vgpuctl status DOMAIN`: what one domain asks for against what it holds, and the problems
//! that will make its start fail or leak a device.

use std::io::{self, Write};

use serde::Serialize;

use super::{dash, utc, Table, JSON_VERSION};
use crate::host::state::{Device, Record, State};
use crate::host::sysfs::Sysfs;
use crate::model::domain::{Domain, Hostdev, MdevRequest, MdevWant, Request, VfRequest, VfWant};
use crate::model::names::MdevUuid;

/// `vgpuctl status DOMAIN`: what a domain asks for and what it holds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusReport {
    /// Shape version.
    pub version: u32,
    /// Domain name.
    pub domain: String,
    /// Domain UUID.
    pub uuid: String,
    /// Whether it runs now.
    pub running: bool,
    /// Requested devices in definition order, then devices the state says it holds without
    /// asking for them (detached while running).
    pub devices: Vec<StatusDevice>,
    /// Things that will make a start fail or leak a device, each with its fix.
    pub problems: Vec<String>,
}

/// One device of the domain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusDevice {
    /// `mdev` or `vf`.
    pub kind: &'static str,
    /// mdev UUID or VF address.
    pub device: String,
    /// Whether the definition's metadata asks for it.
    pub requested: bool,
    /// Asked-for type id.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Asked-for profile.
    pub profile: Option<String>,
    /// Allowed parents (empty: any configured).
    pub parents: Vec<String>,
    /// NVIDIA vgpu_params.
    pub params: Option<String>,
    /// Whether the definition has the matching `<hostdev>`.
    pub hostdev: bool,
    /// Whether the state records it as this domain's.
    pub held: bool,
    /// Another domain recorded as holding it.
    pub held_by: Option<String>,
    /// Whether the device exists in sysfs now.
    pub exists: bool,
    /// Where it was made (from the state).
    pub parent: Option<String>,
    /// The type it was made with (from the state).
    pub type_id: Option<String>,
    /// Since when this domain holds it.
    pub since: Option<u64>,
    /// The NUMA node of the device's parent (its GPU, or the VF's PF), when known.
    pub numa_node: Option<u32>,
    /// Why the device is off the domain's NUMA nodes, when the hook had to place it there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_note: Option<String>,
    /// The mdev as the domain's display: `display` (display='on'), `display+ramfb` (also the
    /// boot display); absent when neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<&'static str>,
}

/// Marks the mdevs whose `<hostdev>` in `xml` is a display (`vgpuctl attach --display`).
pub fn mark_displays(report: &mut StatusReport, xml: &str) {
    for (uuid, display, ramfb) in crate::ctl::xmledit::displays(xml).unwrap_or_default() {
        if let Some(d) = report
            .devices
            .iter_mut()
            .find(|d| d.kind == "mdev" && d.device == uuid)
        {
            d.display = Some(match (display, ramfb) {
                (true, true) => "display+ramfb",
                (true, false) => "display",
                (false, _) => "ramfb",
            });
        }
    }
}

/// Builds the `status` report. `running` comes from libvirt when reachable.
pub fn status_report(dom: &Domain, running: bool, sysfs: &Sysfs, state: &State) -> StatusReport {
    let mut status = Status {
        dom,
        running,
        sysfs,
        state,
        problems: Vec::new(),
    };
    let mut devices: Vec<StatusDevice> = dom.requests.iter().map(|r| status.requested(r)).collect();
    devices.extend(
        state
            .of_domain(&dom.uuid)
            .filter(|r| !asks_for(dom, &r.device))
            .map(|r| status.unrequested(r))
            .collect::<Vec<_>>(),
    );
    StatusReport {
        version: JSON_VERSION,
        domain: dom.name.clone(),
        uuid: dom.uuid.clone(),
        running,
        devices,
        problems: status.problems,
    }
}

impl StatusReport {
    /// Adds, for each of the domain's mdevs, what NVIDIA's vGPU manager said against it
    /// (`said` gives its error lines): the reason of a start that failed with QEMU's
    /// `Input/output error`.
    pub fn quote_vgpu_mgr(&mut self, said: impl Fn(&MdevUuid) -> Vec<String>) {
        for d in self.devices.iter().filter(|d| d.kind == "mdev") {
            let Ok(uuid) = MdevUuid::parse(&d.device) else {
                continue;
            };
            let lines = said(&uuid);
            if !lines.is_empty() {
                self.problems.push(format!(
                    "NVIDIA's vGPU manager reported for mdev {uuid}: {}; the rest: journalctl -u {}",
                    lines.join(" | "),
                    crate::host::journal::VGPU_MGR_UNIT
                ));
            }
        }
    }
}

/// What one domain's status is built from, and the problems found so far.
struct Status<'a> {
    dom: &'a Domain,
    running: bool,
    sysfs: &'a Sysfs,
    state: &'a State,
    problems: Vec<String>,
}

impl Status<'_> {
    /// A requested device: what the definition asks, and what the state says about it.
    fn requested(&mut self, req: &Request) -> StatusDevice {
        let (key, mut device) = match req {
            Request::Mdev(m) => self.mdev_request(m),
            Request::Vf(v) => self.vf_request(v),
        };
        let rec = self
            .state
            .owner(&key)
            .filter(|r| r.domain_uuid == self.dom.uuid);
        let held_by = self
            .state
            .owner(&key)
            .filter(|r| r.domain_uuid != self.dom.uuid)
            .map(|r| r.domain_name.clone());
        if let Some(o) = &held_by {
            self.problems.push(format!(
                "{key} is held by domain '{o}'; this domain cannot start while it runs (give one of them another device)"
            ));
        }
        if self.running && rec.is_none() && held_by.is_none() {
            self.problems.push(format!(
                "the domain runs but holds no {key} (it was attached after the start, or its record was lost); it takes effect at the next start"
            ));
        }
        device.held = rec.is_some();
        device.held_by = held_by;
        device.parent = rec.map(|r| r.parent.clone());
        device.type_id = rec.and_then(|r| r.type_id.clone());
        device.since = rec.map(|r| r.since);
        device.numa_node = device
            .parent
            .as_deref()
            .and_then(|p| self.sysfs.numa_node_of(p));
        device.numa_note = rec.and_then(|r| r.numa_note.clone());
        if let Some(note) = &device.numa_note {
            self.problems.push(format!(
                "{key} is {note}; it moves to the domain's node at a start that finds room there"
            ));
        }
        device
    }

    fn mdev_request(&mut self, m: &MdevRequest) -> (Device, StatusDevice) {
        let (type_, profile) = match &m.want {
            MdevWant::Type(t) => (Some(t.to_string()), None),
            MdevWant::Profile(p) => (None, Some(p.to_string())),
        };
        let hostdev = self.dom.has_mdev_hostdev(&m.uuid);
        if !hostdev {
            self.problems.push(format!(
                "vgpu:mdev {} has no <hostdev type='mdev'> naming it, so the guest will not get it; run `vgpuctl detach {} --uuid {}` and attach again",
                m.uuid, self.dom.name, m.uuid
            ));
        }
        let device = StatusDevice {
            type_,
            profile,
            parents: m.parents.iter().map(|p| p.to_string()).collect(),
            params: m.params.as_ref().map(|p| p.to_string()),
            hostdev,
            ..StatusDevice::new("mdev", m.uuid.to_string(), self.sysfs.mdev_exists(&m.uuid))
        };
        let key = Device::Mdev {
            uuid: m.uuid.clone(),
        };
        (key, device)
    }

    fn vf_request(&mut self, v: &VfRequest) -> (Device, StatusDevice) {
        let (type_, profile) = match &v.want {
            None => (None, None),
            Some(VfWant::Type(t)) => (Some(t.to_string()), None),
            Some(VfWant::Profile(p)) => (None, Some(p.to_string())),
        };
        let hd = self.dom.pci_hostdev(v.address);
        match hd {
            None => self.problems.push(format!(
                "vgpu:vf {} has no <hostdev type='pci'> naming it, so the guest will not get it; run `vgpuctl detach {} --address {}` and attach again",
                v.address, self.dom.name, v.address
            )),
            Some(Hostdev::Pci { managed: true, .. }) if self.sysfs.is_nvidia_vfio_vf(v.address) => {
                self.problems.push(format!(
                    "VF {} is an NVIDIA vGPU VF but its <hostdev> is managed='yes'; it must be managed='no' (detach and attach it again)",
                    v.address
                ))
            }
            _ => {}
        }
        let device = StatusDevice {
            type_,
            profile,
            hostdev: hd.is_some(),
            ..StatusDevice::new(
                "vf",
                v.address.to_string(),
                self.sysfs.pci_exists(v.address),
            )
        };
        (Device::Vf { address: v.address }, device)
    }

    /// A device the state says the domain holds though its definition no longer asks for it.
    fn unrequested(&mut self, r: &Record) -> StatusDevice {
        let (kind, device, exists) = match &r.device {
            Device::Mdev { uuid } => ("mdev", uuid.to_string(), self.sysfs.mdev_exists(uuid)),
            Device::Vf { address } => ("vf", address.to_string(), self.sysfs.pci_exists(*address)),
        };
        self.problems.push(format!(
            "holds {} that its definition no longer asks for; it is freed when the domain stops (or run `vgpuctl reconcile` once it has stopped)",
            r.device
        ));
        StatusDevice {
            requested: false,
            held: true,
            parent: Some(r.parent.clone()),
            type_id: r.type_id.clone(),
            since: Some(r.since),
            ..StatusDevice::new(kind, device, exists)
        }
    }
}

/// Whether the definition's metadata asks for `device`.
fn asks_for(dom: &Domain, device: &Device) -> bool {
    dom.requests.iter().any(|q| match (q, device) {
        (Request::Mdev(m), Device::Mdev { uuid }) => &m.uuid == uuid,
        (Request::Vf(v), Device::Vf { address }) => &v.address == address,
        _ => false,
    })
}

impl StatusDevice {
    /// A requested device of `kind` that nothing is known about yet.
    fn new(kind: &'static str, device: String, exists: bool) -> StatusDevice {
        StatusDevice {
            kind,
            device,
            requested: true,
            type_: None,
            profile: None,
            parents: Vec::new(),
            params: None,
            hostdev: false,
            held: false,
            held_by: None,
            exists,
            parent: None,
            type_id: None,
            since: None,
            numa_node: None,
            numa_note: None,
            display: None,
        }
    }
}

impl StatusReport {
    /// Writes the summary line, the device table and the problems.
    pub fn write_table(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "domain '{}' ({}), {}",
            self.domain,
            self.uuid,
            if self.running { "running" } else { "shut off" }
        )?;
        if self.devices.is_empty() {
            writeln!(
                w,
                "no vgpu-hook devices (attach one with `vgpuctl attach {} --profile P`)",
                self.domain
            )?;
        } else {
            let mut t = Table::new(&[
                "DEVICE", "ASKS", "HOSTDEV", "HELD", "EXISTS", "PARENT", "TYPE", "SINCE",
            ]);
            let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
            for d in &self.devices {
                let mut asks = match (&d.type_, &d.profile) {
                    (Some(t), _) => format!("type {t}"),
                    (None, Some(p)) => format!("profile {p}"),
                    (None, None) if d.requested => "whole VF".to_string(),
                    (None, None) => "(not asked)".to_string(),
                };
                if !d.parents.is_empty() {
                    asks.push_str(&format!(" on {}", d.parents.join(",")));
                }
                let held = match (&d.held_by, d.held) {
                    (Some(o), _) => format!("by '{o}'"),
                    (None, h) => yes(h),
                };
                t.row(vec![
                    d.device.clone(),
                    asks,
                    yes(d.hostdev),
                    held,
                    yes(d.exists),
                    dash(d.parent.as_ref()),
                    dash(d.type_id.as_ref()),
                    dash(d.since.map(utc)),
                ]);
            }
            t.write(w)?;
        }
        for d in self.devices.iter().filter(|d| d.display.is_some()) {
            writeln!(
                w,
                "display: {} is the domain's display{}",
                d.device,
                if d.display == Some("display+ramfb") {
                    ", from boot on (ramfb)"
                } else {
                    ""
                }
            )?;
        }
        for p in &self.problems {
            writeln!(w, "problem: {p}")?;
        }
        Ok(())
    }
}
