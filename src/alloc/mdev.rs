//! One `vgpu:mdev` request made real: reuse the mdev if it already exists as asked, else survey
//! the allowed GPUs (switching NVIDIA VFs on where needed), order those with room by the
//! placement policy, create on the first that accepts, wait for the device, write its params.

use std::collections::{BTreeMap, BTreeSet};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::inventory::{self, MdevGpu, MdevState, ParentCheck};
use super::placement::{self, Candidate};
use super::refusal::{GpuReason, Holders, Refusal, Tried};
use super::{Ctx, Failure};
use crate::host::errno;
use crate::host::sriov::Switch;
use crate::host::state::Device;
use crate::host::sysfs::{LiveMdev, Sysfs, SysfsError};
use crate::model::config::PfKind;
use crate::model::config::Timing;
use crate::model::domain::{MdevRequest, MdevWant};
use crate::model::names::{ParentName, TypeId};

/// Creates (or reuses) the mdev a request asks for, recording it in the context.
pub fn allocate_mdev(ctx: &mut Ctx<'_>, req: &MdevRequest) -> Result<(), Failure> {
    let device = Device::Mdev {
        uuid: req.uuid.clone(),
    };
    if let Some(other) = ctx.other_owner(&device) {
        return Err(Refusal::MdevHeld {
            uuid: req.uuid.clone(),
            other,
        }
        .into());
    }
    if !ctx.dom.has_mdev_hostdev(&req.uuid) {
        log::warn!(
            "domain '{}': vgpu:mdev {} has no matching <hostdev type='mdev'>; creating it anyway",
            ctx.dom.name,
            req.uuid
        );
    }
    let gpus = allowed_gpus(ctx, req)?;
    if let Some(live) = ctx.sysfs().mdev(&req.uuid) {
        if let Some(user) = ctx.user_without_record(&device) {
            let uuid = req.uuid.clone();
            return Err(Refusal::MdevInUse { uuid, user }.into());
        }
        return reuse(ctx, req, &gpus, live);
    }
    let survey = survey(ctx, req, &gpus, Probe::SwitchVfsOn);
    create_first(ctx, req, survey)
}

/// Whether a survey may switch an NVIDIA GPU's VFs on to see its parents (a start), or must
/// leave the host as it is (the migrate/restore filter, whose call libvirt never pairs with a
/// release).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    SwitchVfsOn,
    LeaveAsIs,
}

/// Whether this host has room now for every mdev request of a domain that is to come here
/// (migrated in, restored), without changing anything: each request is placed in turn as
/// `prepare` would place it, counting what the earlier ones took. A GPU whose VFs are off counts
/// as room: what it offers is known only once they are on, which `prepare` does (and refuses
/// there, paired with a release). The refusal is the one `prepare` would give.
pub fn check_room(ctx: &mut Ctx<'_>, reqs: &[&MdevRequest]) -> Result<(), Refusal> {
    let mut taken: BTreeMap<(String, String), u32> = BTreeMap::new();
    for req in reqs {
        let gpus = allowed_gpus(ctx, req)?;
        let mut survey = survey(ctx, req, &gpus, Probe::LeaveAsIs);
        let candidates = std::mem::take(&mut survey.candidates);
        let order = placement::order(&candidates, ctx.config.placement);
        let free = order.iter().find(|c| {
            let used = taken.get(&room_key(c)).copied().unwrap_or(0);
            c.available > used
        });
        if let Some(c) = free {
            *taken.entry(room_key(c)).or_default() += 1;
            continue;
        }
        if survey
            .tried
            .0
            .iter()
            .any(|(_, r)| matches!(r, GpuReason::VfsOff))
        {
            continue;
        }
        for c in order.iter().filter(|c| c.available > 0) {
            let own = taken.get(&room_key(c)).copied().unwrap_or(0) as usize;
            let holders = Holders {
                own,
                ..Holders::default()
            };
            survey.refuse(c.parent.as_str(), GpuReason::Exhausted(holders));
        }
        return Err(Refusal::NoRoom {
            label: req.want.to_string(),
            tried: survey.tried,
            meanings: BTreeSet::new(),
        });
    }
    Ok(())
}

fn room_key(c: &Candidate) -> (String, String) {
    (c.parent.to_string(), c.type_id.to_string())
}

/// The configured GPUs the request's `parent=` allows, with their config position.
fn allowed_gpus(ctx: &Ctx<'_>, req: &MdevRequest) -> Result<Vec<(usize, MdevGpu)>, Refusal> {
    let all = inventory::mdev_gpus_checked(ctx.config, ctx.sysfs(), ParentCheck::WhenSurveyed);
    if all.is_empty() {
        return Err(Refusal::NoParentsConfigured {
            label: req.want.to_string(),
            config: ctx.config.path.clone(),
        });
    }
    let (gpus, others): (Vec<(usize, MdevGpu)>, Vec<_>) = all
        .into_iter()
        .enumerate()
        .partition(|(_, g)| g.allowed_by(&req.parents));
    if gpus.is_empty() {
        return Err(Refusal::ParentNotConfigured {
            wanted: req.parents.clone(),
            configured: others.into_iter().map(|(_, g)| g.key).collect(),
        });
    }
    Ok(gpus)
}

/// The UUID exists already (a leftover of this domain, or made by the operator): taken over when
/// it is the asked type on an allowed parent, else refused and left alone.
fn reuse(
    ctx: &mut Ctx<'_>,
    req: &MdevRequest,
    gpus: &[(usize, MdevGpu)],
    live: LiveMdev,
) -> Result<(), Failure> {
    let sysfs = ctx.sysfs().clone();
    let parent = ParentName::parse(&live.parent).ok();
    let gpu = parent.as_ref().and_then(|p| {
        gpus.iter().map(|(_, g)| g).find(|g| {
            matches!(&g.state, MdevState::Parents(_, ps) if ps.contains(p))
                && g.allows_parent(&req.parents, p)
        })
    });
    if let Some(drain) = gpu.and_then(|g| ctx.drained(&g.key)) {
        let device = format!("mdev {}", req.uuid);
        return Err(Refusal::Drained {
            device,
            drain: drain.clone(),
        }
        .into());
    }
    let fits = gpu.zip(parent.as_ref()).is_some_and(|(_, p)| {
        matches!(find_type(&sysfs, p, &req.want), Ok(Some((id, _))) if id.as_str() == live.type_id)
    });
    if !fits {
        return Err(Refusal::ExistsOtherwise {
            uuid: req.uuid.clone(),
            type_id: live.type_id,
            parent: live.parent,
            label: req.want.to_string(),
        }
        .into());
    }
    write_params(&sysfs, &ctx.config.timing, req)?;
    log::info!(
        "domain '{}': reusing existing mdev {}",
        ctx.dom.name,
        req.uuid
    );
    let device = Device::Mdev {
        uuid: req.uuid.clone(),
    };
    ctx.record(device, live.parent, Some(live.type_id), true);
    Ok(())
}

/// What the allowed GPUs offer for a request: candidates with room, and why the others cannot.
#[derive(Default)]
struct Survey {
    candidates: Vec<Candidate>,
    tried: Tried,
}

impl Survey {
    fn refuse(&mut self, gpu: &str, reason: GpuReason) {
        self.tried.0.push((gpu.to_string(), reason));
    }

    /// Whether waiting may help: a GPU may still appear, and either the host is booting or no
    /// present GPU offers the type (a GPU gone for good must not delay every refusal).
    fn waitable(&self, boot_window: Duration, uptime: Duration) -> bool {
        self.tried.0.iter().any(|(_, r)| r.waitable())
            && (self.candidates.is_empty() || uptime < boot_window)
    }
}

fn survey(ctx: &mut Ctx<'_>, req: &MdevRequest, gpus: &[(usize, MdevGpu)], probe: Probe) -> Survey {
    let live_mdevs = ctx.sysfs().live_mdevs();
    let mut by_parent: BTreeMap<&str, Vec<&LiveMdev>> = BTreeMap::new();
    for m in &live_mdevs {
        by_parent.entry(m.parent.as_str()).or_default().push(m);
    }
    let mut out = Survey::default();
    let mut hint: Option<TypeId> = None;
    for (index, gpu) in gpus {
        let slot = match slot(ctx, *index, gpu) {
            Ok(slot) => slot,
            Err(reason) => {
                out.refuse(&gpu.key, reason);
                continue;
            }
        };
        let parents = match parents_now(ctx, gpu, probe) {
            Ok(ps) => ps,
            Err(reason) => {
                out.refuse(&gpu.key, reason);
                continue;
            }
        };
        let parents: Vec<ParentName> = parents
            .into_iter()
            .filter(|p| gpu.allows_parent(&req.parents, p))
            .collect();
        match offer(ctx, req, &parents, &mut hint) {
            Ok(found) => {
                let on_gpu: Vec<&LiveMdev> = parents
                    .iter()
                    .filter_map(|p| by_parent.get(p.as_str()))
                    .flatten()
                    .copied()
                    .collect();
                add_candidates(ctx, &mut out, &slot, found, &on_gpu);
            }
            Err(reason) => out.refuse(&gpu.key, reason),
        }
    }
    out
}

/// A GPU as placement sees it: where it stands in the config, and how far it is from the VM.
struct Slot {
    index: usize,
    key: String,
    numa_distance: u32,
}

/// The GPU's place, or why it is out: drained by the operator, running another scheduling
/// policy than the VM asks for, or not on the VM's NUMA nodes when they are required.
fn slot(ctx: &Ctx<'_>, index: usize, gpu: &MdevGpu) -> Result<Slot, GpuReason> {
    if let Some(drain) = ctx.drained(&gpu.key) {
        return Err(GpuReason::Drained(drain.clone()));
    }
    if let Some((runs, wants)) = ctx.scheduler_mismatch(gpu.pf.filter(|_| gpu.nvidia)) {
        return Err(GpuReason::Scheduler { runs, wants });
    }
    let numa_distance = match &ctx.numa {
        None => 0,
        Some(wanted) => {
            let node = ctx.sysfs().numa_node_of(&gpu.key);
            let d = wanted.distance(node);
            if wanted.required && d != 0 {
                let wanted = wanted.label();
                return Err(GpuReason::Remote { node, wanted });
            }
            d
        }
    };
    Ok(Slot {
        index,
        key: gpu.key.clone(),
        numa_distance,
    })
}

/// The mdev parents a GPU offers now, switching an NVIDIA GPU's VFs on if they are off (and
/// `probe` allows it).
fn parents_now(
    ctx: &mut Ctx<'_>,
    gpu: &MdevGpu,
    probe: Probe,
) -> Result<Vec<ParentName>, GpuReason> {
    let mut state = gpu.state.clone();
    if let (MdevState::VfsDisabled, Some(_), Probe::LeaveAsIs) = (&state, gpu.pf, probe) {
        return Err(GpuReason::VfsOff);
    }
    if let (MdevState::VfsDisabled, Some(pf)) = (&state, gpu.pf) {
        let sysfs = ctx.sysfs().clone();
        let switch = Switch::for_pf(ctx.config, &sysfs, pf);
        let changed = switch
            .enable(&sysfs, ctx.config, pf, PfKind::Nvidia)
            .map_err(GpuReason::VfsNotEnabled)?;
        if changed {
            ctx.txn.enabled_vfs.push((pf, switch));
        }
        state = inventory::classify_nvidia(&sysfs, pf);
    }
    match state {
        MdevState::Parents(_, ps) => Ok(ps),
        MdevState::Missing => Err(GpuReason::Missing),
        MdevState::Unregistered | MdevState::VfsDisabled => {
            Err(GpuReason::Unregistered { nvidia: gpu.nvidia })
        }
        MdevState::NotMdev => Err(GpuReason::NotMdev),
    }
}

/// A type on one parent that is the one asked for, with its room now.
struct Found {
    parent: ParentName,
    type_id: TypeId,
    available: u32,
}

/// The asked type on each of a GPU's parents; `hint` carries the id found on an earlier GPU.
fn offer(
    ctx: &Ctx<'_>,
    req: &MdevRequest,
    parents: &[ParentName],
    hint: &mut Option<TypeId>,
) -> Result<Vec<Found>, GpuReason> {
    let sysfs = ctx.sysfs();
    let mut found = Vec::new();
    let mut why_none = None;
    for p in parents {
        if let Some((type_id, available)) = hinted_room(sysfs, p, hint.as_ref()) {
            found.push(Found {
                parent: p.clone(),
                type_id,
                available,
            });
            continue;
        }
        match find_type(sysfs, p, &req.want) {
            Ok(Some((id, _))) => {
                *hint = Some(id.clone());
                match sysfs.available_instances(p, &id) {
                    Ok(available) => found.push(Found {
                        parent: p.clone(),
                        type_id: id,
                        available,
                    }),
                    Err(e) => why_none = Some(GpuReason::Unreadable(e.to_string())),
                }
            }
            Ok(None) if !sysfs.is_mdev_parent(p) => why_none = Some(GpuReason::Missing),
            Ok(None) => {}
            Err(reason) => why_none = Some(reason),
        }
    }
    match (found.is_empty(), why_none) {
        (false, _) => Ok(found),
        (true, Some(reason)) => Err(reason),
        (true, None) => Err(GpuReason::NoSuchType),
    }
}

/// The room of the type found on an earlier parent, when `parent` offers that type id too: the
/// mdev core names a type `<driver>-<driver's name for it>`, so the same id is the same type
/// of the same driver (NVIDIA's numbers are one table for every board), and its name need not
/// be read again. `None`: no hint, or no such type here (then the parent's names are read).
fn hinted_room(sysfs: &Sysfs, parent: &ParentName, hint: Option<&TypeId>) -> Option<(TypeId, u32)> {
    let hint = hint?;
    let available = sysfs.available_instances(parent, hint).ok()?;
    Some((hint.clone(), available))
}

/// Adds a GPU's parents as candidates; a GPU without room also says why.
fn add_candidates(
    ctx: &Ctx<'_>,
    out: &mut Survey,
    slot: &Slot,
    found: Vec<Found>,
    on_gpu: &[&LiveMdev],
) {
    let gpu_free: u32 = found.iter().map(|f| f.available).sum();
    let type_ids: BTreeSet<&str> = found.iter().map(|f| f.type_id.as_str()).collect();
    let gpu_hosts_type = on_gpu.iter().any(|m| type_ids.contains(m.type_id.as_str()));
    if gpu_free == 0 {
        let others: BTreeSet<String> = on_gpu
            .iter()
            .filter(|m| !type_ids.contains(m.type_id.as_str()))
            .map(|m| type_label(ctx.sysfs(), &m.parent, &m.type_id))
            .collect();
        let reason = if others.is_empty() {
            GpuReason::Exhausted(holders(ctx, on_gpu))
        } else {
            GpuReason::Hosts(others)
        };
        out.refuse(&slot.key, reason);
    }
    out.candidates.extend(found.into_iter().map(|f| Candidate {
        gpu_index: slot.index,
        parent: f.parent,
        type_id: f.type_id,
        available: f.available,
        gpu_free,
        gpu_hosts_type,
        numa_distance: slot.numa_distance,
    }));
}

/// Who holds the mdevs of a full GPU, as the state records them.
fn holders(ctx: &Ctx<'_>, on_gpu: &[&LiveMdev]) -> Holders {
    let mut h = Holders::default();
    for m in on_gpu {
        let device = Device::Mdev {
            uuid: m.uuid.clone(),
        };
        match ctx.state.owner(&device) {
            None => h.unowned += 1,
            Some(r) if r.domain_uuid == ctx.dom.uuid => h.own += 1,
            Some(r) if ctx.live.holds(r) => {
                h.running.insert(r.domain_name.clone());
            }
            Some(_) => h.stopped += 1,
        }
    }
    h
}

/// Tries the candidates in placement order; the first create that succeeds wins.
fn create_first(ctx: &mut Ctx<'_>, req: &MdevRequest, mut survey: Survey) -> Result<(), Failure> {
    let sysfs = ctx.sysfs().clone();
    let timing = ctx.config.timing.clone();
    let label = req.want.to_string();
    // What a refused create's errno means, said once however many GPUs answered it.
    let mut meanings: BTreeSet<String> = BTreeSet::new();
    // Taken out while the survey records each failure, and put back for the verdict.
    let candidates = std::mem::take(&mut survey.candidates);
    for c in placement::order(&candidates, ctx.config.placement) {
        match sysfs.create_mdev(&c.parent, &c.type_id, &req.uuid, timing.device_wait) {
            Ok(()) => return finish_create(ctx, req, c, &timing),
            Err(e) => {
                log::warn!(
                    "domain '{}': create {} on {}: {e}",
                    ctx.dom.name,
                    c.type_id,
                    c.parent
                );
                if let SysfsError::Timeout { pid, .. } = e {
                    ctx.txn.pending_creates.push((pid, req.uuid.clone()));
                    let secs = timing.device_wait.as_secs();
                    survey.refuse(c.parent.as_str(), GpuReason::CreateTimeout { secs });
                    return Err(Refusal::CreateStuck {
                        label,
                        tried: survey.tried,
                    }
                    .into());
                }
                survey.refuse(c.parent.as_str(), create_failure(&e, &mut meanings));
            }
        }
    }
    survey.candidates = candidates;
    let waitable = survey.waitable(timing.boot_window, ctx.host.procfs.uptime());
    Err(Failure {
        waitable,
        reason: Refusal::NoRoom {
            label,
            tried: survey.tried,
            meanings,
        },
    })
}

/// Why one create failed; what its errno means there goes into `meanings`, once.
fn create_failure(e: &SysfsError, meanings: &mut BTreeSet<String>) -> GpuReason {
    match e {
        SysfsError::Write { errno, attr, .. } => {
            if let Some(m) = errno::meaning(*attr, *errno) {
                meanings.insert(format!("{}: {m}", errno::name(*errno)));
            }
            GpuReason::CreateFailed(errno::text(*errno))
        }
        other => GpuReason::CreateFailed(other.to_string()),
    }
}

/// After a create returned: wait for the device, write its params, record it.
fn finish_create(
    ctx: &mut Ctx<'_>,
    req: &MdevRequest,
    c: &Candidate,
    timing: &Timing,
) -> Result<(), Failure> {
    let sysfs = ctx.sysfs().clone();
    ctx.txn.created_mdevs.push(req.uuid.clone());
    let deadline = Instant::now() + timing.device_wait;
    while !sysfs.mdev_exists(&req.uuid) {
        if Instant::now() >= deadline {
            return Err(Refusal::DidNotAppear {
                uuid: req.uuid.clone(),
                parent: c.parent.clone(),
                secs: timing.device_wait.as_secs(),
            }
            .into());
        }
        sleep(Duration::from_millis(10));
    }
    write_params(&sysfs, timing, req)?;
    let device = Device::Mdev {
        uuid: req.uuid.clone(),
    };
    ctx.record(
        device.clone(),
        c.parent.to_string(),
        Some(c.type_id.to_string()),
        true,
    );
    if c.numa_distance > 0 {
        let node = sysfs.numa_node_of(c.parent.as_str());
        ctx.note_remote(&device, node);
    }
    Ok(())
}

/// The type on `parent` that a request means, with its name: `Ok(None)` when absent, `Err`
/// when ambiguous.
fn find_type(
    sysfs: &Sysfs,
    parent: &ParentName,
    want: &MdevWant,
) -> Result<Option<(TypeId, String)>, GpuReason> {
    let p = match want {
        MdevWant::Type(t) => {
            return Ok(sysfs.has_type(parent, t).then(|| {
                let label = sysfs.type_name(parent, t).unwrap_or_else(|| t.to_string());
                (t.clone(), label)
            }))
        }
        MdevWant::Profile(p) => p,
    };
    let types = sysfs.type_names(parent);
    match p.pick(&types, |(_, name)| name.as_deref()).as_slice() {
        [] => Ok(None),
        [(id, name)] => Ok(TypeId::parse(id)
            .ok()
            .map(|id| (id, name.clone().unwrap_or_default()))),
        many => Err(GpuReason::Ambiguous {
            want: want.to_string(),
            ids: many.iter().map(|(id, _)| id.clone()).collect(),
        }),
    }
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
        return Err(Refusal::ParamsNotNvidia(req.uuid.clone()).into());
    }
    sysfs
        .set_vgpu_params(&req.uuid, params, timing.device_wait)
        .map_err(|source| {
            Refusal::Params {
                uuid: req.uuid.clone(),
                source,
            }
            .into()
        })
}
