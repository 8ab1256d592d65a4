//! `migrate begin` / `restore begin`: libvirt hands the hook the definition of a domain that is
//! to run on this host (migrated in, or restored from a save file) before anything of it exists
//! here; whatever the hook prints replaces it, and an empty stdout leaves it as it is.
//!
//! The filter makes that definition fit this host and changes nothing else: an mdev UUID or a VF
//! that is free here stays as written (so nothing is printed), one that is taken here is replaced
//! by a free one of the same type or model ([`mdev`], [`vf`]), and a domain whose devices have no
//! room here is refused now, with one line, before libvirt starts a QEMU for it. It never takes
//! capacity: a failure between this call and `prepare` gets no `release` from libvirt, so only
//! `prepare` allocates, re-checking what the filter saw.

mod mdev;
mod vf;

use std::ops::Range;

use super::HookError;
use crate::alloc::numa::Wanted;
use crate::alloc::refusal::Refusal;
use crate::host::drains::Drains;
use crate::host::state::{Liveness, Read, State};
use crate::host::Host;
use crate::model::config::Config;
use crate::model::domain::Domain;
use crate::model::pci::PciAddress;

/// One change to the document: a byte range and its new text.
type Edit = (Range<usize>, String);

/// Why a migrated or restored domain's devices cannot come to this host.
#[derive(Debug, thiserror::Error)]
pub enum FilterRefusal {
    /// The named VF is absent and the configured PFs differ, so no model can be told.
    #[error("VF {vf} does not exist on this host and the configured PFs are of {models} different models, so which one replaces it cannot be told; give the domain a VF of this host (vgpuctl attach --vf)")]
    ModelsDiffer {
        /// The VF the XML names.
        vf: PciAddress,
        /// How many models the configured PFs are.
        models: usize,
    },
    /// No free VF of the same model exists here.
    #[error("VF {vf} is {why} on this host and no free VF of the same model can replace it; free one (virsh destroy) or add its PF to the config")]
    NoReplacement {
        /// The VF the XML names.
        vf: PciAddress,
        /// Why it cannot stay: held, not a configured PF's, absent.
        why: String,
    },
    /// The domain's vGPUs have no room on this host (the refusal `prepare` would give).
    #[error("cannot come to host '{host}': {refusal}")]
    NoRoom {
        /// This host's name.
        host: String,
        /// What placement found.
        refusal: Box<Refusal>,
    },
}

/// What the filter knows of this host: its paths and config, who holds what, who runs, and
/// which GPUs are drained (a domain coming here is placed as a start here would place it).
pub(super) struct Target<'a> {
    host: &'a Host,
    config: &'a Config,
    state: &'a State,
    live: &'a Liveness,
    drains: &'a Drains,
}

impl Target<'_> {
    /// The host NUMA nodes the domain wants, when its wishes can be used here (a filter places
    /// as a start would, and a start without usable wishes places as if there were none).
    fn numa(&self, dom: &Domain) -> Option<Wanted> {
        Wanted::of(&dom.numa, &self.host.sysfs, self.config.numa)
            .ok()
            .flatten()
    }
}

/// `migrate begin` / `restore begin`: the definition rewritten to fit this host, or `Ok(None)`
/// when it fits as it is.
pub fn filter(
    host: &Host,
    config: &Config,
    dom: &Domain,
    xml: &str,
) -> Result<Option<String>, HookError> {
    if dom.requests.is_empty() {
        return Ok(None);
    }
    let (state, drains) = {
        let locked = host.state.lock()?;
        let grace = config.timing.prepare_grace;
        let state = super::load_state(host, &locked, grace, Read::Lazy)?;
        (state, Drains::of_config(config)?)
    };
    let live = host.liveness(config.timing.prepare_grace);
    let target = Target {
        host,
        config,
        state: &state,
        live: &live,
        drains: &drains,
    };
    let mut edits = vf::edits(&target, dom, xml)?;
    edits.extend(mdev::edits(&target, dom, xml)?);
    Ok(apply(xml, edits))
}

/// The document with the edits applied (back to front, so spans stay valid); `None` when there
/// are none.
fn apply(xml: &str, mut edits: Vec<Edit>) -> Option<String> {
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = xml.to_string();
    for (range, text) in edits {
        out.replace_range(range, &text);
    }
    Some(out)
}

/// The edit giving attribute `attr` of our metadata element `element` the text `new`, on the
/// first such element whose value `is_old` accepts; `None` when there is none.
fn metadata_attr_edit(
    xml: &str,
    element: &str,
    attr: &str,
    is_old: impl Fn(&str) -> bool,
    new: String,
) -> Option<Edit> {
    let mut reader = quick_xml::NsReader::from_str(xml);
    loop {
        let before = reader.buffer_position() as usize;
        let (ns, ev) = reader.read_resolved_event().ok()?;
        let ours = matches!(ns, quick_xml::name::ResolveResult::Bound(n) if n.0 == crate::model::domain::NAMESPACE);
        match ev {
            quick_xml::events::Event::Empty(ref e) | quick_xml::events::Event::Start(ref e)
                if ours && e.local_name().as_ref() == element =>
            {
                let value = e.attributes().flatten().find(|a| a.key.as_ref() == attr)?;
                if !is_old(&value.value) {
                    continue;
                }
                let raw = &xml[before..reader.buffer_position() as usize];
                let at = attr_value_span(raw, attr)?;
                return Some(((before + at.start)..(before + at.end), new));
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

/// Where the value of the attribute named exactly `attr` (not `xmlns:attr`, not `x:attr`) sits in
/// an element's raw text, between its quotes.
fn attr_value_span(raw: &str, attr: &str) -> Option<Range<usize>> {
    let key_at = raw.match_indices(attr).map(|(i, _)| i).find(|&i| {
        raw[..i].ends_with(|c: char| c.is_ascii_whitespace())
            && raw[i + attr.len()..].trim_start().starts_with('=')
    })?;
    let after_key = &raw[key_at..];
    let quote_at = after_key.find(['"', '\''])?;
    let quote = after_key.as_bytes()[quote_at] as char;
    let start = key_at + quote_at + 1;
    let len = raw[start..].find(quote)?;
    Some(start..start + len)
}
