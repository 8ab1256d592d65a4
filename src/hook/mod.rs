//! What the hook does for each libvirt call: allocate at `prepare begin`, tear down at
//! `release end`, re-record at `reconnect begin`, rewrite VF addresses in the migrate/restore
//! filters.
//!
//! Allocation happens under the host-wide state lock and is all or nothing: every device this call
//! created is undone before a refusal is returned, and the refusal is one line that says what was
//! asked, what was tried on each GPU and why it failed. Release never fails (libvirt ignores its
//! exit code, and a VM is already down), never waits without a bound, and never touches a device
//! that a later owner has taken over.

use std::collections::BTreeSet;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::alloc::inventory::{self, MdevGpu, MdevState, PfKind};
use crate::alloc::placement::{self, Candidate};
use crate::host::sriov::Switch;
use crate::host::state::{now_secs, Device, Liveness, Record, State, StateError};
use crate::host::sysfs::{Sysfs, SysfsError};
use crate::host::Host;
use crate::model::config::{Config, ConfigError, Timing};
use crate::model::domain::{
    Domain, DomainError, Hostdev, MdevRequest, MdevWant, Request, VfRequest, VfWant,
};
use crate::model::names::{domain_name_is_safe, MdevUuid, ParentName, TypeId};
use crate::model::pci::PciAddress;

/// Why the hook refuses a call; its text is the operator's only explanation.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The config is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The domain XML is malformed or our metadata is invalid.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The request cannot be met; the text says why and what would fix it.
    #[error("{0}")]
    Refused(String),
}

/// A refusal while allocating; `waitable` when a configured device may still appear.
struct Failure {
    message: String,
    waitable: bool,
}

fn refuse(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        waitable: false,
    }
}

/// What one `prepare` did, so it can be undone.
#[derive(Default)]
struct Txn {
    created_mdevs: Vec<MdevUuid>,
    /// Creates that did not return in time: (writer pid, uuid). Undo waits for them, bounded.
    pending_creates: Vec<(i32, MdevUuid)>,
    set_vf_types: Vec<PciAddress>,
    /// PFs whose VFs this call enabled from zero, and how.
    enabled_vfs: Vec<(PciAddress, Switch)>,
}

impl Txn {
    fn undo(&self, sysfs: &Sysfs, config: &Config) {
        let timing = &config.timing;
        for (pid, uuid) in &self.pending_creates {
            if !crate::host::sysfs::wait_child(*pid, timing.device_wait) {
                log::error!("create of mdev {uuid} still pending; if it appears, `vgpuctl reconcile` removes it");
            } else if sysfs.mdev_exists(uuid) {
                self.remove(sysfs, timing, uuid);
            }
        }
        for uuid in &self.created_mdevs {
            self.remove(sysfs, timing, uuid);
        }
        for &vf in &self.set_vf_types {
            match sysfs.set_current_vgpu_type(vf, 0, timing.remove_timeout) {
                Ok(()) => log::info!("rolled back vGPU type of VF {vf}"),
                Err(e) => {
                    log::error!("rollback of VF {vf} type failed: {e}; run `vgpuctl reconcile`")
                }
            }
        }
        for (pf, switch) in &self.enabled_vfs {
            match switch.disable(sysfs, config, *pf) {
                Ok(()) => log::info!("disabled the VFs of {pf} again"),
                Err(e) => log::error!("could not disable the VFs of {pf} again: {e}"),
            }
        }
    }

    fn remove(&self, sysfs: &Sysfs, timing: &Timing, uuid: &MdevUuid) {
        match sysfs.remove_mdev(uuid, timing.remove_timeout) {
            Ok(()) => log::info!("rolled back mdev {uuid}"),
            Err(e) => log::error!("rollback of mdev {uuid} failed: {e}; run `vgpuctl reconcile`"),
        }
    }
}

struct Ctx<'a> {
    host: &'a Host,
    live: &'a Liveness,
    config: &'a Config,
    dom: &'a Domain,
    state: &'a mut State,
    txn: &'a mut Txn,
}

impl Ctx<'_> {
    fn sysfs(&self) -> &Sysfs {
        &self.host.sysfs
    }

    fn record(&mut self, device: Device, parent: String, type_id: Option<String>, created: bool) {
        let since = self.state.owner(&device).map_or_else(now_secs, |r| r.since);
        self.state.put(Record {
            domain_uuid: self.dom.uuid.clone(),
            domain_name: self.dom.name.clone(),
            device,
            parent,
            type_id,
            since,
            created,
        });
    }

    /// The other domain holding a device, if any.
    fn other_owner(&self, device: &Device) -> Option<String> {
        self.state
            .holder(device, self.live)
            .filter(|r| r.domain_uuid != self.dom.uuid)
            .map(|r| r.domain_name.clone())
    }
}

/// `prepare begin`: create or claim everything the domain asks for, or nothing.
pub fn prepare(host: &Host, config: &Config, dom: &Domain) -> Result<(), HookError> {
    if dom.requests.is_empty() {
        return Ok(());
    }
    if !domain_name_is_safe(&dom.name) || dom.uuid.is_empty() {
        return Err(HookError::Refused(format!(
            "domain XML has no usable <name>/<uuid> ('{}')",
            crate::printable(&dom.name, 60)
        )));
    }
    let timing = &config.timing;
    let deadline = Instant::now() + timing.parent_wait;
    loop {
        let locked = host.state.lock()?;
        let mut state = locked.load()?;
        let live = Liveness::new(&host.libvirt_run_dir, timing.prepare_grace);
        let stale = state.drop_stale(&live, |r| leaves_something(&host.sysfs, r));
        for r in &stale {
            log::info!(
                "dropped stale record: {} of domain '{}' (not running)",
                r.device,
                r.domain_name
            );
        }
        let base = state.clone();
        let mut txn = Txn::default();
        let mut ctx = Ctx {
            host,
            live: &live,
            config,
            dom,
            state: &mut state,
            txn: &mut txn,
        };
        let result = dom.requests.iter().try_for_each(|r| match r {
            Request::Mdev(m) => allocate_mdev(&mut ctx, m),
            Request::Vf(v) => allocate_vf(&mut ctx, v),
        });
        match result {
            Ok(()) => {
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
                return Ok(());
            }
            Err(failure) => {
                txn.undo(&host.sysfs, config);
                if !stale.is_empty() {
                    if let Err(e) = locked.save(&base) {
                        log::error!("could not save state: {e}");
                    }
                }
                drop(locked);
                let now = Instant::now();
                if failure.waitable && now < deadline {
                    log::info!(
                        "domain '{}': waiting for devices: {}",
                        dom.name,
                        failure.message
                    );
                    sleep((deadline - now).min(Duration::from_millis(500)));
                    continue;
                }
                log::warn!("domain '{}': refused: {}", dom.name, failure.message);
                return Err(HookError::Refused(failure.message));
            }
        }
    }
}

/// Whether a record's device still has something its owner's release must undo: the mdev
/// exists, or the NVIDIA VF still has a vGPU type. A plain VF has nothing to undo.
fn leaves_something(sysfs: &Sysfs, r: &Record) -> bool {
    match &r.device {
        Device::Mdev { uuid } => sysfs.mdev_exists(uuid),
        Device::Vf { address } => {
            r.type_id.is_some() && sysfs.current_vgpu_type(*address).is_ok_and(|t| t != 0)
        }
    }
}

/// The type on `parent` that a request means: `Ok(None)` when absent, `Err` when ambiguous.
/// The type on `parent` that a request means: `Ok(None)` when absent, `Err` when ambiguous.
/// `hint` is the type id found on a previous GPU: identical boards share ids, so one read
/// confirms it instead of reading every type's name.
fn find_type(
    sysfs: &Sysfs,
    parent: &ParentName,
    want: &MdevWant,
    hint: Option<&TypeId>,
) -> Result<Option<(TypeId, String)>, String> {
    let p = match want {
        MdevWant::Type(t) => {
            return Ok(sysfs.has_type(parent, t).then(|| {
                let label = sysfs.type_name(parent, t).unwrap_or_else(|| t.to_string());
                (t.clone(), label)
            }))
        }
        MdevWant::Profile(p) => p,
    };
    if let Some(h) = hint {
        if let Some(name) = sysfs.type_name(parent, h).filter(|n| p.matches(n)) {
            return Ok(Some((h.clone(), name)));
        }
    }
    let types = sysfs.type_names(parent);
    let matches = p.pick(&types, |(_, name)| name.as_deref());
    match matches.as_slice() {
        [] => Ok(None),
        [(id, name)] => Ok(TypeId::parse(id)
            .ok()
            .map(|id| (id, name.clone().unwrap_or_default()))),
        many => Err(format!(
            "'{}' matches {}; use type= instead",
            want,
            many.iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn quoted_list(names: impl IntoIterator<Item = String>) -> String {
    names
        .into_iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn allocate_mdev(ctx: &mut Ctx<'_>, req: &MdevRequest) -> Result<(), Failure> {
    let sysfs = ctx.sysfs().clone();
    let timing = ctx.config.timing.clone();
    let device = Device::Mdev {
        uuid: req.uuid.clone(),
    };
    if let Some(other) = ctx.other_owner(&device) {
        return Err(refuse(format!(
            "mdev {} is held by domain '{other}' (two domains name the same UUID; give one a new UUID)",
            req.uuid
        )));
    }
    if !ctx.dom.has_mdev_hostdev(&req.uuid) {
        log::warn!(
            "domain '{}': vgpu:mdev {} has no matching <hostdev type='mdev'>; creating it anyway",
            ctx.dom.name,
            req.uuid
        );
    }
    let label = req.want.to_string();
    let all = inventory::mdev_gpus(ctx.config, &sysfs);
    if all.is_empty() {
        return Err(refuse(format!(
            "'{label}' asked, but {} lists no mdev parents (add GPUs to nvidia_vgpu_pfs or parents to mdev_parents)",
            ctx.config.path.display()
        )));
    }
    let allows = |gpu: &MdevGpu, parent: &ParentName| gpu.allows_parent(&req.parents, parent);
    let gpus: Vec<(usize, MdevGpu)> = all
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, g)| g.allowed_by(&req.parents))
        .collect();
    if gpus.is_empty() {
        return Err(refuse(format!(
            "parent={} names no configured mdev parent (configured: {})",
            req.parents
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(","),
            all.iter()
                .map(|g| g.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }

    // The UUID may already exist: a leftover of this domain, or pre-created by the operator.
    if let Some(live) = sysfs.mdev(&req.uuid) {
        let parent = ParentName::parse(&live.parent).ok();
        let fits = parent.as_ref().is_some_and(|p| {
            let on_allowed = gpus.iter().any(|(_, g)| {
                matches!(&g.state, MdevState::Parents(_, ps) if ps.contains(p)) && allows(g, p)
            });
            on_allowed
                && matches!(find_type(&sysfs, p, &req.want, None), Ok(Some((id, _))) if id.as_str() == live.type_id)
        });
        if !fits {
            return Err(refuse(format!(
                "mdev {} already exists as {} on {}, which is not '{label}' on an allowed parent; remove it (echo 1 > /sys/bus/mdev/devices/{}/remove) or give the domain a new UUID",
                req.uuid, live.type_id, live.parent, req.uuid
            )));
        }
        write_params(&sysfs, &timing, req)?;
        log::info!(
            "domain '{}': reusing existing mdev {}",
            ctx.dom.name,
            req.uuid
        );
        ctx.record(device, live.parent, Some(live.type_id), true);
        return Ok(());
    }

    let live_mdevs = sysfs.live_mdevs();
    let mut reasons: Vec<String> = Vec::new();
    let mut waitable = false;
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut hint: Option<TypeId> = None;
    for (index, gpu) in &gpus {
        let mut state = gpu.state.clone();
        if state == MdevState::VfsDisabled {
            if let Some(pf) = gpu.pf {
                let switch = Switch::for_pf(ctx.config, &sysfs, pf);
                match switch.enable(&sysfs, ctx.config, pf, PfKind::Nvidia) {
                    Ok(changed) => {
                        if changed {
                            ctx.txn.enabled_vfs.push((pf, switch));
                        }
                        state = inventory::classify_nvidia(&sysfs, pf);
                    }
                    Err(e) => {
                        reasons.push(format!("{} (SR-IOV VFs not enabled: {e})", gpu.key));
                        continue;
                    }
                }
            }
        }
        let parents = match state {
            MdevState::Parents(_, ps) => ps,
            MdevState::Missing => {
                waitable = true;
                reasons.push(format!(
                    "{} (missing: not on the PCI bus, see lspci; or drop it from the config)",
                    gpu.key
                ));
                continue;
            }
            MdevState::Unregistered | MdevState::VfsDisabled => {
                waitable = true;
                let hint = if gpu.nvidia {
                    "; is nvidia-vgpu-mgr running?"
                } else {
                    ""
                };
                reasons.push(format!(
                    "{} (not registered as an mdev parent{hint})",
                    gpu.key
                ));
                continue;
            }
            MdevState::NotMdev => {
                reasons.push(format!(
                    "{} (kernel-6.8+ vGPU: ask for it with vgpu:vf)",
                    gpu.key
                ));
                continue;
            }
        };
        let parents: Vec<ParentName> = parents.into_iter().filter(|p| allows(gpu, p)).collect();
        let on_gpu: Vec<&crate::host::sysfs::LiveMdev> = live_mdevs
            .iter()
            .filter(|m| parents.iter().any(|p| p.as_str() == m.parent))
            .collect();
        let mut found: Vec<(ParentName, TypeId, String, u32)> = Vec::new();
        let mut ambiguous = None;
        for p in &parents {
            match find_type(&sysfs, p, &req.want, hint.as_ref()) {
                Ok(Some((id, name))) => {
                    hint = Some(id.clone());
                    let available = sysfs.available_instances(p, &id).unwrap_or(0);
                    found.push((p.clone(), id, name, available));
                }
                Ok(None) => {}
                Err(msg) => ambiguous = Some(msg),
            }
        }
        if found.is_empty() {
            reasons.push(match ambiguous {
                Some(msg) => format!("{} ({msg})", gpu.key),
                None => format!("{} (no such type)", gpu.key),
            });
            continue;
        }
        let gpu_free: u32 = found.iter().map(|f| f.3).sum();
        let type_ids: BTreeSet<&str> = found.iter().map(|f| f.1.as_str()).collect();
        let gpu_hosts_type = on_gpu.iter().any(|m| type_ids.contains(m.type_id.as_str()));
        if gpu_free == 0 {
            let others: BTreeSet<String> = on_gpu
                .iter()
                .filter(|m| !type_ids.contains(m.type_id.as_str()))
                .map(|m| type_label(&sysfs, &m.parent, &m.type_id))
                .collect();
            if !others.is_empty() {
                reasons.push(format!("{} (hosts {})", gpu.key, quoted_list(others)));
            } else {
                let owners: Vec<Option<&Record>> = on_gpu
                    .iter()
                    .map(|m| {
                        ctx.state.owner(&Device::Mdev {
                            uuid: m.uuid.clone(),
                        })
                    })
                    .collect();
                let own = owners
                    .iter()
                    .flatten()
                    .filter(|r| r.domain_uuid == ctx.dom.uuid)
                    .count();
                let others = || {
                    owners
                        .iter()
                        .flatten()
                        .filter(|r| r.domain_uuid != ctx.dom.uuid)
                };
                let holders: BTreeSet<String> = others()
                    .filter(|r| ctx.live.holds(r))
                    .map(|r| r.domain_name.clone())
                    .collect();
                let stopped = others().filter(|r| !ctx.live.holds(r)).count();
                let unowned = owners.iter().filter(|o| o.is_none()).count();
                let mut held = Vec::new();
                if !holders.is_empty() {
                    held.push(format!("held by {}", quoted_list(holders)));
                }
                if own > 0 {
                    held.push(format!("{own} taken by this domain's earlier requests"));
                }
                if stopped > 0 {
                    held.push(format!("{stopped} of stopped domains, being released"));
                }
                if unowned > 0 {
                    held.push(format!("{unowned} not made by vgpu-hook"));
                }
                let suffix = if held.is_empty() {
                    String::new()
                } else {
                    format!(", {}", held.join(", "))
                };
                reasons.push(format!("{} (0 left{suffix})", gpu.key));
            }
        }
        candidates.extend(
            found
                .into_iter()
                .map(|(parent, type_id, _, available)| Candidate {
                    gpu_index: *index,
                    parent,
                    type_id,
                    available,
                    gpu_free,
                    gpu_hosts_type,
                }),
        );
    }

    // What a refused create's errno means, said once however many GPUs answered it.
    let mut meanings: BTreeSet<String> = BTreeSet::new();
    for c in placement::order(&candidates, ctx.config.placement) {
        match sysfs.create_mdev(&c.parent, &c.type_id, &req.uuid, timing.device_wait) {
            Ok(()) => {}
            Err(e) => {
                let why = match &e {
                    SysfsError::Write { errno, attr, .. } => {
                        if let Some(m) = crate::host::errno::meaning(*attr, *errno) {
                            meanings.insert(format!("{}: {m}", crate::host::errno::name(*errno)));
                        }
                        format!("create failed: {}", crate::host::errno::text(*errno))
                    }
                    other => other.to_string(),
                };
                log::warn!(
                    "domain '{}': create {} on {}: {e}",
                    ctx.dom.name,
                    c.type_id,
                    c.parent
                );
                if let SysfsError::Timeout { pid, .. } = e {
                    ctx.txn.pending_creates.push((pid, req.uuid.clone()));
                    reasons.push(format!(
                        "{} (create did not return within {} s; raise device_wait_secs or check the vendor's manager service)",
                        c.parent,
                        timing.device_wait.as_secs()
                    ));
                    return Err(refuse(format!("'{label}': {}", reasons.join(", "))));
                }
                reasons.push(format!("{} ({why})", c.parent));
                continue;
            }
        }
        ctx.txn.created_mdevs.push(req.uuid.clone());
        let deadline = Instant::now() + timing.device_wait;
        while !sysfs.mdev_exists(&req.uuid) {
            if Instant::now() >= deadline {
                return Err(refuse(format!(
                    "created mdev {} on {} but it did not appear within {} s",
                    req.uuid,
                    c.parent,
                    timing.device_wait.as_secs()
                )));
            }
            sleep(Duration::from_millis(10));
        }
        write_params(&sysfs, &timing, req)?;
        ctx.record(
            device,
            c.parent.to_string(),
            Some(c.type_id.to_string()),
            true,
        );
        return Ok(());
    }
    // Waiting for an absent GPU makes sense while the host boots (the vendor's manager registers
    // GPUs late) or when no present GPU offers the type at all; a GPU gone for good must not
    // delay every refusal on a running host by the whole bound.
    let meanings: String = meanings.iter().map(|m| format!("; {m}")).collect();
    Err(Failure {
        message: format!("no free '{label}' on {}{meanings}", reasons.join(", ")),
        waitable: waitable && (candidates.is_empty() || host_uptime() < timing.boot_window),
    })
}

fn host_uptime() -> Duration {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs_f64)
}

fn type_label(sysfs: &Sysfs, parent: &str, type_id: &str) -> String {
    ParentName::parse(parent)
        .ok()
        .zip(TypeId::parse(type_id).ok())
        .and_then(|(p, t)| sysfs.type_name(&p, &t))
        .unwrap_or_else(|| type_id.to_string())
}

fn write_params(sysfs: &Sysfs, timing: &Timing, req: &MdevRequest) -> Result<(), Failure> {
    let Some(params) = &req.params else {
        return Ok(());
    };
    if !sysfs.vgpu_params_path(&req.uuid).exists() {
        return Err(refuse(format!(
            "params given for mdev {}, but its parent has no nvidia/vgpu_params (not an NVIDIA vGPU); drop params",
            req.uuid
        )));
    }
    sysfs
        .set_vgpu_params(&req.uuid, params, timing.device_wait)
        .map_err(|e| refuse(format!("mdev {}: {e}", req.uuid)))
}

/// Finds the configured PF a VF belongs to, enabling VFs on a configured PF that has none if
/// needed (never changing a non-zero count).
fn locate_vf(ctx: &mut Ctx<'_>, vf: PciAddress) -> Result<PciAddress, Failure> {
    let sysfs = ctx.sysfs().clone();
    let pfs = inventory::vf_pfs(ctx.config);
    if let Some(pf) = sysfs.physfn(vf) {
        return pfs.into_iter().find(|(a, _)| *a == pf).map(|(a, _)| a).ok_or_else(|| {
            refuse(format!(
                "VF {vf} belongs to PF {pf}, which {} does not list (add it to sriov_pfs, amd_vgpu_pfs or nvidia_vgpu_pfs)",
                ctx.config.path.display()
            ))
        });
    }
    if sysfs.pci_exists(vf) {
        return Err(refuse(format!(
            "{vf} is not an SR-IOV VF (no physfn); use a plain PCI hostdev without vgpu:vf"
        )));
    }
    // The VF does not exist: try PFs with no VFs yet. Where the PF's config space tells where
    // its VFs will be (First VF Offset, VF Stride), only the PF that will have it; otherwise
    // nearest bus first, disabling again what turns out not to hold it.
    let mut dormant: Vec<(PciAddress, PfKind)> = pfs
        .into_iter()
        .filter(|(pf, _)| {
            pf.domain == vf.domain && pf.bus <= vf.bus && sysfs.sriov_totalvfs(*pf) > 0
        })
        .filter(|(pf, _)| sysfs.sriov_numvfs(*pf).is_ok_and(|n| n == 0))
        .filter(|(pf, _)| {
            sysfs
                .future_vfs(*pf, sysfs.sriov_totalvfs(*pf))
                .is_none_or(|future| future.contains(&vf))
        })
        .collect();
    dormant.sort_by_key(|(pf, _)| (vf.bus - pf.bus, std::cmp::Reverse(*pf)));
    let mut tried = Vec::new();
    for (pf, kind) in dormant {
        let switch = Switch::for_pf(ctx.config, &sysfs, pf);
        match switch.enable(&sysfs, ctx.config, pf, kind) {
            Ok(changed) if sysfs.physfn(vf) == Some(pf) => {
                if changed {
                    ctx.txn.enabled_vfs.push((pf, switch));
                }
                return Ok(pf);
            }
            Ok(true) => {
                if let Err(e) = switch.disable(&sysfs, ctx.config, pf) {
                    log::error!("could not disable the VFs of {pf} again: {e}");
                }
                tried.push(format!(
                    "{pf} (enabled VFs, {vf} not among them; disabled again)"
                ));
            }
            Ok(false) => tried.push(format!(
                "{pf} (its VFs were enabled meanwhile, {vf} not among them)"
            )),
            Err(e) => tried.push(format!("{pf} ({e})")),
        }
    }
    let detail = if tried.is_empty() {
        "no configured PF has it, and none has VFs left to enable".to_string()
    } else {
        tried.join(", ")
    };
    Err(refuse(format!("VF {vf} does not exist: {detail}")))
}

fn allocate_vf(ctx: &mut Ctx<'_>, req: &VfRequest) -> Result<(), Failure> {
    let sysfs = ctx.sysfs().clone();
    let timing = ctx.config.timing.clone();
    let vf = req.address;
    let device = Device::Vf { address: vf };
    if let Some(other) = ctx.other_owner(&device) {
        return Err(refuse(format!("VF {vf} is held by domain '{other}'")));
    }
    let pf = locate_vf(ctx, vf)?;
    let managed = match ctx.dom.pci_hostdev(vf) {
        Some(Hostdev::Pci { managed, .. }) => Some(*managed),
        _ => {
            log::warn!(
                "domain '{}': vgpu:vf {vf} has no matching <hostdev type='pci'>; claiming it anyway",
                ctx.dom.name
            );
            None
        }
    };
    if !sysfs.is_nvidia_vfio_vf(vf) {
        if let Some(w) = &req.want {
            return Err(refuse(format!(
                "VF {vf} has no NVIDIA vGPU interface (nvidia/current_vgpu_type), so type/profile '{}' cannot be set; drop it from vgpu:vf",
                w
            )));
        }
        if managed == Some(false) {
            let driver = sysfs.driver(vf);
            if driver.as_deref() != Some("vfio-pci") {
                return Err(refuse(format!(
                    "VF {vf} is bound to {} and its <hostdev> is managed='no': bind it to vfio-pci (driverctl set-override {vf} vfio-pci) or set managed='yes'",
                    driver.map_or_else(|| "no driver".to_string(), |d| format!("'{d}'"))
                )));
            }
        }
        ctx.record(device, pf.to_string(), None, false);
        return Ok(());
    }

    // NVIDIA kernel-6.8+ VF.
    if managed == Some(true) {
        return Err(refuse(format!(
            "VF {vf} is an NVIDIA vGPU VF: its <hostdev> must be managed='no' (it must stay on the nvidia driver)"
        )));
    }
    let Some(want) = &req.want else {
        return Err(refuse(format!(
            "VF {vf} is an NVIDIA vGPU VF: say which vGPU with type= or profile= on its vgpu:vf"
        )));
    };
    let current = sysfs
        .current_vgpu_type(vf)
        .map_err(|e| refuse(format!("VF {vf}: {e}")))?;
    // Another domain holding the VF was refused above: a record here is ours or a stopped one's.
    let recorded_type = ctx.state.owner(&device).and_then(|r| r.type_id.clone());
    if current != 0 {
        let same = match want {
            VfWant::Type(id) => *id == current,
            VfWant::Profile(_) => recorded_type.as_deref() == Some(current.to_string().as_str()),
        };
        if same {
            log::info!(
                "domain '{}': VF {vf} already has vGPU type {current}",
                ctx.dom.name
            );
            ctx.record(device, pf.to_string(), Some(current.to_string()), true);
            return Ok(());
        }
        // A leftover of a stopped domain or of someone else: one bounded try to clear it (a VF
        // still in use answers EBUSY, and retrying here would hold every other start).
        sysfs.set_current_vgpu_type(vf, 0, timing.remove_timeout).map_err(|e| {
            refuse(format!(
                "VF {vf} still has vGPU type {current} from an earlier user and it could not be cleared ({e}); stop whatever uses the VF or run `vgpuctl reconcile`"
            ))
        })?;
    }
    let creatable = sysfs
        .creatable_vgpu_types(vf)
        .map_err(|e| refuse(format!("VF {vf}: {e}")))?;
    let chosen = match want {
        VfWant::Type(t) => creatable.iter().find(|(id, _)| id == t),
        VfWant::Profile(p) => match p.pick(&creatable, |(_, n)| Some(n.as_str())).as_slice() {
            [] => None,
            [one] => Some(*one),
            many => {
                return Err(refuse(format!(
                    "'{p}' matches {} on VF {vf}; use type= with one of those ids",
                    many.iter()
                        .map(|(i, n)| format!("{i} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        },
    };
    let Some((id, _)) = chosen else {
        let list = if creatable.is_empty() {
            "nothing: the GPU is full or hosts another size".to_string()
        } else {
            creatable
                .iter()
                .map(|(i, n)| format!("{i} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(refuse(format!(
            "'{}' is not creatable on VF {vf} now (creatable: {list})",
            want
        )));
    };
    sysfs
        .set_current_vgpu_type(vf, *id, timing.device_wait)
        .map_err(|e| refuse(format!("VF {vf}: {e}")))?;
    ctx.txn.set_vf_types.push(vf);
    ctx.record(device, pf.to_string(), Some(id.to_string()), true);
    Ok(())
}

/// Whether a record belongs to the stopping domain: by UUID, or by name when the XML could not
/// be read (release then works from argv's domain name).
fn is_mine(r: &Record, dom: &Domain, domain_name: &str) -> bool {
    if dom.uuid.is_empty() {
        r.domain_name == domain_name
    } else {
        r.domain_uuid == dom.uuid
    }
}

/// Whether `device` is still recorded for this domain.
fn still_ours(state: &State, dom: &Domain, domain_name: &str, device: &Device) -> bool {
    state
        .owner(device)
        .is_some_and(|r| is_mine(r, dom, domain_name))
}

/// `release end`: tear down what the domain's records say it owns. Never fails; problems go to
/// the log. A device the metadata names but that the hook never recorded (refused because it
/// had the wrong type, or made by someone else) is not ours to remove.
pub fn release(host: &Host, timing: &Timing, dom: &Domain, domain_name: &str) {
    release_selected(host, timing, dom, domain_name, |_| true);
}

/// [`release`] of the recorded devices `select` picks (vgpuctl's live detach frees one device
/// the same way a stop frees all). Returns the devices that are still there.
pub fn release_selected(
    host: &Host,
    timing: &Timing,
    dom: &Domain,
    domain_name: &str,
    select: impl Fn(&Device) -> bool,
) -> Vec<Device> {
    let devices: Vec<(Device, bool)> = match host.state.lock().and_then(|l| l.load()) {
        Ok(state) => state
            .records
            .iter()
            .filter(|r| is_mine(r, dom, domain_name) && select(&r.device))
            .map(|r| (r.device.clone(), r.created))
            .collect(),
        Err(e) => {
            log::error!("domain '{domain_name}': release: {e}");
            return Vec::new();
        }
    };
    let sysfs = &host.sysfs;
    let mut done: Vec<Device> = Vec::new();
    let mut left: Vec<Device> = Vec::new();
    for (device, created) in devices {
        let ours = |st: &State| still_ours(st, dom, domain_name, &device);
        let gone = match &device {
            Device::Mdev { uuid } => release_mdev(sysfs, timing, uuid, || {
                host.state
                    .lock()
                    .and_then(|l| l.load())
                    .is_ok_and(|st| ours(&st))
            }),
            Device::Vf { address } if created && sysfs.is_nvidia_vfio_vf(*address) => {
                release_nvidia_vf(host, timing, *address, ours)
            }
            Device::Vf { .. } => true,
        };
        if gone {
            done.push(device);
        } else {
            left.push(device);
        }
    }
    let result = host.state.lock().and_then(|locked| {
        let mut state = locked.load()?;
        let before = state.records.len();
        state
            .records
            .retain(|r| !(is_mine(r, dom, domain_name) && done.contains(&r.device)));
        if state.records.len() != before {
            locked.save(&state)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        log::error!("domain '{domain_name}': release: {e}");
    }
    left
}

/// Waits for NVIDIA's own clean-up, then removes with bounded retries. True when the mdev is gone.
fn release_mdev(
    sysfs: &Sysfs,
    timing: &Timing,
    uuid: &MdevUuid,
    still_ours: impl Fn() -> bool,
) -> bool {
    if !sysfs.mdev_exists(uuid) {
        return true;
    }
    if sysfs
        .vgpu_params_path(uuid)
        .parent()
        .is_some_and(|d| d.is_dir())
    {
        let deadline = Instant::now() + timing.cleanup_wait;
        while sysfs.mdev_exists(uuid) && Instant::now() < deadline {
            sleep(Duration::from_millis(100));
        }
        if !sysfs.mdev_exists(uuid) {
            log::info!("mdev {uuid} removed by the driver itself");
            return true;
        }
    }
    for attempt in 1..=timing.retries {
        if !still_ours() {
            log::info!("mdev {uuid} now belongs to another domain; left alone");
            return false;
        }
        match sysfs.remove_mdev(uuid, timing.remove_timeout) {
            Ok(()) => {}
            Err(e) if matches!(e.errno(), Some(libc::ENODEV) | Some(libc::ENOENT)) => {}
            Err(e @ SysfsError::Timeout { .. }) => {
                // The kernel waits for the holder; the pending write finishes the job then.
                log::error!("mdev {uuid}: {e}: still in use; it is removed once its user lets go");
                return false;
            }
            Err(e) => log::warn!(
                "mdev {uuid}: remove attempt {attempt}/{}: {e}",
                timing.retries
            ),
        }
        if !sysfs.mdev_exists(uuid) {
            log::info!("removed mdev {uuid}");
            return true;
        }
        if attempt < timing.retries {
            sleep(timing.retry_interval);
        }
    }
    log::error!("mdev {uuid} could not be removed; run `vgpuctl reconcile` once its user is gone");
    false
}

/// Resets a kernel-6.8+ VF's vGPU type to 0 with bounded retries, only while it is still ours.
/// Each try checks ownership and writes under the state lock, so a prepare that claims the VF
/// for another domain cannot slip in between; a try that blocks is not repeated (its write is
/// still pending in the kernel and lands once the VF is free).
fn release_nvidia_vf(
    host: &Host,
    timing: &Timing,
    vf: PciAddress,
    ours: impl Fn(&State) -> bool,
) -> bool {
    let sysfs = &host.sysfs;
    for attempt in 1..=timing.retries {
        let Ok(locked) = host.state.lock() else {
            return false;
        };
        if !locked.load().is_ok_and(|st| ours(&st)) {
            log::info!("VF {vf} now belongs to another domain; its vGPU type is left alone");
            return true;
        }
        match sysfs.current_vgpu_type(vf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => {
                log::warn!("VF {vf}: {e}");
                return true;
            }
        }
        match sysfs.set_current_vgpu_type(vf, 0, timing.remove_timeout) {
            Ok(()) => {
                log::info!("reset vGPU type of VF {vf}");
                return true;
            }
            Err(e @ SysfsError::Timeout { .. }) => {
                log::error!("VF {vf}: {e}; the reset lands once the VF is released");
                return false;
            }
            Err(e) => log::warn!("VF {vf}: reset attempt {attempt}/{}: {e}", timing.retries),
        }
        drop(locked);
        if attempt < timing.retries {
            sleep(timing.retry_interval);
        }
    }
    log::error!("VF {vf}: vGPU type could not be reset; run `vgpuctl reconcile`");
    false
}

/// `reconnect begin`: the daemon restarted while the domain runs; record what it holds.
pub fn reconnect(host: &Host, config: Option<&Config>, dom: &Domain) -> Result<(), HookError> {
    let grace = config.map_or_else(
        || Timing::default().prepare_grace,
        |c| c.timing.prepare_grace,
    );
    let locked = host.state.lock()?;
    let mut state = locked.load()?;
    state.drop_stale(&Liveness::new(&host.libvirt_run_dir, grace), |r| {
        leaves_something(&host.sysfs, r)
    });
    for req in &dom.requests {
        let (device, parent, type_id) = match req {
            Request::Mdev(m) => match host.sysfs.mdev(&m.uuid) {
                Some(live) => (
                    Device::Mdev {
                        uuid: m.uuid.clone(),
                    },
                    live.parent,
                    Some(live.type_id),
                ),
                None => {
                    log::warn!(
                        "domain '{}': mdev {} is gone although the domain runs",
                        dom.name,
                        m.uuid
                    );
                    continue;
                }
            },
            Request::Vf(v) => {
                let Some(pf) = host.sysfs.physfn(v.address) else {
                    log::warn!(
                        "domain '{}': VF {} is gone although the domain runs",
                        dom.name,
                        v.address
                    );
                    continue;
                };
                let t = host
                    .sysfs
                    .current_vgpu_type(v.address)
                    .ok()
                    .filter(|&t| t != 0)
                    .map(|t| t.to_string());
                (Device::Vf { address: v.address }, pf.to_string(), t)
            }
        };
        if let Some(r) = state.owner(&device).filter(|r| r.domain_uuid != dom.uuid) {
            log::warn!(
                "domain '{}': {device} is recorded for domain '{}'; keeping that record",
                dom.name,
                r.domain_name
            );
            continue;
        }
        let since = state.owner(&device).map_or_else(now_secs, |r| r.since);
        let created = !matches!(device, Device::Vf { .. }) || type_id.is_some();
        state.put(Record {
            domain_uuid: dom.uuid.clone(),
            domain_name: dom.name.clone(),
            device,
            parent,
            type_id,
            since,
            created,
        });
    }
    locked.save(&state)?;
    Ok(())
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
    let sysfs = &host.sysfs;
    let state = host.state.lock()?.load()?;
    let live = Liveness::new(&host.libvirt_run_dir, config.timing.prepare_grace);
    let holder = |vf: PciAddress| {
        state
            .holder(&Device::Vf { address: vf }, &live)
            .filter(|r| r.domain_uuid != dom.uuid)
            .map(|r| r.domain_name.clone())
    };
    let pfs = inventory::vf_pfs(config);
    let pci_id = |a: PciAddress| {
        (
            sysfs.pci_vendor(a),
            sysfs.read(&sysfs.pci_dir(a).join("device")).ok(),
        )
    };
    let referenced: Vec<PciAddress> = vf_requests.iter().map(|v| v.address).collect();
    let mut taken: Vec<PciAddress> = Vec::new();
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for req in &vf_requests {
        let vf = req.address;
        let here = sysfs
            .physfn(vf)
            .filter(|pf| pfs.iter().any(|(a, _)| a == pf));
        let held = holder(vf);
        if here.is_some() && held.is_none() {
            continue;
        }
        // A replacement must be the same kind of device: a VF of a configured PF with the same
        // vendor and device id as the named VF's PF (or, when the named VF does not exist here,
        // as every configured PF of the request's kind, so a GPU VF never becomes a NIC's).
        let same_kind: Vec<PciAddress> = match here {
            Some(pf) => pfs
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| pci_id(*a) == pci_id(pf))
                .collect(),
            None => {
                let kind: Vec<PciAddress> = pfs
                    .iter()
                    .filter(|(a, k)| {
                        (*k == PfKind::Nvidia) == req.want.is_some() && sysfs.pci_exists(*a)
                    })
                    .map(|(a, _)| *a)
                    .collect();
                let ids: BTreeSet<_> = kind.iter().map(|a| pci_id(*a)).collect();
                if ids.len() > 1 {
                    return Err(HookError::Refused(format!(
                        "VF {vf} does not exist on this host and the configured PFs are of {} different models, so which one replaces it cannot be told; give the domain a VF of this host (vgpuctl attach --vf)",
                        ids.len()
                    )));
                }
                kind
            }
        };
        let replacement = same_kind
            .into_iter()
            .flat_map(|pf| sysfs.vfs(pf))
            .filter(|c| holder(*c).is_none() && !referenced.contains(c) && !taken.contains(c))
            .find(|&c| match &req.want {
                None => !sysfs.is_nvidia_vfio_vf(c),
                Some(want) => {
                    sysfs.current_vgpu_type(c).is_ok_and(|t| t == 0)
                        && sysfs
                            .creatable_vgpu_types(c)
                            .is_ok_and(|list| list.iter().any(|(id, name)| want.matches(*id, name)))
                }
            });
        let Some(new) = replacement else {
            let why = match (&held, sysfs.pci_exists(vf)) {
                (Some(d), _) => format!("held by domain '{d}'"),
                (None, true) => "not a VF of a configured PF".to_string(),
                (None, false) => "absent".to_string(),
            };
            return Err(HookError::Refused(format!(
                "VF {vf} is {why} on this host and no free VF of the same model can replace it; free one (virsh destroy) or add its PF to the config"
            )));
        };
        taken.push(new);
        log::info!("domain '{}': VF {vf} becomes {new} on this host", dom.name);
        if let Some(Hostdev::Pci { source_span, .. }) = dom.pci_hostdev(vf) {
            let attrs = new.libvirt_attrs();
            let close = if xml[source_span.clone()].ends_with("/>") {
                "/>"
            } else {
                ">"
            };
            let element = format!(
                "<address {}{close}",
                attrs
                    .iter()
                    .map(|(k, v)| format!("{k}='{v}'"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            edits.push((source_span.clone(), element));
        }
        edits.extend(metadata_address_edit(xml, vf, new));
    }
    if edits.is_empty() {
        return Ok(None);
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = xml.to_string();
    for (range, text) in edits {
        out.replace_range(range, &text);
    }
    Ok(Some(out))
}

/// The span of the `address` attribute value of our `vf` element naming `old`, with its new text.
fn metadata_address_edit(
    xml: &str,
    old: PciAddress,
    new: PciAddress,
) -> Option<(std::ops::Range<usize>, String)> {
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
