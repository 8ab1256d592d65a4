//! The domain XML libvirt hands the hook on stdin, reduced to what the hook acts on.
//!
//! The hook cannot change the definition at start; it only reads it. What it needs is the domain's
//! name and UUID, the requests in our metadata namespace (`urn:vgpu-hook:domain:1`, matched by
//! namespace, never by prefix), and the `<hostdev>` entries those requests must agree with. The
//! migrate/restore filter also needs the byte span of each PCI hostdev's source `<address/>` so
//! it can rewrite that one element and leave every other byte as it was.

use std::ops::Range;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use crate::model::names::{MdevUuid, NameError, Params, ParentName, Profile, TypeId};
use crate::model::pci::PciAddress;
use crate::model::scheduler::Scheduler;

/// Our metadata namespace.
pub const NAMESPACE: &str = "urn:vgpu-hook:domain:1";

/// What a `vgpu:mdev` entry asks to be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdevWant {
    /// An exact sysfs type id (`nvidia-47`).
    Type(TypeId),
    /// A profile name, full or short (`GRID P40-2Q`, `P40-2Q`).
    Profile(Profile),
}

impl std::fmt::Display for MdevWant {
    /// The type id or profile as the operator wrote it, for messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MdevWant::Type(t) => write!(f, "{t}"),
            MdevWant::Profile(p) => write!(f, "{p}"),
        }
    }
}

/// One `vgpu:mdev` entry: the mdev with this UUID belongs to the domain while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevRequest {
    /// The mdev's UUID, as the `<hostdev type='mdev'>` names it.
    pub uuid: MdevUuid,
    /// What to create.
    pub want: MdevWant,
    /// Where it may be created; empty means any configured parent.
    pub parents: Vec<ParentName>,
    /// NVIDIA `vgpu_params` to write after creation.
    pub params: Option<Params>,
}

/// What vGPU type a kernel-6.8+ NVIDIA VF should be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VfWant {
    /// A numeric NVIDIA vGPU type id as listed in `creatable_vgpu_types`.
    Type(u32),
    /// A profile name, full or short.
    Profile(Profile),
}

impl VfWant {
    /// Whether an entry of a VF's `creatable_vgpu_types` (id and name) is this want: the id,
    /// or the profile matched by [`Profile::matches`]. The one rule for the hook and vgpuctl.
    pub fn matches(&self, id: u32, name: &str) -> bool {
        match self {
            VfWant::Type(t) => *t == id,
            VfWant::Profile(p) => p.matches(name),
        }
    }
}

impl std::fmt::Display for VfWant {
    /// The type id or profile as the operator wrote it, for messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VfWant::Type(t) => write!(f, "{t}"),
            VfWant::Profile(p) => write!(f, "{p}"),
        }
    }
}

/// One `vgpu:vf` entry: the VF at this address belongs to the domain while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfRequest {
    /// The VF's host address, as the PCI `<hostdev>` names it.
    pub address: PciAddress,
    /// For NVIDIA kernel-6.8+ VFs: the vGPU type to set.
    pub want: Option<VfWant>,
}

/// A request from our metadata, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A mediated device.
    Mdev(MdevRequest),
    /// A whole SR-IOV VF.
    Vf(VfRequest),
}

/// A `<hostdev>` of the domain, as far as the hook cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hostdev {
    /// `<hostdev type='mdev'>` with its source UUID (as written).
    Mdev {
        /// The UUID attribute.
        uuid: String,
        /// Byte range of the source `<address .../>` element in the document.
        source_span: Range<usize>,
    },
    /// `<hostdev type='pci'>`, or `<interface type='hostdev'>` (libvirt's way to give a guest a
    /// NIC's VF, which is a PCI hostdev with network settings).
    Pci {
        /// The host-side source address.
        address: PciAddress,
        /// `managed='yes'`: libvirt binds vfio-pci itself.
        managed: bool,
        /// Byte range of the source `<address .../>` element in the document.
        source_span: Range<usize>,
    },
}

/// The parts of a domain definition the hook acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Domain {
    /// `<name>`.
    pub name: String,
    /// `<uuid>`.
    pub uuid: String,
    /// Whether our metadata element is present at all.
    pub has_metadata: bool,
    /// Requests from our metadata.
    pub requests: Vec<Request>,
    /// Hostdevs of the domain.
    pub hostdevs: Vec<Hostdev>,
    /// Where on the host the domain wants to run, as its definition says.
    pub numa: NumaWish,
    /// The vGPU scheduling policy the domain's vGPUs need (`<vgpu:vgpu scheduler="...">`): they
    /// go only to GPUs that run it.
    pub scheduler: Option<Scheduler>,
}

/// The host NUMA placement a definition asks for, as written: node sets (`<numatune>`'s
/// `memory` and `memnode`, which also bind guest `<numa>` cells to host nodes) and CPU sets
/// (`<vcpu cpuset>`, `<cputune>`'s `vcpupin` and `emulatorpin`). Turned into host nodes by
/// the allocation, which knows the host's CPUs; empty when the domain has no wishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NumaWish {
    /// Host node sets.
    pub nodesets: Vec<String>,
    /// Host CPU sets.
    pub cpusets: Vec<String>,
}

impl NumaWish {
    /// Whether the definition says anything about host placement.
    pub fn is_empty(&self) -> bool {
        self.nodesets.is_empty() && self.cpusets.is_empty()
    }
}

/// Why a domain XML could not be used; shown to the operator as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The document is not well-formed XML or not UTF-8.
    #[error("domain XML is not well-formed near byte {position}: {message}")]
    Syntax {
        /// Byte offset of the problem.
        position: u64,
        /// The parser's message.
        message: String,
    },
    /// Our metadata is present but says something invalid.
    #[error("metadata {element}: {message}")]
    Metadata {
        /// Which element (`vgpu:mdev #2`).
        element: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// Whether the document can contain our metadata at all. This is the fast path for the
/// overwhelming majority of calls (domains that ask for nothing): a substring search, no parse.
pub fn mentions_namespace(xml: &[u8]) -> bool {
    let needle = NAMESPACE.as_bytes();
    xml.windows(needle.len()).any(|w| w == needle)
}

fn unescaped(raw: &str) -> Option<String> {
    quick_xml::escape::unescape(raw)
        .ok()
        .map(|c| c.into_owned())
}

/// Attributes of one element, decoded; refusal of duplicates is quick-xml's.
fn attributes(e: &BytesStart<'_>, pos: u64) -> Result<Vec<(String, String)>, DomainError> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| DomainError::Syntax {
            position: pos,
            message: err.to_string(),
        })?;
        let value = unescaped(&a.value).ok_or_else(|| DomainError::Syntax {
            position: pos,
            message: format!("bad entity in attribute {}", a.key.as_ref()),
        })?;
        out.push((a.key.as_ref().to_string(), value));
    }
    Ok(out)
}

fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn metadata_err(element: &str, message: impl Into<String>) -> DomainError {
    DomainError::Metadata {
        element: element.to_string(),
        message: message.into(),
    }
}

fn from_name_error(element: &str, attr: &str, e: NameError) -> DomainError {
    metadata_err(element, format!("{attr}: {e}"))
}

fn check_known(
    element: &str,
    attrs: &[(String, String)],
    known: &[&str],
) -> Result<(), DomainError> {
    for (k, _) in attrs {
        if k.starts_with("xmlns") {
            continue;
        }
        if !known.contains(&k.as_str()) {
            return Err(metadata_err(
                element,
                format!(
                    "unknown attribute '{}' (expected {})",
                    crate::printable(k, 40),
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Parses a `parent="..."` list: PCI addresses (normalised) or mdev bus names.
fn parse_parents(element: &str, s: &str) -> Result<Vec<ParentName>, DomainError> {
    let out = ParentName::parse_list(s).map_err(|e| from_name_error(element, "parent", e))?;
    if out.is_empty() {
        return Err(metadata_err(
            element,
            "parent: empty list (omit the attribute to allow any configured parent)",
        ));
    }
    Ok(out)
}

fn mdev_request(element: &str, attrs: &[(String, String)]) -> Result<MdevRequest, DomainError> {
    check_known(
        element,
        attrs,
        &["uuid", "type", "profile", "parent", "params"],
    )?;
    let uuid = attr(attrs, "uuid").ok_or_else(|| {
        metadata_err(
            element,
            "missing uuid (the UUID of the matching <hostdev type='mdev'>)",
        )
    })?;
    let uuid = MdevUuid::parse(uuid).map_err(|e| from_name_error(element, "uuid", e))?;
    let want = match (attr(attrs, "type"), attr(attrs, "profile")) {
        (Some(t), None) => {
            MdevWant::Type(TypeId::parse(t).map_err(|e| from_name_error(element, "type", e))?)
        }
        (None, Some(p)) => MdevWant::Profile(
            Profile::parse(p).map_err(|e| from_name_error(element, "profile", e))?,
        ),
        (Some(_), Some(_)) => {
            return Err(metadata_err(
                element,
                "give either type or profile, not both",
            ))
        }
        (None, None) => {
            return Err(metadata_err(
                element,
                "missing type or profile (e.g. type=\"nvidia-47\" or profile=\"GRID P40-2Q\")",
            ))
        }
    };
    let parents = match attr(attrs, "parent") {
        Some(p) => parse_parents(element, p)?,
        None => Vec::new(),
    };
    let params = attr(attrs, "params")
        .map(|p| Params::parse(p).map_err(|e| from_name_error(element, "params", e)))
        .transpose()?;
    Ok(MdevRequest {
        uuid,
        want,
        parents,
        params,
    })
}

/// The root element's `scheduler` wish, if any (`xmlns` declarations are not ours to check).
fn root_scheduler(attrs: &[(String, String)]) -> Result<Option<Scheduler>, DomainError> {
    attr(attrs, "scheduler")
        .map(|s| {
            Scheduler::parse(s.trim())
                .map_err(|e| metadata_err("vgpu:vgpu", format!("scheduler: {e}")))
        })
        .transpose()
}

fn vf_request(element: &str, attrs: &[(String, String)]) -> Result<VfRequest, DomainError> {
    check_known(element, attrs, &["address", "type", "profile"])?;
    let address = attr(attrs, "address").ok_or_else(|| {
        metadata_err(
            element,
            "missing address (the VF's PCI address, like 0000:04:02.0)",
        )
    })?;
    let address: PciAddress = address
        .parse()
        .map_err(|e| metadata_err(element, format!("address: {e}")))?;
    let want = match (attr(attrs, "type"), attr(attrs, "profile")) {
        (Some(t), None) => Some(VfWant::Type(
            t.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0 && t.trim().len() <= 10)
                .ok_or_else(|| {
                    metadata_err(
                        element,
                        format!(
                            "type: '{}' is not a vGPU type id (expected the number from creatable_vgpu_types, like 1145)",
                            crate::printable(t, 40)
                        ),
                    )
                })?,
        )),
        (None, Some(p)) => Some(VfWant::Profile(
            Profile::parse(p).map_err(|e| from_name_error(element, "profile", e))?,
        )),
        (Some(_), Some(_)) => return Err(metadata_err(element, "give either type or profile, not both")),
        (None, None) => None,
    };
    Ok(VfRequest { address, want })
}

impl Domain {
    /// The `vgpu:mdev` requests, in order.
    pub fn mdev_requests(&self) -> impl Iterator<Item = &MdevRequest> {
        self.requests.iter().filter_map(|r| match r {
            Request::Mdev(m) => Some(m),
            Request::Vf(_) => None,
        })
    }

    /// The `vgpu:vf` requests, in order.
    pub fn vf_requests(&self) -> impl Iterator<Item = &VfRequest> {
        self.requests.iter().filter_map(|r| match r {
            Request::Vf(v) => Some(v),
            Request::Mdev(_) => None,
        })
    }

    /// Parses a domain definition. Fails only on malformed XML or invalid metadata of ours.
    pub fn parse(xml: &str) -> Result<Domain, DomainError> {
        let mut reader = NsReader::from_str(xml);
        let mut p = Parser::default();
        loop {
            let start = reader.buffer_position();
            let (ours, event) = match reader.read_resolved_event() {
                Ok((ns, event)) => (
                    matches!(ns, ResolveResult::Bound(n) if n.0 == NAMESPACE),
                    event,
                ),
                Err(e) => {
                    let message = e.to_string();
                    return Err(DomainError::Syntax {
                        position: reader.error_position(),
                        message,
                    });
                }
            };
            let span = start..reader.buffer_position();
            match event {
                Event::Start(ref e) => p.open(ours, e, span, false)?,
                Event::Empty(ref e) => p.open(ours, e, span, true)?,
                Event::Text(t) if p.text_target.is_some() => {
                    p.text
                        .push_str(&t.xml_content(quick_xml::XmlVersion::Implicit1_0));
                }
                Event::GeneralRef(r) if p.text_target.is_some() => p.text.push_str(&resolve(&r)),
                Event::End(_) => p.close(),
                Event::Eof => return p.finish(span.end),
                _ => {}
            }
        }
    }

    /// The `<hostdev>` a VF request must come with, if present.
    pub fn pci_hostdev(&self, address: PciAddress) -> Option<&Hostdev> {
        self.hostdevs
            .iter()
            .find(|h| matches!(h, Hostdev::Pci { address: a, .. } if *a == address))
    }

    /// Whether a `<hostdev type='mdev'>` names this UUID.
    pub fn has_mdev_hostdev(&self, uuid: &MdevUuid) -> bool {
        self.mdev_hostdev(uuid).is_some()
    }

    /// The `<hostdev type='mdev'>` naming this UUID, if any.
    pub fn mdev_hostdev(&self, uuid: &MdevUuid) -> Option<&Hostdev> {
        self.hostdevs.iter().find(
            |h| matches!(h, Hostdev::Mdev { uuid: u, .. } if u.eq_ignore_ascii_case(uuid.as_str())),
        )
    }
}

/// Text of a character or entity reference (`&#233;`, `&amp;`); empty when unknown.
fn resolve(r: &quick_xml::events::BytesRef<'_>) -> String {
    match r.resolve_char_ref() {
        Ok(Some(c)) => c.to_string(),
        _ => quick_xml::escape::resolve_predefined_entity(r.as_ref())
            .map(str::to_string)
            .unwrap_or_default(),
    }
}

/// The walk over one document: where it is, what it has found, and what our metadata has named
/// so far (to refuse duplicates).
#[derive(Default)]
struct Parser {
    dom: Domain,
    /// Open elements as (in our namespace, local name).
    path: Vec<(bool, String)>,
    /// Which text the current element carries (`name` or `uuid`).
    text_target: Option<&'static str>,
    text: String,
    hostdev_type: Option<String>,
    hostdev_managed: bool,
    mdevs: Vec<MdevUuid>,
    vfs: Vec<PciAddress>,
    /// `<metadata>` elements of the domain opened so far: only the first one counts, as libvirt
    /// keeps only `./metadata[1]` of a definition (domain_conf.c) and vgpuctl edits that one.
    metadata_seen: usize,
}

impl Parser {
    /// A start (or empty) element.
    fn open(
        &mut self,
        ours: bool,
        e: &BytesStart<'_>,
        span: Range<u64>,
        empty: bool,
    ) -> Result<(), DomainError> {
        let local = e.local_name().as_ref().to_string();
        let names: Vec<&str> = self.path.iter().map(|(_, n)| n.as_str()).collect();
        if !ours && names.as_slice() == ["domain"] && local == "metadata" {
            self.metadata_seen += 1;
        }
        let first = self.metadata_seen == 1;
        let in_metadata = first && names.as_slice() == ["domain", "metadata"];
        let in_ours =
            first && self.path.len() == 3 && self.path[2].0 && self.path[1].1 == "metadata";
        if ours && in_metadata && local == "vgpu" {
            self.dom.has_metadata = true;
            self.dom.scheduler = root_scheduler(&attributes(e, span.start)?)?;
        } else if ours && in_ours {
            self.request(&local, &attributes(e, span.start)?)?;
        } else if !ours {
            self.libvirt_element(&local, e, span)?;
        }
        if !empty {
            self.path.push((ours, local));
            self.text.clear();
        } else if self.text_target.is_some() {
            self.text_target = None;
        }
        Ok(())
    }

    /// One request of ours (`vgpu:mdev`, `vgpu:vf`), each named once.
    fn request(&mut self, local: &str, attrs: &[(String, String)]) -> Result<(), DomainError> {
        match local {
            "mdev" => {
                let el = format!("vgpu:mdev #{}", self.mdevs.len() + 1);
                let r = mdev_request(&el, attrs)?;
                if self.mdevs.contains(&r.uuid) {
                    let why = format!("uuid {} is listed twice", r.uuid);
                    return Err(metadata_err(&el, why));
                }
                self.mdevs.push(r.uuid.clone());
                self.dom.requests.push(Request::Mdev(r));
            }
            "vf" => {
                let el = format!("vgpu:vf #{}", self.vfs.len() + 1);
                let r = vf_request(&el, attrs)?;
                if self.vfs.contains(&r.address) {
                    let why = format!("address {} is listed twice", r.address);
                    return Err(metadata_err(&el, why));
                }
                self.vfs.push(r.address);
                self.dom.requests.push(Request::Vf(r));
            }
            other => {
                return Err(metadata_err(
                    &format!("vgpu:{}", crate::printable(other, 40)),
                    "unknown element (expected vgpu:mdev or vgpu:vf)",
                ))
            }
        }
        Ok(())
    }

    /// libvirt's own elements that matter: the name, the UUID and the hostdevs.
    fn libvirt_element(
        &mut self,
        local: &str,
        e: &BytesStart<'_>,
        span: Range<u64>,
    ) -> Result<(), DomainError> {
        let names: Vec<&str> = self.path.iter().map(|(_, n)| n.as_str()).collect();
        match (names.as_slice(), local) {
            (["domain"], "name") => self.text_target = Some("name"),
            (["domain"], "uuid") => self.text_target = Some("uuid"),
            (["domain", "devices"], "hostdev") => {
                let attrs = attributes(e, span.start)?;
                self.hostdev_type = attr(&attrs, "type").map(str::to_string);
                self.hostdev_managed = attr(&attrs, "managed") == Some("yes");
            }
            (["domain", "devices"], "interface") => {
                let attrs = attributes(e, span.start)?;
                let hostdev = attr(&attrs, "type") == Some("hostdev");
                self.hostdev_type = hostdev.then(|| "pci".to_string());
                self.hostdev_managed = attr(&attrs, "managed") == Some("yes");
            }
            (["domain", "devices", "hostdev" | "interface", "source"], "address") => {
                let attrs = attributes(e, span.start)?;
                self.hostdev_source(&attrs, span);
            }
            (["domain"], "vcpu")
            | (["domain", "cputune"], "vcpupin")
            | (["domain", "cputune"], "emulatorpin") => {
                let attrs = attributes(e, span.start)?;
                if let Some(set) = attr(&attrs, "cpuset") {
                    self.dom.numa.cpusets.push(set.to_string());
                }
            }
            (["domain", "numatune"], "memory") | (["domain", "numatune"], "memnode") => {
                let attrs = attributes(e, span.start)?;
                if let Some(set) = attr(&attrs, "nodeset") {
                    self.dom.numa.nodesets.push(set.to_string());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A hostdev's `<source><address/>`: an mdev UUID or a PCI address.
    fn hostdev_source(&mut self, attrs: &[(String, String)], span: Range<u64>) {
        match self.hostdev_type.as_deref() {
            Some("mdev") => {
                if let Some(u) = attr(attrs, "uuid") {
                    self.dom.hostdevs.push(Hostdev::Mdev {
                        uuid: u.to_string(),
                        source_span: span.start as usize..span.end as usize,
                    });
                }
            }
            Some("pci") => {
                let get = |k| attr(attrs, k).unwrap_or("0");
                let address = PciAddress::from_libvirt(
                    get("domain"),
                    get("bus"),
                    get("slot"),
                    get("function"),
                );
                if let Some(address) = address {
                    self.dom.hostdevs.push(Hostdev::Pci {
                        address,
                        managed: self.hostdev_managed,
                        source_span: span.start as usize..span.end as usize,
                    });
                }
            }
            _ => {}
        }
    }

    /// An end element: the text it carried is stored, a hostdev is left.
    fn close(&mut self) {
        if let Some(target) = self.text_target.take() {
            let value = self.text.trim().to_string();
            match target {
                "name" => self.dom.name = value,
                _ => self.dom.uuid = value,
            }
        }
        if let Some((_, name)) = self.path.pop() {
            if (name == "hostdev" || name == "interface") && self.path.len() == 2 {
                self.hostdev_type = None;
            }
        }
    }

    /// The end of the document: complete only when every element was closed.
    fn finish(self, position: u64) -> Result<Domain, DomainError> {
        if let Some((_, open)) = self.path.last() {
            return Err(DomainError::Syntax {
                position,
                message: format!("document ends inside <{}>", crate::printable(open, 40)),
            });
        }
        Ok(self.dom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/hook-stdin-prepare-begin.xml");

    fn with_metadata(meta: &str, devices: &str) -> String {
        FIXTURE
            .replace(
                "  <vcpu placement='static'>1</vcpu>",
                &format!(
                    "  <metadata>\n{meta}\n  </metadata>\n  <vcpu placement='static'>1</vcpu>"
                ),
            )
            .replace(
                "    <memballoon model='none'/>",
                &format!("{devices}\n    <memballoon model='none'/>"),
            )
    }

    const U1: &str = "6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b";

    #[test]
    fn numa_wishes_are_read_from_numatune_vcpu_and_cputune() {
        let xml = "<domain><name>a</name><uuid>u</uuid><vcpu placement='static' cpuset='0-3'>4</vcpu><cputune><vcpupin vcpu='0' cpuset='1'/><emulatorpin cpuset='2-3'/></cputune><numatune><memory mode='strict' nodeset='1'/><memnode cellid='0' mode='strict' nodeset='0'/></numatune><devices/></domain>";
        let d = Domain::parse(xml).unwrap();
        assert_eq!(d.numa.cpusets, ["0-3", "1", "2-3"]);
        assert_eq!(d.numa.nodesets, ["1", "0"]);
    }

    #[test]
    fn automatic_placement_is_no_wish() {
        let xml = "<domain><name>a</name><vcpu placement='auto'>2</vcpu><numatune><memory mode='strict' placement='auto'/></numatune></domain>";
        assert!(Domain::parse(xml).unwrap().numa.is_empty());
    }

    /// Our element, with one mdev of `uuid`.
    fn ours(uuid: &str) -> String {
        format!("<vgpu:vgpu xmlns:vgpu='{NAMESPACE}'><vgpu:mdev uuid='{uuid}' type='mtty-2'/></vgpu:vgpu>")
    }

    #[test]
    fn only_the_first_metadata_counts_as_libvirt_keeps_only_it() {
        let second_only = format!(
            "<domain><name>a</name><metadata/><metadata>{}</metadata></domain>",
            ours(U1)
        );
        let d = Domain::parse(&second_only).unwrap();
        assert!(!d.has_metadata && d.requests.is_empty(), "{:?}", d.requests);
        let both = format!(
            "<domain><name>a</name><metadata>{}</metadata><metadata>{}</metadata></domain>",
            ours(U1),
            ours(U1)
        );
        let d = Domain::parse(&both)
            .expect("the second <metadata> is not read, so nothing is listed twice");
        assert_eq!(d.requests.len(), 1);
    }

    #[test]
    fn real_libvirt_capture_without_metadata_parses_name_and_uuid() {
        let d = Domain::parse(FIXTURE).unwrap();
        assert_eq!(d.name, "tiny");
        assert_eq!(d.uuid, "ad7bc399-ee94-4664-814e-9f0650fb15c5");
        assert!(!d.has_metadata && d.requests.is_empty());
    }

    #[test]
    fn fast_path_sees_no_namespace_in_plain_domain() {
        assert!(!mentions_namespace(FIXTURE.as_bytes()));
    }

    #[test]
    fn metadata_is_matched_by_namespace_not_prefix() {
        let xml = with_metadata(
            &format!(
                "<g:vgpu xmlns:g='{NAMESPACE}'><g:mdev uuid='{U1}' profile='P40-2Q'/></g:vgpu>"
            ),
            "",
        );
        let d = Domain::parse(&xml).unwrap();
        assert!(d.has_metadata);
        assert_eq!(d.requests.len(), 1);
    }

    #[test]
    fn vgpu_prefix_bound_to_another_namespace_is_not_ours() {
        let xml = with_metadata(
            &format!("<vgpu:vgpu xmlns:vgpu='urn:other'><vgpu:mdev uuid='{U1}' profile='P40-2Q'/></vgpu:vgpu>"),
            "",
        );
        let d = Domain::parse(&xml).unwrap();
        assert!(!d.has_metadata && d.requests.is_empty());
    }

    #[test]
    fn default_namespace_declaration_counts_as_ours() {
        let xml = with_metadata(
            &format!("<vgpu xmlns='{NAMESPACE}'><mdev uuid='{U1}' type='nvidia-46'/></vgpu>"),
            "",
        );
        let d = Domain::parse(&xml).unwrap();
        assert_eq!(
            d.requests,
            vec![Request::Mdev(MdevRequest {
                uuid: MdevUuid::parse(U1).unwrap(),
                want: MdevWant::Type(TypeId::parse("nvidia-46").unwrap()),
                parents: vec![],
                params: None
            })]
        );
    }

    #[test]
    fn parent_list_is_normalised() {
        let xml = with_metadata(
            &format!("<v:vgpu xmlns:v='{NAMESPACE}'><v:mdev uuid='{U1}' type='nvidia-46' parent='82:00.0, mtty'/></v:vgpu>"),
            "",
        );
        let Request::Mdev(r) = &Domain::parse(&xml).unwrap().requests[0] else {
            panic!()
        };
        let names: Vec<&str> = r.parents.iter().map(|p| p.as_str()).collect();
        assert_eq!(names, ["0000:82:00.0", "mtty"]);
    }

    #[test]
    fn crafted_type_with_traversal_is_refused_with_the_element_named() {
        let xml = with_metadata(
            &format!("<v:vgpu xmlns:v='{NAMESPACE}'><v:mdev uuid='{U1}' type='../../../block'/></v:vgpu>"),
            "",
        );
        let e = Domain::parse(&xml).unwrap_err().to_string();
        assert!(e.contains("vgpu:mdev #1") && e.contains("type"), "{e}");
    }

    #[test]
    fn entity_encoded_nul_in_uuid_is_refused() {
        let xml = with_metadata(
            &format!(
                "<v:vgpu xmlns:v='{NAMESPACE}'><v:mdev uuid='&#0;' type='nvidia-1'/></v:vgpu>"
            ),
            "",
        );
        assert!(Domain::parse(&xml).is_err());
    }

    #[test]
    fn unknown_attribute_is_named() {
        let xml = with_metadata(
            &format!(
                "<v:vgpu xmlns:v='{NAMESPACE}'><v:mdev uuid='{U1}' profil='P40-2Q'/></v:vgpu>"
            ),
            "",
        );
        let e = Domain::parse(&xml).unwrap_err().to_string();
        assert!(e.contains("'profil'"), "{e}");
    }

    #[test]
    fn type_and_profile_together_are_refused() {
        let xml = with_metadata(
            &format!("<v:vgpu xmlns:v='{NAMESPACE}'><v:mdev uuid='{U1}' type='nvidia-1' profile='P40-2Q'/></v:vgpu>"),
            "",
        );
        assert!(Domain::parse(&xml)
            .unwrap_err()
            .to_string()
            .contains("not both"));
    }

    #[test]
    fn same_uuid_twice_is_refused() {
        let xml = with_metadata(
            &format!(
                "<v:vgpu xmlns:v='{NAMESPACE}'><v:mdev uuid='{U1}' type='a'/><v:mdev uuid='{}' type='a'/></v:vgpu>",
                U1.to_uppercase()
            ),
            "",
        );
        assert!(Domain::parse(&xml)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn pci_hostdev_source_span_covers_the_address_element() {
        let dev = "    <hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x04' slot='0x02' function='0x1'/></source></hostdev>";
        let xml = with_metadata(
            &format!("<v:vgpu xmlns:v='{NAMESPACE}'><v:vf address='04:02.1'/></v:vgpu>"),
            dev,
        );
        let d = Domain::parse(&xml).unwrap();
        let Some(Hostdev::Pci {
            address,
            managed,
            source_span,
        }) = d.pci_hostdev("0000:04:02.1".parse().unwrap())
        else {
            panic!("{:?}", d.hostdevs)
        };
        assert_eq!(address.to_string(), "0000:04:02.1");
        assert!(managed);
        assert_eq!(
            &xml[source_span.clone()],
            "<address domain='0x0000' bus='0x04' slot='0x02' function='0x1'/>"
        );
    }

    #[test]
    fn a_nic_vf_given_as_a_hostdev_interface_is_a_pci_hostdev() {
        let dev = "    <interface type='hostdev' managed='yes'><mac address='52:54:00:6d:90:02'/><source><address type='pci' domain='0x0000' bus='0x04' slot='0x02' function='0x1'/></source></interface>\n    <interface type='network'><source network='default'/></interface>";
        let xml = with_metadata(
            &format!("<v:vgpu xmlns:v='{NAMESPACE}'><v:vf address='04:02.1'/></v:vgpu>"),
            dev,
        );
        let d = Domain::parse(&xml).unwrap();
        assert_eq!(d.hostdevs.len(), 1, "{:?}", d.hostdevs);
        let Some(Hostdev::Pci {
            managed,
            source_span,
            ..
        }) = d.pci_hostdev("0000:04:02.1".parse().unwrap())
        else {
            panic!("{:?}", d.hostdevs)
        };
        assert!(managed);
        assert!(xml[source_span.clone()].starts_with("<address type='pci' domain='0x0000'"));
    }

    #[test]
    fn mdev_hostdev_uuid_is_found_case_insensitively() {
        let dev = format!("    <hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='{}'/></source></hostdev>", U1.to_uppercase());
        let d = Domain::parse(&with_metadata("", &dev)).unwrap();
        assert!(d.has_mdev_hostdev(&MdevUuid::parse(U1).unwrap()));
    }

    #[test]
    fn escaped_domain_name_is_decoded() {
        let d = Domain::parse("<domain><name>a&amp;b</name><uuid>x</uuid></domain>").unwrap();
        assert_eq!(d.name, "a&b");
    }

    #[test]
    fn truncated_document_is_a_syntax_error() {
        assert!(matches!(
            Domain::parse("<domain><name>x</name><metadata>"),
            Err(DomainError::Syntax { .. })
        ));
    }

    #[test]
    fn mismatched_tags_are_a_syntax_error() {
        assert!(matches!(
            Domain::parse("<domain><name>x</uuid></domain>"),
            Err(DomainError::Syntax { .. })
        ));
    }

    #[test]
    fn vf_type_must_be_numeric() {
        let xml = with_metadata(
            &format!(
                "<v:vgpu xmlns:v='{NAMESPACE}'><v:vf address='41:00.4' type='nvidia-5'/></v:vgpu>"
            ),
            "",
        );
        assert!(Domain::parse(&xml)
            .unwrap_err()
            .to_string()
            .contains("creatable_vgpu_types"));
    }
}
