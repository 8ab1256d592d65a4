//! vgpuctl's in-place rewrite: on any domain document that parses, attaching devices and then
//! detaching them gives back the input byte for byte (unless two inputs attach to the same
//! document, which no detach can undo both of), and the attached document is well-formed (one
//! root, it parses again and has what was attached).
//!
//! Input: the first byte picks which devices to attach, the rest is the document.
#![no_main]

use libfuzzer_sys::fuzz_target;
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

/// Whether the document has a `<devices>`, `<metadata>` or `<…:vgpu>` with an end tag and
/// nothing but whitespace inside that an attach could have created: a line break in it, or
/// nothing at all in a document on one line.
fn has_created_like_empty_container(doc: &str) -> bool {
    let one_line = !doc.trim().contains('\n');
    let mut rest = doc;
    while let Some(i) = rest.find("</") {
        let after = &rest[i + 2..];
        let Some(close) = after.find('>') else { break };
        let qname = &after[..close];
        let local = qname.rsplit(':').next().unwrap_or(qname);
        if ["devices", "metadata", "vgpu"].contains(&local.trim_end()) {
            let before = &rest[..i];
            let inner_start = before.trim_end().len();
            let inner = &before[inner_start..];
            let opened = before[..inner_start].ends_with('>')
                && before[..inner_start]
                    .rfind('<')
                    .is_some_and(|o| before[o + 1..].starts_with(qname.trim_end()));
            if opened && (inner.contains('\n') || (one_line && inner.is_empty())) {
                return true;
            }
        }
        rest = after;
    }
    false
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
    // The identity, except where it cannot be: an input whose empty container is written the
    // way an attach creates one is not told apart from the input without it (see the xmledit
    // module); the same when the detach's result attaches to the very same document.
    if back != doc && !has_created_like_empty_container(doc) {
        let again = xmledit::attach(&back, &devs).ok();
        assert!(
            again.as_deref() == Some(attached.as_str()),
            "attach then detach is not the identity\n--- input\n{doc}\n--- attached\n{attached}\n--- back\n{back}"
        );
    }
});
