//! Property: for any well-formed domain XML (comments, entities, CDATA, both quote styles, other
//! namespaces' metadata, unknown elements, CRLF or LF, any indentation, self-closing and empty
//! elements, a BOM, one-line documents), attaching devices and then detaching them gives back
//! the input byte for byte, and the attached document carries exactly the requests asked for.
//!
//! Documents are generated with a non-empty `<devices>` and, when present, a non-empty
//! `<metadata>`; inputs with empty ones are checked by tests/xmledit_corpus.rs and the
//! xmledit_roundtrip fuzz target.

use proptest::prelude::*;

use vgpu_hook::ctl::xmledit::{self, NewDevice, Selector};
use vgpu_hook::model::domain::{Domain, MdevRequest, MdevWant, VfRequest, VfWant};
use vgpu_hook::model::names::{MdevUuid, Params, ParentName, Profile, TypeId};
use vgpu_hook::model::pci::PciAddress;

#[derive(Debug, Clone)]
struct Style {
    nl: &'static str,
    unit: &'static str,
    q: char,
    compact: bool,
}

impl Style {
    fn line(&self, depth: usize, text: &str) -> String {
        if self.compact {
            return text.to_string();
        }
        format!("{}{}{}", self.nl, self.unit.repeat(depth), text)
    }

    fn a(&self, k: &str, v: &str) -> String {
        format!("{k}={q}{v}{q}", q = self.q)
    }
}

fn style() -> impl Strategy<Value = Style> {
    (
        prop_oneof![Just("\n"), Just("\r\n")],
        prop_oneof![Just("  "), Just("    "), Just("\t"), Just("")],
        prop_oneof![Just('\''), Just('"')],
        prop::bool::weighted(0.15),
    )
        .prop_map(|(nl, unit, q, compact)| Style {
            nl,
            unit,
            q,
            compact,
        })
}

const TEXTS: &[&str] = &[
    "vm",
    "a&amp;b",
    "&#x41;&#66;c",
    "&lt;not a tag&gt;",
    "say &quot;hi&quot; &apos;x&apos;",
    "ünïcødé ☃",
    "two words",
];

/// One top-level child other than name/uuid/title/description/metadata/devices.
fn extra(s: &Style, pick: usize, d: usize) -> String {
    let q = s.q;
    match pick % 9 {
        0 => s.line(d, &format!("<memory {}>1048576</memory>", s.a("unit", "KiB"))),
        1 => s.line(d, &format!("<vcpu {}>2</vcpu>", s.a("placement", "static"))),
        2 => format!(
            "{}{}{}{}{}",
            s.line(d, "<features>"),
            s.line(d + 1, "<acpi/>"),
            s.line(d + 1, "<apic />"),
            s.line(d + 1, "<pae></pae>"),
            s.line(d, "</features >")
        ),
        3 => s.line(d, "<!-- a comment with <tags> & stuff -->"),
        4 => s.line(d, &format!("<clock {}/>", s.a("offset", "utc"))),
        5 => s.line(
            d,
            &format!("<x:ext xmlns:x={q}urn:ext{q} a = {q}1{q}><x:child/>text&amp;<![CDATA[<raw> & ]]></x:ext>"),
        ),
        6 => s.line(d, "<on_poweroff>destroy</on_poweroff>"),
        7 => s.line(d, "<?pi some data?>"),
        _ => format!(
            "{}{}{}",
            s.line(d, "<os>"),
            s.line(d + 1, &format!("<type {}>hvm</type>", s.a("arch", "x86_64"))),
            s.line(d, "</os>")
        ),
    }
}

const OUR_OLD: &str = "0a0b0c0d-0e0f-4a1b-8c2d-3e4f5a6b7c8d";

fn meta_item(s: &Style, pick: usize, d: usize) -> String {
    let q = s.q;
    match pick % 6 {
        0 => s.line(
            d,
            &format!("<app:info xmlns:app={q}urn:app:1{q}>text &amp; more</app:info>"),
        ),
        1 => s.line(d, "<!-- meta comment -->"),
        2 => s.line(d, &format!("<other:x xmlns:other={q}urn:o{q}/>")),
        3 => format!(
            "{}{}{}",
            s.line(d, &format!("<v:vgpu xmlns:v={q}urn:vgpu-hook:domain:1{q}>")),
            s.line(
                d + 1,
                &format!("<v:mdev uuid={q}{OUR_OLD}{q} type={q}nvidia-1{q}/>")
            ),
            s.line(d, "</v:vgpu>")
        ),
        4 => format!(
            "{}{}{}",
            s.line(d, &format!("<vgpu xmlns={q}urn:vgpu-hook:domain:1{q}>")),
            s.line(d + 1, &format!("<vf address={q}0000:7f:00.1{q}></vf>")),
            s.line(d, "</vgpu>")
        ),
        _ => format!(
            "{}{}{}",
            s.line(
                d,
                &format!("<vgpu:vgpu xmlns:vgpu={q}urn:vgpu-hook:domain:1{q}>")
            ),
            s.line(
                d + 1,
                &format!("<vgpu:mdev uuid={q}{OUR_OLD}{q} profile={q}A&amp;B{q}/>")
            ),
            s.line(d, "</vgpu:vgpu>")
        ),
    }
}

fn device_item(s: &Style, pick: usize, d: usize) -> String {
    let q = s.q;
    match pick % 8 {
        0 => s.line(d, "<emulator>/usr/bin/qemu-system-x86_64</emulator>"),
        1 => format!(
            "{}{}{}{}{}",
            s.line(d, &format!("<disk {} {}>", s.a("type", "file"), s.a("device", "disk"))),
            s.line(d + 1, &format!("<driver {} {}/>", s.a("name", "qemu"), s.a("type", "qcow2"))),
            s.line(d + 1, &format!("<source {}/>", s.a("file", "/var/lib/a&amp;b.qcow2"))),
            s.line(d + 1, &format!("<target {} {} />", s.a("dev", "vda"), s.a("bus", "virtio"))),
            s.line(d, "</disk>")
        ),
        2 => s.line(d, "<!-- devices: keep me -->"),
        3 => s.line(
            d,
            &format!("<hostdev mode={q}subsystem{q} type={q}pci{q} managed={q}yes{q}><source><address domain={q}0x0000{q} bus={q}0x01{q} slot={q}0x00{q} function={q}0x0{q}/></source></hostdev>"),
        ),
        4 => s.line(
            d,
            &format!("<hostdev mode={q}subsystem{q} type={q}mdev{q} model={q}vfio-pci{q}><source><address uuid={q}aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee{q}/></source></hostdev>"),
        ),
        5 => s.line(d, &format!("<memballoon {}/>", s.a("model", "none"))),
        6 => s.line(d, &format!("<input {} {} />", s.a("type", "tablet"), s.a("bus", "usb"))),
        _ => format!(
            "{}{}{}",
            s.line(d, &format!("<interface {}>", s.a("type", "network"))),
            s.line(d + 1, &format!("<source {}/>", s.a("network", "default"))),
            s.line(d, "</interface>")
        ),
    }
}

#[derive(Debug, Clone)]
struct DocSpec {
    style: Style,
    bom: bool,
    decl: bool,
    lead_comment: bool,
    name: usize,
    uuid: bool,
    title: Option<usize>,
    description: Option<usize>,
    metadata: Option<Vec<usize>>,
    before: Vec<usize>,
    devices: Vec<usize>,
    after: Vec<usize>,
    spaced_tags: bool,
    trailing: bool,
}

fn doc_spec() -> impl Strategy<Value = DocSpec> {
    (
        style(),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (
            0..TEXTS.len(),
            any::<bool>(),
            prop::option::of(0..TEXTS.len()),
            prop::option::of(0..TEXTS.len()),
        ),
        prop::option::of(prop::collection::vec(0usize..6, 1..4)),
        prop::collection::vec(0usize..9, 0..4),
        prop::collection::vec(0usize..8, 1..5),
        prop::collection::vec(0usize..9, 0..3),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                style,
                (bom, decl, lead_comment),
                (name, uuid, title, description),
                metadata,
                before,
                devices,
                after,
                (spaced_tags, trailing),
            )| {
                // At most one vgpu wrapper: libvirt keeps one element per namespace.
                let metadata = metadata.map(|mut m| {
                    let mut seen = false;
                    m.retain(|i| {
                        let ours = *i >= 3;
                        let keep = !(ours && seen);
                        seen |= ours;
                        keep
                    });
                    m
                });
                DocSpec {
                    style,
                    bom,
                    decl,
                    lead_comment,
                    name,
                    uuid,
                    title,
                    description,
                    metadata,
                    before,
                    devices,
                    after,
                    spaced_tags,
                    trailing,
                }
            },
        )
}

fn render_doc(d: &DocSpec) -> String {
    let s = &d.style;
    let q = s.q;
    let mut out = String::new();
    if d.bom {
        out.push('\u{feff}');
    }
    let sep = if s.compact { "" } else { s.nl };
    if d.decl {
        out.push_str(&format!(
            "<?xml version={q}1.0{q} encoding={q}UTF-8{q}?>{sep}"
        ));
    }
    if d.lead_comment {
        out.push_str(&format!("<!-- generated &amp; kept -->{sep}"));
    }
    out.push_str(&format!(
        "<domain {} {}>",
        s.a("type", "kvm"),
        s.a("xmlns:qemu", "http://libvirt.org/schemas/domain/qemu/1.0")
    ));
    out.push_str(&s.line(1, &format!("<name>{}</name>", TEXTS[d.name])));
    if d.uuid {
        out.push_str(&s.line(1, "<uuid>ad7bc399-ee94-4664-814e-9f0650fb15c5</uuid>"));
    }
    if let Some(t) = d.title {
        out.push_str(&s.line(1, &format!("<title>{}</title>", TEXTS[t])));
    }
    if let Some(t) = d.description {
        out.push_str(&s.line(
            1,
            &format!(
                "<description>{}<![CDATA[ <b>&</b> ]]></description>",
                TEXTS[t]
            ),
        ));
    }
    if let Some(items) = &d.metadata {
        out.push_str(&s.line(
            1,
            if d.spaced_tags {
                "<metadata >"
            } else {
                "<metadata>"
            },
        ));
        for &i in items {
            out.push_str(&meta_item(s, i, 2));
        }
        out.push_str(&s.line(1, "</metadata>"));
    }
    for &i in &d.before {
        out.push_str(&extra(s, i, 1));
    }
    out.push_str(&s.line(1, "<devices>"));
    for &i in &d.devices {
        out.push_str(&device_item(s, i, 2));
    }
    out.push_str(&s.line(
        1,
        if d.spaced_tags {
            "</devices >"
        } else {
            "</devices>"
        },
    ));
    for &i in &d.after {
        out.push_str(&extra(s, i, 1));
    }
    out.push_str(&s.line(0, "</domain>"));
    if d.trailing {
        out.push_str(&format!("{sep}<!-- trailing -->{sep}"));
    }
    out
}

const PROFILES: &[&str] = &["GRID P40-2Q", "P40-2Q", "A&B <x>", "it's \"q\""];
const TYPES: &[&str] = &["nvidia-47", "mtty-2", "i915-GVTg_V5_4"];

fn new_device() -> impl Strategy<Value = NewDevice> {
    prop_oneof![
        (
            any::<u128>(),
            any::<bool>(),
            0..PROFILES.len(),
            0..TYPES.len(),
            0usize..3,
            any::<bool>()
        )
            .prop_map(|(u, profile, p, t, parents, params)| {
                let uuid = uuid::Uuid::from_u128(u).hyphenated().to_string();
                NewDevice::Mdev(MdevRequest {
                    uuid: MdevUuid::parse(&uuid).unwrap(),
                    want: if profile {
                        MdevWant::Profile(Profile::parse(PROFILES[p]).unwrap())
                    } else {
                        MdevWant::Type(TypeId::parse(TYPES[t]).unwrap())
                    },
                    parents: ["0000:82:00.0", "mtty"][..parents.min(2)]
                        .iter()
                        .map(|p| ParentName::parse(p).unwrap())
                        .collect(),
                    params: params.then(|| Params::parse("frame_rate_limiter=0").unwrap()),
                })
            }),
        (0x10u8..0x20, 0u8..32, 0u8..8, any::<bool>(), 0usize..3).prop_map(
            |(bus, slot, function, managed, want)| NewDevice::Vf {
                request: VfRequest {
                    address: PciAddress::new(0, bus, slot, function).unwrap(),
                    want: match want {
                        0 => None,
                        1 => Some(VfWant::Type(1145)),
                        _ => Some(VfWant::Profile(Profile::parse("NVIDIA L40S-4Q").unwrap())),
                    },
                },
                managed,
            }
        ),
    ]
}

fn devices() -> impl Strategy<Value = Vec<NewDevice>> {
    prop::collection::vec(new_device(), 1..5).prop_map(|mut v| {
        let mut keys = Vec::new();
        v.retain(|d| {
            let k = d.key();
            let fresh = !keys.contains(&k);
            keys.push(k);
            fresh
        });
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn attach_then_detach_gives_back_the_input_byte_for_byte(spec in doc_spec(), devs in devices()) {
        let doc = render_doc(&spec);
        let attached = xmledit::attach(&doc, &devs).unwrap();
        let mut back = attached.clone();
        for d in &devs {
            back = xmledit::detach(&back, &d.selector()).unwrap().xml;
        }
        prop_assert_eq!(back, doc);
    }

    #[test]
    fn attached_document_asks_for_exactly_the_new_devices_besides_the_old(spec in doc_spec(), devs in devices()) {
        let doc = render_doc(&spec);
        let before = Domain::parse(&doc).unwrap();
        let attached = xmledit::attach(&doc, &devs).unwrap();
        let after = Domain::parse(&attached).unwrap();
        prop_assert!(after.has_metadata);
        let mut want = before.requests.clone();
        want.extend(devs.iter().map(NewDevice::request));
        prop_assert_eq!(&after.requests, &want);
        for d in &devs {
            match d {
                NewDevice::Mdev(m) => prop_assert!(after.has_mdev_hostdev(&m.uuid)),
                NewDevice::Vf { request, .. } => prop_assert!(after.pci_hostdev(request.address).is_some()),
            }
        }
    }

    #[test]
    fn detach_all_undoes_an_attach_to_a_domain_without_our_devices(spec in doc_spec(), devs in devices()) {
        let doc = render_doc(&spec);
        prop_assume!(xmledit::entries(&doc).unwrap().is_empty());
        let attached = xmledit::attach(&doc, &devs).unwrap();
        let d = xmledit::detach(&attached, &Selector::All).unwrap();
        prop_assert_eq!(d.removed.len(), devs.len());
        prop_assert_eq!(d.xml, doc);
    }
}
