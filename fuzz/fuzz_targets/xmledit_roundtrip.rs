//! vgpuctl's in-place rewrite: on any domain document that parses, attaching devices and then
//! detaching them gives back the input byte for byte (what the attach added or opened is
//! recorded, so nothing needs telling apart afterwards; a document that already carries an
//! earlier attach's record gets that one undone too), and the attached document is well-formed
//! (one root, it parses again and has what was attached), as is our element the way vgpuctl
//! hands it to libvirt's metadata API.
//!
//! Input: the first byte picks which devices to attach, the rest is the document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quick_xml::events::Event;
use vgpu_hook::ctl::xmledit::{self, EditError, NewDevice, Selector};
use vgpu_hook::model::domain::{Domain, MdevRequest, MdevWant, VfRequest, VfWant};
use vgpu_hook::model::names::{MdevUuid, Params, ParentName, Profile, TypeId};
use vgpu_hook::model::pci::PciAddress;

fn devices(pick: u8) -> Vec<NewDevice> {
    let mdev = |uuid: &str, profile: bool| {
        NewDevice::Mdev(MdevRequest {
            uuid: MdevUuid::parse(uuid).unwrap(),
            want: if profile {
                MdevWant::Profile(Profile::parse("A&B <x> 'q'").unwrap())
            } else {
                MdevWant::Type(TypeId::parse("nvidia-47").unwrap())
            },
            parents: vec![ParentName::parse("0000:82:00.0").unwrap()],
            params: Some(Params::parse("frame_rate_limiter=0").unwrap()),
        })
    };
    let vf = |addr: &str, managed: bool| NewDevice::Vf {
        request: VfRequest {
            address: addr.parse::<PciAddress>().unwrap(),
            want: managed.then_some(VfWant::Type(1145)),
        },
        managed,
    };
    let all = [
        mdev("6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b", false),
        vf("0000:41:00.4", false),
        mdev("11111111-2222-4333-8444-555555555555", true),
        vf("0000:04:02.1", true),
    ];
    let mut out: Vec<NewDevice> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| pick & (1 << i) != 0)
        .map(|(_, d)| d.clone())
        .collect();
    if out.is_empty() {
        out.push(all[0].clone());
    }
    out
}

/// Whether our element's start tag carries a record of what an attach created: an attribute
/// named `created`, read by quick-xml (a value may hold `>` or the word itself).
fn carries_record(doc: &str) -> bool {
    let Some(element) = xmledit::metadata_element(doc).ok().flatten() else {
        return false;
    };
    let mut reader = quick_xml::Reader::from_str(&element);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                return e
                    .attributes()
                    .with_checks(false)
                    .flatten()
                    .any(|a| a.key.as_ref() == "created")
            }
            Ok(Event::Eof) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

/// Reads `xml` to its end with quick-xml (end tags checked against start tags).
fn well_formed(xml: &str) -> Result<(), quick_xml::Error> {
    let mut reader = quick_xml::Reader::from_str(xml);
    while reader.read_event()? != Event::Eof {}
    Ok(())
}

fn selector(d: &NewDevice) -> Selector {
    match d {
        NewDevice::Mdev(m) => Selector::Uuid(m.uuid.clone()),
        NewDevice::Vf { request, .. } => Selector::Address(request.address),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(doc) = std::str::from_utf8(rest) else {
        return;
    };
    if Domain::parse(doc).is_err() {
        return;
    }
    let devs = devices(pick);
    let attached = match xmledit::attach(doc, &devs) {
        Ok(a) => a,
        // Not one <domain> element (vgpuctl is stricter than the hook's reader), or a device
        // already there: refused, nothing to check.
        Err(EditError::Syntax { .. } | EditError::NotDomain(_) | EditError::Duplicate(_)) => return,
        Err(e) => panic!("attach refused a domain document: {e}"),
    };
    // Well-formed: one root element, every element closed (xmledit's own reader is strict).
    if let Err(e) = xmledit::entries(&attached) {
        panic!("attach produced a document that is not well-formed: {e}\n{attached}");
    }
    // What vgpuctl hands to libvirt's metadata API is well-formed too.
    match xmledit::metadata_element(&attached) {
        Ok(Some(element)) => well_formed(&element)
            .unwrap_or_else(|e| panic!("our element as libvirt takes it is not well-formed: {e}\n{element}")),
        other => panic!("the attached document has no element of ours: {other:?}\n{attached}"),
    }
    let parsed = Domain::parse(&attached).unwrap_or_else(|e| {
        panic!("attach produced a document that does not parse: {e}\n{attached}")
    });
    for d in &devs {
        match d {
            NewDevice::Mdev(m) => assert!(parsed.has_mdev_hostdev(&m.uuid), "{attached}"),
            NewDevice::Vf { request, .. } => {
                assert!(parsed.pci_hostdev(request.address).is_some(), "{attached}")
            }
        }
    }
    let mut back = attached.clone();
    for d in &devs {
        back = xmledit::detach(&back, &selector(d))
            .unwrap_or_else(|e| panic!("detach of an attached device failed: {e}\n{attached}"))
            .xml;
    }
    if carries_record(doc) {
        // An earlier attach's record came in with the document: detach undoes what it names
        // too (that attach's <metadata>, our element), so the input is not what comes back.
        return;
    }
    assert!(
        back == doc,
        "attach then detach is not the identity\n--- input\n{doc}\n--- attached\n{attached}\n--- back\n{back}"
    );
});
