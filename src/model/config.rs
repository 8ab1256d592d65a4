//! The operator's configuration: which devices the hook may hand out, and how patiently.
//!
//! The file is small TOML (`/etc/vgpu-hook/config.toml`, or `VGPU_HOOK_CONFIG`). Every error
//! names the file, the line, the key and what would be accepted, because the operator meets it as
//! the one line `virsh start` prints. Addresses are normalised here so that the rest of the program
//! only ever sees [`PciAddress`] and validated parent names.

use std::collections::HashSet;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::model::names::{NameError, ParentName};
use crate::model::pci::PciAddress;
use crate::model::scheduler::{Policy, Scheduler};

/// Where the config lives unless `VGPU_HOOK_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/vgpu-hook/config.toml";

/// NVIDIA's own tool for enabling SR-IOV VFs on its GPUs, where its vGPU manager package puts it.
pub const DEFAULT_SRIOV_MANAGE: &str = "/usr/lib/nvidia/sriov-manage";

/// Where NVIDIA's vGPU manager package puts `nvidia-smi`.
pub const DEFAULT_NVIDIA_SMI: &str = "/usr/bin/nvidia-smi";

/// Where systemd's journal reader is (what NVIDIA's vGPU manager said is read through it).
pub const DEFAULT_JOURNALCTL: &str = "/usr/bin/journalctl";

/// How the hook chooses among GPUs that can all host a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Fill one GPU before the next: keeps whole GPUs free for other profile sizes.
    #[default]
    Pack,
    /// Use the GPU with the most room: spreads load and noise between VMs.
    Spread,
}

/// How a VM's NUMA wishes weigh in placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NumaPolicy {
    /// GPUs on the VM's nodes first, then the nearest; remote when nothing local has room.
    #[default]
    Prefer,
    /// Only GPUs on the VM's nodes; refuse rather than go remote.
    Require,
    /// Place as if no VM had wishes.
    Ignore,
}

/// How long a call waits for the host-wide state lock unless `lock_wait_secs` says otherwise.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(120);

/// Timing knobs; each bound exists because a driver or a boot sequence needs it
/// (see the research notes on sysfs semantics) and none may be unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How long `prepare` waits for a configured parent that has not registered yet (boot race
    /// with the vendor's manager service).
    pub parent_wait: Duration,
    /// How long after writing `create` the device may take to appear.
    pub device_wait: Duration,
    /// How long `release` waits for NVIDIA's driver to remove an mdev by itself.
    pub cleanup_wait: Duration,
    /// How long one `remove` write may block (device still held) before it counts as failed.
    pub remove_timeout: Duration,
    /// How many times a failed `remove` or VF type reset is tried in all.
    pub retries: u32,
    /// Pause between two tries.
    pub retry_interval: Duration,
    /// How long a device prepared for a domain that is not running yet counts as taken.
    pub prepare_grace: Duration,
    /// After boot, how long absent GPUs are waited for even when present ones offer the type
    /// (later, only when none does: a GPU gone for good must not delay every refusal).
    pub boot_window: Duration,
    /// How long NVIDIA's `sriov-manage` may take (it unbinds and rebinds the GPU's driver).
    pub sriov_manage: Duration,
    /// How long a call waits for the host-wide state lock before it gives up naming the holder
    /// (longer than any step a holder takes under it: `sriov-manage`, a blocking remove).
    pub lock_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            parent_wait: Duration::from_secs(30),
            device_wait: Duration::from_secs(5),
            cleanup_wait: Duration::from_secs(10),
            remove_timeout: Duration::from_secs(10),
            retries: 10,
            retry_interval: Duration::from_millis(1000),
            prepare_grace: Duration::from_secs(300),
            boot_window: Duration::from_secs(600),
            sriov_manage: Duration::from_secs(60),
            lock_wait: DEFAULT_LOCK_WAIT,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from, for messages.
    pub path: PathBuf,
    /// NVIDIA GPUs (physical functions) that host vGPUs, of any generation.
    pub nvidia_vgpu_pfs: Vec<PciAddress>,
    /// NVIDIA GPUs (of `nvidia_vgpu_pfs`) run in mixed-size mode: vGPUs of several framebuffer
    /// sizes at once, placed slot by slot.
    pub mixed_size_pfs: Vec<PciAddress>,
    /// The vGPU scheduling policy the operator wants per NVIDIA GPU (`vgpu_scheduler`).
    pub vgpu_scheduler: Vec<(PciAddress, Scheduler)>,
    /// AMD MxGPU PFs whose VFs are handed out whole.
    pub amd_vgpu_pfs: Vec<PciAddress>,
    /// Other mdev parents, by their `/sys/class/mdev_bus` name.
    pub mdev_parents: Vec<ParentName>,
    /// Other SR-IOV PFs whose VFs are handed out whole.
    pub sriov_pfs: Vec<PciAddress>,
    /// Placement policy.
    pub placement: Placement,
    /// How NUMA wishes weigh in placement.
    pub numa: NumaPolicy,
    /// How many VFs to enable on a PF that has none, when the driver lets sysfs do it
    /// (0 = `sriov_totalvfs`).
    pub vf_count: u32,
    /// NVIDIA's `sriov-manage`: the only way to enable the VFs of an NVIDIA GPU (its PF driver
    /// has no `sriov_configure`, so `sriov_numvfs` answers ENOENT).
    pub sriov_manage: PathBuf,
    /// NVIDIA's `nvidia-smi`, which sets and reads mixed-size mode and the placements.
    pub nvidia_smi: PathBuf,
    /// systemd's `journalctl`, through which the hook and vgpuctl read what NVIDIA's vGPU
    /// manager said about a vGPU whose start failed.
    pub journalctl: PathBuf,
    /// Timing knobs.
    pub timing: Timing,
}

/// A configuration error, with enough context to fix it from the message alone.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is absent.
    #[error("config {path}: not found; create it (vgpuctl install writes a commented one) or set VGPU_HOOK_CONFIG")]
    Missing {
        /// The path looked at.
        path: PathBuf,
    },
    /// The file exists but cannot be read.
    #[error("config {path}: cannot read: {source}")]
    Read {
        /// The path looked at.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, unknown key or wrong value type.
    #[error("config {path}, line {line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// What is wrong and what is expected.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    nvidia_vgpu_pfs: Vec<Spanned<String>>,
    #[serde(default)]
    mixed_size_pfs: Vec<Spanned<String>>,
    #[serde(default)]
    vgpu_scheduler: std::collections::BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    amd_vgpu_pfs: Vec<Spanned<String>>,
    #[serde(default)]
    mdev_parents: Vec<Spanned<String>>,
    #[serde(default)]
    sriov_pfs: Vec<Spanned<String>>,
    placement: Option<Spanned<String>>,
    numa: Option<Spanned<String>>,
    vf_count: Option<Spanned<i64>>,
    parent_wait_secs: Option<Spanned<i64>>,
    device_wait_secs: Option<Spanned<i64>>,
    cleanup_wait_secs: Option<Spanned<i64>>,
    remove_timeout_secs: Option<Spanned<i64>>,
    retries: Option<Spanned<i64>>,
    retry_interval_ms: Option<Spanned<i64>>,
    prepare_grace_secs: Option<Spanned<i64>>,
    boot_window_secs: Option<Spanned<i64>>,
    sriov_manage: Option<Spanned<String>>,
    journalctl: Option<Spanned<String>>,
    nvidia_smi: Option<Spanned<String>>,
    lock_wait_secs: Option<Spanned<i64>>,
    sriov_manage_timeout_secs: Option<Spanned<i64>>,
}

/// Which config list a PF whose VFs are handed out whole comes from; what a VF may become and
/// how its VFs are switched on follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PfKind {
    /// `amd_vgpu_pfs`.
    Amd,
    /// `sriov_pfs`.
    Generic,
    /// `nvidia_vgpu_pfs` (kernel-6.8+ VFs).
    Nvidia,
}

impl PfKind {
    /// The config key it comes from, for reports and messages.
    pub fn config_key(self) -> &'static str {
        match self {
            PfKind::Amd => "amd_vgpu_pfs",
            PfKind::Generic => "sriov_pfs",
            PfKind::Nvidia => "nvidia_vgpu_pfs",
        }
    }
}

impl Config {
    /// Every configured PF whose VFs are handed out whole, in config order, each once (a PF in
    /// two lists is the first list's).
    pub fn vf_pfs(&self) -> Vec<(PciAddress, PfKind)> {
        let mut out: Vec<(PciAddress, PfKind)> = Vec::new();
        let lists = [
            (&self.amd_vgpu_pfs, PfKind::Amd),
            (&self.sriov_pfs, PfKind::Generic),
            (&self.nvidia_vgpu_pfs, PfKind::Nvidia),
        ];
        for (list, kind) in lists {
            for &pf in list {
                if !out.iter().any(|(a, _)| *a == pf) {
                    out.push((pf, kind));
                }
            }
        }
        out
    }

    /// The policy the operator wants for `pf`, if the config names one.
    pub fn scheduler_of(&self, pf: PciAddress) -> Option<Scheduler> {
        self.vgpu_scheduler
            .iter()
            .find(|(a, _)| *a == pf)
            .map(|(_, s)| *s)
    }

    /// Every configured GPU as the programs name it (`0000:82:00.0`, or an mdev parent's
    /// name), in config order, each once: NVIDIA GPUs, other mdev parents, then the PFs whose
    /// VFs are handed out whole.
    pub fn gpu_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mdev = self.nvidia_vgpu_pfs.iter().map(ToString::to_string);
        let parents = self.mdev_parents.iter().map(ToString::to_string);
        let vfs = self.vf_pfs().into_iter().map(|(a, _)| a.to_string());
        for name in mdev.chain(parents).chain(vfs) {
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let text = String::from_utf8(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of_offset(e.as_bytes(), e.utf8_error().valid_up_to()),
            message: "not valid UTF-8".into(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let src = Source { text, path };
        let raw: Raw = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        let timing = src.timing(&raw)?;
        let vf_count = src
            .bounded("vf_count", &raw.vf_count, 0..=65_535)?
            .unwrap_or(0) as u32;
        let nvidia_vgpu_pfs = src.pci_list("nvidia_vgpu_pfs", raw.nvidia_vgpu_pfs)?;
        let mixed_size_pfs = src.mixed_size(raw.mixed_size_pfs, &nvidia_vgpu_pfs)?;
        let vgpu_scheduler =
            src.schedulers(&raw.vgpu_scheduler, &nvidia_vgpu_pfs, &mixed_size_pfs)?;
        Ok(Config {
            path: path.to_path_buf(),
            nvidia_vgpu_pfs,
            mixed_size_pfs,
            vgpu_scheduler,
            amd_vgpu_pfs: src.pci_list("amd_vgpu_pfs", raw.amd_vgpu_pfs)?,
            mdev_parents: src.parents(raw.mdev_parents)?,
            sriov_pfs: src.pci_list("sriov_pfs", raw.sriov_pfs)?,
            placement: src.placement(raw.placement)?,
            numa: src.numa(raw.numa)?,
            vf_count,
            sriov_manage: src.tool("sriov_manage", raw.sriov_manage, DEFAULT_SRIOV_MANAGE)?,
            journalctl: src.tool("journalctl", raw.journalctl, DEFAULT_JOURNALCTL)?,
            nvidia_smi: src.tool("nvidia_smi", raw.nvidia_smi, DEFAULT_NVIDIA_SMI)?,
            timing,
        })
    }
}

/// The text being parsed, for errors that name the file, the line and the key.
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Source<'_> {
    fn invalid(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: span.map_or(1, |s| line_of_offset(self.text.as_bytes(), s.start)),
            message,
        }
    }

    /// A TOML error said in the config's terms: `unknown key ...; known keys are ...`, or the
    /// key the bad value belongs to.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim().replace('\n', " ");
        let message = match message.strip_prefix("unknown field ") {
            Some(rest) => format!(
                "unknown key {}",
                rest.replace(", expected one of", "; known keys are")
            ),
            None => match e.span().and_then(|s| key_before(self.text, s.start)) {
                Some(key) if !message.contains(&key) => format!("{key}: {message}"),
                _ => message,
            },
        };
        self.invalid(e.span(), message)
    }

    /// PCI addresses, normalised, duplicates once.
    fn pci_list(
        &self,
        key: &str,
        items: Vec<Spanned<String>>,
    ) -> Result<Vec<PciAddress>, ConfigError> {
        let mut out: Vec<PciAddress> = Vec::new();
        let mut seen = HashSet::new();
        for item in items {
            let addr: PciAddress = item
                .get_ref()
                .parse()
                .map_err(|e| self.invalid(Some(item.span()), format!("{key}: {e}")))?;
            if seen.insert(addr) {
                out.push(addr);
            }
        }
        Ok(out)
    }

    /// `mixed_size_pfs`: addresses that must also be in `nvidia_vgpu_pfs` (the mode is an
    /// NVIDIA GPU's, and a GPU the hook does not hand out has nothing to place).
    fn mixed_size(
        &self,
        items: Vec<Spanned<String>>,
        nvidia: &[PciAddress],
    ) -> Result<Vec<PciAddress>, ConfigError> {
        for item in &items {
            let span = item.span();
            let addr = self.pci_list("mixed_size_pfs", vec![item.clone()])?;
            if addr.iter().any(|a| !nvidia.contains(a)) {
                return Err(self.invalid(
                    Some(span),
                    format!("mixed_size_pfs: {} is not in nvidia_vgpu_pfs; add it there too (mixed-size mode is an NVIDIA vGPU GPU's)", addr[0]),
                ));
            }
        }
        let list = self.pci_list("mixed_size_pfs", items)?;
        Ok(list)
    }

    /// `vgpu_scheduler`: `"<PF>" = "<policy>[/<N>ms]"` for GPUs of `nvidia_vgpu_pfs`; fixed
    /// share is refused on a mixed-size GPU (NVIDIA: mixed-size mode runs best effort or equal
    /// share only).
    fn schedulers(
        &self,
        items: &std::collections::BTreeMap<String, Spanned<String>>,
        nvidia: &[PciAddress],
        mixed: &[PciAddress],
    ) -> Result<Vec<(PciAddress, Scheduler)>, ConfigError> {
        let mut out: Vec<(PciAddress, Scheduler)> = Vec::new();
        for (key, value) in items {
            let bad = |m: String| self.invalid(Some(value.span()), format!("vgpu_scheduler: {m}"));
            let pf: PciAddress = key.parse().map_err(|e| {
                bad(format!("{key}: {e} (a [vgpu_scheduler] table takes every key written after it: put it at the end of the file, or write vgpu_scheduler = {{ \"82:00.0\" = \"equal-share\" }})"))
            })?;
            if out.iter().any(|(a, _)| *a == pf) {
                return Err(bad(format!(
                    "{pf} is named twice (with and without its PCI domain?); keep one"
                )));
            }
            if !nvidia.contains(&pf) {
                return Err(bad(format!("{pf} is not in nvidia_vgpu_pfs; add it there too (the policy is an NVIDIA vGPU GPU's)")));
            }
            let s =
                Scheduler::parse(value.get_ref().trim()).map_err(|e| bad(format!("{pf}: {e}")))?;
            if s.policy == Policy::FixedShare && mixed.contains(&pf) {
                return Err(bad(format!("{pf} is in mixed_size_pfs, and NVIDIA's mixed-size mode runs only best-effort or equal-share; pick one, or take it out of mixed_size_pfs")));
            }
            out.push((pf, s));
        }
        Ok(out)
    }

    fn parents(&self, items: Vec<Spanned<String>>) -> Result<Vec<ParentName>, ConfigError> {
        let mut out = Vec::with_capacity(items.len());
        let mut seen = HashSet::with_capacity(items.len());
        for item in &items {
            let name = ParentName::parse(item.get_ref()).map_err(|e: NameError| {
                self.invalid(Some(item.span()), format!("mdev_parents: {e}"))
            })?;
            if seen.insert(item.get_ref().as_str()) {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn placement(&self, p: Option<Spanned<String>>) -> Result<Placement, ConfigError> {
        let Some(p) = p else {
            return Ok(Placement::default());
        };
        match p.get_ref().as_str() {
            "pack" => Ok(Placement::Pack),
            "spread" => Ok(Placement::Spread),
            other => Err(self.invalid(
                Some(p.span()),
                format!(
                    "placement: '{}' is not a policy (expected \"pack\" or \"spread\")",
                    crate::printable(other, 40)
                ),
            )),
        }
    }

    fn numa(&self, p: Option<Spanned<String>>) -> Result<NumaPolicy, ConfigError> {
        let Some(p) = p else {
            return Ok(NumaPolicy::default());
        };
        match p.get_ref().as_str() {
            "prefer" => Ok(NumaPolicy::Prefer),
            "require" => Ok(NumaPolicy::Require),
            "ignore" => Ok(NumaPolicy::Ignore),
            other => Err(self.invalid(
                Some(p.span()),
                format!(
                    "numa: '{}' is not a policy (expected \"prefer\", \"require\" or \"ignore\")",
                    crate::printable(other, 40)
                ),
            )),
        }
    }

    /// A whole number within `range`, if given.
    fn bounded(
        &self,
        key: &str,
        v: &Option<Spanned<i64>>,
        range: RangeInclusive<i64>,
    ) -> Result<Option<u64>, ConfigError> {
        match v {
            None => Ok(None),
            Some(v) if range.contains(v.get_ref()) => Ok(Some(*v.get_ref() as u64)),
            Some(v) => Err(self.invalid(
                Some(v.span()),
                format!(
                    "{key}: {} is out of range (expected {} to {})",
                    v.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    fn timing(&self, raw: &Raw) -> Result<Timing, ConfigError> {
        let mut t = Timing::default();
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        self.knob(
            &mut t.parent_wait,
            "parent_wait_secs",
            &raw.parent_wait_secs,
            0..=3600,
            secs,
        )?;
        self.knob(
            &mut t.device_wait,
            "device_wait_secs",
            &raw.device_wait_secs,
            1..=600,
            secs,
        )?;
        self.knob(
            &mut t.cleanup_wait,
            "cleanup_wait_secs",
            &raw.cleanup_wait_secs,
            0..=600,
            secs,
        )?;
        self.knob(
            &mut t.remove_timeout,
            "remove_timeout_secs",
            &raw.remove_timeout_secs,
            1..=600,
            secs,
        )?;
        self.knob(
            &mut t.retry_interval,
            "retry_interval_ms",
            &raw.retry_interval_ms,
            0..=60_000,
            ms,
        )?;
        self.knob(
            &mut t.prepare_grace,
            "prepare_grace_secs",
            &raw.prepare_grace_secs,
            0..=86_400,
            secs,
        )?;
        self.knob(
            &mut t.boot_window,
            "boot_window_secs",
            &raw.boot_window_secs,
            0..=86_400,
            secs,
        )?;
        let manage = &raw.sriov_manage_timeout_secs;
        self.knob(
            &mut t.sriov_manage,
            "sriov_manage_timeout_secs",
            manage,
            1..=3600,
            secs,
        )?;
        self.knob(
            &mut t.lock_wait,
            "lock_wait_secs",
            &raw.lock_wait_secs,
            1..=3600,
            secs,
        )?;
        if let Some(v) = self.bounded("retries", &raw.retries, 0..=100)? {
            t.retries = v.max(1) as u32;
        }
        Ok(t)
    }

    /// Sets a duration knob when the key is given, within `range` of `unit`s. A bound on a
    /// kernel write or a tool starts at 1: at 0 every write "times out" while the writer goes on,
    /// so starts are refused with the device made anyway and stops keep what they removed.
    fn knob(
        &self,
        slot: &mut Duration,
        key: &str,
        value: &Option<Spanned<i64>>,
        range: RangeInclusive<i64>,
        unit: fn(u64) -> Duration,
    ) -> Result<(), ConfigError> {
        if let Some(v) = self.bounded(key, value, range)? {
            *slot = unit(v);
        }
        Ok(())
    }

    /// A tool's path under `key`: absolute, `default` when not set.
    fn tool(
        &self,
        key: &str,
        p: Option<Spanned<String>>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        match p {
            None => Ok(PathBuf::from(default)),
            Some(p) if Path::new(p.get_ref()).is_absolute() && !p.get_ref().contains('\0') => {
                Ok(PathBuf::from(p.get_ref()))
            }
            Some(p) => Err(self.invalid(
                Some(p.span()),
                format!(
                    "{key}: '{}' is not an absolute path (expected e.g. \"{default}\")",
                    crate::printable(p.get_ref(), 60)
                ),
            )),
        }
    }
}

/// The key whose value starts at or before `offset`: the nearest `key =` on this or an earlier line.
fn key_before(text: &str, offset: usize) -> Option<String> {
    let head = text.get(..offset.min(text.len()))?;
    head.lines().rev().find_map(|line| {
        let (key, _) = line.split_once('=')?;
        let key = key.trim();
        (!key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .then(|| key.to_string())
    })
}

fn line_of_offset(text: &[u8], offset: usize) -> usize {
    1 + text[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/vgpu-hook/config.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_is_a_valid_config_with_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.placement, Placement::Pack);
        assert_eq!(c.timing, Timing::default());
    }

    #[test]
    fn addresses_are_normalised_with_domain_and_lower_case() {
        let c = parse("nvidia_vgpu_pfs = [\"82:00.0\", \"0000:AF:00.0\"]").unwrap();
        let got: Vec<String> = c.nvidia_vgpu_pfs.iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["0000:82:00.0", "0000:af:00.0"]);
    }

    #[test]
    fn a_mixed_size_gpu_must_be_an_nvidia_vgpu_gpu() {
        let e = err("nvidia_vgpu_pfs = [\"41:00.0\"]\nmixed_size_pfs = [\"82:00.0\"]\n");
        assert!(
            e.contains("line 2") && e.contains("0000:82:00.0 is not in nvidia_vgpu_pfs"),
            "{e}"
        );
    }

    #[test]
    fn scheduling_policies_are_read_per_gpu() {
        let c = parse("nvidia_vgpu_pfs = [\"41:00.0\"]\n[vgpu_scheduler]\n\"41:00.0\" = \"equal-share/2ms\"\n").unwrap();
        let pf = "0000:41:00.0".parse().unwrap();
        assert_eq!(
            c.scheduler_of(pf).map(|s| s.to_string()).as_deref(),
            Some("equal-share/2ms")
        );
    }

    #[test]
    fn fixed_share_on_a_mixed_size_gpu_is_refused_naming_both_keys() {
        let e = err("nvidia_vgpu_pfs = [\"41:00.0\"]\nmixed_size_pfs = [\"41:00.0\"]\nvgpu_scheduler = { \"41:00.0\" = \"fixed-share\" }\n");
        assert!(
            e.contains("line 3")
                && e.contains("mixed_size_pfs")
                && e.contains("best-effort or equal-share"),
            "{e}"
        );
    }

    #[test]
    fn one_gpu_named_twice_in_vgpu_scheduler_is_refused() {
        let e = err("nvidia_vgpu_pfs = [\"41:00.0\"]\nvgpu_scheduler = { \"41:00.0\" = \"equal-share\", \"0000:41:00.0\" = \"fixed-share\" }\n");
        assert!(e.contains("0000:41:00.0 is named twice"), "{e}");
    }

    #[test]
    fn a_top_level_key_caught_in_a_vgpu_scheduler_table_says_why() {
        let e = err("nvidia_vgpu_pfs = [\"41:00.0\"]\n[vgpu_scheduler]\n\"41:00.0\" = \"equal-share\"\njournalctl = \"/usr/bin/journalctl\"\n");
        assert!(
            e.contains("journalctl") && e.contains("put it at the end of the file"),
            "{e}"
        );
    }

    #[test]
    fn a_policy_for_a_gpu_not_listed_or_not_a_policy_is_refused() {
        let e = err("vgpu_scheduler = { \"41:00.0\" = \"equal-share\" }\n");
        assert!(e.contains("not in nvidia_vgpu_pfs"), "{e}");
        let e =
            err("nvidia_vgpu_pfs = [\"41:00.0\"]\nvgpu_scheduler = { \"41:00.0\" = \"fair\" }\n");
        assert!(e.contains("'fair' is not a vGPU scheduling policy"), "{e}");
    }

    #[test]
    fn the_same_address_twice_counts_once() {
        let c = parse("sriov_pfs = [\"82:00.0\", \"0000:82:00.0\"]").unwrap();
        assert_eq!(c.sriov_pfs.len(), 1);
    }

    #[test]
    fn malformed_address_names_file_line_key_and_form() {
        let e = err("placement = \"pack\"\nnvidia_vgpu_pfs = [\"82:00\"]\n");
        assert!(e.contains("/etc/vgpu-hook/config.toml"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("nvidia_vgpu_pfs"), "{e}");
        assert!(e.contains("'82:00'") && e.contains("0000:82:00.0"), "{e}");
    }

    #[test]
    fn unknown_key_is_named_with_the_known_ones() {
        let e = err("\n\nnvidia_pfs = []\n");
        assert!(e.contains("line 3") && e.contains("nvidia_pfs"), "{e}");
        assert!(e.contains("nvidia_vgpu_pfs"), "{e}");
    }

    #[test]
    fn unknown_placement_lists_the_choices() {
        let e = err("placement = \"random\"");
        assert!(
            e.contains("placement") && e.contains("\"pack\" or \"spread\""),
            "{e}"
        );
    }

    #[test]
    fn wrong_value_type_is_reported_with_its_line() {
        let e = err("mdev_parents = \"mtty\"");
        assert!(e.contains("line 1") && e.contains("mdev_parents"), "{e}");
    }

    #[test]
    fn negative_timing_is_out_of_range() {
        let e = err("cleanup_wait_secs = -1");
        assert!(
            e.contains("cleanup_wait_secs") && e.contains("out of range"),
            "{e}"
        );
    }

    #[test]
    fn a_zero_bound_on_a_kernel_write_or_a_tool_is_out_of_range() {
        for key in [
            "device_wait_secs",
            "remove_timeout_secs",
            "sriov_manage_timeout_secs",
        ] {
            let e = err(&format!("{key} = 0"));
            assert!(
                e.contains(&format!("{key}: 0 is out of range (expected 1 to")),
                "{e}"
            );
        }
    }

    #[test]
    fn zero_waits_and_grace_are_allowed() {
        let c =
            parse("parent_wait_secs = 0\ncleanup_wait_secs = 0\nprepare_grace_secs = 0\n").unwrap();
        assert_eq!(c.timing.parent_wait, Duration::ZERO);
        assert_eq!(c.timing.prepare_grace, Duration::ZERO);
    }

    #[test]
    fn mdev_parent_with_a_slash_is_refused() {
        let e = err("mdev_parents = [\"../mtty\"]");
        assert!(e.contains("mdev_parents"), "{e}");
    }

    #[test]
    fn syntax_error_gives_line() {
        let e = err("placement = \"pack\"\nsriov_pfs = [\n");
        assert!(e.contains("line "), "{e}");
    }

    #[test]
    fn timing_knobs_are_read() {
        let c = parse("parent_wait_secs = 2\nretry_interval_ms = 50\nretries = 3").unwrap();
        assert_eq!(c.timing.parent_wait, Duration::from_secs(2));
        assert_eq!(c.timing.retry_interval, Duration::from_millis(50));
        assert_eq!(c.timing.retries, 3);
    }

    #[test]
    fn missing_file_says_how_to_create_it() {
        let e = Config::load(Path::new("/nonexistent/vgpu.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/vgpu.toml") && e.contains("vgpuctl install"),
            "{e}"
        );
    }
}
