//! GPUs the operator drained (`vgpuctl drain`) before a driver upgrade or maintenance: the hook
//! gives them no new vGPU, and VMs already on them run on until they stop. `vgpuctl undrain`
//! ends a drain.
//!
//! The list lives beside the config (`drained.toml` in its directory), not in the state
//! directory: /run is emptied at boot, and an upgrade may take a reboot or two, after which the
//! GPU must still be drained. vgpuctl writes it under the state lock and the hook reads it under
//! the same lock, so once `vgpuctl drain` returns no start can still place a vGPU there.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::atomic::{self, Durability};
use crate::model::config::Config;

/// The file's name, in the config's directory.
pub const FILE: &str = "drained.toml";

/// The drained GPUs, as the file lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drains {
    /// One entry per drained GPU, in the order they were drained.
    #[serde(default, rename = "gpu")]
    pub gpus: Vec<Drain>,
}

/// One drained GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drain {
    /// The GPU as the config names it (normalised: `0000:82:00.0`, or an mdev parent's name).
    pub gpu: String,
    /// When it was drained (seconds since the epoch).
    pub since: u64,
    /// Why, as the operator said (`vgpuctl drain --reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The drain list could not be read or written; names the file.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// Reading or writing failed.
    #[error("drain list {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not what vgpuctl writes.
    #[error(
        "drain list {path} is unreadable ({message}); fix it, or remove it to end every drain"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

const HEADER: &str =
    "# GPUs that take no new vGPU: written by `vgpuctl drain`, ended by `vgpuctl undrain`.\n";

impl Drains {
    /// Where the list of a host whose config is `config` lives.
    pub fn path_for(config: &Path) -> PathBuf {
        config.with_file_name(FILE)
    }

    /// The list of the host whose config is `config`. Readers that decide (a start, a migration
    /// in) read it under the state lock, which vgpuctl writes it under: a drain that returned is
    /// seen by every start after it.
    pub fn of_config(config: &Config) -> Result<Drains, DrainError> {
        Drains::load(&Drains::path_for(&config.path))
    }

    /// The list at `path`; none drained when there is no file.
    pub fn load(path: &Path) -> Result<Drains, DrainError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Drains::default()),
            Err(source) => {
                return Err(DrainError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        toml::from_str(&text).map_err(|e| DrainError::Corrupt {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }

    /// Writes the list to `path` atomically (an empty list removes the file).
    pub fn save(&self, path: &Path) -> Result<(), DrainError> {
        let io_error = |source| DrainError::Io {
            path: path.to_path_buf(),
            source,
        };
        if self.gpus.is_empty() {
            return match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(e)),
                _ => Ok(()),
            };
        }
        let body = toml::to_string(self).map_err(|e| io_error(io::Error::other(e)))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let text = format!("{HEADER}{body}");
        atomic::replace(path, dir, text.as_bytes(), 0o644, Durability::Synced).map_err(io_error)
    }

    /// The drain of `gpu`, if it is drained.
    pub fn of(&self, gpu: &str) -> Option<&Drain> {
        self.gpus.iter().find(|d| d.gpu == gpu)
    }

    /// Drains `gpu` from `since`; false when it was drained already (its drain is kept as it was).
    pub fn drain(&mut self, gpu: &str, since: u64, reason: Option<String>) -> bool {
        if self.of(gpu).is_some() {
            return false;
        }
        self.gpus.push(Drain {
            gpu: gpu.to_string(),
            since,
            reason,
        });
        true
    }

    /// Ends the drain of `gpu`; false when it was not drained.
    pub fn undrain(&mut self, gpu: &str) -> bool {
        let before = self.gpus.len();
        self.gpus.retain(|d| d.gpu != gpu);
        self.gpus.len() != before
    }
}

impl std::fmt::Display for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "drained since {}", crate::utc(self.since))?;
        if let Some(r) = &self.reason {
            write!(f, ", reason: {}", crate::printable(r, 80))?;
        }
        write!(
            f,
            "; `vgpuctl undrain {}` gives it new vGPUs again",
            self.gpu
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_in(t: &tempfile::TempDir) -> PathBuf {
        Drains::path_for(&t.path().join("config.toml"))
    }

    #[test]
    fn no_file_drains_nothing() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(Drains::load(&list_in(&t)).unwrap(), Drains::default());
    }

    #[test]
    fn a_saved_drain_reads_back_and_undrain_removes_the_file() {
        let t = tempfile::tempdir().unwrap();
        let path = list_in(&t);
        let mut d = Drains::default();
        assert!(d.drain("0000:82:00.0", 5, Some("driver 570 -> 580".into())));
        assert!(!d.drain("0000:82:00.0", 9, None));
        d.save(&path).unwrap();
        let back = Drains::load(&path).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.of("0000:82:00.0").unwrap().since, 5);
        let mut back = back;
        assert!(back.undrain("0000:82:00.0"));
        assert!(!back.undrain("0000:82:00.0"));
        back.save(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_damaged_list_names_the_file_and_the_fix() {
        let t = tempfile::tempdir().unwrap();
        let path = list_in(&t);
        fs::write(&path, "[[gpu]]\ngpu = 3\n").unwrap();
        let e = Drains::load(&path).unwrap_err().to_string();
        assert!(e.contains("drained.toml") && e.contains("remove it"), "{e}");
    }
}
