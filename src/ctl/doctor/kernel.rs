//! Kernel checks: the IOMMU and the vfio/mdev modules. Without them no device reaches a VM,
//! whatever the hook does, and the fix is a boot option or a `modprobe`, not a config edit.

use super::{Context, Verdict};

/// Whether the IOMMU is on (it has groups).
pub fn iommu(ctx: &Context<'_>) -> Vec<Verdict> {
    let groups = ctx.sysfs().iommu_groups();
    vec![if groups > 0 {
        Verdict::ok(format!("IOMMU enabled ({groups} groups)"))
    } else {
        Verdict::fail(
            "IOMMU is off: /sys/kernel/iommu_groups is empty, so no device can be given to a VM",
            "add intel_iommu=on iommu=pt (Intel) or amd_iommu=on (AMD) to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub, reboot",
        )
    }]
}

/// Whether vfio (and mdev, when the config has mdev sources or cannot be read) is loaded.
pub fn modules(ctx: &Context<'_>) -> Vec<Verdict> {
    let wants_mdev = ctx
        .config()
        .is_none_or(|c| !c.nvidia_vgpu_pfs.is_empty() || !c.mdev_parents.is_empty());
    let mut modules = vec!["vfio", "vfio_pci", "vfio_iommu_type1"];
    if wants_mdev {
        modules.push("mdev");
    }
    let missing: Vec<&str> = modules
        .iter()
        .copied()
        .filter(|m| !ctx.sysfs().module_loaded(m))
        .collect();
    vec![if missing.is_empty() {
        Verdict::ok(format!("loaded: {}", modules.join(", ")))
    } else {
        Verdict::fail(
            format!("not loaded: {}", missing.join(", ")),
            format!(
                "modprobe -a {0}; to load them at boot: printf '%s\\n' {0} > /etc/modules-load.d/vfio.conf",
                missing.join(" ")
            ),
        )
    }]
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixture;
    use super::super::Severity;
    use super::*;

    #[test]
    fn no_iommu_groups_fail_with_the_boot_options() {
        let f = Fixture::new();
        let v = f.check(iommu);
        assert_eq!(v[0].severity, Severity::Error);
        assert!(v[0].fix.as_deref().unwrap().contains("intel_iommu=on"));
        f.sys_dir("kernel/iommu_groups/0");
        f.sys_dir("kernel/iommu_groups/1");
        assert_eq!(f.check(iommu), [Verdict::ok("IOMMU enabled (2 groups)")]);
    }

    #[test]
    fn missing_modules_are_listed_with_the_modprobe_that_loads_them() {
        let f = Fixture::new();
        f.write_config("sriov_pfs = [\"05:00.0\"]\n");
        f.sys_dir("module/vfio");
        let v = f.check(modules);
        assert_eq!(v[0].message, "not loaded: vfio_pci, vfio_iommu_type1");
        assert!(v[0]
            .fix
            .as_deref()
            .unwrap()
            .starts_with("modprobe -a vfio_pci vfio_iommu_type1;"));
    }

    #[test]
    fn mdev_is_wanted_only_for_mdev_sources() {
        let f = Fixture::new();
        for m in ["vfio", "vfio_pci", "vfio_iommu_type1"] {
            f.sys_dir(&format!("module/{m}"));
        }
        f.write_config("sriov_pfs = [\"05:00.0\"]\n");
        assert_eq!(f.check(modules)[0].severity, Severity::Ok);
        f.write_config("mdev_parents = [\"mtty\"]\n");
        assert_eq!(f.check(modules)[0].message, "not loaded: mdev");
    }
}
