//! Turning an operator's "attach a P40-2Q" or "attach a VF" into concrete metadata entries and
//! `<hostdev>` elements, checked against what this host offers.
//!
//! Attaching only edits a definition; the device is made when the domain starts. But a request
//! that can never be met (a profile no configured GPU has, a PF that is not configured, a VF
//! another domain already names) should be refused now, with the list of what does exist, rather
//! than at the next `virsh start`. Capacity is not checked: it changes by the minute and the hook
//! checks it at start. mdevs get fresh random UUIDs; VFs are picked among those no other domain
//! refers to.

use std::collections::BTreeMap;

use crate::alloc::inventory::{self, MdevState, PfKind};
use crate::ctl::xmledit::NewDevice;
use crate::host::sysfs::Sysfs;
use crate::model::config::Config;
use crate::model::domain::{MdevRequest, MdevWant, VfRequest, VfWant};
use crate::model::names::{MdevUuid, Params, ParentName};
use crate::model::pci::PciAddress;

/// What the operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Mediated devices.
    Mdev {
        /// Type or profile.
        want: MdevWant,
        /// How many.
        count: u32,
        /// Allowed parents (config keys or parent names, as typed).
        parents: Vec<String>,
        /// NVIDIA `vgpu_params`.
        params: Option<Params>,
    },
    /// Whole VFs.
    Vf {
        /// How many.
        count: u32,
        /// Restrict to this PF.
        pf: Option<PciAddress>,
        /// This exact VF.
        address: Option<PciAddress>,
        /// vGPU type for NVIDIA kernel-6.8+ VFs.
        want: Option<VfWant>,
    },
}

/// Devices to add, and what the operator should know about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The devices.
    pub devices: Vec<NewDevice>,
    /// Remarks worth printing (a VF that does not exist yet, a check that could not be done).
    pub notes: Vec<String>,
}

/// Why a request cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Nothing on this host matches (a type, a parent, a PF).
    #[error("{0}")]
    NotFound(String),
    /// It matches, but cannot be given (ambiguous, all taken, wrong kind).
    #[error("{0}")]
    Refused(String),
}

/// VFs other domains refer to (by definition or by holding them now), with the domain's name.
pub type Taken = BTreeMap<PciAddress, String>;

/// Plans `ask`. Without `config` (or with `check` false) nothing is checked against the host:
/// for preparing definitions elsewhere, or before the vendor driver is up.
pub fn plan(
    config: Option<&Config>,
    sysfs: &Sysfs,
    ask: &Ask,
    taken: &Taken,
    check: bool,
) -> Result<Plan, PlanError> {
    match ask {
        Ask::Mdev {
            want,
            count,
            parents,
            params,
        } => {
            let parents = parse_parents(parents)?;
            let mut plan = Plan::default();
            if check {
                if let Some(config) = config {
                    if let Some(vf) = check_mdev(config, sysfs, want, &parents, &mut plan)? {
                        if params.is_some() || !parents.is_empty() {
                            return Err(PlanError::Refused(format!(
                                "'{}' is a kernel-6.8+ NVIDIA vGPU type, given as a whole VF: --parent and --params do not apply (use --vf [--pf ADDR])",
                                want
                            )));
                        }
                        let mut p = plan_vfs(
                            Some(config),
                            sysfs,
                            *count,
                            None,
                            None,
                            Some(vf),
                            taken,
                            check,
                        )?;
                        p.notes.insert(
                            0,
                            format!(
                                "'{}' is offered by kernel-6.8+ NVIDIA GPUs as whole VFs; attaching VFs",
                                want
                            ),
                        );
                        return Ok(p);
                    }
                }
            }
            for _ in 0..*count {
                plan.devices.push(NewDevice::Mdev(MdevRequest {
                    uuid: MdevUuid::new_random(),
                    want: want.clone(),
                    parents: parents.clone(),
                    params: params.clone(),
                }));
            }
            Ok(plan)
        }
        Ask::Vf {
            count,
            pf,
            address,
            want,
        } => plan_vfs(
            config,
            sysfs,
            *count,
            *pf,
            *address,
            want.clone(),
            taken,
            check,
        ),
    }
}

fn parse_parents(raw: &[String]) -> Result<Vec<ParentName>, PlanError> {
    let mut out: Vec<ParentName> = Vec::new();
    for item in raw {
        for name in ParentName::parse_list(item)
            .map_err(|e| PlanError::Refused(format!("--parent: {e}")))?
        {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    Ok(out)
}

/// Checks that some configured parent offers the type. `Ok(Some(vf_want))` when only a
/// kernel-6.8+ NVIDIA GPU offers it, as a VF type.
fn check_mdev(
    config: &Config,
    sysfs: &Sysfs,
    want: &MdevWant,
    parents: &[ParentName],
    plan: &mut Plan,
) -> Result<Option<VfWant>, PlanError> {
    let label = want.to_string();
    let gpus = inventory::mdev_gpus(config, sysfs);
    if gpus.is_empty() && inventory::vf_pfs(config).is_empty() {
        return Err(PlanError::NotFound(format!(
            "{} lists no GPUs (add them to nvidia_vgpu_pfs or mdev_parents)",
            config.path.display()
        )));
    }
    for p in parents {
        let known = gpus.iter().any(|g| {
            g.key == p.as_str() || matches!(&g.state, MdevState::Parents(_, ps) if ps.contains(p))
        });
        if !known {
            return Err(PlanError::NotFound(format!(
                "--parent {p} is not a configured mdev parent (configured: {})",
                list_or_none(gpus.iter().map(|g| g.key.clone()))
            )));
        }
    }
    let mut offered: Vec<String> = Vec::new();
    let mut unavailable: Vec<String> = Vec::new();
    let mut vfio_gpus: Vec<PciAddress> = Vec::new();
    let mut found = false;
    for gpu in &gpus {
        let allowed = |p: &ParentName| gpu.allows_parent(parents, p);
        match &gpu.state {
            MdevState::Parents(_, ps) => {
                let mut labels: Vec<String> = Vec::new();
                for p in ps.iter().filter(|p| allowed(p)) {
                    let types = sysfs.mdev_types(p);
                    let m = inventory::matching_types(&types, want);
                    if m.len() > 1 {
                        return Err(PlanError::Refused(format!(
                            "'{label}' matches {} on {p}; use --type with one of them",
                            m.iter()
                                .map(|t| t.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                    found |= !m.is_empty();
                    for t in &types {
                        let l = match &t.name {
                            Some(n) => format!("{} ({})", n, t.id),
                            None => t.id.clone(),
                        };
                        if !labels.contains(&l) {
                            labels.push(l);
                        }
                    }
                }
                if !labels.is_empty() {
                    offered.push(format!("{}: {}", gpu.key, labels.join(", ")));
                }
            }
            MdevState::NotMdev => {
                if let Some(pf) = gpu.pf {
                    if gpu.allowed_by(parents) {
                        vfio_gpus.push(pf);
                    }
                }
            }
            other => unavailable.push(format!("{} ({})", gpu.key, (other).label())),
        }
    }
    if found {
        if !unavailable.is_empty() {
            plan.notes.push(format!(
                "not checked (not available now): {}",
                unavailable.join(", ")
            ));
        }
        return Ok(None);
    }
    // A kernel-6.8+ NVIDIA GPU offers types per VF, by numeric id or profile name.
    let vf_want = match want {
        MdevWant::Profile(p) => Some(VfWant::Profile(p.clone())),
        MdevWant::Type(t) => t.as_str().parse::<u32>().ok().map(VfWant::Type),
    };
    let mut vfio_types: Vec<String> = Vec::new();
    if let Some(vw) = &vf_want {
        for pf in &vfio_gpus {
            for vf in sysfs.vfs(*pf) {
                for (id, name) in sysfs.creatable_vgpu_types(vf).unwrap_or_default() {
                    if vw.matches(id, &name) {
                        return Ok(Some(vw.clone()));
                    }
                    let l = format!("{name} ({id})");
                    if !vfio_types.contains(&l) {
                        vfio_types.push(l);
                    }
                }
            }
        }
    }
    for pf in &vfio_gpus {
        if !vfio_types.is_empty() {
            offered.push(format!("{pf} (VF types): {}", vfio_types.join(", ")));
        }
    }
    if offered.is_empty() && !unavailable.is_empty() {
        return Err(PlanError::Refused(format!(
            "cannot check '{label}': no configured GPU offers types now ({}); start the vendor's manager (for NVIDIA: systemctl start nvidia-vgpu-mgr) or pass --force",
            unavailable.join(", ")
        )));
    }
    let mut msg = format!(
        "no configured parent{} offers '{label}'",
        if parents.is_empty() {
            ""
        } else {
            " allowed by --parent"
        }
    );
    if offered.is_empty() {
        msg.push_str("; none offers any type now");
    } else {
        msg.push_str(&format!("; available: {}", offered.join("; ")));
    }
    if !unavailable.is_empty() {
        msg.push_str(&format!(
            "; not available now, so not checked: {} (pass --force if one of those offers it)",
            unavailable.join(", ")
        ));
    }
    Err(PlanError::NotFound(msg))
}

fn list_or_none(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Whether a configured PF hands out NVIDIA kernel-6.8+ VFs.
fn is_nvidia_vfio_pf(sysfs: &Sysfs, pf: PciAddress, kind: PfKind) -> bool {
    kind == PfKind::Nvidia && inventory::classify_nvidia(sysfs, pf) == MdevState::NotMdev
}

#[allow(clippy::too_many_arguments)]
fn plan_vfs(
    config: Option<&Config>,
    sysfs: &Sysfs,
    count: u32,
    pf: Option<PciAddress>,
    address: Option<PciAddress>,
    want: Option<VfWant>,
    taken: &Taken,
    check: bool,
) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    if let Some(addr) = address {
        if count != 1 {
            return Err(PlanError::Refused(
                "--address names one VF; drop --count".into(),
            ));
        }
        if let Some(owner) = taken.get(&addr) {
            return Err(PlanError::Refused(format!(
                "VF {addr} is already used by domain '{owner}'"
            )));
        }
        let nvidia = sysfs.is_nvidia_vfio_vf(addr);
        if check {
            let config = config.ok_or_else(|| {
                PlanError::Refused("no config to check the VF against; pass --force".into())
            })?;
            let pfs = inventory::vf_pfs(config);
            match sysfs.physfn(addr) {
                Some(p) if pfs.iter().any(|(a, _)| *a == p) => {
                    if let Some(want_pf) = pf {
                        if want_pf != p {
                            return Err(PlanError::Refused(format!(
                                "VF {addr} belongs to PF {p}, not {want_pf}"
                            )));
                        }
                    }
                }
                Some(p) => {
                    return Err(PlanError::NotFound(format!(
                        "VF {addr} belongs to PF {p}, which {} does not list (add it to sriov_pfs, amd_vgpu_pfs or nvidia_vgpu_pfs)",
                        config.path.display()
                    )))
                }
                None if sysfs.pci_exists(addr) => {
                    return Err(PlanError::NotFound(format!(
                        "{addr} is not an SR-IOV VF (it has no physfn)"
                    )))
                }
                None => {
                    let future = pfs.iter().find(|(p, kind)| {
                        *kind == PfKind::Generic
                            && sysfs.sriov_numvfs(*p).is_ok_and(|n| n == 0)
                            && sysfs
                                .future_vfs(*p, sysfs.sriov_totalvfs(*p))
                                .is_some_and(|v| v.contains(&addr))
                    });
                    match future {
                        Some((p, _)) => plan.notes.push(format!(
                            "VF {addr} does not exist yet; the hook enables the VFs of {p} when the domain starts"
                        )),
                        None => {
                            return Err(PlanError::NotFound(format!(
                                "VF {addr} does not exist and is not a future VF of a configured PF (configured: {})",
                                list_or_none(pfs.iter().map(|(a, _)| a.to_string()))
                            )))
                        }
                    }
                }
            }
            if nvidia {
                let Some(w) = &want else {
                    return Err(PlanError::Refused(format!(
                        "VF {addr} is an NVIDIA vGPU VF: say which vGPU with --profile or --type"
                    )));
                };
                check_creatable(sysfs, &[addr], w)?;
            } else if let Some(w) = &want {
                return Err(PlanError::Refused(format!(
                    "VF {addr} has no NVIDIA vGPU interface, so '{}' cannot be given to it; drop --profile/--type",
                    w
                )));
            }
        }
        plan.devices.push(NewDevice::Vf {
            request: VfRequest {
                address: addr,
                want,
            },
            managed: !nvidia,
        });
        return Ok(plan);
    }

    let config = config.ok_or_else(|| {
        PlanError::Refused("picking a VF needs the config (or name one with --address)".into())
    })?;
    let all = inventory::vf_pfs(config);
    if all.is_empty() {
        return Err(PlanError::NotFound(format!(
            "{} lists no SR-IOV PFs (add them to amd_vgpu_pfs, sriov_pfs or nvidia_vgpu_pfs)",
            config.path.display()
        )));
    }
    let candidates: Vec<(PciAddress, PfKind)> = match pf {
        Some(p) => match all.iter().find(|(a, _)| *a == p) {
            Some(&c) => vec![c],
            None => {
                return Err(PlanError::NotFound(format!(
                    "--pf {p} is not a configured PF (configured: {})",
                    list_or_none(all.iter().map(|(a, _)| a.to_string()))
                )))
            }
        },
        None => all.clone(),
    };
    let nvidia_wanted = want.is_some();
    let fitting: Vec<(PciAddress, PfKind)> = candidates
        .iter()
        .copied()
        .filter(|&(p, kind)| {
            let vfio = is_nvidia_vfio_pf(sysfs, p, kind);
            if nvidia_wanted {
                vfio
            } else {
                !vfio && kind != PfKind::Nvidia
            }
        })
        .collect();
    if fitting.is_empty() {
        let dormant_nvidia = candidates.iter().find(|&&(p, k)| {
            k == PfKind::Nvidia && inventory::classify_nvidia(sysfs, p) == MdevState::VfsDisabled
        });
        let msg = if let (true, Some((p, _))) = (nvidia_wanted, dormant_nvidia) {
            format!(
                "NVIDIA GPU {p} has no VFs enabled yet, so none can be chosen; {}; then attach again",
                crate::host::sriov::nvidia_vfs_missing(&config.sriov_manage, p).1
            )
        } else if nvidia_wanted {
            format!(
                "a vGPU type on a VF needs a kernel-6.8+ NVIDIA GPU, and {} has none (configured: {})",
                pf.map_or_else(|| "the config".to_string(), |p| format!("PF {p}")),
                list_or_none(candidates.iter().map(|(a, k)| format!("{a} ({})", inventory::pf_kind_label(*k))))
            )
        } else if candidates
            .iter()
            .any(|&(p, k)| is_nvidia_vfio_pf(sysfs, p, k))
        {
            "NVIDIA kernel-6.8+ VFs need a vGPU type: add --profile or --type".to_string()
        } else {
            format!(
                "no configured PF hands out whole VFs (configured: {}); NVIDIA GPUs with mdev types take --profile/--type without --vf",
                list_or_none(candidates.iter().map(|(a, k)| format!("{a} ({})", inventory::pf_kind_label(*k))))
            )
        };
        return Err(PlanError::Refused(msg));
    }

    let mut chosen: Vec<(PciAddress, bool)> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for (p, kind) in fitting {
        if chosen.len() as u32 >= count {
            break;
        }
        let mut vfs = sysfs.vfs(p);
        let nvidia = is_nvidia_vfio_pf(sysfs, p, kind);
        let mut future = false;
        if vfs.is_empty() {
            let total = sysfs.sriov_totalvfs(p);
            if !sysfs.pci_exists(p) {
                reasons.push(format!("{p} (missing)"));
                continue;
            }
            if total == 0 {
                reasons.push(format!("{p} (not SR-IOV capable)"));
                continue;
            }
            match kind {
                PfKind::Amd => {
                    reasons.push(format!(
                        "{p} (no VFs: {})",
                        crate::host::sriov::amd_vf_num(sysfs, p)
                    ));
                    continue;
                }
                PfKind::Nvidia => {
                    reasons.push(format!(
                        "{p} (no VFs enabled: run /usr/lib/nvidia/sriov-manage -e {p})"
                    ));
                    continue;
                }
                PfKind::Generic => {
                    let n = match config.vf_count {
                        0 => total,
                        n => n.min(total),
                    };
                    match sysfs.future_vfs(p, n) {
                        Some(v) => {
                            vfs = v;
                            future = true;
                        }
                        None => {
                            reasons.push(format!(
                                "{p} (no VFs enabled, and its SR-IOV layout is unreadable: echo {n} > /sys/bus/pci/devices/{p}/sriov_numvfs)"
                            ));
                            continue;
                        }
                    }
                }
            }
        }
        let mut used: Vec<String> = Vec::new();
        let mut not_creatable = 0;
        for vf in vfs {
            if chosen.len() as u32 >= count {
                break;
            }
            if let Some(owner) = taken.get(&vf) {
                used.push(format!("{vf} by '{owner}'"));
                continue;
            }
            if chosen.iter().any(|(c, _)| *c == vf) {
                continue;
            }
            if let (true, Some(w)) = (nvidia, &want) {
                let list = sysfs.creatable_vgpu_types(vf).unwrap_or_default();
                if !list.is_empty() && !list.iter().any(|(id, n)| w.matches(*id, n)) {
                    not_creatable += 1;
                    continue;
                }
            }
            if future {
                plan.notes.push(format!(
                    "PF {p} has no VFs yet; the hook enables them when the domain starts, and {vf} will be one of them"
                ));
            }
            chosen.push((vf, nvidia));
        }
        if chosen.len() < count as usize {
            let mut why = Vec::new();
            if !used.is_empty() {
                why.push(format!("used: {}", used.join(", ")));
            }
            if not_creatable > 0 {
                why.push(format!(
                    "{not_creatable} cannot take '{}' now",
                    want.as_ref().map(|w| w.to_string()).unwrap_or_default()
                ));
            }
            if why.is_empty() {
                why.push("no VFs".into());
            }
            reasons.push(format!("{p} ({})", why.join("; ")));
        }
    }
    if (chosen.len() as u32) < count {
        return Err(PlanError::Refused(format!(
            "{} free VF{} found, {count} asked: {}",
            chosen.len(),
            if chosen.len() == 1 { "" } else { "s" },
            reasons.join(", ")
        )));
    }
    if let Some(w) = &want {
        let vfs: Vec<PciAddress> = chosen.iter().map(|(a, _)| *a).collect();
        check_creatable(sysfs, &vfs, w)?;
    }
    for (vf, nvidia) in chosen {
        plan.devices.push(NewDevice::Vf {
            request: VfRequest {
                address: vf,
                want: want.clone(),
            },
            managed: !nvidia,
        });
    }
    Ok(plan)
}

/// Refuses a VF type that the VFs' GPU does not offer at all. A GPU that lists nothing (full, or
/// hosting another size) cannot be checked now; that is left to the hook at start.
fn check_creatable(sysfs: &Sysfs, vfs: &[PciAddress], want: &VfWant) -> Result<(), PlanError> {
    let mut seen: Vec<String> = Vec::new();
    for &vf in vfs {
        let siblings = sysfs
            .physfn(vf)
            .map_or_else(|| vec![vf], |pf| sysfs.vfs(pf));
        for s in siblings {
            for (id, name) in sysfs.creatable_vgpu_types(s).unwrap_or_default() {
                if want.matches(id, &name) {
                    return Ok(());
                }
                let l = format!("{name} ({id})");
                if !seen.contains(&l) {
                    seen.push(l);
                }
            }
        }
    }
    if seen.is_empty() {
        return Ok(());
    }
    Err(PlanError::NotFound(format!(
        "'{}' is not a vGPU type of this GPU (creatable now: {})",
        want,
        seen.join(", ")
    )))
}
