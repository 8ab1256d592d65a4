//! `prepare begin`: under the host-wide lock, allocate everything the domain asks for or nothing;
//! while a configured GPU may still appear (boot), retry within `parent_wait_secs`.

use std::thread::sleep;
use std::time::{Duration, Instant};

use super::HookError;
use crate::alloc::mdev::allocate_mdev;
use crate::alloc::numa::Wanted;
use crate::alloc::refusal::Refusal;
use crate::alloc::txn::Txn;
use crate::alloc::vf::allocate_vf;
use crate::alloc::{Ctx, Failure};
use crate::host::counters;
use crate::host::drains::Drains;
use crate::host::state::{Device, Locked, Read, Record};
use crate::host::sysfs::Sysfs;
use crate::host::Host;
use crate::model::config::{Config, NumaPolicy};
use crate::model::domain::{Domain, Request};
use crate::model::names::domain_name_is_safe;

/// `prepare begin`: create or claim everything the domain asks for, or nothing.
pub fn prepare(host: &Host, config: &Config, dom: &Domain) -> Result<(), HookError> {
    if dom.requests.is_empty() {
        return Ok(());
    }
    if !domain_name_is_safe(&dom.name) || dom.uuid.is_empty() {
        let refusal = Refusal::UnusableDomain(crate::printable(&dom.name, 60));
        if let Ok(locked) = host.state.lock() {
            count_refusal(&locked, &refusal);
        }
        return Err(refusal.into());
    }
    let numa = numa_wish(host, config, dom)?;
    let deadline = Instant::now() + config.timing.parent_wait;
    loop {
        let Err((failure, last)) = attempt(host, config, dom, &numa, deadline)? else {
            return Ok(());
        };
        let now = Instant::now();
        if !last {
            log::info!(
                "domain '{}': waiting for devices: {}",
                dom.name,
                failure.reason
            );
            sleep((deadline - now).min(Duration::from_millis(500)));
            continue;
        }
        log::warn!("domain '{}': refused: {}", dom.name, failure.reason);
        return Err(failure.reason.into());
    }
}

/// One try under the lock: allocate every request and save (dropping the stale records the
/// allocation read), or undo everything this try did and say why, and whether this was the
/// last try (then the refusal is counted, under the lock this try holds anyway).
fn attempt(
    host: &Host,
    config: &Config,
    dom: &Domain,
    numa: &Option<Wanted>,
    deadline: Instant,
) -> Result<Result<(), (Failure, bool)>, HookError> {
    let locked = host.state.lock()?;
    let mut state = super::load_state(host, &locked, config.timing.prepare_grace, Read::Lazy)?;
    let live = host.liveness(config.timing.prepare_grace);
    let drains = Drains::of_config(config)?;
    let mut txn = Txn::default();
    let mut ctx = Ctx {
        host,
        live: &live,
        config,
        dom,
        state: &mut state,
        txn: &mut txn,
        numa: numa.as_ref(),
        drains: &drains,
    };
    let result = dom.requests.iter().try_for_each(|r| match r {
        Request::Mdev(m) => allocate_mdev(&mut ctx, m),
        Request::Vf(v) => allocate_vf(&mut ctx, v),
    });
    if let Err(failure) = result {
        txn.undo(&host.sysfs, config);
        let last = !failure.waitable || Instant::now() >= deadline;
        if last {
            count_refusal(&locked, &failure.reason);
        }
        return Ok(Err((failure, last)));
    }
    for r in state.drop_stale(&live, |r| leaves_something(&host.sysfs, r)) {
        log::info!(
            "dropped stale record: {} of domain '{}' (not running)",
            r.device,
            r.domain_name
        );
    }
    if let Err(e) = locked.save(&state) {
        txn.undo(&host.sysfs, config);
        return Err(e.into());
    }
    for r in state.of_domain(&dom.uuid) {
        log::info!(
            "domain '{}': {} on {} ({})",
            dom.name,
            r.device,
            r.parent,
            r.type_id.as_deref().unwrap_or("-")
        );
    }
    Ok(Ok(()))
}

/// Counts a refusal by its reason, for `vgpuctl metrics`.
fn count_refusal(locked: &Locked, refusal: &Refusal) {
    counters::bump(
        locked,
        &format!("{}{}", counters::REFUSED_PREFIX, refusal.label()),
    );
}

/// The host nodes the domain wants. Wishes that cannot be used place the domain as if it had
/// none (and say why in the journal), unless the config requires NUMA placement.
fn numa_wish(host: &Host, config: &Config, dom: &Domain) -> Result<Option<Wanted>, HookError> {
    match Wanted::of(&dom.numa, &host.sysfs, config.numa) {
        Ok(w) => Ok(w),
        Err(why) if config.numa == NumaPolicy::Require => Err(Refusal::NumaUnusable {
            why,
            config: config.path.clone(),
        }
        .into()),
        Err(why) => {
            log::warn!(
                "domain '{}': NUMA placement ignored: {why}; placed as if the definition had none",
                dom.name
            );
            Ok(None)
        }
    }
}

/// Whether a record's device still has something its owner's release must undo: the mdev
/// exists, or the NVIDIA VF still has a vGPU type. A plain VF has nothing to undo.
pub(crate) fn leaves_something(sysfs: &Sysfs, r: &Record) -> bool {
    match &r.device {
        Device::Mdev { uuid } => sysfs.mdev_exists(uuid),
        Device::Vf { address } => {
            r.type_id.is_some() && sysfs.current_vgpu_type(*address).is_ok_and(|t| t != 0)
        }
    }
}
