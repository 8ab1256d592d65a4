//! vgpu-hook: vGPU mediated devices and SR-IOV VFs for libvirt/QEMU domains, created when a domain
//! starts and torn down when it stops.
//!
//! The library holds every concept the two programs share; the `vgpu-hook` binary is a thin
//! dispatcher over [`hook`], and `vgpuctl` adds libvirt on top. Nothing in the library links
//! libvirt: the hook runs five times per VM start/stop and must stay as cheap as a bare exec.
//!
//! How it is laid out, in the order one libvirt call meets it:
//! - [`model`]: what the programs are told, parsed and validated, without I/O: names, PCI
//!   addresses, the domain XML, the config.
//! - [`host`]: the machine, every path under one root: sysfs (attributes, bounded writes, PCI
//!   config space), procfs, the ownership state, NVIDIA's `sriov-manage`, the journal.
//! - [`alloc`]: deciding and doing: what the configured GPUs offer now, where a request goes,
//!   creating and claiming devices all or nothing, and the typed reasons for a refusal.
//! - [`hook`]: one module per libvirt call (prepare, release, reconnect, migrate/restore filter).
//! - `ctl` (only with the `vgpuctl` feature): what vgpuctl alone does (plans and XML edits,
//!   reports, reconcile, install, doctor); off the hook's path and out of its build.

pub mod alloc;
#[cfg(feature = "vgpuctl")]
pub mod ctl;
pub mod hook;
pub mod host;
pub mod model;

/// Makes untrusted text safe to print in a one-line message: control characters escaped,
/// length capped at `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).flat_map(char::escape_debug).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// An instant (seconds since the epoch) as RFC 3339 UTC, `-` when it cannot be written.
pub fn utc(secs: u64) -> String {
    let rfc3339 = time::format_description::well_known::Rfc3339;
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&rfc3339).ok())
        .unwrap_or_else(|| "-".to_string())
}
