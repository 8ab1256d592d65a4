//! vgpu-hook: vGPU mediated devices and SR-IOV VFs for libvirt/QEMU domains, created when a domain
//! starts and torn down when it stops.
//!
//! The library holds every concept the two programs share; the `vgpu-hook` binary is a thin
//! dispatcher over [`hook`], and `vgpuctl` adds libvirt on top. Nothing in the library links
//! libvirt: the hook runs five times per VM start/stop and must stay as cheap as a bare exec.

pub mod config;
pub mod daemon;
pub mod doctor;
pub mod domain;
pub mod errno;
pub mod hook;
pub mod host;
pub mod install;
pub mod inventory;
pub mod logging;
pub mod names;
pub mod pci;
pub mod placement;
pub mod plan;
pub mod procfs;
pub mod reconcile;
pub mod report;
pub mod similar;
pub mod sriov;
pub mod state;
pub mod sysfs;
pub mod xmledit;

/// Makes untrusted text safe to print in a one-line message: control characters escaped,
/// length capped at `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).flat_map(char::escape_debug).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}
