//! What the domains libvirt runs use, read from their live definitions in libvirt's run dir
//! (`<name>.xml`, a `<domstatus>` wrapping the `<domain>`).
//!
//! The state knows only what the hook made or took; a VM can also be given a device by hand: an
//! operator's own `<hostdev type='mdev'>` on an mdev made with `uuidgen` and `create` (the
//! Cloudpods way), or a plain `<hostdev type='pci'>` of a VF. Taking over such a device for
//! another domain would end in removing it under the VM that uses it (and the remove blocks in the
//! kernel while that QEMU holds it, under the host lock). Only the live definitions say who uses
//! it, so `prepare` asks here before it reuses an mdev or claims a VF.

use std::path::Path;

use crate::host::state::{Device, Liveness};
use crate::model::domain::{Domain, Hostdev};

/// The name of a running domain, other than `except_uuid`, whose live definition has a hostdev
/// naming `device`; `None` when none does (or the run dir cannot be read).
pub fn user_of(
    run_dir: &Path,
    live: &Liveness,
    device: &Device,
    except_uuid: &str,
) -> Option<String> {
    let entries = std::fs::read_dir(run_dir).ok()?;
    entries.flatten().find_map(|entry| {
        let path = entry.path();
        let name = path.file_name()?.to_str()?.strip_suffix(".xml")?;
        let xml = std::fs::read_to_string(&path).ok()?;
        if !may_name(&xml, device) || !live.running(name) {
            return None;
        }
        let dom = Domain::parse(inner_domain(&xml)?).ok()?;
        (dom.uuid != except_uuid && names(&dom, device)).then(|| dom.name.clone())
    })
}

/// Whether a status file can name the device at all, told from its text before it is parsed:
/// an mdev's UUID appears in it (in any case), a VF needs a `<hostdev>` or a `type='hostdev'`
/// interface. Most running domains fail this, so a start parses few of them.
fn may_name(xml: &str, device: &Device) -> bool {
    match device {
        Device::Mdev { uuid } => {
            let u = uuid.as_str().as_bytes();
            xml.as_bytes()
                .windows(u.len())
                .any(|w| w.eq_ignore_ascii_case(u))
        }
        Device::Vf { .. } => xml.contains("hostdev"),
    }
}

/// Whether one of the domain's hostdevs is the device.
fn names(dom: &Domain, device: &Device) -> bool {
    dom.hostdevs.iter().any(|h| match (h, device) {
        (Hostdev::Mdev { uuid, .. }, Device::Mdev { uuid: u }) => {
            uuid.eq_ignore_ascii_case(u.as_str())
        }
        (Hostdev::Pci { address, .. }, Device::Vf { address: a }) => address == a,
        _ => false,
    })
}

/// The `<domain>` element inside a status file's `<domstatus>` (or the whole text when it is a
/// plain definition).
pub fn inner_domain(xml: &str) -> Option<&str> {
    let start = xml.find("<domain ").or_else(|| xml.find("<domain>"))?;
    let end = xml.rfind("</domain>")? + "</domain>".len();
    (start < end).then(|| &xml[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_is_found_inside_a_status_file() {
        let status = "<domstatus state='running' pid='42'>\n  <monitor path='/x'/>\n  <domain type='kvm' id='1'>\n    <name>a</name>\n  </domain>\n</domstatus>\n";
        let inner = inner_domain(status).unwrap();
        assert!(inner.starts_with("<domain type='kvm'"));
        assert!(inner.ends_with("</domain>"));
    }

    #[test]
    fn only_a_status_file_that_can_name_the_device_is_parsed() {
        let uuid =
            crate::model::names::MdevUuid::parse("6f2e9a4c-8d1b-4c1e-9a41-000000000001").unwrap();
        let mdev = Device::Mdev { uuid };
        assert!(may_name(
            "<address uuid='6F2E9A4C-8D1B-4C1E-9A41-000000000001'/>",
            &mdev
        ));
        assert!(!may_name("<domain><devices/></domain>", &mdev));
        let vf = Device::Vf {
            address: "0000:41:00.4".parse().unwrap(),
        };
        assert!(may_name("<interface type='hostdev'>", &vf));
        assert!(!may_name("<interface type='network'>", &vf));
    }

    #[test]
    fn text_without_a_domain_yields_none() {
        assert_eq!(inner_domain("<domstatus/>"), None);
    }
}
