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

use crate::config::{Config, ConfigError, Timing};
use crate::domain::{
    Domain, DomainError, Hostdev, MdevRequest, MdevWant, Request, VfRequest, VfWant,
};
use crate::host::Host;
use crate::inventory::{self, Generation, MdevGpu, MdevState, PfKind};
use crate::names::{domain_name_is_safe, MdevUuid, ParentName, TypeId};
use crate::pci::PciAddress;
use crate::placement::{self, Candidate};
use crate::state::{now_secs, Device, Liveness, Record, State, StateError};
use crate::sysfs::{errno_text, Sysfs, SysfsError};

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
    set_vf_types: Vec<PciAddress>,
}

impl Txn {
    fn undo(&self, sysfs: &Sysfs, timing: &Timing) {
        for uuid in &self.created_mdevs {
            match sysfs.remove_mdev(uuid, timing.remove_timeout) {
                Ok(()) => log::info!("rolled back mdev {uuid}"),
                Err(e) => {
                    log::error!("rollback of mdev {uuid} failed: {e}; run `vgpuctl reconcile`")
                }
            }
        }
        for &vf in &self.set_vf_types {
            match sysfs.set_current_vgpu_type(vf, 0, timing.remove_timeout) {
                Ok(()) => log::info!("rolled back vGPU type of VF {vf}"),
                Err(e) => {
                    log::error!("rollback of VF {vf} type failed: {e}; run `vgpuctl reconcile`")
                }
            }
        }
    }
}

struct Ctx<'a> {
    host: &'a Host,
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

    /// The other domain holding a device, if any (records are already filtered for liveness).
    fn other_owner(&self, device: &Device) -> Option<String> {
        self.state
            .owner(device)
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
        let stale = state.drop_stale(&live);
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
                    txn.undo(&host.sysfs, timing);
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
                txn.undo(&host.sysfs, timing);
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

fn want_label(want: &MdevWant) -> String {
    match want {
        MdevWant::Type(t) => t.to_string(),
        MdevWant::Profile(p) => p.to_string(),
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
            want_label(want),
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

/// Tries to enable the VFs of an SR-IOV PF that has none; never touches a non-zero count.
fn enable_vfs(sysfs: &Sysfs, config: &Config, pf: PciAddress) -> Result<u32, SysfsError> {
    let total = sysfs.sriov_totalvfs(pf);
    let current = sysfs.sriov_numvfs(pf)?;
    if current != 0 {
        return Ok(current);
    }
    let want = match config.vf_count {
        0 => total,
        n => n.min(total),
    };
    sysfs.set_sriov_numvfs(pf, want, config.timing.device_wait)?;
    log::info!("enabled {want} VFs on {pf}");
    Ok(want)
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
    let label = want_label(&req.want);
    let all = inventory::mdev_gpus(ctx.config, &sysfs);
    if all.is_empty() {
        return Err(refuse(format!(
            "'{label}' asked, but {} lists no mdev parents (add GPUs to nvidia_vgpu_pfs or parents to mdev_parents)",
            ctx.config.path.display()
        )));
    }
    // Which GPUs (and which of their parents) the request allows.
    let allows = |gpu: &MdevGpu, parent: &ParentName| {
        req.parents.is_empty()
            || req
                .parents
                .iter()
                .any(|p| p.as_str() == gpu.key || p == parent)
    };
    let gpus: Vec<(usize, MdevGpu)> = all
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, g)| {
            req.parents.is_empty()
                || req.parents.iter().any(|p| p.as_str() == g.key)
                || matches!(&g.state, MdevState::Parents(_, ps) if ps.iter().any(|p| req.parents.contains(p)))
        })
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
        write_params(&sysfs, req)?;
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
                match enable_vfs(&sysfs, ctx.config, pf) {
                    Ok(_) => state = inventory::classify_nvidia(&sysfs, pf),
                    Err(e) if e.errno() == Some(libc::ENOENT) => {
                        reasons.push(format!(
                            "{} (SR-IOV VFs not enabled and the driver refuses sysfs; run /usr/lib/nvidia/sriov-manage -e {pf})",
                            gpu.key
                        ));
                        continue;
                    }
                    Err(e) => {
                        reasons.push(format!("{} (enabling VFs failed: {e})", gpu.key));
                        continue;
                    }
                }
            }
        }
        let parents = match state {
            MdevState::Parents(_, ps) => ps,
            MdevState::Missing => {
                waitable = true;
                reasons.push(format!("{} (missing)", gpu.key));
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
        let on_gpu: Vec<&crate::sysfs::LiveMdev> = live_mdevs
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
                let holders: BTreeSet<String> = owners
                    .iter()
                    .flatten()
                    .filter(|r| r.domain_uuid != ctx.dom.uuid)
                    .map(|r| r.domain_name.clone())
                    .collect();
                let unowned = owners.iter().filter(|o| o.is_none()).count();
                let mut held = Vec::new();
                if !holders.is_empty() {
                    held.push(format!("held by {}", quoted_list(holders)));
                }
                if own > 0 {
                    held.push(format!("{own} taken by this domain's earlier requests"));
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

    for c in placement::order(&candidates, ctx.config.placement) {
        match sysfs.create_mdev(&c.parent, &c.type_id, &req.uuid, timing.device_wait) {
            Ok(()) => {}
            Err(e) => {
                let why = match &e {
                    SysfsError::Write { errno, .. } => {
                        format!("create failed: {}", errno_text(errno))
                    }
                    other => other.to_string(),
                };
                log::warn!(
                    "domain '{}': create {} on {}: {e}",
                    ctx.dom.name,
                    c.type_id,
                    c.parent
                );
                reasons.push(format!("{} ({why})", c.parent));
                if matches!(e, SysfsError::Timeout { .. }) {
                    ctx.txn.created_mdevs.push(req.uuid.clone());
                    return Err(refuse(format!("'{label}': {}", reasons.join(", "))));
                }
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
        write_params(&sysfs, req)?;
        ctx.record(
            device,
            c.parent.to_string(),
            Some(c.type_id.to_string()),
            true,
        );
        return Ok(());
    }
    Err(Failure {
        message: format!("no free '{label}' on {}", reasons.join(", ")),
        waitable,
    })
}

fn type_label(sysfs: &Sysfs, parent: &str, type_id: &str) -> String {
    ParentName::parse(parent)
        .ok()
        .and_then(|p| sysfs.mdev_types(&p).into_iter().find(|t| t.id == type_id))
        .and_then(|t| t.name)
        .unwrap_or_else(|| type_id.to_string())
}

fn write_params(sysfs: &Sysfs, req: &MdevRequest) -> Result<(), Failure> {
    let Some(params) = &req.params else {
        return Ok(());
    };
    let path = sysfs.vgpu_params_path(&req.uuid);
    if !path.exists() {
        return Err(refuse(format!(
            "params given for mdev {}, but its parent has no nvidia/vgpu_params (not an NVIDIA vGPU); drop params",
            req.uuid
        )));
    }
    crate::sysfs::write_attr(&path, params.as_str())
        .map_err(|e| refuse(format!("mdev {}: {e}", req.uuid)))
}

fn vf_want_label(want: &VfWant) -> String {
    match want {
        VfWant::Type(id) => id.to_string(),
        VfWant::Profile(p) => p.to_string(),
    }
}

/// Finds the configured PF a VF belongs to, enabling VFs on a configured PF that has none if
/// needed (never changing a non-zero count).
fn locate_vf(ctx: &Ctx<'_>, vf: PciAddress) -> Result<(PciAddress, PfKind), Failure> {
    let sysfs = ctx.sysfs();
    let pfs = inventory::vf_pfs(ctx.config);
    if let Some(pf) = sysfs.physfn(vf) {
        return pfs.into_iter().find(|(a, _)| *a == pf).ok_or_else(|| {
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
    // The VF does not exist: try PFs with no VFs yet, nearest bus first.
    let mut dormant: Vec<(PciAddress, PfKind)> = pfs
        .into_iter()
        .filter(|(pf, _)| {
            pf.domain == vf.domain && pf.bus <= vf.bus && sysfs.sriov_totalvfs(*pf) > 0
        })
        .filter(|(pf, _)| sysfs.sriov_numvfs(*pf).is_ok_and(|n| n == 0))
        .collect();
    dormant.sort_by_key(|(pf, _)| (vf.bus - pf.bus, std::cmp::Reverse(*pf)));
    let mut tried = Vec::new();
    for (pf, kind) in dormant {
        match enable_vfs(sysfs, ctx.config, pf) {
            Ok(_) if sysfs.physfn(vf) == Some(pf) => return Ok((pf, kind)),
            Ok(_) => {
                let _ = sysfs.set_sriov_numvfs(pf, 0, ctx.config.timing.device_wait);
                tried.push(format!("{pf} (enabled VFs, {vf} not among them; disabled again)"));
            }
            Err(e) if e.errno() == Some(libc::ENOENT) => tried.push(match kind {
                PfKind::Amd => format!("{pf} (VF count is fixed by the gim driver: set vf_num, e.g. modprobe gim vf_num=4)"),
                PfKind::Nvidia => format!("{pf} (run /usr/lib/nvidia/sriov-manage -e {pf})"),
                PfKind::Generic => format!("{pf} (driver does not allow enabling VFs through sysfs)"),
            }),
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
    let (pf, _kind) = locate_vf(ctx, vf)?;
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
                vf_want_label(w)
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
    let ours = ctx
        .state
        .owner(&device)
        .is_some_and(|r| r.domain_uuid == ctx.dom.uuid);
    let recorded_type = ctx.state.owner(&device).and_then(|r| r.type_id.clone());
    if current != 0 {
        let same = match want {
            VfWant::Type(id) => *id == current,
            VfWant::Profile(_) => recorded_type.as_deref() == Some(current.to_string().as_str()),
        };
        if same && (ours || ctx.state.owner(&device).is_none()) {
            log::info!(
                "domain '{}': VF {vf} already has vGPU type {current}",
                ctx.dom.name
            );
            ctx.record(device, pf.to_string(), Some(current.to_string()), true);
            return Ok(());
        }
        // A leftover type nobody running holds: clear it first.
        reset_vf_type(&sysfs, vf, &timing).map_err(|e| {
            refuse(format!(
                "VF {vf} has leftover vGPU type {current} that could not be cleared: {e}"
            ))
        })?;
    }
    let creatable = sysfs
        .creatable_vgpu_types(vf)
        .map_err(|e| refuse(format!("VF {vf}: {e}")))?;
    let chosen = creatable.iter().find(|(id, name)| match want {
        VfWant::Type(t) => t == id,
        VfWant::Profile(p) => p.matches(name),
    });
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
            vf_want_label(want)
        )));
    };
    sysfs
        .set_current_vgpu_type(vf, *id, timing.device_wait)
        .map_err(|e| refuse(format!("VF {vf}: {e}")))?;
    ctx.txn.set_vf_types.push(vf);
    ctx.record(device, pf.to_string(), Some(id.to_string()), true);
    Ok(())
}

fn reset_vf_type(sysfs: &Sysfs, vf: PciAddress, timing: &Timing) -> Result<(), SysfsError> {
    let mut last = None;
    for attempt in 1..=timing.retries {
        match sysfs.set_current_vgpu_type(vf, 0, timing.remove_timeout) {
            Ok(()) => return Ok(()),
            Err(e) => {
                log::warn!("VF {vf}: reset attempt {attempt}/{}: {e}", timing.retries);
                last = Some(e);
            }
        }
        if attempt < timing.retries {
            sleep(timing.retry_interval);
        }
    }
    Err(last.unwrap_or(SysfsError::Malformed {
        path: sysfs.nvidia_vf_dir(vf),
        content: String::new(),
        expected: "a reset to succeed",
    }))
}

/// Devices a stopping domain owns: its records.
fn owned_devices(
    host: &Host,
    dom: &Domain,
    domain_name: &str,
) -> Result<Vec<(Device, bool)>, StateError> {
    let locked = host.state.lock()?;
    let state = locked.load()?;
    let mine = |r: &Record| {
        if dom.uuid.is_empty() {
            r.domain_name == domain_name
        } else {
            r.domain_uuid == dom.uuid
        }
    };
    // Only what the records say: a device the metadata names but that the hook never recorded
    // (refused because it had the wrong type, or made by someone else) is not ours to remove.
    Ok(state
        .records
        .iter()
        .filter(|r| mine(r))
        .map(|r| (r.device.clone(), r.created))
        .collect())
}

/// Whether `device` is still recorded for this domain.
fn still_ours(host: &Host, dom: &Domain, domain_name: &str, device: &Device) -> bool {
    let Ok(locked) = host.state.lock() else {
        return false;
    };
    let Ok(state) = locked.load() else {
        return false;
    };
    match state.owner(device) {
        None => false,
        Some(r) if dom.uuid.is_empty() => r.domain_name == domain_name,
        Some(r) => r.domain_uuid == dom.uuid,
    }
}

/// `release end`: tear down what the domain owned. Never fails; problems go to the log.
pub fn release(host: &Host, timing: &Timing, dom: &Domain, domain_name: &str) {
    let devices = match owned_devices(host, dom, domain_name) {
        Ok(d) => d,
        Err(e) => {
            log::error!("domain '{domain_name}': release: {e}");
            return;
        }
    };
    let sysfs = &host.sysfs;
    let mut done: Vec<Device> = Vec::new();
    for (device, created) in devices {
        match &device {
            Device::Mdev { uuid } => {
                if release_mdev(sysfs, timing, uuid, || {
                    still_ours(host, dom, domain_name, &device)
                }) {
                    done.push(device.clone());
                }
            }
            Device::Vf { address } => {
                if !created || !sysfs.is_nvidia_vfio_vf(*address) {
                    done.push(device.clone());
                    continue;
                }
                if release_nvidia_vf(sysfs, timing, *address, || {
                    still_ours(host, dom, domain_name, &device)
                }) {
                    done.push(device.clone());
                }
            }
        }
    }
    let result = host.state.lock().and_then(|locked| {
        let mut state = locked.load()?;
        let before = state.records.len();
        state.records.retain(|r| {
            let mine = if dom.uuid.is_empty() {
                r.domain_name == domain_name
            } else {
                r.domain_uuid == dom.uuid
            };
            !(mine && done.contains(&r.device))
        });
        if state.records.len() != before {
            locked.save(&state)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        log::error!("domain '{domain_name}': release: {e}");
    }
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
fn release_nvidia_vf(
    sysfs: &Sysfs,
    timing: &Timing,
    vf: PciAddress,
    still_ours: impl Fn() -> bool,
) -> bool {
    for attempt in 1..=timing.retries {
        if !still_ours() {
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
            Err(e) => log::warn!("VF {vf}: reset attempt {attempt}/{}: {e}", timing.retries),
        }
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
    state.drop_stale(&Liveness::new(&host.libvirt_run_dir, grace));
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
    let locked = host.state.lock()?;
    let mut state = locked.load()?;
    drop(locked);
    state.drop_stale(&Liveness::new(
        &host.libvirt_run_dir,
        config.timing.prepare_grace,
    ));
    let held_by_other = |vf: PciAddress| {
        state
            .owner(&Device::Vf { address: vf })
            .is_some_and(|r| r.domain_uuid != dom.uuid)
    };
    let referenced: Vec<PciAddress> = vf_requests.iter().map(|v| v.address).collect();
    let mut taken: Vec<PciAddress> = Vec::new();
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for req in &vf_requests {
        let vf = req.address;
        let usable = sysfs
            .physfn(vf)
            .is_some_and(|pf| inventory::vf_pfs(config).iter().any(|(a, _)| *a == pf))
            && !held_by_other(vf);
        if usable {
            continue;
        }
        let nvidia = req.want.is_some();
        let replacement = inventory::vf_pfs(config)
            .into_iter()
            .flat_map(|(pf, _)| sysfs.vfs(pf))
            .filter(|c| !held_by_other(*c) && !referenced.contains(c) && !taken.contains(c))
            .find(|&c| {
                if nvidia != sysfs.is_nvidia_vfio_vf(c) {
                    return false;
                }
                match &req.want {
                    None => true,
                    Some(want) => {
                        sysfs.current_vgpu_type(c).is_ok_and(|t| t == 0)
                            && sysfs.creatable_vgpu_types(c).is_ok_and(|list| {
                                list.iter().any(|(id, name)| match want {
                                    VfWant::Type(t) => t == id,
                                    VfWant::Profile(p) => p.matches(name),
                                })
                            })
                    }
                }
            });
        let Some(new) = replacement else {
            return Err(HookError::Refused(format!(
                "VF {vf} is {} on this host and no free VF of a configured PF can replace it",
                if sysfs.pci_exists(vf) {
                    "held by another domain"
                } else {
                    "absent"
                }
            )));
        };
        taken.push(new);
        log::info!("domain '{}': VF {vf} becomes {new} on this host", dom.name);
        if let Some(Hostdev::Pci { source_span, .. }) = dom.pci_hostdev(vf) {
            let attrs = new.libvirt_attrs();
            let element = format!(
                "<address {}/>",
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
        let ours = matches!(ns, quick_xml::name::ResolveResult::Bound(n) if n.0 == crate::domain::NAMESPACE);
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
                let key_at = raw.find("address")?;
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

/// Generation of each configured GPU, for messages and inventory.
pub fn generation_label(state: &MdevState) -> &'static str {
    match state {
        MdevState::Parents(g, _) => g.label(),
        MdevState::NotMdev => Generation::NvidiaVfio.label(),
        MdevState::Missing => "missing",
        MdevState::Unregistered => "unregistered",
        MdevState::VfsDisabled => "vfs-disabled",
    }
}
