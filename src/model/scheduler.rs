//! NVIDIA's vGPU scheduling policy: how a GPU shares its time between the vGPUs on it.
//!
//! The policy is the resource manager's `RmPVMRL` registry key, read when the `nvidia` module
//! loads (open-gpu-kernel-modules 595.45.04, `src/nvidia/interface/nvrm_registry.h`): bit 0
//! enables the per-VM runlist (0: best effort), bits 7:4 pick the scheduler (0 equal share,
//! 1 fixed share), bits 23:16 the time slice in ms (0: the driver's default). So `0x01` is equal
//! share, `0x11` fixed share, `0x00TT0001` equal share with a TT ms slice. It is set for all
//! GPUs with `NVreg_RegistryDwords="RmPVMRL=..."` or per GPU with
//! `NVreg_RegistryDwordsPerDevice="pci=DDDD:BB:DD.F;RmPVMRL=...;"` (`kernel-open/nvidia/nv-reg.h`,
//! `os-registry.c`: a device's keys follow its `pci=`, values parsed by `simple_strtoul(.., 0)`),
//! and the module shows both strings in `/proc/driver/nvidia/params` (`nv-procfs.c`). A change
//! takes effect when the module loads again, so the policy a GPU runs is read there, and the
//! policy the operator wants is written into modprobe's options.

use std::fmt;

use crate::model::pci::PciAddress;

/// How a GPU shares its time between vGPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Round robin by demand (the default): an idle VM's time goes to the busy ones.
    BestEffort,
    /// Each running VM the same share, whether it uses it or not.
    EqualShare,
    /// Each vGPU a fixed share of the GPU, whatever runs beside it.
    FixedShare,
}

impl Policy {
    /// The name used in the config and in domain requests.
    pub fn name(self) -> &'static str {
        match self {
            Policy::BestEffort => "best-effort",
            Policy::EqualShare => "equal-share",
            Policy::FixedShare => "fixed-share",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Policy> {
        [Policy::BestEffort, Policy::EqualShare, Policy::FixedShare]
            .into_iter()
            .find(|p| p.name() == s)
    }
}

/// A policy with its time slice (equal and fixed share only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduler {
    /// The policy.
    pub policy: Policy,
    /// The time slice in ms, when not the driver's default.
    pub timeslice_ms: Option<u8>,
}

/// Why a scheduler setting was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// Not one of the policies.
    #[error("'{0}' is not a vGPU scheduling policy (expected \"best-effort\", \"equal-share\" or \"fixed-share\", optionally with a time slice: \"equal-share/2ms\")")]
    Policy(String),
    /// A time slice that is not 1 to 255 ms.
    #[error("time slice '{0}' is not 1 to 255 ms (RmPVMRL keeps it in 8 bits), like \"equal-share/2ms\"")]
    Timeslice(String),
    /// A time slice on best effort, which has none.
    #[error("best-effort has no time slice; drop '/{0}' or use equal-share/{0}")]
    BestEffortSlice(String),
}

impl Scheduler {
    /// Parses `best-effort`, `equal-share`, `fixed-share`, the latter two optionally with
    /// `/<N>ms`.
    pub fn parse(s: &str) -> Result<Scheduler, SchedulerError> {
        let (name, slice) = match s.split_once('/') {
            Some((n, t)) => (n, Some(t)),
            None => (s, None),
        };
        let policy = Policy::parse(name).ok_or_else(|| SchedulerError::Policy(s.to_string()))?;
        let timeslice_ms = match slice {
            None => None,
            Some(t) if policy == Policy::BestEffort => {
                return Err(SchedulerError::BestEffortSlice(t.to_string()))
            }
            Some(t) => Some(
                t.strip_suffix("ms")
                    .and_then(|n| n.parse::<u8>().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| SchedulerError::Timeslice(t.to_string()))?,
            ),
        };
        Ok(Scheduler {
            policy,
            timeslice_ms,
        })
    }

    /// The `RmPVMRL` value that selects it.
    pub fn rmpvmrl(self) -> u32 {
        let base = match self.policy {
            Policy::BestEffort => return 0,
            Policy::EqualShare => 0x01,
            Policy::FixedShare => 0x11,
        };
        base | (u32::from(self.timeslice_ms.unwrap_or(0)) << 16)
    }

    /// The policy an `RmPVMRL` value selects. A policy field other than 0 or 1 is invalid, and
    /// the driver keeps its default then (`_gpuGetSchedulerPolicyGr` in
    /// `src/nvidia/src/kernel/gpu/gpu.c`), which is best effort.
    pub fn from_rmpvmrl(v: u32) -> Scheduler {
        let policy = match (v & 1, (v >> 4) & 0xf) {
            (1, 0) => Policy::EqualShare,
            (1, 1) => Policy::FixedShare,
            _ => return Scheduler::best_effort(),
        };
        let slice = ((v >> 16) & 0xff) as u8;
        Scheduler {
            policy,
            timeslice_ms: (slice != 0).then_some(slice),
        }
    }

    /// Whether a GPU running `self` serves a VM that asks for `want`: the same policy, and the
    /// same time slice when the VM names one.
    pub fn serves(self, want: Scheduler) -> bool {
        self.policy == want.policy
            && want
                .timeslice_ms
                .is_none_or(|t| self.timeslice_ms == Some(t))
    }

    /// The default: best effort.
    pub fn best_effort() -> Scheduler {
        Scheduler {
            policy: Policy::BestEffort,
            timeslice_ms: None,
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.timeslice_ms {
            Some(t) => write!(f, "{}/{t}ms", self.policy.name()),
            None => f.write_str(self.policy.name()),
        }
    }
}

/// The policy `pf` runs under, by the `nvidia` module's parameters as `/proc/driver/nvidia/params`
/// shows them: its own `RmPVMRL` in `RegistryDwordsPerDevice`, else the global one in
/// `RegistryDwords`, else best effort.
pub fn running(params: &str, pf: PciAddress) -> Scheduler {
    let value = |key: &str| {
        params.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.trim().trim_matches('"');
            Some(v.to_string())
        })
    };
    let per_device = value("RegistryDwordsPerDevice:").unwrap_or_default();
    let global = value("RegistryDwords:").unwrap_or_default();
    per_device_pvmrl(&per_device, pf)
        .or_else(|| pvmrl_in(global.split(';')))
        .map_or_else(Scheduler::best_effort, Scheduler::from_rmpvmrl)
}

/// `RmPVMRL` among `key=value` pairs (the last one counts).
fn pvmrl_in<'a>(pairs: impl Iterator<Item = &'a str>) -> Option<u32> {
    pairs
        .filter_map(|p| p.trim().split_once('='))
        .filter(|(k, _)| k.trim() == "RmPVMRL")
        .filter_map(|(_, v)| number(v.trim()))
        .last()
}

/// `simple_strtoul(value, NULL, 0)`: hex with `0x`, octal with a leading 0, else decimal, as
/// far as the digits go (`abc` and `08` are 0, as the driver reads them).
fn number(v: &str) -> Option<u32> {
    let (digits, radix) = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(o) = v.strip_prefix('0') {
        (o, 8)
    } else {
        (v, 10)
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    Some(u32::from_str_radix(&digits[..end], radix).unwrap_or(0))
}

/// The `RmPVMRL` that follows `pf`'s `pci=` in a per-device string (`bus:slot`,
/// `domain:bus:slot` and `domain:bus:slot.func` all name it).
fn per_device_pvmrl(s: &str, pf: PciAddress) -> Option<u32> {
    let mut mine = false;
    let mut found = None;
    for pair in s.split(';') {
        let Some((k, v)) = pair.trim().split_once('=') else {
            continue;
        };
        if k.trim() == "pci" {
            mine = names(v.trim(), pf);
        } else if mine && k.trim() == "RmPVMRL" {
            found = number(v.trim()).or(found);
        }
    }
    found
}

/// Whether a `pci=` value names `pf` (the forms `os-registry.c` takes; domain and function
/// default to 0).
fn names(v: &str, pf: PciAddress) -> bool {
    let (rest, func) = match v.split_once('.') {
        Some((r, f)) => (r, u8::from_str_radix(f, 16).ok()),
        None => (v, Some(0)),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    let (domain, bus, slot) = match parts.as_slice() {
        [b, s] => (Some(0), hex(b), hex(s)),
        [d, b, s] => (hex(d), hex(b), hex(s)),
        _ => return false,
    };
    let want = (
        Some(pf.domain),
        Some(u32::from(pf.bus)),
        Some(u32::from(pf.slot)),
        Some(pf.function),
    );
    (domain, bus, slot, func) == want
}

/// The modprobe line that makes `nvidia` load with these per-GPU policies.
pub fn modprobe_line(gpus: &[(PciAddress, Scheduler)]) -> String {
    let keys: Vec<String> = gpus
        .iter()
        .map(|(pf, s)| format!("pci={pf};RmPVMRL={:#x}", s.rmpvmrl()))
        .collect();
    format!(
        "options nvidia NVreg_RegistryDwordsPerDevice=\"{}\"",
        keys.join(";")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn policies_encode_as_nvidias_rmpvmrl_values() {
        assert_eq!(Scheduler::parse("best-effort").unwrap().rmpvmrl(), 0);
        assert_eq!(Scheduler::parse("equal-share").unwrap().rmpvmrl(), 0x01);
        assert_eq!(Scheduler::parse("fixed-share").unwrap().rmpvmrl(), 0x11);
        assert_eq!(
            Scheduler::parse("equal-share/2ms").unwrap().rmpvmrl(),
            0x0002_0001
        );
        assert_eq!(
            Scheduler::parse("fixed-share/30ms").unwrap().rmpvmrl(),
            0x001e_0011
        );
    }

    #[test]
    fn rmpvmrl_values_decode_to_their_policy() {
        for s in ["best-effort", "equal-share", "fixed-share/5ms"] {
            let p = Scheduler::parse(s).unwrap();
            assert_eq!(Scheduler::from_rmpvmrl(p.rmpvmrl()), p);
        }
    }

    #[test]
    fn bad_settings_say_what_is_expected() {
        assert!(matches!(
            Scheduler::parse("fair"),
            Err(SchedulerError::Policy(_))
        ));
        assert!(matches!(
            Scheduler::parse("equal-share/0ms"),
            Err(SchedulerError::Timeslice(_))
        ));
        assert!(matches!(
            Scheduler::parse("equal-share/2"),
            Err(SchedulerError::Timeslice(_))
        ));
        assert!(matches!(
            Scheduler::parse("best-effort/2ms"),
            Err(SchedulerError::BestEffortSlice(_))
        ));
    }

    #[test]
    fn a_wish_without_a_time_slice_takes_any_slice_of_its_policy() {
        let gpu = Scheduler::parse("equal-share/2ms").unwrap();
        assert!(gpu.serves(Scheduler::parse("equal-share").unwrap()));
        assert!(gpu.serves(Scheduler::parse("equal-share/2ms").unwrap()));
        assert!(!gpu.serves(Scheduler::parse("equal-share/4ms").unwrap()));
        assert!(!gpu.serves(Scheduler::parse("fixed-share").unwrap()));
    }

    #[test]
    fn a_gpus_own_key_wins_over_the_global_one() {
        let params = "ResmanDebugLevel: 4294967295\nRegistryDwords: \"RmPVMRL=0x11\"\nRegistryDwordsPerDevice: \"pci=0000:41:00.0;RmPVMRL=0x01;pci=82:00;RmPVMRL=0\"\n";
        assert_eq!(
            running(params, pf("0000:41:00.0")).policy,
            Policy::EqualShare
        );
        assert_eq!(
            running(params, pf("0000:82:00.0")).policy,
            Policy::BestEffort
        );
        assert_eq!(
            running(params, pf("0000:83:00.0")).policy,
            Policy::FixedShare
        );
    }

    #[test]
    fn values_the_driver_reads_as_invalid_or_zero_run_best_effort() {
        assert_eq!(Scheduler::from_rmpvmrl(0x21), Scheduler::best_effort());
        let params = |v: &str| {
            format!("RegistryDwords: \"RmPVMRL=0x11\"\nRegistryDwordsPerDevice: \"pci=41:00;RmPVMRL={v}\"\n")
        };
        for garbage in ["abc", "08"] {
            assert_eq!(
                running(&params(garbage), pf("41:00.0")),
                Scheduler::best_effort()
            );
        }
    }

    #[test]
    fn without_any_key_a_gpu_runs_best_effort() {
        let params = "RegistryDwords: \"\"\nRegistryDwordsPerDevice: \"\"\n";
        assert_eq!(running(params, pf("41:00.0")), Scheduler::best_effort());
    }

    #[test]
    fn the_modprobe_line_names_each_gpu_and_its_value() {
        let line = modprobe_line(&[
            (pf("41:00.0"), Scheduler::parse("equal-share").unwrap()),
            (pf("82:00.0"), Scheduler::parse("fixed-share/2ms").unwrap()),
        ]);
        assert_eq!(
            line,
            "options nvidia NVreg_RegistryDwordsPerDevice=\"pci=0000:41:00.0;RmPVMRL=0x1;pci=0000:82:00.0;RmPVMRL=0x20011\""
        );
    }
}
