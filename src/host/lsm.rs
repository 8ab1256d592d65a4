//! The Linux security module that confines the libvirt daemon, and with it the hook.
//!
//! libvirt runs its hooks in the daemon's own confinement: Debian's and Ubuntu's AppArmor profile
//! for `libvirtd` says `/etc/libvirt/hooks/** rmix` (inherit), and SELinux labels them
//! `virt_hook_t`, entered from the daemon's domain. So what the daemon's profile or domain allows
//! bounds what the hook can do, and an operator chasing a refused `sriov-manage` needs to know
//! which one it is. Everything here is read from the kernel (securityfs and selinuxfs below the
//! sysfs root, `/proc/PID/attr`), never from distribution tools, so it works on a fake tree.

use crate::host::procfs::Procfs;
use crate::host::sysfs::Sysfs;

/// The security module that is on, as far as it confines processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lsm {
    /// Neither AppArmor nor SELinux is on.
    None,
    /// AppArmor is on.
    AppArmor,
    /// SELinux is on, enforcing or permissive.
    SeLinux {
        /// `enforce` is 1.
        enforcing: bool,
    },
}

/// Which module is on: SELinux when selinuxfs is mounted, else AppArmor when the kernel says it
/// is enabled and its securityfs directory is there.
pub fn active(sysfs: &Sysfs) -> Lsm {
    let read = |rel: &str| sysfs.read(&sysfs.root_path(rel)).ok();
    if let Some(e) = read("fs/selinux/enforce") {
        return Lsm::SeLinux {
            enforcing: e == "1",
        };
    }
    let apparmor_on = read("module/apparmor/parameters/enabled").as_deref() == Some("Y");
    if apparmor_on && sysfs.root_path("kernel/security/apparmor").is_dir() {
        Lsm::AppArmor
    } else {
        Lsm::None
    }
}

/// How an AppArmor profile treats what it does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppArmorMode {
    /// Refused (and logged).
    Enforce,
    /// Allowed and logged.
    Complain,
    /// Any other mode the kernel names (`kill`, `unconfined` profiles of AppArmor 4).
    Other,
}

/// A process's AppArmor confinement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppArmorLabel {
    /// No profile applies.
    Unconfined,
    /// In this profile, in this mode.
    Profile {
        /// The profile's name (`libvirtd`).
        name: String,
        /// Its mode.
        mode: AppArmorMode,
    },
}

impl AppArmorLabel {
    /// Parses `/proc/PID/attr/current` as AppArmor writes it: `unconfined` or `NAME (MODE)`.
    pub fn parse(text: &str) -> AppArmorLabel {
        let text = text.trim_end_matches(['\0', '\n']).trim();
        let Some((name, mode)) = text.rsplit_once(" (") else {
            return AppArmorLabel::Unconfined;
        };
        let mode = match mode.trim_end_matches(')') {
            "enforce" => AppArmorMode::Enforce,
            "complain" => AppArmorMode::Complain,
            _ => AppArmorMode::Other,
        };
        AppArmorLabel::Profile {
            name: name.to_string(),
            mode,
        }
    }
}

impl std::fmt::Display for AppArmorLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppArmorLabel::Unconfined => f.write_str("unconfined"),
            AppArmorLabel::Profile { name, mode } => {
                let mode = match mode {
                    AppArmorMode::Enforce => "enforce",
                    AppArmorMode::Complain => "complain",
                    AppArmorMode::Other => "other mode",
                };
                write!(f, "{name} ({mode})")
            }
        }
    }
}

/// The AppArmor label of a process: its AppArmor-specific attribute where the kernel stacks
/// modules (5.x+ `attr/apparmor/current`), else `attr/current`. None when it cannot be read.
pub fn apparmor_label(proc: &Procfs, pid: u32) -> Option<AppArmorLabel> {
    proc.attr(pid, "apparmor/current")
        .or_else(|| proc.attr(pid, "current"))
        .map(|t| AppArmorLabel::parse(&t))
}

/// The SELinux type of a process (`virtd_t` of `system_u:system_r:virtd_t:s0`).
pub fn selinux_type(proc: &Procfs, pid: u32) -> Option<String> {
    let label = proc.attr(pid, "current")?;
    label
        .trim_end_matches(['\0', '\n'])
        .split(':')
        .nth(2)
        .map(str::to_string)
}

/// An SELinux boolean's current value (selinuxfs `booleans/NAME` reads `CURRENT PENDING`).
pub fn selinux_boolean(sysfs: &Sysfs, name: &str) -> Option<bool> {
    let text = sysfs
        .read(&sysfs.root_path(&format!("fs/selinux/booleans/{name}")))
        .ok()?;
    text.split_whitespace().next().map(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn tree() -> (tempfile::TempDir, Sysfs) {
        let t = tempfile::tempdir().unwrap();
        let s = Sysfs::new(t.path());
        (t, s)
    }

    fn put(t: &tempfile::TempDir, rel: &str, text: &str) {
        let p = t.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn apparmor_is_active_when_enabled_and_its_securityfs_is_mounted() {
        let (t, s) = tree();
        put(&t, "sys/module/apparmor/parameters/enabled", "Y\n");
        assert_eq!(active(&s), Lsm::None, "securityfs not mounted");
        fs::create_dir_all(t.path().join("sys/kernel/security/apparmor")).unwrap();
        assert_eq!(active(&s), Lsm::AppArmor);
    }

    #[test]
    fn apparmor_disabled_on_the_command_line_is_none() {
        let (t, s) = tree();
        put(&t, "sys/module/apparmor/parameters/enabled", "N\n");
        fs::create_dir_all(t.path().join("sys/kernel/security/apparmor")).unwrap();
        assert_eq!(active(&s), Lsm::None);
    }

    #[test]
    fn selinux_is_read_from_selinuxfs() {
        let (t, s) = tree();
        put(&t, "sys/fs/selinux/enforce", "0");
        assert_eq!(active(&s), Lsm::SeLinux { enforcing: false });
        put(&t, "sys/fs/selinux/enforce", "1");
        assert_eq!(active(&s), Lsm::SeLinux { enforcing: true });
    }

    #[test]
    fn apparmor_labels_parse_as_the_kernel_writes_them() {
        assert_eq!(
            AppArmorLabel::parse("libvirtd (enforce)\n"),
            AppArmorLabel::Profile {
                name: "libvirtd".into(),
                mode: AppArmorMode::Enforce
            }
        );
        assert_eq!(
            AppArmorLabel::parse("/usr/sbin/virtqemud (complain)"),
            AppArmorLabel::Profile {
                name: "/usr/sbin/virtqemud".into(),
                mode: AppArmorMode::Complain
            }
        );
        assert_eq!(
            AppArmorLabel::parse("unconfined\n"),
            AppArmorLabel::Unconfined
        );
        assert_eq!(
            AppArmorLabel::parse("libvirtd (enforce)").to_string(),
            "libvirtd (enforce)"
        );
    }

    #[test]
    fn the_apparmor_attribute_is_preferred_where_modules_stack() {
        let t = tempfile::tempdir().unwrap();
        put(&t, "proc/7/attr/current", "system_u:system_r:virtd_t:s0\n");
        put(&t, "proc/7/attr/apparmor/current", "libvirtd (enforce)\n");
        let p = Procfs::new(&t.path().join("proc"));
        assert_eq!(
            apparmor_label(&p, 7).unwrap().to_string(),
            "libvirtd (enforce)"
        );
        assert_eq!(selinux_type(&p, 7).as_deref(), Some("virtd_t"));
    }

    #[test]
    fn selinux_booleans_read_their_current_value() {
        let (t, s) = tree();
        put(&t, "sys/fs/selinux/booleans/virt_hooks_unconfined", "1 0");
        assert_eq!(selinux_boolean(&s, "virt_hooks_unconfined"), Some(true));
        put(&t, "sys/fs/selinux/booleans/virt_hooks_unconfined", "0 1");
        assert_eq!(selinux_boolean(&s, "virt_hooks_unconfined"), Some(false));
        assert_eq!(selinux_boolean(&s, "absent"), None);
    }
}
