//! NVIDIA's `nvidia-smi` on the host: the GPU settings no sysfs file holds.
//!
//! Mixed-size ("heterogeneous") vGPU mode lets one GPU host vGPUs of several framebuffer sizes.
//! It is resource-manager state per GPU, set only through NVML (`nvidia-smi vgpu -i N -shm 1`),
//! refused once any vGPU exists on the GPU (exit 19, NVML_ERROR_IN_USE) or where the board has
//! no such mode (exit 3, NOT_SUPPORTED), and lost whenever the GPU leaves its driver, which
//! `sriov-manage` does (bigstack-oss/cubecos#1338; open-gpu-kernel-modules `device_ctrl.c`:
//! no registry key keeps it). Each type's placements (the 1 GiB framebuffer slots a vGPU may
//! start at) come from `nvidia-smi vgpu -s -v`. Every call is bounded like `sriov-manage`'s,
//! its output goes to the log, and each error carries the command to run by hand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::host::tool::{is_executable, run_bounded, RunError};
use crate::model::pci::PciAddress;

/// How long one `nvidia-smi` call may take (a busy driver answers in seconds, not minutes).
pub const LIMIT: Duration = Duration::from_secs(20);

/// Why `nvidia-smi` gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum SmiError {
    /// The tool is not installed where the config says.
    #[error("NVIDIA's nvidia-smi is not at {} (install NVIDIA's vGPU manager package, or set nvidia_smi in the config)", path.display())]
    Absent {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A vGPU already exists on the GPU, so the mode cannot change (exit 19).
    #[error("`{command}` was refused: a vGPU already exists on the GPU (mixed-size mode changes only while it hosts none; stop its VMs, or set the mode at boot with `vgpuctl boot`)")]
    InUse {
        /// The command.
        command: String,
    },
    /// The board or driver has no such mode (exit 3).
    #[error("`{command}`: not supported by this GPU or driver (mixed-size mode needs an SR-IOV vGPU board, MIG off, vGPU 17.0 or later); remove it from mixed_size_pfs")]
    NotSupported {
        /// The command.
        command: String,
    },
    /// Any other failure.
    #[error("`{command}` failed ({status}){}; run it by hand to see why", if output.is_empty() { String::new() } else { format!(": {output}") })]
    Failed {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// The last line it printed.
        output: String,
    },
    /// It did not finish within [`LIMIT`].
    #[error("`{command}` did not finish within {} s and was stopped; run it by hand", LIMIT.as_secs())]
    Timeout {
        /// The command.
        command: String,
    },
    /// It answered, but not with what was asked.
    #[error("`{command}` printed no {what}; run it by hand to see what this driver prints")]
    Unreadable {
        /// The command.
        command: String,
        /// What was looked for.
        what: &'static str,
    },
}

/// The placements one vGPU type supports on a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypePlacements {
    /// The type's numeric id (as `creatable_vgpu_types` lists it).
    pub type_id: u32,
    /// How many 1 GiB slots one vGPU of it takes.
    pub size: u32,
    /// The first slots it may start at.
    pub ids: Vec<u32>,
}

/// `nvidia-smi` at a path.
#[derive(Debug, Clone)]
pub struct Smi {
    path: PathBuf,
}

impl Smi {
    /// The tool at `path`.
    pub fn new(path: &Path) -> Smi {
        Smi {
            path: path.to_path_buf(),
        }
    }

    /// The command line for `args`, as an operator would type it.
    pub fn command(&self, args: &[&str]) -> String {
        format!("{} {}", self.path.display(), args.join(" "))
    }

    /// Whether mixed-size mode is on (`None`: the GPU reports it as N/A).
    pub fn heterogeneous_mode(&self, pf: PciAddress) -> Result<Option<bool>, SmiError> {
        let pf = pf.to_string();
        let args = ["-q", "-i", pf.as_str()];
        let out = self.run(&args)?;
        match value_of(&out, "vGPU Heterogeneous Mode") {
            Some("Enabled") => Ok(Some(true)),
            Some("Disabled") => Ok(Some(false)),
            Some(_) => Ok(None),
            None => Err(SmiError::Unreadable {
                command: self.command(&args),
                what: "'vGPU Heterogeneous Mode' line",
            }),
        }
    }

    /// The arguments that switch mixed-size mode on or off.
    fn shm_args(pf: &str, on: bool) -> [&str; 5] {
        ["vgpu", "-i", pf, "-shm", if on { "1" } else { "0" }]
    }

    /// The command line that switches mixed-size mode on, for advice.
    pub fn switch_on_command(&self, pf: PciAddress) -> String {
        self.command(&Self::shm_args(&pf.to_string(), true))
    }

    /// Switches mixed-size mode on or off.
    pub fn set_heterogeneous_mode(&self, pf: PciAddress, on: bool) -> Result<(), SmiError> {
        self.run(&Self::shm_args(&pf.to_string(), on)).map(drop)
    }

    /// The placements of every supported type (`vgpu -s -v`); types it shows without
    /// placement lines are left out.
    pub fn placements(&self, pf: PciAddress) -> Result<Vec<TypePlacements>, SmiError> {
        let pf = pf.to_string();
        let args = ["vgpu", "-i", pf.as_str(), "-s", "-v"];
        let out = self.run(&args)?;
        let list = parse_placements(&out);
        if list.is_empty() {
            return Err(SmiError::Unreadable {
                command: self.command(&args),
                what: "placement lines",
            });
        }
        Ok(list)
    }

    /// Runs the tool bounded; its output is logged, and the exit code says why it failed.
    fn run(&self, args: &[&str]) -> Result<String, SmiError> {
        if !is_executable(&self.path) {
            return Err(SmiError::Absent {
                path: self.path.clone(),
            });
        }
        let command = self.command(args);
        let mut c = Command::new(&self.path);
        c.args(args);
        let ran = match run_bounded(c, LIMIT) {
            Ok(r) => r,
            Err(RunError::Timeout) => return Err(SmiError::Timeout { command }),
            Err(RunError::NotStarted(e)) => {
                return Err(SmiError::Failed {
                    command,
                    status: "not started".into(),
                    output: e,
                })
            }
        };
        if ran.status.success() {
            return Ok(ran.stdout);
        }
        let last = (ran.stdout + &ran.stderr)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| crate::printable(l.trim(), 160))
            .unwrap_or_default();
        log::warn!("{command}: {last}");
        Err(match ran.status.code() {
            Some(19) => SmiError::InUse { command },
            Some(3) => SmiError::NotSupported { command },
            _ => SmiError::Failed {
                command,
                status: ran.status.to_string(),
                output: last,
            },
        })
    }
}

/// The value of the first `key : value` line for `key` in nvidia-smi's `-q` layout.
fn value_of<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Reads `vgpu -s -v` blocks: a `vGPU Type ID : 0x...` line opens one; a key holding
/// "Placement Size" gives the size, a key holding "Placement" and ending in "IDs" the ids.
/// Keys are matched without regard to case or the words around them, because no capture of
/// the exact layout is public.
pub fn parse_placements(text: &str) -> Vec<TypePlacements> {
    let mut out: Vec<TypePlacements> = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let key = k.trim().to_ascii_lowercase();
        let v = v.trim();
        if key == "vgpu type id" {
            let id = v.trim_start_matches("0x").trim_start_matches("0X");
            if let Ok(type_id) = u32::from_str_radix(id, 16) {
                out.push(TypePlacements {
                    type_id,
                    size: 0,
                    ids: Vec::new(),
                });
            }
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if key.contains("placement size") {
            cur.size = v.parse().unwrap_or(0);
        } else if is_supported_ids(&key, cur.ids.is_empty()) {
            cur.ids = v
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter_map(|x| x.parse().ok())
                .collect();
            cur.ids.sort_unstable();
            cur.ids.dedup();
        }
    }
    out.retain(|t| t.size > 0 && !t.ids.is_empty());
    out
}

/// Whether a key gives a type's supported placement ids: one naming them "supported" always,
/// another placement-id line only while none was read (never the "creatable" ones, which shrink
/// as vGPUs are placed).
fn is_supported_ids(key: &str, none_yet: bool) -> bool {
    key.contains("placement")
        && key.ends_with("ids")
        && !key.contains("creatable")
        && (key.contains("supported") || none_yet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_is_read_from_the_virtualization_section() {
        let q = "GPU 00000000:03:00.0\n    GPU Virtualization Mode\n        Virtualization Mode               : Pass-Through\n        Host VGPU Mode                    : N/A\n        vGPU Heterogeneous Mode           : N/A\n";
        assert_eq!(value_of(q, "vGPU Heterogeneous Mode"), Some("N/A"));
        assert_eq!(value_of(q, "Host VGPU Mode"), Some("N/A"));
    }

    #[test]
    fn placement_blocks_give_each_types_size_and_ids() {
        let s = "GPU 00000000:C1:00.0\n    vGPU Type ID : 0x480\n        Name : NVIDIA L40S-8Q\n        Placement Size : 8\n        Supported Placement IDs : 0 16 24 40\n    vGPU Type ID : 0x47b\n        Placement Size : 1\n        Placement IDs : 0, 5, 6\n";
        assert_eq!(
            parse_placements(s),
            [
                TypePlacements {
                    type_id: 1152,
                    size: 8,
                    ids: vec![0, 16, 24, 40]
                },
                TypePlacements {
                    type_id: 1147,
                    size: 1,
                    ids: vec![0, 5, 6]
                }
            ]
        );
    }

    #[test]
    fn supported_ids_win_over_creatable_ones_and_come_sorted() {
        let s = "    vGPU Type ID : 0x480\n        Placement Size : 8\n        Creatable Placement IDs : 16\n        Supported Placement IDs : 40 0 24 16\n";
        assert_eq!(parse_placements(s)[0].ids, [0, 16, 24, 40]);
    }

    /// A stand-in tool at a temp path that prints `out` and exits `code`.
    fn tool(dir: &std::path::Path, out: &str, code: i32) -> Smi {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("nvidia-smi");
        std::fs::write(
            &p,
            format!("#!/bin/sh\nprintf '%s\\n' '{out}'\nexit {code}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Smi::new(&p)
    }

    #[test]
    fn exit_19_is_a_vgpu_in_the_way_and_exit_3_no_such_mode() {
        let t = tempfile::tempdir().unwrap();
        let pf = "0000:41:00.0".parse().unwrap();
        let busy = tool(t.path(), "In use by another client", 19);
        assert!(matches!(
            busy.set_heterogeneous_mode(pf, true),
            Err(SmiError::InUse { .. })
        ));
        let none = tool(t.path(), "Not Supported", 3);
        assert!(matches!(
            none.set_heterogeneous_mode(pf, true),
            Err(SmiError::NotSupported { .. })
        ));
    }

    #[test]
    fn the_mode_reads_enabled_disabled_or_not_available() {
        let t = tempfile::tempdir().unwrap();
        let pf = "0000:41:00.0".parse().unwrap();
        for (line, want) in [
            ("Enabled", Some(true)),
            ("Disabled", Some(false)),
            ("N/A", None),
        ] {
            let smi = tool(
                t.path(),
                &format!("        vGPU Heterogeneous Mode           : {line}"),
                0,
            );
            assert_eq!(smi.heterogeneous_mode(pf).unwrap(), want);
        }
    }

    #[test]
    fn types_without_placement_lines_are_left_out() {
        let s = "    vGPU Type ID : 0x480\n        Name : NVIDIA L40S-8Q\n        FB Memory : 8192 MiB\n";
        assert!(parse_placements(s).is_empty());
    }
}
