//! Rewriting a domain definition in place: adding and removing vgpu-hook's `<hostdev>` entries
//! and `vgpu:*` metadata while every other byte of the document stays as it was.
//!
//! Operators keep domain XML under version control, annotate it with comments and carry other
//! tools' metadata in it; a round trip through a serialiser would reorder attributes, change
//! quotes, expand entities and drop comments. So the document is only read (quick-xml events give
//! each element's byte span) and the original string is spliced: new snippets (rendered from
//! `xml-templates/`, values escaped) go in at the end of the container they belong to, indented
//! and line-ended like their neighbours; removed elements take the whitespace before them along.
//! Removal is the exact inverse of insertion, so attaching then detaching gives back the input
//! byte for byte. What an attach adds besides the devices themselves (a `<devices>`, a
//! `<metadata>`, our `vgpu:vgpu` element, the guest agent's channel) or opens (`<x/>` made
//! `<x>...</x>`) it records on our element (see [`record`]); the detach that takes out the last
//! device undoes exactly that, so every container the operator wrote, empty or self-closing,
//! stays as written.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Range;

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use crate::model::domain::{MdevRequest, MdevWant, VfRequest, VfWant, NAMESPACE};
use crate::model::names::MdevUuid;
use crate::model::pci::PciAddress;
use record::{open_part, retag, Record};

mod name;
mod record;

const TPL_HOSTDEV_MDEV: &str = include_str!("../../../xml-templates/hostdev-mdev.xml");
const TPL_HOSTDEV_PCI: &str = include_str!("../../../xml-templates/hostdev-pci.xml");
const TPL_DEVICES: &str = include_str!("../../../xml-templates/devices.xml");
const TPL_METADATA: &str = include_str!("../../../xml-templates/metadata.xml");
const TPL_VGPU: &str = include_str!("../../../xml-templates/vgpu.xml");
const TPL_VGPU_MDEV: &str = include_str!("../../../xml-templates/vgpu-mdev.xml");
const TPL_VGPU_VF: &str = include_str!("../../../xml-templates/vgpu-vf.xml");
const TPL_CHANNEL_AGENT: &str = include_str!("../../../xml-templates/channel-agent.xml");

/// The virtio-serial port name the QEMU guest agent listens on.
pub const AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

/// Top-level elements libvirt puts before `<metadata>`; a new `<metadata>` goes after the last
/// of them, where `virsh dumpxml` would show it.
const BEFORE_METADATA: [&str; 5] = ["name", "uuid", "genid", "title", "description"];

/// A device to add to a definition: its `<hostdev>` and its metadata entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewDevice {
    /// A mediated device (`<hostdev type='mdev'>` + `vgpu:mdev`).
    Mdev(MdevRequest),
    /// A whole VF (`<hostdev type='pci'>` + `vgpu:vf`).
    Vf {
        /// The metadata entry.
        request: VfRequest,
        /// `managed='yes'` (libvirt binds vfio-pci) or `'no'` (NVIDIA kernel-6.8+ VFs stay on
        /// the nvidia driver).
        managed: bool,
    },
}

impl NewDevice {
    /// The key that identifies the device in the domain.
    pub fn key(&self) -> DeviceKey {
        match self {
            NewDevice::Mdev(m) => DeviceKey::Mdev(m.uuid.to_string()),
            NewDevice::Vf { request, .. } => DeviceKey::Vf(request.address),
        }
    }

    /// The selector that detaches exactly this device again.
    pub fn selector(&self) -> Selector {
        match self {
            NewDevice::Mdev(m) => Selector::Uuid(m.uuid.clone()),
            NewDevice::Vf { request, .. } => Selector::Address(request.address),
        }
    }

    /// The request its metadata entry reads back as.
    pub fn request(&self) -> crate::model::domain::Request {
        use crate::model::domain::Request;
        match self {
            NewDevice::Mdev(m) => Request::Mdev(m.clone()),
            NewDevice::Vf { request, .. } => Request::Vf(request.clone()),
        }
    }
}

/// Identifies one of our devices inside a definition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceKey {
    /// An mdev by UUID (lower case when it parsed as one, else as written).
    Mdev(String),
    /// A VF by host address.
    Vf(PciAddress),
}

impl std::fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceKey::Mdev(u) => write!(f, "mdev {u}"),
            DeviceKey::Vf(a) => write!(f, "VF {a}"),
        }
    }
}

/// Which of our devices a detach removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The mdev with this UUID.
    Uuid(MdevUuid),
    /// The VF at this address.
    Address(PciAddress),
    /// Every device vgpu-hook manages in this domain.
    All,
    /// The domain's only device; an error when it has several.
    Only,
}

/// One device a detach removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Which device.
    pub key: DeviceKey,
    /// Whether its `<hostdev>` was found and removed too.
    pub hostdev: bool,
}

/// The result of a detach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// The rewritten document.
    pub xml: String,
    /// What was removed, in document order.
    pub removed: Vec<Removed>,
    /// Whether the guest agent's channel went too (the attach had added it).
    pub agent_channel: bool,
}

/// Why a document could not be rewritten; shown to the operator as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// Not well-formed XML.
    #[error("domain XML is not well-formed near byte {position}: {message}")]
    Syntax {
        /// Byte offset of the problem.
        position: u64,
        /// What is wrong.
        message: String,
    },
    /// The root element is not `<domain>`.
    #[error(
        "the document's root element is <{0}>, not <domain>; pass a libvirt domain definition"
    )]
    NotDomain(String),
    /// The device is already in the definition.
    #[error("{0}")]
    Duplicate(String),
    /// The selector matches nothing of ours.
    #[error("{0}")]
    NotFound(String),
    /// No selector, and the domain has several devices.
    #[error("{0}")]
    Ambiguous(String),
    /// libvirt or the device cannot do what is asked.
    #[error("{0}")]
    Unsupported(String),
}

// ---------------------------------------------------------------------------------------------
// The document as a tree of element spans.

#[derive(Debug)]
struct Elem {
    /// The name as written (`vgpu:mdev`).
    qname: String,
    local: String,
    /// In our namespace.
    ours: bool,
    attrs: Vec<(String, String)>,
    /// The start tag, or the whole element when self-closing.
    start: Range<usize>,
    /// The end tag; `None` for `<x/>`.
    end: Option<Range<usize>>,
    children: Vec<usize>,
}

impl Elem {
    fn span(&self) -> Range<usize> {
        self.start.start..self.end.as_ref().map_or(self.start.end, |e| e.end)
    }

    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

struct Doc<'a> {
    xml: &'a str,
    elems: Vec<Elem>,
    root: usize,
}

fn syntax(position: u64, message: impl Into<String>) -> EditError {
    EditError::Syntax {
        position,
        message: message.into(),
    }
}

fn decode_attrs(e: &BytesStart<'_>, pos: u64) -> Result<Vec<(String, String)>, EditError> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| syntax(pos, err.to_string()))?;
        if !name::is_name(a.key.as_ref()) {
            return Err(not_a_name(pos, "attribute", a.key.as_ref()));
        }
        let value = quick_xml::escape::unescape(&a.value)
            .map_err(|err| syntax(pos, format!("attribute {}: {err}", a.key.as_ref())))?;
        out.push((a.key.as_ref().to_string(), value.into_owned()));
    }
    Ok(out)
}

fn not_a_name(pos: u64, what: &str, name: &str) -> EditError {
    syntax(
        pos,
        format!(
            "{what} name '{}' is not an XML name",
            crate::printable(name, 40)
        ),
    )
}

/// The element tree as the reader's events build it: elements in document order, the open
/// ones, and the root. Positions are in the original string (`base` is the skipped BOM).
struct Tree {
    base: usize,
    elems: Vec<Elem>,
    stack: Vec<usize>,
    root: Option<usize>,
}

impl Tree {
    fn syntax(&self, position: u64, message: &str) -> EditError {
        syntax(position + self.base as u64, message)
    }

    /// Takes one event spanning `before..after` of the parsed text; `false` at the end.
    fn take(
        &mut self,
        event: Event<'_>,
        ours: bool,
        before: u64,
        after: u64,
    ) -> Result<bool, EditError> {
        let range = self.base + before as usize..self.base + after as usize;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                self.open(e, ours, before, range, empty)?;
            }
            Event::End(_) => {
                if let Some(idx) = self.stack.pop() {
                    self.elems[idx].end = Some(range);
                }
            }
            Event::Text(ref t)
                if self.stack.is_empty()
                    && !t.as_ref().bytes().all(|b| b.is_ascii_whitespace()) =>
            {
                return Err(self.syntax(before, "text outside the root element"));
            }
            Event::Eof => {
                if let Some(&open) = self.stack.last() {
                    return Err(self.syntax(
                        after,
                        &format!(
                            "document ends inside <{}>",
                            crate::printable(&self.elems[open].qname, 40)
                        ),
                    ));
                }
                return Ok(false);
            }
            _ => {}
        }
        Ok(true)
    }

    /// A start tag (or a whole `<x/>`): a new child of the open element, or the root.
    fn open(
        &mut self,
        e: &BytesStart<'_>,
        ours: bool,
        before: u64,
        range: Range<usize>,
        empty: bool,
    ) -> Result<(), EditError> {
        if self.stack.is_empty() && self.root.is_some() {
            return Err(self.syntax(before, "more than one root element"));
        }
        if !name::is_name(e.name().as_ref()) {
            return Err(not_a_name(
                before + self.base as u64,
                "element",
                e.name().as_ref(),
            ));
        }
        let idx = self.elems.len();
        self.elems.push(Elem {
            qname: e.name().as_ref().to_string(),
            local: e.local_name().as_ref().to_string(),
            ours,
            attrs: decode_attrs(e, before + self.base as u64)?,
            start: range,
            end: None,
            children: Vec::new(),
        });
        match self.stack.last() {
            Some(&p) => self.elems[p].children.push(idx),
            None => self.root = Some(idx),
        }
        if !empty {
            self.stack.push(idx);
        }
        Ok(())
    }
}

impl<'a> Doc<'a> {
    fn parse(xml: &'a str) -> Result<Doc<'a>, EditError> {
        // The reader skips a byte-order mark without counting it: parse after it and shift
        // every position back onto the original string.
        let (body, base) = match xml.strip_prefix('\u{feff}') {
            Some(rest) => (rest, xml.len() - rest.len()),
            None => (xml, 0),
        };
        let mut reader = NsReader::from_str(body);
        let mut tree = Tree {
            base,
            elems: Vec::new(),
            stack: Vec::new(),
            root: None,
        };
        loop {
            let before = reader.buffer_position();
            let (ours, event) = match reader.read_resolved_event() {
                Ok((ns, ev)) => (
                    matches!(ns, ResolveResult::Bound(n) if n.0 == NAMESPACE),
                    ev,
                ),
                Err(e) => return Err(tree.syntax(reader.error_position(), &e.to_string())),
            };
            if !tree.take(event, ours, before, reader.buffer_position())? {
                break;
            }
        }
        let root = tree.root.ok_or_else(|| tree.syntax(0, "no root element"))?;
        let elems = tree.elems;
        if elems[root].local != "domain" {
            return Err(EditError::NotDomain(crate::printable(
                &elems[root].qname,
                40,
            )));
        }
        Ok(Doc { xml, elems, root })
    }

    fn child(&self, parent: usize, local: &str) -> Option<usize> {
        self.elems[parent]
            .children
            .iter()
            .copied()
            .find(|&c| !self.elems[c].ours && self.elems[c].local == local)
    }

    fn metadata(&self) -> Option<usize> {
        self.child(self.root, "metadata")
    }

    fn devices(&self) -> Option<usize> {
        self.child(self.root, "devices")
    }

    /// Our `vgpu:vgpu` element inside `<metadata>`.
    fn wrapper(&self) -> Option<usize> {
        let m = self.metadata()?;
        self.elems[m]
            .children
            .iter()
            .copied()
            .find(|&c| self.elems[c].ours && self.elems[c].local == "vgpu")
    }

    /// Our entries (`vgpu:mdev`, `vgpu:vf`) with their keys.
    fn entries(&self) -> Vec<(usize, DeviceKey)> {
        let Some(w) = self.wrapper() else {
            return Vec::new();
        };
        self.elems[w]
            .children
            .iter()
            .filter_map(|&c| {
                let e = &self.elems[c];
                if !e.ours {
                    return None;
                }
                match e.local.as_str() {
                    "mdev" => Some((c, DeviceKey::Mdev(uuid_key(e.attr("uuid")?)))),
                    "vf" => Some((c, DeviceKey::Vf(e.attr("address")?.parse().ok()?))),
                    _ => None,
                }
            })
            .collect()
    }

    /// `<hostdev>` elements of type mdev or pci with the key of their source.
    fn hostdevs(&self) -> Vec<(usize, DeviceKey)> {
        let Some(d) = self.devices() else {
            return Vec::new();
        };
        self.elems[d]
            .children
            .iter()
            .filter_map(|&h| {
                let e = &self.elems[h];
                if e.ours || e.local != "hostdev" {
                    return None;
                }
                let src = self.child(h, "source")?;
                let addr = &self.elems[self.child(src, "address")?];
                match e.attr("type")? {
                    "mdev" => Some((h, DeviceKey::Mdev(uuid_key(addr.attr("uuid")?)))),
                    "pci" => {
                        let get = |k| addr.attr(k).unwrap_or("0");
                        let a = PciAddress::from_libvirt(
                            get("domain"),
                            get("bus"),
                            get("slot"),
                            get("function"),
                        )?;
                        Some((h, DeviceKey::Vf(a)))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// The indentation of the line an element starts on, when only whitespace precedes it.
    fn indent_at(&self, pos: usize) -> Option<&'a str> {
        let line_start = self.xml[..pos].rfind('\n').map_or(0, |i| i + 1);
        let s = &self.xml[line_start..pos];
        s.bytes().all(|b| b == b' ' || b == b'\t').then_some(s)
    }

    fn indent(&self, idx: usize) -> &'a str {
        self.indent_at(self.elems[idx].start.start).unwrap_or("")
    }
}

fn uuid_key(raw: &str) -> String {
    MdevUuid::parse(raw.trim()).map_or_else(|_| raw.trim().to_ascii_lowercase(), |u| u.to_string())
}

// ---------------------------------------------------------------------------------------------
// Layout and templates.

/// How the document is laid out, so inserted text looks like its neighbours.
struct Layout {
    nl: &'static str,
    unit: String,
    /// Whether the document uses line breaks at all; a one-line document gets one-line snippets.
    pretty: bool,
}

impl Layout {
    fn of(doc: &Doc<'_>) -> Layout {
        let xml = doc.xml;
        let nl = match xml.find('\n') {
            Some(i) if i > 0 && xml.as_bytes()[i - 1] == b'\r' => "\r\n",
            _ => "\n",
        };
        let root = &doc.elems[doc.root];
        let pretty = root
            .end
            .as_ref()
            .is_some_and(|end| xml[root.start.end..end.start].contains('\n'));
        let root_indent = doc.indent(doc.root);
        let unit = root
            .children
            .first()
            .and_then(|&c| doc.indent_at(doc.elems[c].start.start))
            .and_then(|ci| ci.strip_prefix(root_indent))
            .filter(|u| !u.is_empty())
            .unwrap_or("  ")
            .to_string();
        Layout { nl, unit, pretty }
    }

    /// Indentation for a new child of `container`: like its last indented child, else one unit
    /// deeper than the container.
    fn child_indent(&self, doc: &Doc<'_>, container: usize) -> String {
        doc.elems[container]
            .children
            .iter()
            .rev()
            .find_map(|&c| doc.indent_at(doc.elems[c].start.start))
            .map_or_else(
                || format!("{}{}", doc.indent(container), self.unit),
                str::to_string,
            )
    }
}

/// A rendered snippet: lines with their nesting depth.
#[derive(Debug, Clone)]
struct Snippet {
    lines: Vec<(usize, String)>,
}

/// Renders a template: `{key}` placeholders replaced by (already escaped) values, a line holding
/// only `{children}` replaced by the children's lines one level deeper than that line.
fn render(template: &str, vars: &[(&str, &str)], children: &[Snippet]) -> Snippet {
    let mut lines = Vec::new();
    for line in template.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let spaces = line.len() - line.trim_start_matches(' ').len();
        let depth = spaces / 2;
        let text = line.trim();
        if text == "{children}" {
            for child in children {
                lines.extend(child.lines.iter().map(|(d, t)| (d + depth, t.clone())));
            }
            continue;
        }
        lines.push((depth, substitute(text, vars)));
    }
    Snippet { lines }
}

fn substitute(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let key = &after[..close];
                match vars.iter().find(|(k, _)| *k == key) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[open..open + close + 2]),
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

impl Snippet {
    /// The text, continuation lines indented from `base`; the caller places the first line.
    fn text(&self, base: &str, layout: &Layout) -> String {
        let mut out = String::new();
        for (i, (depth, line)) in self.lines.iter().enumerate() {
            if i > 0 && layout.pretty {
                out.push_str(layout.nl);
                out.push_str(base);
                for _ in 0..*depth {
                    out.push_str(&layout.unit);
                }
            }
            out.push_str(line);
        }
        out
    }
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn attrs_text(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!(" {k}='{}'", esc(v)))
        .collect()
}

fn hostdev_snippet(dev: &NewDevice) -> Snippet {
    match dev {
        NewDevice::Mdev(m) => render(TPL_HOSTDEV_MDEV, &[("uuid", &esc(m.uuid.as_str()))], &[]),
        NewDevice::Vf { request, managed } => {
            let attrs = request.address.libvirt_attrs();
            let get = |k: &str| {
                attrs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| esc(v))
                    .unwrap_or_default()
            };
            render(
                TPL_HOSTDEV_PCI,
                &[
                    ("managed", if *managed { "yes" } else { "no" }),
                    ("domain", &get("domain")),
                    ("bus", &get("bus")),
                    ("slot", &get("slot")),
                    ("function", &get("function")),
                ],
                &[],
            )
        }
    }
}

fn entry_snippet(dev: &NewDevice, prefix: &str) -> Snippet {
    match dev {
        NewDevice::Mdev(m) => {
            let mut pairs: Vec<(&str, String)> = Vec::new();
            match &m.want {
                MdevWant::Type(t) => pairs.push(("type", t.to_string())),
                MdevWant::Profile(p) => pairs.push(("profile", p.to_string())),
            }
            if !m.parents.is_empty() {
                let list: Vec<&str> = m.parents.iter().map(|p| p.as_str()).collect();
                pairs.push(("parent", list.join(",")));
            }
            if let Some(params) = &m.params {
                pairs.push(("params", params.to_string()));
            }
            render(
                TPL_VGPU_MDEV,
                &[
                    ("prefix", prefix),
                    ("uuid", &esc(m.uuid.as_str())),
                    ("attrs", &attrs_text(&pairs)),
                ],
                &[],
            )
        }
        NewDevice::Vf { request, .. } => {
            let pairs: Vec<(&str, String)> = match &request.want {
                None => Vec::new(),
                Some(VfWant::Type(t)) => vec![("type", t.to_string())],
                Some(VfWant::Profile(p)) => vec![("profile", p.to_string())],
            };
            render(
                TPL_VGPU_VF,
                &[
                    ("prefix", prefix),
                    ("address", &esc(&request.address.to_string())),
                    ("attrs", &attrs_text(&pairs)),
                ],
                &[],
            )
        }
    }
}

/// The `<hostdev>` element for a device, as libvirt's attach-device API takes it.
pub fn hostdev_xml(dev: &NewDevice) -> String {
    hostdev_snippet(dev).text(
        "",
        &Layout {
            nl: "\n",
            unit: "  ".into(),
            pretty: true,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Edits.

struct Edit {
    range: Range<usize>,
    text: String,
}

fn apply(xml: &str, mut edits: Vec<Edit>) -> String {
    // Stable sort keeps the order of insertions at the same point.
    edits.sort_by_key(|e| e.range.start);
    let mut out =
        String::with_capacity(xml.len() + edits.iter().map(|e| e.text.len()).sum::<usize>());
    let mut cursor = 0;
    for e in edits {
        let start = e.range.start.max(cursor);
        out.push_str(&xml[cursor..start]);
        out.push_str(&e.text);
        cursor = e.range.end.max(start);
    }
    out.push_str(&xml[cursor..]);
    out
}

fn last_non_ws(xml: &str, lo: usize, hi: usize) -> usize {
    let b = xml.as_bytes();
    let mut i = hi;
    while i > lo && b[i - 1].is_ascii_whitespace() {
        i -= 1;
    }
    i
}

/// Inserts snippets as the last children of `container` (opening `<x/>` when needed).
fn insert_into(doc: &Doc<'_>, layout: &Layout, container: usize, pieces: &[Snippet]) -> Edit {
    let open = open_part(&doc.xml[doc.elems[container].start.clone()]);
    insert_into_as(doc, layout, container, pieces, open)
}

/// [`insert_into`], a self-closing `container` opened with the start tag `open` (up to `>`).
fn insert_into_as(
    doc: &Doc<'_>,
    layout: &Layout,
    container: usize,
    pieces: &[Snippet],
    open: &str,
) -> Edit {
    let c = &doc.elems[container];
    let child_indent = layout.child_indent(doc, container);
    let mut body = String::new();
    for s in pieces {
        if layout.pretty {
            body.push_str(layout.nl);
            body.push_str(&child_indent);
        }
        body.push_str(&s.text(&child_indent, layout));
    }
    match &c.end {
        Some(end) => {
            let ip = last_non_ws(doc.xml, c.start.end, end.start);
            Edit {
                range: ip..ip,
                text: body,
            }
        }
        None => {
            let mut text = format!("{open}>{body}");
            if layout.pretty {
                text.push_str(layout.nl);
                text.push_str(doc.indent(container));
            }
            text.push_str(&format!("</{}>", c.qname));
            Edit {
                range: c.start.clone(),
                text,
            }
        }
    }
}

/// Inserts a snippet right after the sibling `after`, on its own line at the sibling's indent.
fn insert_after(doc: &Doc<'_>, layout: &Layout, after: usize, piece: &Snippet) -> Edit {
    let indent = doc.indent(after).to_string();
    let pos = doc.elems[after].span().end;
    let mut text = String::new();
    if layout.pretty {
        text.push_str(layout.nl);
        text.push_str(&indent);
    }
    text.push_str(&piece.text(&indent, layout));
    Edit {
        range: pos..pos,
        text,
    }
}

/// Inserts a snippet as the first child of `parent`.
fn insert_first(doc: &Doc<'_>, layout: &Layout, parent: usize, piece: &Snippet) -> Edit {
    if doc.elems[parent].end.is_none() {
        return insert_into(doc, layout, parent, std::slice::from_ref(piece));
    }
    let indent = layout.child_indent(doc, parent);
    let pos = doc.elems[parent].start.end;
    let mut text = String::new();
    if layout.pretty {
        text.push_str(layout.nl);
        text.push_str(&indent);
    }
    text.push_str(&piece.text(&indent, layout));
    Edit {
        range: pos..pos,
        text,
    }
}

fn prefix_of(qname: &str) -> String {
    qname
        .split_once(':')
        .map(|(p, _)| format!("{p}:"))
        .unwrap_or_default()
}

/// Adds the devices' `<hostdev>` elements and metadata entries.
pub fn attach(xml: &str, devices: &[NewDevice]) -> Result<String, EditError> {
    attach_parts(xml, devices, true, true)
}

/// [`attach`], choosing the parts: a live hot-plug lets libvirt add the `<hostdev>` to the
/// persistent definition itself, and only the metadata is left to add.
pub fn attach_parts(
    xml: &str,
    devices: &[NewDevice],
    hostdevs: bool,
    metadata: bool,
) -> Result<String, EditError> {
    attach_recording(xml, devices, hostdevs, metadata, Record::default())
}

/// [`attach_parts`], `made` holding what was made before (an opened `<domain/>`). What this
/// attach makes is recorded only when it writes the metadata.
fn attach_recording(
    xml: &str,
    devices: &[NewDevice],
    hostdevs: bool,
    metadata: bool,
    mut made: Record,
) -> Result<String, EditError> {
    let doc = Doc::parse(xml)?;
    check_new(&doc, devices, hostdevs, metadata)?;
    if devices.is_empty() {
        return Ok(xml.to_string());
    }
    let root = &doc.elems[doc.root];
    if root.end.is_none() {
        // `<domain/>` is opened first, so that metadata and devices go into one element.
        let opened = format!(
            "{}{}></{}>{}",
            &xml[..root.start.start],
            open_part(&xml[root.start.clone()]),
            root.qname,
            &xml[root.start.end..]
        );
        made.add(&format!("{}/", root.local));
        return attach_recording(&opened, devices, hostdevs, metadata, made);
    }
    let layout = Layout::of(&doc);
    let mut edits = Vec::new();
    if hostdevs {
        made.note(&doc, doc.devices(), "devices");
        let pieces: Vec<Snippet> = devices.iter().map(hostdev_snippet).collect();
        edits.push(match doc.devices() {
            Some(d) => insert_into(&doc, &layout, d, &pieces),
            None => {
                let devs = render(TPL_DEVICES, &[], &pieces);
                insert_into(&doc, &layout, doc.root, &[devs])
            }
        });
    }
    if metadata {
        edits.extend(metadata_edit(&doc, &layout, devices, made));
    }
    Ok(apply(xml, edits))
}

impl Record {
    /// Records the container `local` (found at `found`, if anywhere) as made when it is not
    /// there, and as opened when it is `<x/>`.
    fn note(&mut self, doc: &Doc<'_>, found: Option<usize>, local: &str) {
        match found {
            None => self.add(local),
            Some(c) if doc.elems[c].end.is_none() => self.add(&format!("{local}/")),
            Some(_) => {}
        }
    }
}

/// Refuses a device the document already has (in the parts to be added), or one asked twice.
fn check_new(
    doc: &Doc<'_>,
    devices: &[NewDevice],
    hostdevs: bool,
    metadata: bool,
) -> Result<(), EditError> {
    let entries = doc.entries();
    let present = doc.hostdevs();
    let mut seen: BTreeSet<DeviceKey> = BTreeSet::new();
    for dev in devices {
        let key = dev.key();
        if metadata && entries.iter().any(|(_, k)| *k == key) {
            return Err(EditError::Duplicate(format!(
                "{key} is already in the domain's vgpu-hook metadata"
            )));
        }
        if hostdevs && present.iter().any(|(_, k)| *k == key) {
            return Err(EditError::Duplicate(format!(
                "{key} already has a <hostdev> in the domain (remove it first, or add the matching vgpu metadata by hand)"
            )));
        }
        if !seen.insert(key.clone()) {
            return Err(EditError::Duplicate(format!("{key} is asked for twice")));
        }
    }
    Ok(())
}

/// The metadata entries, into our `vgpu:vgpu` element (with its own prefix) when there is one;
/// else a new one into `<metadata>`; else a new `<metadata>` where libvirt would put it. Our
/// element carries the record of what this attach and the earlier ones made.
fn metadata_edit(doc: &Doc<'_>, layout: &Layout, devices: &[NewDevice], made: Record) -> Vec<Edit> {
    if let Some(w) = doc.wrapper() {
        let prefix = prefix_of(&doc.elems[w].qname);
        let pieces: Vec<Snippet> = devices.iter().map(|d| entry_snippet(d, &prefix)).collect();
        let before = doc.record();
        let mut record = before.clone();
        record.merge(&made);
        record.note(doc, Some(w), "vgpu");
        if record == before {
            return vec![insert_into(doc, layout, w, &pieces)];
        }
        return insert_into_recorded(doc, layout, w, &pieces, &record);
    }
    let mut record = made;
    record.add("vgpu");
    record.note(doc, doc.metadata(), "metadata");
    let pieces: Vec<Snippet> = devices.iter().map(|d| entry_snippet(d, "vgpu:")).collect();
    let vars = [
        ("namespace", esc(NAMESPACE)),
        ("record", record.attribute()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let wrapper = render(TPL_VGPU, &vars, &pieces);
    if let Some(m) = doc.metadata() {
        return vec![insert_into(doc, layout, m, &[wrapper])];
    }
    let meta = render(TPL_METADATA, &[], &[wrapper]);
    let after = doc.elems[doc.root]
        .children
        .iter()
        .rev()
        .copied()
        .find(|&c| !doc.elems[c].ours && BEFORE_METADATA.contains(&doc.elems[c].local.as_str()));
    vec![match after {
        Some(a) => insert_after(doc, layout, a, &meta),
        None => insert_first(doc, layout, doc.root, &meta),
    }]
}

/// [`insert_into`] our element `w`, its record set to `record`.
fn insert_into_recorded(
    doc: &Doc<'_>,
    layout: &Layout,
    w: usize,
    pieces: &[Snippet],
    record: &Record,
) -> Vec<Edit> {
    if doc.elems[w].end.is_none() {
        let open = retag(&doc.xml[doc.elems[w].start.clone()], record);
        return vec![insert_into_as(doc, layout, w, pieces, &open)];
    }
    vec![
        doc.record_edit(w, record),
        insert_into(doc, layout, w, pieces),
    ]
}

impl Doc<'_> {
    /// Rewrites our element `w`'s start tag with its record set to `record` (an empty one takes
    /// the attribute out), self-closing as it was or not.
    fn record_edit(&self, w: usize, record: &Record) -> Edit {
        let e = &self.elems[w];
        let close = if e.end.is_some() { ">" } else { "/>" };
        Edit {
            range: e.start.clone(),
            text: format!("{}{close}", retag(&self.xml[e.start.clone()], record)),
        }
    }

    /// What attaches made, as recorded on our element; empty without one.
    fn record(&self) -> Record {
        self.wrapper()
            .and_then(|w| self.elems[w].attr(record::ATTR))
            .map(Record::parse)
            .unwrap_or_default()
    }
}

/// Removes our devices (metadata entries and their `<hostdev>` elements) and, with the last of
/// them, what the attaches recorded as theirs.
pub fn detach(xml: &str, selector: &Selector) -> Result<Detached, EditError> {
    detach_parts(xml, selector, true, true)
}

/// [`detach`], optionally leaving the `<hostdev>` elements (after a live unplug libvirt has
/// already removed them from the persistent definition) and the guest agent's channel.
pub fn detach_parts(
    xml: &str,
    selector: &Selector,
    hostdevs: bool,
    agent_channel: bool,
) -> Result<Detached, EditError> {
    let doc = Doc::parse(xml)?;
    let entries = doc.entries();
    let present = doc.hostdevs();
    let selected = select(&entries, selector)?;
    if selected.is_empty() {
        return Err(not_found(&entries, &present, selector));
    }
    let mut gone: BTreeSet<usize> = BTreeSet::new();
    let mut removed = Vec::new();
    for (idx, key) in selected {
        gone.insert(*idx);
        let matching: Vec<usize> = present
            .iter()
            .filter(|(_, k)| k == key)
            .map(|(h, _)| *h)
            .collect();
        if hostdevs {
            gone.extend(&matching);
        }
        removed.push(Removed {
            key: key.clone(),
            hostdev: !matching.is_empty(),
        });
    }
    let (mut edits, agent_channel) = undo_record(&doc, &mut gone, agent_channel);
    edits.extend(gone.into_iter().map(|idx| {
        let span = doc.elems[idx].span();
        let start = last_non_ws(xml, 0, span.start);
        Edit {
            range: start..span.end,
            text: String::new(),
        }
    }));
    Ok(Detached {
        xml: apply(xml, edits),
        removed,
        agent_channel,
    })
}

fn listing(entries: &[(usize, DeviceKey)]) -> String {
    entries
        .iter()
        .map(|(_, k)| k.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The entries `selector` picks; empty when it names nothing of ours.
fn select<'e>(
    entries: &'e [(usize, DeviceKey)],
    selector: &Selector,
) -> Result<Vec<&'e (usize, DeviceKey)>, EditError> {
    Ok(match selector {
        Selector::All => entries.iter().collect(),
        Selector::Only => match entries {
            [one] => vec![one],
            [] => Vec::new(),
            _ => {
                return Err(EditError::Ambiguous(format!(
                    "the domain has {} vgpu-hook devices ({}); say which with --uuid or --address, or use --all",
                    entries.len(),
                    listing(entries)
                )))
            }
        },
        Selector::Uuid(u) => entries
            .iter()
            .filter(|(_, k)| *k == DeviceKey::Mdev(u.to_string()))
            .collect(),
        Selector::Address(a) => entries
            .iter()
            .filter(|(_, k)| *k == DeviceKey::Vf(*a))
            .collect(),
    })
}

/// Why `selector` picks nothing: the device is not ours, not there, or there is nothing.
fn not_found(
    entries: &[(usize, DeviceKey)],
    present: &[(usize, DeviceKey)],
    selector: &Selector,
) -> EditError {
    let wanted = match selector {
        Selector::Uuid(u) => Some(DeviceKey::Mdev(u.to_string())),
        Selector::Address(a) => Some(DeviceKey::Vf(*a)),
        _ => None,
    };
    let message = match wanted {
        Some(k) if present.iter().any(|(_, p)| *p == k) => format!(
            "{k} has a <hostdev> but no vgpu-hook metadata: it is not managed by vgpu-hook (remove it with virsh detach-device)"
        ),
        Some(k) if entries.is_empty() => {
            format!("{k} is not in the domain, which has no vgpu-hook devices")
        }
        Some(k) => format!(
            "{k} is not in the domain (its vgpu-hook devices: {})",
            listing(entries)
        ),
        None => "the domain has no vgpu-hook devices".to_string(),
    };
    EditError::NotFound(message)
}

/// What the attaches recorded is undone where the removals leave it empty: each container
/// (`vgpu:vgpu`, `<metadata>`, `<devices>`, the root; innermost first) left with nothing but
/// whitespace is removed when an attach added it, closed again (`<x/>`) when one opened it, else
/// kept as it is; and when our element empties, the guest agent's channel an attach added goes
/// too (unless `channel` is false). Our element, where it stays, keeps the rest of the record.
/// Returns the edits besides the removals and whether the channel went; a removed container
/// replaces its children in `gone`.
fn undo_record(doc: &Doc<'_>, gone: &mut BTreeSet<usize>, channel: bool) -> (Vec<Edit>, bool) {
    let Some(w) = doc.wrapper() else {
        return (Vec::new(), false);
    };
    let record = doc.record();
    let channels = doc.agent_channels();
    let agent_channel =
        channel && record.created("channel") && !channels.is_empty() && emptied(doc, w, gone);
    if agent_channel {
        gone.extend(channels);
    }
    let mut left = record.clone();
    let mut edits = Vec::new();
    let mut wrapper_tag_written = false;
    for c in [Some(w), doc.metadata(), doc.devices(), Some(doc.root)]
        .into_iter()
        .flatten()
    {
        if !emptied(doc, c, gone) {
            continue;
        }
        let e = &doc.elems[c];
        if record.opened(&e.local) {
            left.remove(&format!("{}/", e.local));
            gone.retain(|k| !e.children.contains(k));
            let tag = &doc.xml[e.start.clone()];
            let open = if c == w {
                retag(tag, &Record::default())
            } else {
                open_part(tag).to_string()
            };
            edits.push(Edit {
                range: e.span(),
                text: format!("{open}/>"),
            });
            wrapper_tag_written |= c == w;
        } else if record.created(&e.local) && c != doc.root {
            left.remove(&e.local);
            gone.retain(|k| !e.children.contains(k));
            gone.insert(c);
            wrapper_tag_written |= c == w;
        } else if c == w {
            left = Record::default();
        }
    }
    if !wrapper_tag_written && left != record && !gone.contains(&w) {
        edits.push(doc.record_edit(w, &left));
    }
    (edits, agent_channel)
}

/// Whether the removals in `gone` take out some of `c`'s children and leave only whitespace.
fn emptied(doc: &Doc<'_>, c: usize, gone: &BTreeSet<usize>) -> bool {
    let e = &doc.elems[c];
    let Some(end) = &e.end else { return false };
    let kids: Vec<usize> = e
        .children
        .iter()
        .copied()
        .filter(|k| gone.contains(k))
        .collect();
    if kids.is_empty() {
        return false;
    }
    let mut rest = String::new();
    let mut cursor = e.start.end;
    for &k in &kids {
        let span = doc.elems[k].span();
        rest.push_str(&doc.xml[cursor..last_non_ws(doc.xml, cursor, span.start)]);
        cursor = span.end;
    }
    rest.push_str(&doc.xml[cursor..end.start]);
    rest.bytes().all(|b| b.is_ascii_whitespace())
}

/// Our `vgpu:vgpu` element as libvirt's metadata API takes it (`virDomainSetMetadata` with
/// a key and our URI): without prefixes or namespace declarations, since libvirt puts the
/// element into the namespace itself and refuses one that already declares it. `None` when the
/// document has no such element.
pub fn metadata_element(xml: &str) -> Result<Option<String>, EditError> {
    let doc = Doc::parse(xml)?;
    let Some(w) = doc.wrapper() else {
        return Ok(None);
    };
    let text = &xml[doc.elems[w].span()];
    let mut reader = quick_xml::Reader::from_str(text);
    let mut writer = quick_xml::Writer::new(Vec::new());
    let local = |e: &BytesStart<'_>| {
        let mut out = BytesStart::new(e.local_name().as_ref().to_string());
        out.extend_attributes(
            e.attributes()
                .flatten()
                .filter(|a| !a.key.as_ref().starts_with("xmlns"))
                .map(double_quotable),
        );
        out
    };
    loop {
        let event = reader.read_event().map_err(|e| EditError::Syntax {
            position: reader.error_position(),
            message: e.to_string(),
        })?;
        let out = match event {
            Event::Start(e) => Event::Start(local(&e)),
            Event::Empty(e) => Event::Empty(local(&e)),
            Event::End(e) => Event::End(quick_xml::events::BytesEnd::new(
                e.local_name().as_ref().to_string(),
            )),
            Event::Eof => break,
            other => other,
        };
        writer.write_event(out).map_err(|e| EditError::Syntax {
            position: 0,
            message: e.to_string(),
        })?;
    }
    String::from_utf8(writer.into_inner())
        .map(Some)
        .map_err(|e| EditError::Syntax {
            position: 0,
            message: e.to_string(),
        })
}

/// An attribute whose raw value may sit between double quotes, as the writer puts it: a `"`
/// that a single-quoted value held is written `&quot;` (the rest is already escaped).
fn double_quotable(mut a: Attribute<'_>) -> Attribute<'_> {
    if a.value.contains('"') {
        a.value = Cow::Owned(a.value.replace('"', "&quot;"));
    }
    a
}

/// The `<hostdev>` element text of one of the domain's devices, if present.
pub fn hostdev_element(xml: &str, key: &DeviceKey) -> Result<Option<String>, EditError> {
    let doc = Doc::parse(xml)?;
    Ok(doc
        .hostdevs()
        .into_iter()
        .find(|(_, k)| k == key)
        .map(|(h, _)| xml[doc.elems[h].span()].to_string()))
}

/// Every device key of our metadata, in document order.
pub fn entries(xml: &str) -> Result<Vec<DeviceKey>, EditError> {
    Ok(Doc::parse(xml)?
        .entries()
        .into_iter()
        .map(|(_, k)| k)
        .collect())
}

/// Every host PCI address the definition refers to: PCI `<hostdev>` sources and `vgpu:vf`
/// entries. Lenient about our metadata (it is not validated), so a domain with a broken entry
/// still counts as using its VFs.
pub fn referenced_pci(xml: &str) -> Result<Vec<PciAddress>, EditError> {
    let doc = Doc::parse(xml)?;
    let mut out: Vec<PciAddress> = Vec::new();
    let keys = doc.hostdevs().into_iter().chain(doc.entries());
    let vfs = keys.filter_map(|(_, k)| match k {
        DeviceKey::Vf(a) => Some(a),
        _ => None,
    });
    for a in vfs.chain(doc.hostdev_interfaces()) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

impl Doc<'_> {
    /// The PCI devices of `<interface type='hostdev'>` (libvirt's usual way to give a guest a
    /// NIC's VF): a VF another domain holds that way is as taken as one in a `<hostdev>`.
    fn hostdev_interfaces(&self) -> Vec<PciAddress> {
        self.devices_named("interface")
            .into_iter()
            .filter(|&i| self.elems[i].attr("type") == Some("hostdev"))
            .filter_map(|i| {
                let src = self.child(i, "source")?;
                let addr = &self.elems[self.child(src, "address")?];
                let get = |k| addr.attr(k).unwrap_or("0");
                PciAddress::from_libvirt(get("domain"), get("bus"), get("slot"), get("function"))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The guest agent channel and the vGPU display (the guest side, `vgpuctl guest`).

impl Doc<'_> {
    /// The `<devices>` children named `local`.
    fn devices_named(&self, local: &str) -> Vec<usize> {
        self.devices().map_or_else(Vec::new, |d| {
            self.elems[d]
                .children
                .iter()
                .copied()
                .filter(|&c| !self.elems[c].ours && self.elems[c].local == local)
                .collect()
        })
    }
}

/// Whether the definition has the QEMU guest agent's channel.
pub fn has_agent_channel(xml: &str) -> Result<bool, EditError> {
    Ok(!Doc::parse(xml)?.agent_channels().is_empty())
}

impl Doc<'_> {
    /// The guest agent's `<channel>` elements (one, where there is any).
    fn agent_channels(&self) -> Vec<usize> {
        self.devices_named("channel")
            .into_iter()
            .filter(|&c| {
                self.child(c, "target")
                    .is_some_and(|t| self.elems[t].attr("name") == Some(AGENT_CHANNEL))
            })
            .collect()
    }
}

/// Adds the guest agent's channel (`<channel type='unix'>` with a virtio target named
/// [`AGENT_CHANNEL`]; libvirt picks the socket path and adds the virtio-serial controller) as
/// the last child of `<devices>`. `None` when the definition already has one. Recorded on our
/// element when there is one, so the detach that removes the last device removes it again.
pub fn add_agent_channel(xml: &str) -> Result<Option<String>, EditError> {
    if has_agent_channel(xml)? {
        return Ok(None);
    }
    let doc = Doc::parse(xml)?;
    if doc.elems[doc.root].end.is_none() {
        return Err(EditError::Unsupported(
            "an empty <domain/> has no devices to talk to a guest agent through".into(),
        ));
    }
    let layout = Layout::of(&doc);
    let channel = render(TPL_CHANNEL_AGENT, &[], &[]);
    let mut edits = vec![match doc.devices() {
        Some(d) => insert_into(&doc, &layout, d, &[channel]),
        None => insert_into(
            &doc,
            &layout,
            doc.root,
            &[render(TPL_DEVICES, &[], &[channel])],
        ),
    }];
    if let Some(w) = doc.wrapper() {
        let mut record = doc.record();
        record.note(&doc, doc.devices(), "devices");
        record.add("channel");
        edits.push(doc.record_edit(w, &record));
    }
    Ok(Some(apply(xml, edits)))
}

/// Makes these mdevs' `<hostdev>` elements the domain's display: `display='on'` on each, and
/// `ramfb='on'` (the boot display; libvirt allows one) on the first unless another hostdev has
/// it already. Refused, with the reason, where libvirt cannot: a hostdev that is not an mdev of
/// model vfio-pci, or a domain without a `<graphics>` device to show it in.
pub fn set_display(xml: &str, keys: &[DeviceKey]) -> Result<String, EditError> {
    let doc = Doc::parse(xml)?;
    if doc.devices_named("graphics").is_empty() {
        return Err(EditError::Unsupported(
            "libvirt needs a <graphics> device (spice or vnc) to show a vGPU's display; add one (virt-manager: Add Hardware > Graphics) and attach again".into(),
        ));
    }
    let hostdevs = doc.hostdevs();
    let mut ramfb_taken = doc
        .devices_named("hostdev")
        .iter()
        .any(|&h| doc.elems[h].attr("ramfb") == Some("on"));
    let mut edits = Vec::new();
    for key in keys {
        let Some(&(h, _)) = hostdevs.iter().find(|(_, k)| k == key) else {
            return Err(EditError::NotFound(format!(
                "{key} has no <hostdev> in the domain"
            )));
        };
        let e = &doc.elems[h];
        if e.attr("type") != Some("mdev") || e.attr("model") != Some("vfio-pci") {
            return Err(EditError::Unsupported(format!(
                "{key} cannot be a display: libvirt shows only mdevs of model vfio-pci (a whole PCI device or VF has no display of its own; use a display device beside it)"
            )));
        }
        let mut add = String::new();
        if e.attr("display").is_none() {
            add.push_str(" display='on'");
        }
        if !ramfb_taken && e.attr("ramfb").is_none() {
            add.push_str(" ramfb='on'");
            ramfb_taken = true;
        }
        let tag_end = e.start.end - if e.end.is_none() { 2 } else { 1 };
        edits.push(Edit {
            range: tag_end..tag_end,
            text: add,
        });
    }
    Ok(apply(xml, edits))
}

/// `display` and `ramfb` of each mdev `<hostdev>` that has either, by UUID.
pub fn displays(xml: &str) -> Result<Vec<(String, bool, bool)>, EditError> {
    let doc = Doc::parse(xml)?;
    Ok(doc
        .hostdevs()
        .into_iter()
        .filter_map(|(h, k)| {
            let e = &doc.elems[h];
            let (display, ramfb) = (
                e.attr("display") == Some("on"),
                e.attr("ramfb") == Some("on"),
            );
            match k {
                DeviceKey::Mdev(u) if display || ramfb => Some((u, display, ramfb)),
                _ => None,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::names::{ParentName, Profile, TypeId};

    const U1: &str = "6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b";
    const U2: &str = "9a41c0de-0000-4c1e-9a41-0c2d3e4f5a07";

    fn mdev(uuid: &str, t: &str) -> NewDevice {
        NewDevice::Mdev(MdevRequest {
            uuid: MdevUuid::parse(uuid).unwrap(),
            want: MdevWant::Type(TypeId::parse(t).unwrap()),
            parents: vec![],
            params: None,
        })
    }

    fn vf(addr: &str, managed: bool) -> NewDevice {
        NewDevice::Vf {
            request: VfRequest {
                address: addr.parse().unwrap(),
                want: None,
            },
            managed,
        }
    }

    const PLAIN: &str = "<domain type='kvm'>\n  <name>vm</name>\n  <uuid>ad7bc399-ee94-4664-814e-9f0650fb15c5</uuid>\n  <memory unit='KiB'>262144</memory>\n  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n  </devices>\n</domain>\n";

    #[test]
    fn attach_to_a_plain_domain_creates_metadata_after_uuid_and_appends_the_hostdev() {
        let out = attach(PLAIN, &[mdev(U1, "mtty-2")]).unwrap();
        let expected = format!(
            "<domain type='kvm'>\n  <name>vm</name>\n  <uuid>ad7bc399-ee94-4664-814e-9f0650fb15c5</uuid>\n  <metadata>\n    <vgpu:vgpu xmlns:vgpu='urn:vgpu-hook:domain:1' created='vgpu metadata'>\n      <vgpu:mdev uuid='{U1}' type='mtty-2'/>\n    </vgpu:vgpu>\n  </metadata>\n  <memory unit='KiB'>262144</memory>\n  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n    <hostdev mode='subsystem' type='mdev' model='vfio-pci'>\n      <source>\n        <address uuid='{U1}'/>\n      </source>\n    </hostdev>\n  </devices>\n</domain>\n"
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn attached_document_parses_to_the_request() {
        let out = attach(PLAIN, &[mdev(U1, "mtty-2"), vf("04:02.1", true)]).unwrap();
        let d = crate::model::domain::Domain::parse(&out).unwrap();
        assert_eq!(d.requests.len(), 2);
        assert!(d.has_mdev_hostdev(&MdevUuid::parse(U1).unwrap()));
        assert!(d.pci_hostdev("0000:04:02.1".parse().unwrap()).is_some());
    }

    #[test]
    fn detach_after_attach_gives_back_the_input() {
        let out = attach(PLAIN, &[mdev(U1, "mtty-2"), vf("04:02.1", false)]).unwrap();
        let back = detach(&out, &Selector::All).unwrap();
        assert_eq!(back.xml, PLAIN);
        assert_eq!(back.removed.len(), 2);
        assert!(back.removed.iter().all(|r| r.hostdev));
    }

    #[test]
    fn existing_wrapper_is_extended_with_its_own_prefix() {
        let xml = format!("<domain>\n  <name>x</name>\n  <metadata>\n    <g:vgpu xmlns:g=\"{NAMESPACE}\">\n      <g:mdev uuid=\"{U1}\" type=\"a\"/>\n    </g:vgpu>\n  </metadata>\n  <devices/>\n</domain>");
        let out = attach(&xml, &[mdev(U2, "b")]).unwrap();
        assert!(out.contains(&format!("      <g:mdev uuid=\"{U1}\" type=\"a\"/>\n      <g:mdev uuid='{U2}' type='b'/>\n    </g:vgpu>")), "{out}");
        assert!(
            out.contains(&format!(
                "<g:vgpu xmlns:g=\"{NAMESPACE}\" created='devices/'>"
            )),
            "{out}"
        );
        assert!(out.contains("  <devices>\n    <hostdev"), "{out}");
        assert!(out.contains("</hostdev>\n  </devices>\n</domain>"), "{out}");
    }

    #[test]
    fn default_namespace_wrapper_gets_unprefixed_entries() {
        let xml = format!("<domain><metadata><vgpu xmlns='{NAMESPACE}'></vgpu></metadata><devices></devices></domain>");
        let out = attach(&xml, &[mdev(U1, "a")]).unwrap();
        assert!(
            out.contains(&format!(
                "<vgpu xmlns='{NAMESPACE}'><mdev uuid='{U1}' type='a'/></vgpu>"
            )),
            "{out}"
        );
        assert!(
            !out.contains('\n'),
            "one-line documents stay on one line: {out}"
        );
    }

    #[test]
    fn crlf_documents_get_crlf_lines() {
        let xml = PLAIN.replace('\n', "\r\n");
        let out = attach(&xml, &[mdev(U1, "a")]).unwrap();
        assert!(!out.replace("\r\n", "").contains('\n'), "{out:?}");
        assert_eq!(detach(&out, &Selector::All).unwrap().xml, xml);
    }

    #[test]
    fn values_are_escaped() {
        let dev = NewDevice::Mdev(MdevRequest {
            uuid: MdevUuid::parse(U1).unwrap(),
            want: MdevWant::Profile(Profile::parse("A<B>&'\"").unwrap()),
            parents: vec![ParentName::parse("mtty").unwrap()],
            params: None,
        });
        let out = attach(PLAIN, &[dev]).unwrap();
        assert!(
            out.contains("profile='A&lt;B&gt;&amp;&apos;&quot;' parent='mtty'"),
            "{out}"
        );
        let d = crate::model::domain::Domain::parse(&out).unwrap();
        let crate::model::domain::Request::Mdev(m) = &d.requests[0] else {
            panic!()
        };
        assert_eq!(
            m.want,
            MdevWant::Profile(Profile::parse("A<B>&'\"").unwrap())
        );
    }

    #[test]
    fn the_same_device_twice_is_refused() {
        let out = attach(PLAIN, &[mdev(U1, "a")]).unwrap();
        let e = attach(&out, &[mdev(U1, "a")]).unwrap_err();
        assert!(matches!(e, EditError::Duplicate(_)), "{e}");
    }

    #[test]
    fn a_foreign_pci_hostdev_at_the_address_is_a_duplicate() {
        let out = attach(PLAIN, &[vf("04:02.1", true)]).unwrap();
        let stripped = detach_parts(&out, &Selector::All, false, true).unwrap().xml;
        let e = attach(&stripped, &[vf("04:02.1", true)]).unwrap_err();
        assert!(e.to_string().contains("already has a <hostdev>"), "{e}");
    }

    #[test]
    fn detach_by_uuid_leaves_the_other_device() {
        let out = attach(PLAIN, &[mdev(U1, "a"), mdev(U2, "b")]).unwrap();
        let one = detach(&out, &Selector::Uuid(MdevUuid::parse(U2).unwrap())).unwrap();
        assert_eq!(one.xml, attach(PLAIN, &[mdev(U1, "a")]).unwrap());
    }

    #[test]
    fn detach_without_selector_needs_a_single_device() {
        let out = attach(PLAIN, &[mdev(U1, "a"), mdev(U2, "b")]).unwrap();
        let e = detach(&out, &Selector::Only).unwrap_err();
        assert!(e.to_string().contains("--all"), "{e}");
    }

    #[test]
    fn detach_of_a_foreign_mdev_hostdev_is_refused() {
        let out = attach(PLAIN, &[mdev(U1, "a")]).unwrap();
        let foreign = detach_parts(&out, &Selector::All, false, true).unwrap().xml;
        let e = detach(&foreign, &Selector::Uuid(MdevUuid::parse(U1).unwrap())).unwrap_err();
        assert!(e.to_string().contains("not managed by vgpu-hook"), "{e}");
    }

    #[test]
    fn metadata_with_other_content_is_kept_on_detach() {
        let xml = "<domain>\n  <name>x</name>\n  <metadata>\n    <o:x xmlns:o='urn:other'/>\n  </metadata>\n  <devices>\n    <emulator>q</emulator>\n  </devices>\n</domain>";
        let out = attach(xml, &[mdev(U1, "a")]).unwrap();
        assert!(
            out.contains("<o:x xmlns:o='urn:other'/>\n    <vgpu:vgpu"),
            "{out}"
        );
        assert_eq!(detach(&out, &Selector::All).unwrap().xml, xml);
    }

    #[test]
    fn metadata_element_is_bare_for_libvirt_to_put_into_our_namespace() {
        let xml = format!("<domain xmlns:v='{NAMESPACE}'><metadata><v:vgpu xmlns:v='{NAMESPACE}'><v:mdev uuid='{U1}' type='a&amp;b'/></v:vgpu></metadata></domain>");
        let m = metadata_element(&xml).unwrap().unwrap();
        assert_eq!(
            m,
            format!("<vgpu><mdev uuid=\"{U1}\" type=\"a&amp;b\"/></vgpu>")
        );
    }

    #[test]
    fn metadata_element_escapes_a_double_quote_a_single_quoted_value_held() {
        let xml = format!("<domain><metadata><v:vgpu xmlns:v='{NAMESPACE}' note='say \"hi\"'><v:mdev uuid='{U1}' type='nvidia-47'/></v:vgpu></metadata></domain>");
        let m = metadata_element(&xml).unwrap().unwrap();
        assert_eq!(
            m,
            format!(
                "<vgpu note=\"say &quot;hi&quot;\"><mdev uuid=\"{U1}\" type=\"nvidia-47\"/></vgpu>"
            )
        );
    }

    #[test]
    fn a_name_libvirt_would_refuse_is_refused_not_rewritten() {
        for xml in [
            "<domain><metadata><v\0s=\"0000:7f:00.1\"/></metadata></domain>",
            "<domain><devices a@b='1'/></domain>",
        ] {
            match attach(xml, &[mdev(U1, "nvidia-47")]) {
                Err(EditError::Syntax { message, .. }) => {
                    assert!(message.contains("is not an XML name"), "{message}")
                }
                other => panic!("{xml:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn hostdev_xml_is_libvirt_shaped() {
        assert_eq!(
            hostdev_xml(&vf("0000:04:02.1", false)),
            "<hostdev mode='subsystem' type='pci' managed='no'>\n  <source>\n    <address domain='0x0000' bus='0x04' slot='0x02' function='0x1'/>\n  </source>\n</hostdev>"
        );
    }

    #[test]
    fn referenced_pci_includes_hostdevs_and_entries() {
        let out = attach(PLAIN, &[vf("04:02.1", true)]).unwrap();
        assert_eq!(referenced_pci(&out).unwrap().len(), 1);
        let hostdev_only = out.replace(NAMESPACE, "urn:other");
        assert_eq!(
            referenced_pci(&hostdev_only).unwrap(),
            vec!["0000:04:02.1".parse::<PciAddress>().unwrap()]
        );
    }

    #[test]
    fn referenced_pci_includes_a_nic_vf_given_as_a_hostdev_interface() {
        let nic = "<interface type='hostdev' managed='yes'>\n      <source>\n        <address type='pci' domain='0x0000' bus='0x05' slot='0x10' function='0x2'/>\n      </source>\n    </interface>\n  </devices>";
        let xml = PLAIN.replacen("</devices>", nic, 1);
        assert_eq!(
            referenced_pci(&xml).unwrap(),
            vec!["0000:05:10.2".parse::<PciAddress>().unwrap()]
        );
    }

    #[test]
    fn a_byte_order_mark_is_kept_and_does_not_shift_the_edits() {
        let xml = format!("\u{feff}{PLAIN}");
        let out = attach(&xml, &[mdev(U1, "a")]).unwrap();
        assert_eq!(
            out,
            format!("\u{feff}{}", attach(PLAIN, &[mdev(U1, "a")]).unwrap())
        );
        assert_eq!(detach(&out, &Selector::All).unwrap().xml, xml);
    }

    #[test]
    fn non_domain_root_is_refused() {
        assert!(matches!(
            attach("<network/>", &[mdev(U1, "a")]),
            Err(EditError::NotDomain(_))
        ));
    }

    #[test]
    fn truncated_document_is_refused() {
        assert!(matches!(
            attach("<domain><devices>", &[mdev(U1, "a")]),
            Err(EditError::Syntax { .. })
        ));
    }

    #[test]
    fn placeholder_like_values_are_not_expanded_twice() {
        assert_eq!(
            substitute("<{a} {b}/>", &[("a", "{b}"), ("b", "x")]),
            "<{b} x/>"
        );
    }
}
