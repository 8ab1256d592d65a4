//! One mdev type (or kernel-6.8+ vGPU type) as a parent offers it.
//!
//! The host file states types explicitly, the profile tables derive them from a board name,
//! and the device model counts instances against them. All three need the same description of
//! a type, and none of them should depend on the others to get it: this module is that shared
//! description and nothing else, so host validation and profile derivation can each use it
//! without reaching into one another.

/// One supported mdev type (or, for `nvidia-vfio`, one vGPU type of `creatable_vgpu_types`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeSpec {
    /// Directory name (`nvidia-46`, `mtty-2`) or numeric id (`1145`).
    pub id: String,
    /// Pretty name shown in `name` (`GRID P40-1Q`); no `name` file when absent.
    pub name: Option<String>,
    /// Shown in `description`; no `description` file when absent.
    pub description: Option<String>,
    /// `device_api` (`vfio-pci`).
    pub device_api: String,
    /// Framebuffer of one instance; NVIDIA kinds need it for the one-size rule.
    pub framebuffer_mb: Option<u64>,
    /// Instances that fit on an empty parent.
    pub max_instances: u32,
    /// Share of the parent's `pool` one instance takes (mtty: ports per device).
    pub units: u32,
}
