//! `migrate begin` / `restore begin`: the XML may name VFs of another host; point them at free
//! VFs of the same model here.

use std::collections::BTreeSet;
use std::ops::Range;

use super::HookError;
use crate::alloc::inventory::{self, PfKind};
use crate::alloc::numa::Wanted;
use crate::alloc::vf::mdevs_on_vfs;
use crate::host::state::Device;
use crate::host::sysfs::Sysfs;
use crate::host::Host;
use crate::model::config::Config;
use crate::model::domain::{Domain, Hostdev, Request, VfRequest};
use crate::model::pci::PciAddress;

/// Why a migrated or restored domain's VFs cannot be mapped onto this host.
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
}

/// `migrate begin` / `restore begin`: where a VF the XML names is absent or held here, pick a free
/// VF of the same PF kind and rewrite the host-side addresses (the hostdev's source `<address/>`
/// and our metadata's `address`). `Ok(None)` when nothing changes.
pub fn filter(
    host: &Host,
    config: &Config,
    dom: &Domain,
    xml: &str,
) -> Result<Option<String>, HookError> {
    let vf_requests: Vec<&VfRequest> = dom
        .requests
        .iter()
        .filter_map(|r| match r {
            Request::Vf(v) => Some(v),
            _ => None,
        })
        .collect();
    if vf_requests.is_empty() {
        return Ok(None);
    }
    let state = super::load_state(host, &host.state.lock()?, config.timing.prepare_grace)?;
    let live = host.liveness(config.timing.prepare_grace);
    let numa = Wanted::of(&dom.numa, &host.sysfs, config.numa)
        .ok()
        .flatten();
    // Read once: the search below asks about every VF of every PF of the model.
    let on_vfs = mdevs_on_vfs(&host.sysfs, &state);
    let here = Here {
        sysfs: &host.sysfs,
        pfs: inventory::vf_pfs(config),
        numa,
        holder: &|vf: PciAddress| {
            let of_vf = state
                .holder(&Device::Vf { address: vf }, &live)
                .filter(|r| r.domain_uuid != dom.uuid)
                .map(|r| format!("domain '{}'", r.domain_name));
            of_vf.or_else(|| on_vfs.get(&vf).map(ToString::to_string))
        },
    };
    let referenced: Vec<PciAddress> = vf_requests.iter().map(|v| v.address).collect();
    let mut taken: Vec<PciAddress> = Vec::new();
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    for req in &vf_requests {
        let Some(new) = here.replacement(req, &referenced, &taken)? else {
            continue;
        };
        taken.push(new);
        log::info!(
            "domain '{}': VF {} becomes {new} on this host",
            dom.name,
            req.address
        );
        edits.extend(address_edits(dom, xml, req.address, new));
    }
    Ok(apply(xml, edits))
}

/// This host's view for the filter: its sysfs, the configured PFs, who holds a VF.
struct Here<'a> {
    sysfs: &'a Sysfs,
    pfs: Vec<(PciAddress, PfKind)>,
    /// The domain's NUMA nodes: replacements come from PFs on them first.
    numa: Option<Wanted>,
    /// Who holds a VF (`domain 'x'`, or the vGPU mdev living on it), other than this domain.
    holder: &'a dyn Fn(PciAddress) -> Option<String>,
}

impl Here<'_> {
    fn pci_id(&self, a: PciAddress) -> (Option<u16>, Option<String>) {
        let device = self.sysfs.read(&self.sysfs.pci_dir(a).join("device")).ok();
        (self.sysfs.pci_vendor(a), device)
    }

    /// `None` when the named VF can stay (a free VF of a configured PF here), else the free VF of
    /// the same model that replaces it.
    fn replacement(
        &self,
        req: &VfRequest,
        referenced: &[PciAddress],
        taken: &[PciAddress],
    ) -> Result<Option<PciAddress>, FilterRefusal> {
        let vf = req.address;
        let pf_here = self
            .sysfs
            .physfn(vf)
            .filter(|pf| self.pfs.iter().any(|(a, _)| a == pf));
        let held = (self.holder)(vf);
        if pf_here.is_some() && held.is_none() {
            return Ok(None);
        }
        let mut pfs = self.same_model(req, pf_here)?;
        if let Some(w) = &self.numa {
            pfs.sort_by_key(|&pf| w.distance(self.sysfs.numa_node(pf)));
        }
        let found = pfs
            .into_iter()
            .flat_map(|pf| self.sysfs.vfs(pf))
            .filter(|c| {
                (self.holder)(*c).is_none() && !referenced.contains(c) && !taken.contains(c)
            })
            .find(|&c| self.fits(c, req));
        let why = match (&held, self.sysfs.pci_exists(vf)) {
            (Some(d), _) => format!("held by {d}"),
            (None, true) => "not a VF of a configured PF".to_string(),
            (None, false) => "absent".to_string(),
        };
        found
            .map(Some)
            .ok_or(FilterRefusal::NoReplacement { vf, why })
    }

    /// The PFs whose VFs may replace the named one: a configured PF with the same vendor and
    /// device id as the named VF's PF (or, when the named VF does not exist here, every configured
    /// PF of the request's kind, so a GPU VF never becomes a NIC's).
    fn same_model(
        &self,
        req: &VfRequest,
        pf_here: Option<PciAddress>,
    ) -> Result<Vec<PciAddress>, FilterRefusal> {
        let configured = self.pfs.iter().map(|(a, _)| *a);
        if let Some(pf) = pf_here {
            return Ok(configured
                .filter(|a| self.pci_id(*a) == self.pci_id(pf))
                .collect());
        }
        let kind: Vec<PciAddress> = self
            .pfs
            .iter()
            .filter(|(a, k)| {
                (*k == PfKind::Nvidia) == req.want.is_some() && self.sysfs.pci_exists(*a)
            })
            .map(|(a, _)| *a)
            .collect();
        let models: BTreeSet<_> = kind.iter().map(|a| self.pci_id(*a)).collect();
        if models.len() > 1 {
            return Err(FilterRefusal::ModelsDiffer {
                vf: req.address,
                models: models.len(),
            });
        }
        Ok(kind)
    }

    /// Whether a free VF can stand in for the request: a plain VF for a plain request; an NVIDIA
    /// VF without a type that can take the asked type for a typed one.
    fn fits(&self, c: PciAddress, req: &VfRequest) -> bool {
        match &req.want {
            None => !self.sysfs.is_nvidia_vfio_vf(c),
            Some(want) => {
                self.sysfs.current_vgpu_type(c).is_ok_and(|t| t == 0)
                    && self
                        .sysfs
                        .creatable_vgpu_types(c)
                        .is_ok_and(|list| list.iter().any(|(id, name)| want.matches(*id, name)))
            }
        }
    }
}

/// The edits that move `old` to `new`: the hostdev's source `<address/>` and our metadata's
/// `address` attribute.
fn address_edits(
    dom: &Domain,
    xml: &str,
    old: PciAddress,
    new: PciAddress,
) -> Vec<(Range<usize>, String)> {
    let mut edits = Vec::new();
    if let Some(Hostdev::Pci { source_span, .. }) = dom.pci_hostdev(old) {
        let close = if xml[source_span.clone()].ends_with("/>") {
            "/>"
        } else {
            ">"
        };
        let original = &xml[source_span.clone()];
        // An <interface type='hostdev'>'s source address must say type='pci'; keep it.
        let typed = original.contains("type='pci'") || original.contains("type=\"pci\"");
        let attrs: Vec<String> = typed
            .then(|| "type='pci'".to_string())
            .into_iter()
            .chain(
                new.libvirt_attrs()
                    .iter()
                    .map(|(k, v)| format!("{k}='{v}'")),
            )
            .collect();
        edits.push((
            source_span.clone(),
            format!("<address {}{close}", attrs.join(" ")),
        ));
    }
    edits.extend(metadata_address_edit(xml, old, new));
    edits
}

/// The document with the edits applied (back to front, so spans stay valid); `None` when there
/// are none.
fn apply(xml: &str, mut edits: Vec<(Range<usize>, String)>) -> Option<String> {
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

/// The span of the `address` attribute value of our `vf` element naming `old`, with its new text.
fn metadata_address_edit(
    xml: &str,
    old: PciAddress,
    new: PciAddress,
) -> Option<(Range<usize>, String)> {
    let mut reader = quick_xml::NsReader::from_str(xml);
    loop {
        let before = reader.buffer_position() as usize;
        let (ns, ev) = reader.read_resolved_event().ok()?;
        let ours = matches!(ns, quick_xml::name::ResolveResult::Bound(n) if n.0 == crate::model::domain::NAMESPACE);
        match ev {
            quick_xml::events::Event::Empty(ref e) | quick_xml::events::Event::Start(ref e)
                if ours && e.local_name().as_ref() == "vf" =>
            {
                let value = e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == "address")?;
                if value.value.parse::<PciAddress>().ok()? != old {
                    continue;
                }
                let end = reader.buffer_position() as usize;
                let raw = &xml[before..end];
                // The attribute named exactly `address` (not `xmlns:address`, not `x:address`).
                let key_at = raw.match_indices("address").map(|(i, _)| i).find(|&i| {
                    raw[..i].ends_with(|c: char| c.is_ascii_whitespace())
                        && raw[i + 7..].trim_start().starts_with('=')
                })?;
                let after_key = &raw[key_at..];
                let quote_at = after_key.find(['"', '\''])?;
                let quote = after_key.as_bytes()[quote_at] as char;
                let value_start = before + key_at + quote_at + 1;
                let value_len = xml[value_start..].find(quote)?;
                return Some((value_start..value_start + value_len, new.to_string()));
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}
