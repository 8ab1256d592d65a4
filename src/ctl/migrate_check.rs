//! `vgpuctl migrate-check`: before `virsh migrate`, whether a domain's vGPUs can come to another
//! host, from what libvirt's connection to that host shows: its versions and its node devices,
//! which list every mdev parent with each type's free instances (`availableInstances`).
//!
//! It answers the question an operator has at a maintenance window ("will this move, and if not,
//! why?") before anything is transferred. The destination's hook still decides at `migrate begin`
//! with its own config, which libvirt does not show: this check sees every parent there,
//! configured or not, so a "yes" here can still meet a "no" there, never the other way round for
//! room. A vGPU moves only to the same type (NVIDIA: the same profile on the same board, and the
//! same vGPU manager version, which libvirt does not expose); plain VFIO VFs (AMD's GIM) do not
//! move at all; post-copy is not supported and the hook cannot see it asked for.

use std::collections::BTreeMap;

use crate::ctl::doctor::{version_text, Finding, Severity};
use crate::model::domain::{Domain, MdevWant};

/// libvirt migrates VFIO devices from 8.6.0 (Nova's and RHEL's floor).
pub const LIBVIRT_FLOOR: u32 = 8_006_000;
/// QEMU migrates VFIO devices by default from 8.1.0.
pub const QEMU_FLOOR: u32 = 8_001_000;

/// One host as libvirt describes it.
#[derive(Debug, Clone)]
pub struct Side {
    /// Its name.
    pub host: String,
    /// libvirt's version (`major * 1_000_000 + minor * 1000 + micro`).
    pub libvirt: u32,
    /// QEMU's version, same encoding.
    pub qemu: u32,
}

/// One mdev type on one parent of the destination, as its node device XML says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The parent's node device name (`pci_0000_82_00_0`, `mtty_mtty`).
    pub parent: String,
    /// The parent's driver, when libvirt names it.
    pub driver: Option<String>,
    /// The type id.
    pub type_id: String,
    /// Its `name`, when the driver gives one.
    pub name: Option<String>,
    /// Free instances now.
    pub available: u32,
}

/// What one of the domain's mdevs is here: its type id and name, read off the live device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveType {
    /// The type id.
    pub type_id: String,
    /// Its name, if the driver gives one.
    pub name: Option<String>,
}

/// Everything the check looks at.
pub struct Inputs<'a> {
    /// The domain (its live definition when it runs).
    pub domain: &'a Domain,
    /// Whether the definition has a vIOMMU (`<iommu>`).
    pub viommu: bool,
    /// This host.
    pub source: Side,
    /// The destination.
    pub dest: Side,
    /// Each mdev request's live type here, in request order (`None`: not running).
    pub live: Vec<Option<LiveType>>,
    /// The destination's mdev types.
    pub offers: Vec<Offer>,
}

/// The findings, one per fact, in the order an operator reads them.
pub fn check(i: &Inputs<'_>) -> Vec<Finding> {
    let mut out = vec![versions(&i.source, &i.dest)];
    if i.viommu {
        out.push(finding(
            "domain",
            Severity::Error,
            format!("domain '{}' has a vIOMMU (<iommu>): QEMU cannot migrate VFIO devices behind one", i.domain.name),
            Some("remove the <iommu> device, or shut the domain down here and start it on the destination"),
        ));
    }
    out.extend(mdevs(i));
    out.extend(vfs(i));
    out.push(finding(
        "post-copy",
        Severity::Ok,
        "do not add --postcopy: VFIO devices do not support post-copy, and the hook cannot see migration flags to refuse it".into(),
        None,
    ));
    out
}

fn finding(check: &'static str, severity: Severity, message: String, fix: Option<&str>) -> Finding {
    Finding {
        check,
        severity,
        message,
        fix: fix.map(str::to_string),
    }
}

/// libvirt and QEMU on both sides against the floors.
fn versions(source: &Side, dest: &Side) -> Finding {
    let mut below = Vec::new();
    for side in [source, dest] {
        for (what, v, floor) in [
            ("libvirt", side.libvirt, LIBVIRT_FLOOR),
            ("QEMU", side.qemu, QEMU_FLOOR),
        ] {
            if v < floor {
                below.push(format!(
                    "{what} {} on {} (< {})",
                    version_text(v),
                    side.host,
                    version_text(floor)
                ));
            }
        }
    }
    if below.is_empty() {
        return finding(
            "versions",
            Severity::Ok,
            format!(
                "libvirt {} / QEMU {} on {}, libvirt {} / QEMU {} on {}",
                version_text(source.libvirt),
                version_text(source.qemu),
                source.host,
                version_text(dest.libvirt),
                version_text(dest.qemu),
                dest.host
            ),
            None,
        );
    }
    finding(
        "versions",
        Severity::Error,
        format!("too old to migrate a vGPU: {}", below.join(", ")),
        Some("upgrade to libvirt >= 8.6 and QEMU >= 8.1 on both hosts"),
    )
}

/// Each mdev: the same type on the destination, with room for all of them together.
fn mdevs(i: &Inputs<'_>) -> Vec<Finding> {
    let mut taken: BTreeMap<usize, u32> = BTreeMap::new();
    let reqs = i.domain.mdev_requests();
    let mut out = Vec::new();
    for (n, req) in reqs.enumerate() {
        let live = i.live.get(n).cloned().flatten();
        let label = match &live {
            Some(t) => type_label(&t.type_id, t.name.as_deref()),
            None => req.want.to_string(),
        };
        let matching: Vec<usize> = (0..i.offers.len())
            .filter(|&k| same_type(&i.offers[k], &req.want, live.as_ref()))
            .collect();
        let what = format!("mdev {} ({label})", req.uuid);
        if matching.is_empty() {
            out.push(no_such_type(i, &what, live.as_ref()));
            continue;
        }
        let free = matching
            .iter()
            .copied()
            .find(|k| i.offers[*k].available > taken.get(k).copied().unwrap_or(0));
        let Some(k) = free else {
            let on: Vec<String> = matching
                .iter()
                .map(|k| format!("{} on {}", i.offers[*k].available, i.offers[*k].parent))
                .collect();
            out.push(finding(
                "mdev",
                Severity::Error,
                format!(
                    "{what}: no room on {}: free {}, and this domain needs every one it asks for",
                    i.dest.host,
                    on.join(", ")
                ),
                Some("free one there (virsh destroy a VM holding one), or migrate to another host"),
            ));
            continue;
        };
        *taken.entry(k).or_default() += 1;
        let o = &i.offers[k];
        out.push(finding(
            "mdev",
            Severity::Ok,
            format!(
                "{what}: {} has room on {} ({} free)",
                i.dest.host, o.parent, o.available
            ),
            None,
        ));
        if o.driver.as_deref() == Some("nvidia") {
            out.push(finding(
                "driver",
                Severity::Warning,
                format!("{what}: NVIDIA requires the same vGPU manager version on both hosts, and libvirt does not show {}'s", i.dest.host),
                Some("compare `cat /sys/module/nvidia/version` (or nvidia-smi -q | grep 'Driver Version') on both hosts"),
            ));
        }
    }
    out
}

/// Whether a destination type is the one the mdev is: the live type's id (and name, when both
/// sides give one), or for a domain not running, the request's type id or profile.
fn same_type(o: &Offer, want: &MdevWant, live: Option<&LiveType>) -> bool {
    match (live, want) {
        (Some(t), _) => {
            o.type_id == t.type_id
                && match (&o.name, &t.name) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        }
        (None, MdevWant::Type(t)) => o.type_id == t.as_str(),
        (None, MdevWant::Profile(p)) => o.name.as_deref().is_some_and(|n| p.matches(n)),
    }
}

/// The refusal for a type the destination does not offer, naming a same-id type of another name.
fn no_such_type(i: &Inputs<'_>, what: &str, live: Option<&LiveType>) -> Finding {
    let renamed = live.and_then(|t| {
        i.offers
            .iter()
            .find(|o| o.type_id == t.type_id)
            .map(|o| type_label(&o.type_id, o.name.as_deref()))
    });
    let message = match renamed {
        Some(there) => format!("{what}: {}'s {there} is another vGPU type", i.dest.host),
        None => format!("{what}: no parent on {} offers this type", i.dest.host),
    };
    finding(
        "mdev",
        Severity::Error,
        message,
        Some("a vGPU moves only to the same type: pick a host with the same GPU and driver"),
    )
}

fn type_label(id: &str, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{id} '{n}'"),
        None => id.to_string(),
    }
}

/// Each VF: a plain one does not move; a typed NVIDIA one is checked by the destination's hook.
fn vfs(i: &Inputs<'_>) -> Vec<Finding> {
    i.domain
        .vf_requests()
        .map(|v| match &v.want {
            None => finding(
                "vf",
                Severity::Error,
                format!("VF {}: a plain VFIO VF (AMD's GIM VFs, NICs) cannot be migrated: its driver has no VFIO migration support, so QEMU refuses", v.address),
                Some("shut the domain down here and start it on the destination"),
            ),
            Some(_) => finding(
                "vf",
                Severity::Warning,
                format!("VF {}: a kernel-6.8+ NVIDIA vGPU VF; libvirt does not show {}'s VF types, its hook checks them at migrate begin", v.address, i.dest.host),
                Some("check `vgpuctl types` on the destination"),
            ),
        })
        .collect()
}

/// The mdev types a node device's XML offers (every `<type id=...>` inside a
/// `<capability type='mdev_types'>`, at any depth: PCI parents nest it in their `pci`
/// capability, other parents such as mtty have it as their own).
pub fn offers_from_nodedev(xml: &str) -> Vec<Offer> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut in_types = 0usize;
    let (mut parent, mut driver) = (String::new(), None);
    let mut out: Vec<Offer> = Vec::new();
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = e.local_name().as_ref().to_string();
                let attr = |k: &str| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == k)
                        .map(|a| a.value.to_string())
                };
                if name == "capability" && attr("type").as_deref() == Some("mdev_types") {
                    in_types += 1;
                }
                if name == "type" && in_types > 0 {
                    if let Some(id) = attr("id") {
                        out.push(Offer {
                            parent: parent.clone(),
                            driver: driver.clone(),
                            type_id: id,
                            name: None,
                            available: 0,
                        });
                    }
                }
                path.push(name);
                text.clear();
            }
            Ok(Event::Text(t)) => text.push_str(&t.xml_content(quick_xml::XmlVersion::Implicit1_0)),
            Ok(Event::End(_)) => {
                let name = path.pop().unwrap_or_default();
                let value = text.trim().to_string();
                let parent_el = path.last().map(String::as_str);
                match (parent_el, name.as_str()) {
                    (Some("device"), "name") => parent = value,
                    (Some("driver"), "name") if path.len() == 2 => driver = Some(value),
                    (Some("type"), "name") if in_types > 0 => {
                        if let Some(o) = out.last_mut() {
                            o.name = Some(value);
                        }
                    }
                    (Some("type"), "availableInstances") if in_types > 0 => {
                        if let Some(o) = out.last_mut() {
                            o.available = value.parse().unwrap_or(0);
                        }
                    }
                    (_, "capability") if in_types > 0 => in_types -= 1,
                    _ => {}
                }
                text.clear();
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PCI parent as libvirt 11 formats it (docs/formatnode.rst's NVIDIA example, trimmed).
    const PCI_PARENT: &str = "<device><name>pci_0000_82_00_0</name><driver><name>nvidia</name></driver>\
        <capability type='pci'><domain>0</domain><bus>130</bus>\
        <capability type='mdev_types'><type id='nvidia-46'><name>GRID P40-1Q</name><deviceAPI>vfio-pci</deviceAPI>\
        <availableInstances>24</availableInstances></type><type id='nvidia-47'><name>GRID P40-2Q</name>\
        <deviceAPI>vfio-pci</deviceAPI><availableInstances>0</availableInstances></type></capability></capability></device>";
    /// mtty as libvirt lists it: its own mdev_types capability, nested once more.
    const MTTY_PARENT: &str = "<device><name>mtty_mtty</name><path>/sys/devices/virtual/mtty/mtty</path>\
        <parent>computer</parent><capability type='mdev_types'><capability type='mdev_types'>\
        <type id='mtty-1'><name>Single port serial</name><deviceAPI>vfio-pci</deviceAPI><availableInstances>24</availableInstances></type>\
        <type id='mtty-2'><name>Dual port serial</name><deviceAPI>vfio-pci</deviceAPI><availableInstances>12</availableInstances></type>\
        </capability></capability></device>";

    fn side(host: &str) -> Side {
        Side {
            host: host.into(),
            libvirt: 11_003_000,
            qemu: 10_000_002,
        }
    }

    fn domain(meta: &str, devices: &str) -> Domain {
        let xml = format!("<domain type='qemu'><name>vm</name><uuid>6f2e9a4c-8d1b-4c1e-9a41-000000000099</uuid>\
            <metadata><vgpu:vgpu xmlns:vgpu='urn:vgpu-hook:domain:1'>{meta}</vgpu:vgpu></metadata><devices>{devices}</devices></domain>");
        Domain::parse(&xml).unwrap()
    }

    const ONE_MTTY2: &str =
        "<vgpu:mdev uuid='6f2e9a4c-8d1b-4c1e-9a41-000000000001' type='mtty-2'/>";

    fn run(dom: &Domain, live: Vec<Option<LiveType>>, offers: &str) -> Vec<Finding> {
        check(&Inputs {
            domain: dom,
            viommu: false,
            source: side("hosta"),
            dest: side("hostb"),
            live,
            offers: offers_from_nodedev(offers),
        })
    }

    fn errors(f: &[Finding]) -> Vec<&Finding> {
        f.iter().filter(|f| f.severity == Severity::Error).collect()
    }

    /// The message of the one error among the findings.
    fn the_error(f: &[Finding]) -> String {
        let e = errors(f);
        assert_eq!(e.len(), 1, "{f:?}");
        e[0].message.clone()
    }

    #[test]
    fn a_pci_parents_types_are_read_with_name_room_and_driver() {
        let o = offers_from_nodedev(PCI_PARENT);
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].type_id, "nvidia-47");
        assert_eq!(o[1].name.as_deref(), Some("GRID P40-2Q"));
        assert_eq!(o[1].available, 0);
        assert_eq!(o[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(o[0].parent, "pci_0000_82_00_0");
    }

    #[test]
    fn mttys_doubly_nested_types_are_read_too() {
        let o = offers_from_nodedev(MTTY_PARENT);
        let ids: Vec<&str> = o.iter().map(|o| o.type_id.as_str()).collect();
        assert_eq!(ids, ["mtty-1", "mtty-2"]);
        assert_eq!(o[1].available, 12);
        assert_eq!(o[1].driver, None);
    }

    #[test]
    fn the_same_type_with_room_there_is_a_yes() {
        let f = run(&domain(ONE_MTTY2, ""), vec![None], MTTY_PARENT);
        assert!(errors(&f).is_empty(), "{f:?}");
        assert!(f
            .iter()
            .any(|f| f.check == "mdev"
                && f.message.contains("hostb has room on mtty_mtty (12 free)")));
    }

    #[test]
    fn a_full_type_there_is_a_no_naming_the_host_and_room() {
        let full = MTTY_PARENT.replace(">12<", ">0<");
        let e = the_error(&run(&domain(ONE_MTTY2, ""), vec![None], &full));
        assert!(e.contains("no room on hostb: free 0 on mtty_mtty"), "{e}");
    }

    #[test]
    fn every_mdev_of_the_domain_needs_its_own_room() {
        let two = format!(
            "{ONE_MTTY2}<vgpu:mdev uuid='6f2e9a4c-8d1b-4c1e-9a41-000000000002' type='mtty-2'/>"
        );
        let one_left = MTTY_PARENT.replace(">12<", ">1<");
        let f = run(&domain(&two, ""), vec![None, None], &one_left);
        assert_eq!(errors(&f).len(), 1, "{f:?}");
    }

    #[test]
    fn the_live_type_decides_and_a_same_id_of_another_name_is_a_no() {
        let live = Some(LiveType {
            type_id: "nvidia-47".into(),
            name: Some("GRID P40-2Q".into()),
        });
        let dom = domain(
            "<vgpu:mdev uuid='6f2e9a4c-8d1b-4c1e-9a41-000000000001' profile='P40-2Q'/>",
            "",
        );
        let other_board = PCI_PARENT
            .replace("GRID P40-2Q", "GRID T4-2Q")
            .replace(">0<", ">4<");
        let e = the_error(&run(&dom, vec![live], &other_board));
        assert!(
            e.contains("nvidia-47 'GRID T4-2Q' is another vGPU type"),
            "{e}"
        );
    }

    #[test]
    fn an_nvidia_parent_brings_the_manager_version_warning() {
        let dom = domain(
            "<vgpu:mdev uuid='6f2e9a4c-8d1b-4c1e-9a41-000000000001' profile='P40-1Q'/>",
            "",
        );
        let f = run(&dom, vec![None], PCI_PARENT);
        assert!(errors(&f).is_empty(), "{f:?}");
        assert!(f
            .iter()
            .any(|f| f.check == "driver" && f.severity == Severity::Warning));
    }

    #[test]
    fn a_plain_vf_is_a_no() {
        let dom = domain(
            "<vgpu:vf address='0000:01:00.1'/>",
            "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/></source></hostdev>",
        );
        let f = run(&dom, vec![], MTTY_PARENT);
        let e = errors(&f);
        assert_eq!(e.len(), 1, "{f:?}");
        assert_eq!(e[0].check, "vf");
    }

    #[test]
    fn an_old_qemu_on_either_side_is_a_no() {
        let mut dest = side("hostb");
        dest.qemu = 7_002_000;
        let f = versions(&side("hosta"), &dest);
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.message.contains("QEMU 7.2.0 on hostb (< 8.1.0)"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_viommu_is_a_no() {
        let dom = domain(ONE_MTTY2, "");
        let f = check(&Inputs {
            domain: &dom,
            viommu: true,
            source: side("hosta"),
            dest: side("hostb"),
            live: vec![None],
            offers: offers_from_nodedev(MTTY_PARENT),
        });
        assert!(errors(&f).iter().any(|f| f.check == "domain"));
    }
}
