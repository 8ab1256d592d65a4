//! What the kernel's answer to a write means, attribute by attribute.
//!
//! An errno alone misleads: `EIO` from an NVIDIA `create` is the vGPU manager's resource manager
//! refusing (no room, another size on the GPU, ECC on), while `EPERM` from `current_vgpu_type`
//! means "this VF already has a vGPU, or a VM holds it". Operators act on the meaning, so every
//! refused write carries which attribute it was ([`Attr`]) and its message is built here, once,
//! from what the real drivers return (kernel `mdev_sysfs.c`/`mdev_core.c`, `drivers/pci/iov.c`,
//! NVIDIA's `nvidia-vgpu-vfio.c`, the `mtty` sample, GVT-g).

/// The journal of NVIDIA's vGPU manager, where its refusals are explained.
pub const NVIDIA_JOURNAL: &str = "journalctl -u nvidia-vgpu-mgr";

/// Which attribute a write went to, with what decides its errnos' meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    /// An mdev type's `create`; `nvidia` when the parent is an NVIDIA GPU.
    Create {
        /// The parent's PCI vendor is NVIDIA.
        nvidia: bool,
    },
    /// An mdev's `remove`.
    Remove,
    /// NVIDIA's `nvidia/vgpu_params` of an mdev or a kernel-6.8+ VF.
    VgpuParams,
    /// A kernel-6.8+ VF's `nvidia/current_vgpu_type`, setting a type.
    SetVgpuType,
    /// A kernel-6.8+ VF's `nvidia/current_vgpu_type`, clearing it (writing 0).
    ClearVgpuType,
    /// A kernel-6.8+ VF's `nvidia/placement_id` (mixed-size mode).
    PlacementId,
    /// A PF's `sriov_numvfs`.
    SriovNumvfs,
    /// Any other attribute.
    Other,
}

/// `EEXIST (File exists)`: the symbolic name operators search for, and the C library's text.
pub fn text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    format!("{} ({text})", name(errno))
}

/// The symbolic name (`EEXIST`), or `errno` for one this program never meets.
pub fn name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EUSERS => "EUSERS",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => "errno",
    }
}

/// What `errno` means when `attr` answers it, and what to check; `None` when nothing more can
/// be said than the errno's own text.
pub fn meaning(attr: Attr, errno: i32) -> Option<String> {
    let s = match (attr, errno) {
        (Attr::Create { nvidia: true }, libc::EIO) => format!(
            "NVIDIA's vGPU manager refused to create it (no room for this size, another size already on the GPU, ECC enabled, licence or manager fault): see {NVIDIA_JOURNAL}"
        ),
        (Attr::Create { nvidia: true }, libc::EINVAL) => format!(
            "the NVIDIA driver rejected the request: see {NVIDIA_JOURNAL}"
        ),
        (Attr::Create { .. }, libc::EIO) => "the parent's driver failed to create it: see the kernel log (dmesg)".into(),
        (Attr::Create { .. }, libc::ENOSPC) => "the parent's driver has no room for another instance".into(),
        (Attr::Create { .. }, libc::EUSERS) => "the mdev core counts no instance left on this parent".into(),
        (Attr::Create { .. }, libc::EEXIST) => "an mdev with this UUID already exists (on any parent)".into(),
        (Attr::Create { .. }, libc::ENODEV) => "the parent is no longer registered (driver unbound or GPU gone)".into(),
        (Attr::Remove, libc::EAGAIN) => "the device is still being created; removing it is retried".into(),
        (Attr::Remove, libc::EBUSY | libc::EPERM) => "the device is still in use (QEMU holds it)".into(),
        (Attr::VgpuParams, libc::E2BIG) => "the value is longer than NVIDIA's driver accepts; shorten params".into(),
        (Attr::VgpuParams, libc::EPERM) => "a VM holds the vGPU; params can only be set while no VM uses it".into(),
        (Attr::SetVgpuType, libc::EPERM) => "the VF already has a vGPU type, or a VM holds it; clear it once its VM has stopped (vgpuctl reconcile)".into(),
        (Attr::SetVgpuType, libc::EIO) => format!(
            "NVIDIA's vGPU manager could not create this vGPU (no room, another size on the GPU): see {NVIDIA_JOURNAL}"
        ),
        (Attr::SetVgpuType, libc::EINVAL | libc::ENODEV) => "the driver does not offer this type on this VF now (see its nvidia/creatable_vgpu_types)".into(),
        (Attr::SetVgpuType, libc::ENOSPC) => "the GPU has no room left for this type".into(),
        (Attr::ClearVgpuType, libc::EPERM) => "the VF has no vGPU any more, or a VM still holds it".into(),
        (Attr::ClearVgpuType, libc::EBUSY) => "the vGPU's task has not exited yet (its VM only just stopped)".into(),
        (Attr::PlacementId, libc::EINVAL) => "the driver does not let the vGPU start at that slot now (taken, or not one of its type's placements)".into(),
        (Attr::PlacementId, libc::EPERM) => "a VM holds the vGPU; it can only move while no VM uses it".into(),
        (Attr::SriovNumvfs, libc::ENOENT) => "the PF's driver cannot enable VFs through sysfs (NVIDIA: sriov-manage; AMD GIM: the vf_num module parameter; vfio-pci: enable_sriov=1)".into(),
        (Attr::SriovNumvfs, libc::EBUSY) => "VFs are enabled with another count (write 0 first) or still in use".into(),
        (Attr::SriovNumvfs, libc::ERANGE) => "more VFs than the PF's sriov_totalvfs".into(),
        _ => return None,
    };
    Some(s)
}

/// The errno's text followed by its meaning for `attr`, for one-line messages.
pub fn explain(attr: Attr, errno: i32) -> String {
    match meaning(attr, errno) {
        Some(m) => format!("{}: {m}", text(errno)),
        None => text(errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_symbol_and_words() {
        assert_eq!(text(libc::EEXIST), "EEXIST (File exists)");
    }

    #[test]
    fn nvidia_create_eio_points_at_the_vgpu_manager() {
        let m = meaning(Attr::Create { nvidia: true }, libc::EIO).unwrap();
        assert!(m.contains(NVIDIA_JOURNAL), "{m}");
    }

    #[test]
    fn eio_from_another_driver_does_not_blame_nvidia() {
        let m = meaning(Attr::Create { nvidia: false }, libc::EIO).unwrap();
        assert!(!m.contains("NVIDIA"), "{m}");
    }

    #[test]
    fn eperm_means_different_things_on_params_and_on_vgpu_type() {
        assert_ne!(
            meaning(Attr::VgpuParams, libc::EPERM),
            meaning(Attr::SetVgpuType, libc::EPERM)
        );
    }

    #[test]
    fn an_errno_without_a_known_meaning_is_only_named() {
        assert_eq!(explain(Attr::Other, libc::EIO), "EIO (Input/output error)");
    }
}
