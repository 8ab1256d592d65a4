//! The NVIDIA type catalogue across driver upgrades: what each GPU offered on the driver seen
//! before, against what it offers now, and the domains whose requests no longer resolve.
//!
//! Every driver branch changes the catalogue: types are added, boards lose sizes, names change
//! prefix. A domain that asks for `type="nvidia-47"` or a profile that the new driver no longer
//! has fails at its next start, long after the upgrade. `vgpuctl boot` records the catalogue it
//! finds at each boot, beside the config (`types-seen.json`, kept across reboots), and keeps the
//! previous driver's when the version changed; `doctor` compares the two (or the recorded one with
//! what the GPUs offer now, when no boot has run since) and names each domain that asks for a
//! type that is gone, with the closest types there are now.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::alloc::inventory::{self, MdevState};
use crate::host::atomic::{self, Durability};
use crate::host::sysfs::Sysfs;
use crate::model::config::Config;
use crate::model::domain::{Domain, MdevWant, Request, VfWant};
use crate::model::names::Profile;

/// The file's name, in the config's directory.
pub const FILE: &str = "types-seen.json";

/// One type a GPU offered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeenType {
    /// The type id (`nvidia-47`, or the numeric id of a kernel-6.8+ type).
    pub id: String,
    /// Its name (`GRID P40-2Q`).
    pub name: Option<String>,
}

/// What the NVIDIA GPUs offered on one driver version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    /// `/sys/module/nvidia/version`.
    pub driver: String,
    /// Per GPU (as the config names it), its types.
    pub gpus: BTreeMap<String, BTreeSet<SeenType>>,
}

/// The recorded catalogues: the latest driver's and the one before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The latest recorded.
    pub current: Option<Catalogue>,
    /// The one recorded for the driver before it.
    pub previous: Option<Catalogue>,
}

/// The file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("type catalogue {}: {message}; remove it to start the record again", path.display())]
pub struct CatalogueError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

impl Seen {
    /// Where the record of the host whose config is `config` lives.
    pub fn path_for(config: &Path) -> PathBuf {
        config.with_file_name(FILE)
    }

    /// The record at `path`; empty when there is none.
    pub fn load(path: &Path) -> Result<Seen, CatalogueError> {
        let err = |message: String| CatalogueError {
            path: path.to_path_buf(),
            message,
        };
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Seen::default()),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Writes the record atomically.
    pub fn save(&self, path: &Path) -> Result<(), CatalogueError> {
        let err = |message: String| CatalogueError {
            path: path.to_path_buf(),
            message,
        };
        let body = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        atomic::replace(path, dir, &body, 0o644, Durability::Synced).map_err(|e| err(e.to_string()))
    }

    /// Takes in what the GPUs offer now: on a new driver the current record becomes the previous
    /// one; on the same driver types seen now are added (a kernel-6.8+ GPU shows only what is
    /// creatable at the moment). Returns the driver it replaced, if the version changed.
    pub fn record(&mut self, now: Catalogue) -> Option<String> {
        match self.current.take() {
            Some(mut cur) if cur.driver == now.driver => {
                for (gpu, types) in now.gpus {
                    cur.gpus.entry(gpu).or_default().extend(types);
                }
                self.current = Some(cur);
                None
            }
            Some(old) => {
                let was = old.driver.clone();
                self.previous = Some(old);
                self.current = Some(now);
                Some(was)
            }
            None => {
                self.current = Some(now);
                None
            }
        }
    }

    /// What the GPUs offer on the live driver: `live` with what was recorded for the same
    /// driver (a kernel-6.8+ GPU lists only the types creatable at the moment, so a busy GPU
    /// alone would look as if it lost every other size).
    pub fn with_recorded(&self, live: Catalogue) -> Catalogue {
        match &self.current {
            Some(cur) if cur.driver == live.driver => {
                let mut all = cur.clone();
                for (gpu, types) in live.gpus {
                    all.gpus.entry(gpu).or_default().extend(types);
                }
                all
            }
            _ => live,
        }
    }

    /// The catalogue to compare `now` with: the recorded one when the driver changed since it,
    /// else the previous driver's; `None` when no other driver was ever recorded.
    pub fn baseline(&self, now: &Catalogue) -> Option<&Catalogue> {
        match &self.current {
            Some(c) if c.driver != now.driver => Some(c),
            _ => self.previous.as_ref().filter(|p| p.driver != now.driver),
        }
    }
}

/// What the configured NVIDIA GPUs offer now (`None` without NVIDIA's driver): every type of an
/// mdev parent, what a kernel-6.8+ GPU's VFs list as creatable.
pub fn snapshot(config: &Config, sysfs: &Sysfs) -> Option<Catalogue> {
    let driver = sysfs.nvidia_driver_version()?;
    let mut gpus = BTreeMap::new();
    for g in inventory::mdev_gpus(config, sysfs)
        .iter()
        .filter(|g| g.nvidia)
    {
        let mut types = BTreeSet::new();
        match &g.state {
            MdevState::Parents(_, parents) => {
                for p in parents {
                    for id in sysfs.mdev_type_ids(p) {
                        let name = sysfs.mdev_type(p, id.clone()).name;
                        types.insert(SeenType { id, name });
                    }
                }
            }
            MdevState::NotMdev => {
                for vf in g.pf.map(|pf| sysfs.vfs(pf)).unwrap_or_default() {
                    for (id, name) in sysfs.creatable_vgpu_types(vf).unwrap_or_default() {
                        let id = id.to_string();
                        types.insert(SeenType {
                            id,
                            name: Some(name),
                        });
                    }
                }
            }
            _ => continue,
        }
        gpus.insert(g.key.clone(), types);
    }
    Some(Catalogue { driver, gpus })
}

/// A domain's request that resolved on the old driver and no longer does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The domain.
    pub domain: String,
    /// The request as written (`type 'nvidia-47'`, `profile 'P40-2Q'`).
    pub want: String,
    /// The type it meant on the old driver.
    pub was: SeenType,
    /// The closest type names there are now, for the fix.
    pub closest: Vec<String>,
}

/// Every type in a catalogue, by id.
fn all_types(c: &Catalogue) -> BTreeSet<&SeenType> {
    c.gpus.values().flatten().collect()
}

/// The requests of `domains` (name and definition) that meant a type of `old` that `new` has
/// no longer (gone, or renamed so the profile matches nothing).
pub fn unresolved(
    domains: &[(String, String)],
    old: &Catalogue,
    new: &Catalogue,
) -> Vec<Unresolved> {
    let (before, now) = (all_types(old), all_types(new));
    let now_names: Vec<String> = now.iter().filter_map(|t| t.name.clone()).collect();
    let mut out = Vec::new();
    for (name, xml) in domains {
        let Ok(dom) = Domain::parse(xml) else {
            continue;
        };
        for r in &dom.requests {
            let Some((want, meant)) = meaning(r, &before) else {
                continue;
            };
            if resolves(r, &now) {
                continue;
            }
            let key = meant.name.clone().unwrap_or_else(|| meant.id.clone());
            out.push(Unresolved {
                domain: name.clone(),
                want,
                was: meant.clone(),
                closest: crate::ctl::similar::close_names(&key, &now_names, 3)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            });
        }
    }
    out
}

/// What a request asks for, and the old type it meant (`None`: it meant nothing then either).
fn meaning<'a>(r: &Request, types: &BTreeSet<&'a SeenType>) -> Option<(String, &'a SeenType)> {
    let find_id = |id: &str| types.iter().copied().find(|t| t.id == id);
    let find_profile = |p: &Profile| {
        types
            .iter()
            .copied()
            .find(|t| t.name.as_deref().is_some_and(|n| p.matches(n)))
    };
    match r {
        Request::Mdev(m) => match &m.want {
            MdevWant::Type(t) => Some((format!("type '{t}'"), find_id(t.as_str())?)),
            MdevWant::Profile(p) => Some((format!("profile '{p}'"), find_profile(p)?)),
        },
        Request::Vf(v) => match v.want.as_ref()? {
            VfWant::Type(t) => Some((format!("type '{t}'"), find_id(&t.to_string())?)),
            VfWant::Profile(p) => Some((format!("profile '{p}'"), find_profile(p)?)),
        },
    }
}

/// Whether a request still names a type of `types`.
fn resolves(r: &Request, types: &BTreeSet<&SeenType>) -> bool {
    meaning(r, types).is_some()
}

/// The types of `old` that `new` has on no GPU, by id.
pub fn gone<'a>(old: &'a Catalogue, new: &Catalogue) -> Vec<&'a SeenType> {
    let now: BTreeSet<&str> = all_types(new).iter().map(|t| t.id.as_str()).collect();
    let mut out: Vec<&SeenType> = all_types(old)
        .into_iter()
        .filter(|t| !now.contains(t.id.as_str()))
        .collect();
    out.dedup_by(|a, b| a.id == b.id);
    out
}

/// `vgpuctl boot`'s step: records what the GPUs offer now, and on a new driver says what went
/// away (`check`: compares only, writes nothing). `None` when there is nothing to say.
pub fn boot_step(config: &Config, sysfs: &Sysfs, check: bool) -> Option<String> {
    let path = Seen::path_for(&config.path);
    let (mut seen, restarted) = match Seen::load(&path) {
        Ok(s) => (s, None),
        Err(e) => (Seen::default(), Some(e)),
    };
    let now = seen.with_recorded(snapshot(config, sysfs)?);
    if let Some(e) = restarted.filter(|_| !check) {
        seen.record(now);
        return Some(match seen.save(&path) {
            Ok(()) => format!("{e}: the record starts again from this boot"),
            Err(w) => format!("type catalogue not recorded: {w}"),
        });
    }
    let line = seen.baseline(&now).map(|old| {
        let gone = gone(old, &now);
        let names: Vec<String> = gone
            .iter()
            .map(|t| t.name.clone().unwrap_or_else(|| t.id.clone()))
            .collect();
        if gone.is_empty() {
            format!("type catalogue: driver {} -> {}: no type gone", old.driver, now.driver)
        } else {
            format!(
                "type catalogue: driver {} -> {}: {} type(s) gone ({}); `vgpuctl doctor` names the domains that ask for them",
                old.driver,
                now.driver,
                gone.len(),
                names.join(", ")
            )
        }
    });
    if !check {
        seen.record(now);
        if let Err(e) = seen.save(&path) {
            return Some(format!("type catalogue not recorded: {e}"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(driver: &str, types: &[(&str, &str)]) -> Catalogue {
        let set = types
            .iter()
            .map(|(id, name)| SeenType {
                id: id.to_string(),
                name: Some(name.to_string()),
            })
            .collect();
        Catalogue {
            driver: driver.into(),
            gpus: BTreeMap::from([("0000:82:00.0".to_string(), set)]),
        }
    }

    /// A domain definition asking for one mdev with `attrs`.
    fn dom(name: &str, attrs: &str) -> (String, String) {
        let xml = format!("<domain type='kvm'><name>{name}</name><uuid>0e0c8f3b-9f5a-4b8e-8d4e-3c2b1a0f9e8d</uuid><metadata><vgpu:vgpu xmlns:vgpu='urn:vgpu-hook:domain:1'><vgpu:mdev uuid='6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b' {attrs}/></vgpu:vgpu></metadata><devices><hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b'/></source></hostdev></devices></domain>");
        (name.to_string(), xml)
    }

    #[test]
    fn a_domain_asking_for_a_type_id_that_is_gone_is_named_with_the_closest_now() {
        let old = cat(
            "550",
            &[("nvidia-47", "GRID P40-2Q"), ("nvidia-48", "GRID P40-3Q")],
        );
        let new = cat("580", &[("nvidia-48", "GRID P40-3Q")]);
        let lost = unresolved(&[dom("win11", "type='nvidia-47'")], &old, &new);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].domain, "win11");
        assert_eq!(lost[0].want, "type 'nvidia-47'");
        assert_eq!(lost[0].closest, ["GRID P40-3Q"]);
    }

    #[test]
    fn a_profile_still_matching_after_a_rename_of_the_prefix_resolves() {
        let old = cat("550", &[("nvidia-47", "GRID A100-4C")]);
        let new = cat("580", &[("nvidia-47", "NVIDIA A100-4C")]);
        assert!(unresolved(&[dom("a", "profile='GRID A100-4C'")], &old, &new).is_empty());
    }

    #[test]
    fn a_profile_the_new_driver_has_no_type_for_is_named() {
        let old = cat("550", &[("nvidia-47", "GRID P40-2Q")]);
        let new = cat("580", &[("nvidia-46", "GRID P40-1Q")]);
        let lost = unresolved(&[dom("a", "profile='P40-2Q'")], &old, &new);
        assert_eq!(lost[0].want, "profile 'P40-2Q'");
    }

    #[test]
    fn a_busy_gpu_on_the_recorded_driver_keeps_the_types_it_showed_at_boot() {
        let mut seen = Seen::default();
        seen.record(cat("550", &[("1", "A")]));
        seen.record(cat("580", &[("1", "A"), ("2", "B")]));
        let busy = seen.with_recorded(cat("580", &[("2", "B")]));
        let old = seen.baseline(&busy).unwrap();
        assert!(unresolved(&[dom("a", "profile='A'")], old, &busy).is_empty());
    }

    #[test]
    fn the_same_driver_adds_to_the_record_and_a_new_one_keeps_the_old_as_previous() {
        let mut seen = Seen::default();
        assert_eq!(seen.record(cat("550", &[("1", "A")])), None);
        assert_eq!(seen.record(cat("550", &[("2", "B")])), None);
        assert_eq!(seen.current.as_ref().unwrap().gpus["0000:82:00.0"].len(), 2);
        assert_eq!(
            seen.record(cat("580", &[("2", "B")])).as_deref(),
            Some("550")
        );
        let now = cat("580", &[("2", "B")]);
        assert_eq!(seen.baseline(&now).map(|c| c.driver.as_str()), Some("550"));
        assert_eq!(gone(seen.baseline(&now).unwrap(), &now).len(), 1);
    }
}
