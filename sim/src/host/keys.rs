//! Which optional keys each kind of `[[gpu]]` takes.
//!
//! A key given to a kind that has no use for it (`numvfs` on a classic NVIDIA GPU) would be
//! silently ignored by the validators, and the test relying on it would prove nothing. Listing
//! the keys per kind in one place, as groups of keys that belong to one interface, makes such a
//! mistake an error that names the key and the kind.

use super::raw::RawGpu;
use super::Kind;

/// How a derived NVIDIA profile list is chosen, or replaced by an explicit list.
const NVIDIA_PROFILES: &[&str] = &["board", "name_prefix", "framebuffer_mb", "types"];

/// How an mdev parent's driver treats removes and released devices.
const MDEV_REMOVE: &[&str] = &["self_cleanup_ms", "remove_blocks"];

/// The SR-IOV capability of a physical function and its VFs.
const SRIOV: &[&str] = &[
    "numvfs",
    "totalvfs",
    "sriov_configurable",
    "vf_offset",
    "vf_stride",
    "vf_device",
    "vf_driver",
];

/// NVIDIA's kernel-6.8+ per-VF interface: the clear after release.
const NVIDIA_VFIO: &[&str] = &["reset_busy_ms", "exit_timeout_ms"];

/// NVIDIA's placement rules (mixed-size mode), which differ by GPU generation.
const PLACEMENT: &[&str] = &["generation"];

/// AMD's GIM generation and the Instinct GIM's partition modes.
const GIM: &[&str] = &["gim", "compute_partition", "memory_partition"];

/// A generic mdev parent: its name, its own types and who counts its instances.
const GENERIC_MDEV: &[&str] = &["name", "types", "available", "pool"];

/// The key groups a kind takes.
fn groups(kind: Kind) -> &'static [&'static [&'static str]] {
    match kind {
        Kind::NvidiaClassic => &[NVIDIA_PROFILES, MDEV_REMOVE],
        Kind::NvidiaSriov => &[NVIDIA_PROFILES, MDEV_REMOVE, SRIOV],
        Kind::NvidiaVfio => &[NVIDIA_PROFILES, SRIOV, NVIDIA_VFIO, PLACEMENT],
        Kind::AmdGim => &[SRIOV, GIM],
        Kind::Sriov => &[SRIOV],
        Kind::Mdev => &[GENERIC_MDEV, MDEV_REMOVE],
    }
}

/// Every kind-specific key with whether the entry gives it, in the order errors report them.
fn given(g: &RawGpu) -> [(&'static str, bool); 22] {
    [
        ("name", g.name.is_some()),
        ("board", g.board.is_some()),
        ("name_prefix", g.name_prefix.is_some()),
        ("framebuffer_mb", g.framebuffer_mb.is_some()),
        ("types", g.types.is_some()),
        ("self_cleanup_ms", g.self_cleanup_ms.is_some()),
        ("remove_blocks", g.remove_blocks.is_some()),
        ("numvfs", g.numvfs.is_some()),
        ("totalvfs", g.totalvfs.is_some()),
        ("sriov_configurable", g.sriov_configurable.is_some()),
        ("reset_busy_ms", g.reset_busy_ms.is_some()),
        ("exit_timeout_ms", g.exit_timeout_ms.is_some()),
        ("available", g.available.is_some()),
        ("pool", g.pool.is_some()),
        ("gim", g.gim.is_some()),
        ("compute_partition", g.compute_partition.is_some()),
        ("memory_partition", g.memory_partition.is_some()),
        ("generation", g.generation.is_some()),
        ("vf_offset", g.vf_offset.is_some()),
        ("vf_stride", g.vf_stride.is_some()),
        ("vf_device", g.vf_device.is_some()),
        ("vf_driver", g.vf_driver.is_some()),
    ]
}

/// The first key of `g` that `kind` does not take, if any.
pub(super) fn unused_key(kind: Kind, g: &RawGpu) -> Option<&'static str> {
    let groups = groups(kind);
    given(g)
        .into_iter()
        .find(|(k, is)| *is && !groups.iter().any(|group| group.contains(k)))
        .map(|(k, _)| k)
}
