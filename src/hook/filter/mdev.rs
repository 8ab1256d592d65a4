//! The mdevs of a domain that comes to this host. A UUID that is free here stays as written, so
//! nothing is printed (libvirt keeps the source's XML, as Proxmox does by making the same UUID on
//! the target); one that exists here already, other than as this domain's own leftover, is
//! replaced by a fresh UUID in the hostdev and in our metadata, so the start never takes over a
//! device that is not the domain's. Every request must have room here now: the same survey
//! `prepare` makes, changing nothing, so a full host refuses before libvirt starts a QEMU.

use super::{metadata_attr_edit, Edit, FilterRefusal, Target};
use crate::alloc::mdev::check_room;
use crate::alloc::txn::Txn;
use crate::alloc::Ctx;
use crate::host::state::{Device, Liveness, State};
use crate::host::Host;
use crate::model::domain::{Domain, Hostdev, MdevRequest};
use crate::model::names::MdevUuid;

/// The edits that give colliding mdevs fresh UUIDs, once every request is known to have room.
pub(super) fn edits(
    target: &Target<'_>,
    dom: &Domain,
    xml: &str,
) -> Result<Vec<Edit>, FilterRefusal> {
    let reqs: Vec<&MdevRequest> = dom.mdev_requests().collect();
    if reqs.is_empty() {
        return Ok(Vec::new());
    }
    room(target, dom, &reqs)?;
    let Target {
        host, state, live, ..
    } = *target;
    let mut edits = Vec::new();
    for req in reqs
        .iter()
        .filter(|r| collides(host, dom, state, live, &r.uuid))
    {
        let new = MdevUuid::new_random();
        log::info!(
            "domain '{}': mdev {} exists on this host already; it comes here as {new}",
            dom.name,
            req.uuid
        );
        edits.extend(uuid_edits(dom, xml, &req.uuid, &new));
    }
    Ok(edits)
}

/// Whether the UUID is taken here: another domain's record holds it, or the device exists and is
/// not this domain's own leftover (made by hand, by another tool, or still another VM's).
fn collides(host: &Host, dom: &Domain, state: &State, live: &Liveness, uuid: &MdevUuid) -> bool {
    let device = Device::Mdev { uuid: uuid.clone() };
    let held_by_other = state
        .holder(&device, live)
        .is_some_and(|r| r.domain_uuid != dom.uuid);
    let own = state
        .owner(&device)
        .is_some_and(|r| r.domain_uuid == dom.uuid);
    held_by_other || (host.sysfs.mdev_exists(uuid) && !own)
}

/// Room for every request here now, placed as `prepare` places them, on a copy of the state and
/// with a transaction that is never used: nothing on the host changes.
fn room(target: &Target<'_>, dom: &Domain, reqs: &[&MdevRequest]) -> Result<(), FilterRefusal> {
    let numa = target.numa(dom);
    let mut state = target.state.clone();
    let mut txn = Txn::default();
    let mut ctx = Ctx {
        host: target.host,
        live: target.live,
        config: target.config,
        dom,
        state: &mut state,
        txn: &mut txn,
        numa: numa.as_ref(),
        drains: target.drains,
    };
    check_room(&mut ctx, reqs).map_err(|refusal| FilterRefusal::NoRoom {
        host: target
            .host
            .procfs
            .hostname()
            .unwrap_or_else(|| "this host".into()),
        refusal: Box::new(refusal),
    })
}

/// The edits that rename `old` to `new`: the UUID in the hostdev's source `<address/>` and our
/// metadata's `uuid` attribute.
fn uuid_edits(dom: &Domain, xml: &str, old: &MdevUuid, new: &MdevUuid) -> Vec<Edit> {
    let mut edits = Vec::new();
    if let Some(Hostdev::Mdev { source_span, .. }) = dom.mdev_hostdev(old) {
        let element = &xml[source_span.clone()];
        if let Some(at) = super::attr_value_span(element, "uuid") {
            let start = source_span.start + at.start;
            edits.push((start..source_span.start + at.end, new.to_string()));
        }
    }
    edits.extend(metadata_attr_edit(
        xml,
        "mdev",
        "uuid",
        |v| MdevUuid::parse(v).is_ok_and(|u| &u == old),
        new.to_string(),
    ));
    edits
}
