//! `vgpuctl drain` and `undrain`: which configured GPU the operator means, the drain list
//! changed under the state lock (the hook reads it under the same lock, so no start that comes
//! after `drain` returns can still place a vGPU there), and which VMs still hold a vGPU on a
//! drained GPU (`drain --wait` returns when there are none).

use std::path::PathBuf;

use crate::host::drains::{DrainError, Drains};
use crate::host::state::{now_secs, Liveness, Record, State, StateDir, StateError};
use crate::host::sysfs::Sysfs;
use crate::model::config::Config;
use crate::model::pci::PciAddress;

/// Why a drain or undrain did nothing.
#[derive(Debug, thiserror::Error)]
pub enum DrainCtlError {
    /// The name is not one of the configured GPUs.
    #[error("{name} is not a GPU {} lists (it lists {}); name one of those, or use --all", config.display(), if configured.is_empty() { "none".to_string() } else { configured.join(", ") })]
    NotConfigured {
        /// As the operator wrote it.
        name: String,
        /// The config file.
        config: PathBuf,
        /// What it lists.
        configured: Vec<String>,
    },
    /// The state lock could not be taken.
    #[error(transparent)]
    State(#[from] StateError),
    /// The list could not be read or written.
    #[error(transparent)]
    List(#[from] DrainError),
}

/// The GPUs `names` mean (an address with or without its PCI domain, in either case, or an mdev
/// parent's name), or all of them for `all`: the configured GPUs, and the `also` ones (an
/// undrain also takes a GPU drained before it left the config).
pub fn targets(
    config: &Config,
    names: &[String],
    all: bool,
    also: &[String],
) -> Result<Vec<String>, DrainCtlError> {
    let mut configured = config.gpu_names();
    for a in also {
        if !configured.contains(a) {
            configured.push(a.clone());
        }
    }
    if all {
        return Ok(configured);
    }
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let key = match name.parse::<PciAddress>() {
            Ok(a) => a.to_string(),
            Err(_) => name.clone(),
        };
        if !configured.contains(&key) {
            return Err(DrainCtlError::NotConfigured {
                name: crate::printable(name, 60),
                config: config.path.clone(),
                configured,
            });
        }
        if !out.contains(&key) {
            out.push(key);
        }
    }
    Ok(out)
}

/// What a drain or undrain did: for each GPU whether it changed (false: it was so already),
/// and the list as it is now.
pub struct Changed {
    /// Each GPU asked about, and whether it changed.
    pub done: Vec<(String, bool)>,
    /// The list as written.
    pub list: Drains,
}

/// Applies `change` to each GPU under the state lock, and writes the list when one changed.
fn change(
    state: &StateDir,
    config: &Config,
    gpus: &[String],
    mut change: impl FnMut(&mut Drains, &str) -> bool,
) -> Result<Changed, DrainCtlError> {
    let _locked = state.lock()?;
    let mut list = Drains::of_config(config)?;
    let done: Vec<(String, bool)> = gpus
        .iter()
        .map(|g| (g.clone(), change(&mut list, g)))
        .collect();
    if done.iter().any(|(_, changed)| *changed) {
        list.save(&Drains::path_for(&config.path))?;
    }
    Ok(Changed { done, list })
}

/// Drains `gpus`; for each, whether it was drained now (false: it was already).
pub fn drain(
    state: &StateDir,
    config: &Config,
    gpus: &[String],
    reason: Option<&str>,
) -> Result<Changed, DrainCtlError> {
    let since = now_secs();
    change(state, config, gpus, |d, g| {
        d.drain(g, since, reason.map(str::to_string))
    })
}

/// Ends the drains of `gpus`; for each, whether it was drained.
pub fn undrain(
    state: &StateDir,
    config: &Config,
    gpus: &[String],
) -> Result<Changed, DrainCtlError> {
    change(state, config, gpus, |d, g| d.undrain(g))
}

/// Whether a record's device is on `gpu`: an mdev on it (or on one of its VFs, NVIDIA's SR-IOV
/// boards), a VF of it.
fn on_gpu(sysfs: &Sysfs, r: &Record, gpu: &str) -> bool {
    r.parent == gpu
        || r.parent
            .parse::<PciAddress>()
            .ok()
            .and_then(|p| sysfs.physfn(p))
            .is_some_and(|pf| pf.to_string() == gpu)
}

/// Who still holds a vGPU on a drained GPU, as `drain` and `doctor` say it.
pub fn holders_line(domains: &[String]) -> String {
    if domains.is_empty() {
        return "no VM holds a vGPU there".to_string();
    }
    format!(
        "still held by {}",
        crate::alloc::refusal::quoted_list(domains)
    )
}

/// The domains that still hold a device on `gpu`, by name, each once, sorted.
pub fn holders(sysfs: &Sysfs, state: &State, live: &Liveness, gpu: &str) -> Vec<String> {
    let mut out: Vec<String> = state
        .records
        .iter()
        .filter(|r| live.holds(r) && on_gpu(sysfs, r, gpu))
        .map(|r| r.domain_name.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}
