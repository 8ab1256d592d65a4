//! `vgpuctl metrics`: the host's vGPU capacity and the hook's counters in the Prometheus text
//! exposition format, for the monitoring a fleet already runs (node_exporter's textfile
//! collector, or any scraper of a file).
//!
//! Everything comes from the same reports as `vgpuctl types` and `list` (so the numbers never
//! disagree with what an operator sees) plus the counters the hook keeps in its state directory
//! ([`crate::host::counters`]). Every refusal reason is printed, zero when never met, so a rate
//! query has a series from the start. Metric names and labels are a contract: add, never rename.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::alloc::refusal::Refusal;
use crate::ctl::report::{list_report, types_report, GpuReport, ListReport};
use crate::host::counters;
use crate::host::drains::Drains;
use crate::host::state::{Liveness, State};
use crate::host::sysfs::Sysfs;
use crate::model::config::Config;
use crate::model::pci::PciAddress;

/// Escapes a label value: backslash, double quote and newline, as the format demands.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `name{k="v",...} value`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    let l: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
        .collect();
    if l.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{}}} {value}", l.join(","));
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The NUMA node of a configured GPU from sysfs `numa_node`: `-1` when the kernel does not know
/// it or the GPU is not a PCI device (a virtual mdev parent).
fn numa_node(sysfs: &Sysfs, gpu: &str) -> String {
    gpu.parse::<PciAddress>()
        .ok()
        .and_then(|a| std::fs::read_to_string(sysfs.pci_dir(a).join("numa_node")).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| s.parse::<i64>().is_ok())
        .unwrap_or_else(|| "-1".to_string())
}

/// Everything `vgpuctl metrics` prints, rendered.
pub fn render(
    config: &Config,
    sysfs: &Sysfs,
    state: &State,
    live: &Liveness,
    state_dir: &Path,
) -> String {
    let mut types = types_report(config, sysfs, state, live);
    // An unreadable list shows as no drains here; `doctor` and every start name the file.
    types.mark_drains(&Drains::of_config(config).unwrap_or_default());
    let list = list_report(config, sysfs, state, live);
    let mut out = String::new();
    gpu_metrics(&mut out, sysfs, &types.gpus);
    drain_metrics(&mut out, &types.gpus);
    held_metrics(&mut out, &list);
    counter_metrics(&mut out, &counters::read_all(state_dir));
    out
}

/// `vgpu_hook_gpu_drained` per configured GPU: 1 while it is drained.
fn drain_metrics(out: &mut String, gpus: &[GpuReport]) {
    header(
        out,
        "vgpu_hook_gpu_drained",
        "gauge",
        "1 while the GPU is drained (vgpuctl drain): it takes no new vGPU until vgpuctl undrain.",
    );
    for g in gpus {
        let value = u64::from(g.drained.is_some());
        sample(
            out,
            "vgpu_hook_gpu_drained",
            &[("gpu", g.gpu.as_str())],
            value,
        );
    }
}

/// One `vgpu_hook_gpu_info` per configured GPU, and max/available per type.
fn gpu_metrics(out: &mut String, sysfs: &Sysfs, gpus: &[GpuReport]) {
    let nodes: Vec<String> = gpus.iter().map(|g| numa_node(sysfs, &g.gpu)).collect();
    header(
        out,
        "vgpu_hook_gpu_info",
        "gauge",
        "A configured GPU, mdev parent or SR-IOV PF; kind is what it offers now (mdev, sriov-mdev, nvidia-vfio, sriov) or why nothing (missing, unregistered, vfs-disabled).",
    );
    for (g, node) in gpus.iter().zip(&nodes) {
        let labels = [
            ("gpu", g.gpu.as_str()),
            ("numa_node", node),
            ("kind", g.generation),
        ];
        sample(out, "vgpu_hook_gpu_info", &labels, 1);
    }
    let per_type = |g: &GpuReport| -> Vec<(String, String, Option<u64>, u64)> {
        match &g.vfs {
            Some(v) if g.types.is_empty() => {
                vec![(
                    "vf".into(),
                    String::new(),
                    Some(v.total.into()),
                    v.free.into(),
                )]
            }
            _ => g
                .types
                .iter()
                .map(|t| {
                    let name = t.name.clone().unwrap_or_default();
                    let max = t.max_instances.map(u64::from);
                    (t.id.clone(), name, max, t.available_instances.into())
                })
                .collect(),
        }
    };
    let rows: Vec<_> = gpus
        .iter()
        .zip(&nodes)
        .map(|(g, n)| (g, n, per_type(g)))
        .collect();
    for (metric, help) in [
        ("vgpu_hook_type_max_instances", "Instances of the type the GPU can host at most (a whole VF: type=\"vf\", its PF's sriov_totalvfs)."),
        ("vgpu_hook_type_available_instances", "Instances of the type that can be created now (type=\"vf\": enabled VFs nobody holds)."),
    ] {
        header(out, metric, "gauge", help);
        for (g, node, types) in &rows {
            for (id, name, max, avail) in types {
                let value = if metric.ends_with("max_instances") { *max } else { Some(*avail) };
                let Some(value) = value else { continue };
                let labels = [
                    ("gpu", g.gpu.as_str()),
                    ("numa_node", node.as_str()),
                    ("kind", g.generation),
                    ("type", id.as_str()),
                    ("type_name", name.as_str()),
                ];
                sample(out, metric, &labels, value);
            }
        }
    }
}

/// Devices that exist on configured GPUs, counted by GPU, type, holding domain and state.
fn held_metrics(out: &mut String, list: &ListReport) {
    let mut by: BTreeMap<(String, String, String, &'static str, &'static str), u64> =
        BTreeMap::new();
    for d in &list.devices {
        let key = (
            d.gpu.clone(),
            d.type_id.clone().unwrap_or_else(|| "vf".into()),
            d.domain.clone().unwrap_or_default(),
            d.kind,
            d.state,
        );
        *by.entry(key).or_default() += 1;
    }
    header(
        out,
        "vgpu_hook_devices",
        "gauge",
        "Devices that exist on configured GPUs, by holding domain and state (running, starting, stale, unowned; domain=\"\" when no domain holds it).",
    );
    for ((gpu, ty, domain, kind, state), n) in by {
        let labels = [
            ("gpu", gpu.as_str()),
            ("type", ty.as_str()),
            ("device_kind", kind),
            ("domain", domain.as_str()),
            ("state", state),
        ];
        sample(out, "vgpu_hook_devices", &labels, n);
    }
}

/// The hook's counters, and when `vgpuctl reconcile` last ran.
fn counter_metrics(out: &mut String, c: &BTreeMap<String, u64>) {
    header(
        out,
        "vgpu_hook_refusals_total",
        "counter",
        "prepare calls the hook refused, by reason (since boot).",
    );
    for reason in Refusal::LABELS {
        let n = c
            .get(&format!("{}{reason}", counters::REFUSED_PREFIX))
            .copied()
            .unwrap_or(0);
        sample(out, "vgpu_hook_refusals_total", &[("reason", reason)], n);
    }
    header(
        out,
        "vgpu_hook_release_failures_total",
        "counter",
        "Releases that could not free a device (still in use, or removal refused; since boot).",
    );
    let failed = c.get(counters::RELEASE_FAILED).copied().unwrap_or(0);
    sample(out, "vgpu_hook_release_failures_total", &[], failed);
    header(
        out,
        "vgpu_hook_last_reconcile_timestamp_seconds",
        "gauge",
        "When vgpuctl reconcile last ran (seconds since the epoch; 0: not since boot).",
    );
    let last = c.get(counters::LAST_RECONCILE).copied().unwrap_or(0);
    sample(out, "vgpu_hook_last_reconcile_timestamp_seconds", &[], last);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        sample(&mut s, "m", &[("domain", "a\"b\\c\nd")], 1);
        assert_eq!(s, "m{domain=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn every_refusal_reason_has_a_series_even_at_zero() {
        let mut s = String::new();
        let mut c = BTreeMap::new();
        c.insert("refused.no_room".to_string(), 3);
        counter_metrics(&mut s, &c);
        assert!(s.contains("vgpu_hook_refusals_total{reason=\"no_room\"} 3\n"));
        assert!(s.contains("vgpu_hook_refusals_total{reason=\"vf_held\"} 0\n"));
        assert!(s.contains("vgpu_hook_release_failures_total 0\n"));
    }
}
