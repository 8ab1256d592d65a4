//! Whether this host's vGPU VMs can move (live migration, save/restore): the floors for VFIO
//! device migration, the kernel's dirty-page tracking, and the VFs that cannot move at all.
//!
//! None of this stops a start, so nothing here is an error: a host below a floor runs its VMs
//! and only `virsh migrate` or `virsh save` fails, late and with QEMU's words. Said here, the
//! operator knows before the maintenance window, not during it.

use super::{version_text, Context, LibvirtProbe, Verdict};
use crate::ctl::migrate_check::{LIBVIRT_FLOOR, QEMU_FLOOR};
use crate::model::config::PfKind;

/// The kernel's VFIO migration interface (v2) is there from 5.18.
pub const KERNEL_FLOOR: (u32, u32) = (5, 18);

/// The findings: the floors met or not, dirty tracking, the configured AMD PFs.
pub fn migration(ctx: &Context<'_>) -> Vec<Verdict> {
    let Some(config) = ctx.config() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !config.nvidia_vgpu_pfs.is_empty() || !config.mdev_parents.is_empty() {
        out.push(floors(ctx));
        out.extend(dirty_tracking(ctx));
    }
    for (pf, _) in config
        .vf_pfs()
        .into_iter()
        .filter(|(_, k)| *k == PfKind::Amd)
    {
        out.push(Verdict::warn(
            format!("VMs with VFs of AMD PF {pf} cannot be live-migrated or saved: AMD's GIM driver has no VFIO migration support, so QEMU refuses (\"cannot migrate domain\")"),
            "move such VMs by shutting them down here and starting them on the other host",
        ));
    }
    out
}

/// libvirt, QEMU and the kernel against the floors for moving a VM with a vGPU.
fn floors(ctx: &Context<'_>) -> Verdict {
    let mut have = Vec::new();
    let mut below = Vec::new();
    if let LibvirtProbe::Reachable { version, .. } = &ctx.inputs.libvirt {
        judge(&mut have, &mut below, "libvirt", *version, LIBVIRT_FLOOR);
    }
    if let Some(q) = ctx.inputs.qemu_version {
        judge(&mut have, &mut below, "QEMU", q, QEMU_FLOOR);
    }
    let release = ctx.inputs.proc.kernel_release();
    if let Some((major, minor)) = release.as_deref().and_then(kernel_version) {
        let text = format!("kernel {major}.{minor}");
        if (major, minor) >= KERNEL_FLOOR {
            have.push(text);
        } else {
            below.push(format!("{text} < {}.{}", KERNEL_FLOOR.0, KERNEL_FLOOR.1));
        }
    }
    if below.is_empty() {
        Verdict::ok(format!(
            "vGPU VMs can move from here: {} (floors: libvirt 8.6, QEMU 8.1, kernel 5.18; no post-copy)",
            have.join(", ")
        ))
    } else {
        Verdict::warn(
            format!(
                "vGPU VMs cannot be live-migrated or saved on this host: {}",
                below.join(", ")
            ),
            "upgrade to libvirt >= 8.6, QEMU >= 8.1 and kernel >= 5.18 (Debian 12: bookworm-backports and linux-image-6.12)",
        )
    }
}

fn judge(have: &mut Vec<String>, below: &mut Vec<String>, what: &str, v: u32, floor: u32) {
    if v >= floor {
        have.push(format!("{what} {}", version_text(v)));
    } else {
        below.push(format!(
            "{what} {} < {}",
            version_text(v),
            version_text(floor)
        ));
    }
}

/// `6.12.57+deb12-amd64` -> (6, 12).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A kernel built without IOMMUFD (no `CONFIG_IOMMUFD_DRIVER`) cannot report the dirty pages a
/// device tracks itself: QEMU's first sync fails with EOPNOTSUPP and the save or migration ends
/// before it starts. Seen on Debian 12's `linux-image-6.12` with mtty; it applies to any vGPU
/// driver that offers its own dirty tracking.
fn dirty_tracking(ctx: &Context<'_>) -> Option<Verdict> {
    let release = ctx.inputs.proc.kernel_release()?;
    let path = ctx.inputs.boot_dir.join(format!("config-{release}"));
    let text = std::fs::read_to_string(&path).ok()?;
    if text.lines().any(|l| l.trim() == "CONFIG_IOMMUFD_DRIVER=y") {
        return None;
    }
    Some(Verdict::warn(
        format!("kernel {release} is built without IOMMUFD (no CONFIG_IOMMUFD_DRIVER in {}): a vGPU whose driver tracks its own dirty pages cannot be saved or migrated (QEMU: \"Failed to get DMA logging report ... Operation not supported\")", path.display()),
        "run a kernel with CONFIG_IOMMUFD, or give such a hostdev x-device-dirty-page-tracking=off and enable-migration=on in a <qemu:override> (README: moving VMs)",
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixture;
    use super::super::Severity;
    use super::*;

    fn host(config: &str, release: &str) -> Fixture {
        let mut f = Fixture::new();
        f.write_config(config);
        f.proc_top_file("sys/kernel/osrelease", release);
        f.libvirt = LibvirtProbe::Reachable {
            uri: "qemu:///system".into(),
            version: 11_003_000,
        };
        f.qemu_version = Some(10_000_002);
        f
    }

    #[test]
    fn a_current_stack_meets_the_floors() {
        let f = host("mdev_parents = [\"mtty\"]\n", "6.12.57+deb12-amd64\n");
        let v = f.check(migration);
        assert_eq!(v[0].severity, Severity::Ok, "{v:?}");
        assert!(
            v[0].message
                .contains("libvirt 11.3.0, QEMU 10.0.2, kernel 6.12"),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn each_component_below_its_floor_is_named() {
        let mut f = host("mdev_parents = [\"mtty\"]\n", "5.10.0-28-amd64\n");
        f.qemu_version = Some(7_002_000);
        let v = f.check(migration);
        assert_eq!(v[0].severity, Severity::Warning);
        assert!(
            v[0].message.contains("QEMU 7.2.0 < 8.1.0"),
            "{}",
            v[0].message
        );
        assert!(
            v[0].message.contains("kernel 5.10 < 5.18"),
            "{}",
            v[0].message
        );
        assert!(!v[0].message.contains("libvirt"), "{}", v[0].message);
    }

    #[test]
    fn a_kernel_without_iommufd_is_reported_with_the_workaround() {
        let f = host("mdev_parents = [\"mtty\"]\n", "6.12.57+deb12-amd64\n");
        f.boot_file(
            "config-6.12.57+deb12-amd64",
            "CONFIG_VFIO=m\n# CONFIG_IOMMUFD is not set\n",
        );
        let v = f.check(migration);
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[1].severity, Severity::Warning);
        assert!(v[1]
            .fix
            .as_deref()
            .unwrap()
            .contains("x-device-dirty-page-tracking=off"));
    }

    #[test]
    fn a_kernel_with_iommufd_needs_no_workaround() {
        let f = host("mdev_parents = [\"mtty\"]\n", "6.12.57+deb12-amd64\n");
        f.boot_file(
            "config-6.12.57+deb12-amd64",
            "CONFIG_IOMMUFD=m\nCONFIG_IOMMUFD_DRIVER=y\n",
        );
        assert_eq!(f.check(migration).len(), 1);
    }

    #[test]
    fn amd_vfs_are_said_not_to_move() {
        let f = host("amd_vgpu_pfs = [\"03:00.0\"]\n", "6.12.57+deb12-amd64\n");
        let v = f.check(migration);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].message.contains("AMD PF 0000:03:00.0"),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn a_host_without_vgpus_gets_no_migration_findings() {
        let f = host("sriov_pfs = [\"01:00.0\"]\n", "6.12.57+deb12-amd64\n");
        assert!(f.check(migration).is_empty());
    }
}
