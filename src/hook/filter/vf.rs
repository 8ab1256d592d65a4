//! The VFs of a domain that comes to this host: where one the XML names is absent or held here,
//! a free VF of the same PF kind and model takes its place, in the hostdev's source `<address/>`
//! and in our metadata's `address`.

use std::collections::BTreeSet;

use super::{metadata_attr_edit, Edit, FilterRefusal, Target};
use crate::alloc::numa::Wanted;
use crate::alloc::vf::mdevs_on_vfs;
use crate::host::state::Device;
use crate::host::sysfs::Sysfs;
use crate::model::config::PfKind;
use crate::model::domain::{Domain, Hostdev, VfRequest};
use crate::model::pci::PciAddress;

/// The edits that move the domain's VFs onto free ones here; none when each can stay.
pub(super) fn edits(
    target: &Target<'_>,
    dom: &Domain,
    xml: &str,
) -> Result<Vec<Edit>, FilterRefusal> {
    let vf_requests: Vec<&VfRequest> = dom.vf_requests().collect();
    if vf_requests.is_empty() {
        return Ok(Vec::new());
    }
    let (sysfs, state) = (&target.host.sysfs, target.state);
    // Read once: the search below asks about every VF of every PF of the model.
    let on_vfs = mdevs_on_vfs(sysfs, state);
    let here = Here {
        sysfs,
        // A drained PF's VFs are not this host's to give: one named there is replaced.
        pfs: target
            .config
            .vf_pfs()
            .into_iter()
            .filter(|(pf, _)| target.drains.of(&pf.to_string()).is_none())
            .collect(),
        numa: target.numa(dom),
        holder: &|vf: PciAddress| {
            let of_vf = state
                .holder(&Device::Vf { address: vf }, target.live)
                .filter(|r| r.domain_uuid != dom.uuid)
                .map(|r| format!("domain '{}'", r.domain_name));
            of_vf.or_else(|| on_vfs.get(&vf).map(ToString::to_string))
        },
    };
    let referenced: Vec<PciAddress> = vf_requests.iter().map(|v| v.address).collect();
    let mut taken: Vec<PciAddress> = Vec::new();
    let mut edits: Vec<Edit> = Vec::new();
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
    Ok(edits)
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
fn address_edits(dom: &Domain, xml: &str, old: PciAddress, new: PciAddress) -> Vec<Edit> {
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
    edits.extend(metadata_attr_edit(
        xml,
        "vf",
        "address",
        |v| v.parse::<PciAddress>().ok() == Some(old),
        new.to_string(),
    ));
    edits
}
