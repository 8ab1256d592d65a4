//! What NVIDIA's vGPU manager said about one vGPU, read from the journal. When a VM's start
//! fails on a vGPU, QEMU reports only `Input/output error` (or nvidia-vgpu-vfio's `start failed`
//! in dmesg); the reason (a board without vGPU support, a licence, ECC, the framebuffer) is in
//! `nvidia-vgpu-mgr`'s journal and nowhere else.
//!
//! When QEMU opens a vGPU, nvidia-vgpu-vfio asks the manager daemon to start it, and the daemon
//! runs one process per vGPU. That process announces the vGPU once ("Received start call from
//! nvidia-vgpu-vfio module: mdev uuid U GPU PCI id ... config params ...") and logs its errors
//! under its own pid without naming the UUID again ("error: vmiop_log: (0x0): vGPU is supported
//! only on VGX capable boards"). So a vGPU's lines are the error lines of the processes that
//! announced its UUID. Journal lines as hosts print them: NVIDIA/nvidia-installer#15,
//! DualCoder/vgpu_unlock#1 and #131 (public issue threads).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::host::tool::{is_executable, run_bounded};
use crate::model::names::MdevUuid;

/// NVIDIA's manager daemon, as its systemd unit is named.
pub const VGPU_MGR_UNIT: &str = "nvidia-vgpu-mgr.service";

/// How many of a vGPU's error lines are quoted: the first say why, the rest are the backtrace.
pub const MAX_LINES: usize = 4;

/// How long reading the journal may take; past it the lines are simply not quoted.
pub const READ_BOUND: Duration = Duration::from_secs(3);

/// The manager's journal entries since some instant, as (pid, message), read once for all the
/// vGPUs a call asks about.
#[derive(Debug, Default)]
pub struct VgpuMgrLog {
    entries: Vec<(String, String)>,
}

impl VgpuMgrLog {
    /// The manager's entries since `since` (seconds since the epoch). Empty when the journal
    /// cannot be read within [`READ_BOUND`]: quoting it is a courtesy, never a reason for a call
    /// to fail or wait longer.
    pub fn read(journalctl: &Path, since: u64) -> VgpuMgrLog {
        if !is_executable(journalctl) {
            return VgpuMgrLog::default();
        }
        let mut command = Command::new(journalctl);
        command
            .args([
                "--unit",
                VGPU_MGR_UNIT,
                "--output",
                "json",
                "--no-pager",
                "--quiet",
            ])
            .arg(format!("--since=@{since}"));
        match run_bounded(command, READ_BOUND) {
            Ok(ran) if ran.status.success() => VgpuMgrLog::parse(&ran.stdout),
            Ok(ran) => {
                log::debug!("{}: {}", journalctl.display(), ran.status);
                VgpuMgrLog::default()
            }
            Err(e) => {
                log::debug!("{}: {e:?}", journalctl.display());
                VgpuMgrLog::default()
            }
        }
    }

    /// The entries of `journalctl --output json` (one object per line).
    fn parse(json_lines: &str) -> VgpuMgrLog {
        let entries = json_lines
            .lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .filter_map(|e| match (e.pid, e.message) {
                (Some(pid), Some(serde_json::Value::String(m))) => Some((pid, m)),
                _ => None,
            })
            .collect();
        VgpuMgrLog { entries }
    }

    /// The error lines of the processes that announced `uuid`, oldest first, as
    /// `nvidia-vgpu-mgr[PID]: error: ...`, at most [`MAX_LINES`].
    pub fn errors_about(&self, uuid: &MdevUuid) -> Vec<String> {
        let announced: Vec<&str> = self
            .entries
            .iter()
            .filter(|(_, m)| m.contains(uuid.as_str()))
            .map(|(pid, _)| pid.as_str())
            .collect();
        self.entries
            .iter()
            .filter(|(pid, m)| announced.contains(&pid.as_str()) && m.starts_with("error:"))
            .take(MAX_LINES)
            .map(|(pid, m)| format!("nvidia-vgpu-mgr[{pid}]: {}", crate::printable(m, 200)))
            .collect()
    }
}

/// One journal entry as `journalctl --output json` prints it (one object per line; a field of
/// bytes that are not UTF-8 is an array of numbers, and such a message is skipped).
#[derive(serde::Deserialize)]
struct Entry {
    #[serde(rename = "_PID")]
    pid: Option<String>,
    #[serde(rename = "MESSAGE")]
    message: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::VgpuMgrLog;
    use crate::model::names::MdevUuid;

    const U: &str = "38512783-4893-47f7-9179-b0594167e86b";

    fn entry(pid: u32, message: &str) -> String {
        serde_json::json!({ "_PID": pid.to_string(), "MESSAGE": message }).to_string()
    }

    #[test]
    fn the_errors_of_the_process_that_announced_the_vgpu_are_quoted_in_order() {
        let journal = [
            entry(780, "notice: vmiop_env_log: nvidia-vgpu-mgr daemon started"),
            entry(8626, &format!("notice: vmiop_env_log: (0x0): Received start call from nvidia-vgpu-vfio module: mdev uuid {U} GPU PCI id 00:01:00.0 config params vgpu_type_id=50")),
            entry(8626, "notice: vmiop_env_log: (0x0): pluginconfig: vgpu_type_id=50"),
            entry(8626, "error: vmiop_log: (0x0): vGPU is supported only on VGX capable boards"),
            entry(9001, "error: vmiop_log: (0x0): another vGPU's trouble"),
            entry(8626, "error: vmiop_log: (0x0): init_device_instance failed for inst 0 with error 1 (vGPU validation of the GPU failed)"),
        ]
        .join("\n");
        assert_eq!(
            VgpuMgrLog::parse(&journal).errors_about(&MdevUuid::parse(U).unwrap()),
            [
                "nvidia-vgpu-mgr[8626]: error: vmiop_log: (0x0): vGPU is supported only on VGX capable boards",
                "nvidia-vgpu-mgr[8626]: error: vmiop_log: (0x0): init_device_instance failed for inst 0 with error 1 (vGPU validation of the GPU failed)",
            ]
        );
    }

    #[test]
    fn a_vgpu_never_announced_or_a_journal_of_other_shapes_quotes_nothing() {
        let journal = [
            entry(9001, "error: vmiop_log: (0x0): another vGPU's trouble"),
            "not json".to_string(),
            r#"{"_PID":"1","MESSAGE":[255,254]}"#.to_string(),
        ]
        .join("\n");
        assert!(VgpuMgrLog::parse(&journal)
            .errors_about(&MdevUuid::parse(U).unwrap())
            .is_empty());
    }
}
