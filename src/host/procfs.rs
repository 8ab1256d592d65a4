//! The process table as `/proc` shows it: which daemons run, since when, and which QEMU
//! processes have a device open.
//!
//! vgpuctl needs this without asking libvirt: to find the libvirt daemon to reload after
//! installing the hook, to tell whether it started before the hook appeared, to see whether
//! NVIDIA's manager runs, and to avoid removing a device that a QEMU process (of a domain the
//! state does not know about) still uses. The hook needs it to tell whether a domain's QEMU
//! runs and how long the host has been up. The root is a parameter (`VGPU_HOOK_PROC_DIR`) so
//! tests can use a fake tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A `/proc` tree.
#[derive(Debug, Clone)]
pub struct Procfs {
    root: PathBuf,
}

impl Procfs {
    /// The process table under `root` (normally `/proc`).
    pub fn new(root: &Path) -> Procfs {
        Procfs {
            root: root.to_path_buf(),
        }
    }

    /// The real `/proc`.
    pub fn system() -> Procfs {
        Procfs::new(Path::new("/proc"))
    }

    /// How long the host has been up (`uptime`), zero when unreadable.
    pub fn uptime(&self) -> Duration {
        fs::read_to_string(self.root.join("uptime"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs_f64)
    }

    /// The host's name (`kernel/hostname`), `None` when unreadable: how a refusal names the host
    /// it speaks for, which matters once two hosts' lines sit in one migration error.
    pub fn hostname(&self) -> Option<String> {
        let name = fs::read_to_string(self.root.join("sys/kernel/hostname")).ok()?;
        Some(name.trim().to_string()).filter(|n| !n.is_empty())
    }

    /// The running kernel's release (`kernel/osrelease`, e.g. `6.12.57+deb12-amd64`).
    pub fn kernel_release(&self) -> Option<String> {
        let r = fs::read_to_string(self.root.join("sys/kernel/osrelease")).ok()?;
        Some(r.trim().to_string()).filter(|r| !r.is_empty())
    }

    /// Every process id.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = fs::read_dir(&self.root)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        pids.sort_unstable();
        pids
    }

    /// The process's `comm` (its name, at most 15 bytes).
    pub fn comm(&self, pid: u32) -> Option<String> {
        fs::read_to_string(self.root.join(pid.to_string()).join("comm"))
            .ok()
            .map(|s| s.trim_end().to_string())
    }

    /// The process's arguments.
    pub fn cmdline(&self, pid: u32) -> Option<Vec<String>> {
        let raw = fs::read(self.root.join(pid.to_string()).join("cmdline")).ok()?;
        Some(
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        )
    }

    /// One of the process's security attributes (`attr/current`, `attr/apparmor/current`):
    /// the label its security module gave it.
    pub fn attr(&self, pid: u32, name: &str) -> Option<String> {
        fs::read_to_string(self.root.join(pid.to_string()).join("attr").join(name)).ok()
    }

    /// Processes whose `comm` is one of `names`.
    pub fn find_by_comm(&self, names: &[&str]) -> Vec<(u32, String)> {
        self.pids()
            .into_iter()
            .filter_map(|p| {
                let c = self.comm(p)?;
                names.contains(&c.as_str()).then_some((p, c))
            })
            .collect()
    }

    /// When the process started, from its `stat` start time and the boot time in `stat`.
    pub fn start_time(&self, pid: u32) -> Option<SystemTime> {
        let stat = fs::read_to_string(self.root.join(pid.to_string()).join("stat")).ok()?;
        let after_comm = &stat[stat.rfind(')')? + 1..];
        // Field 22 of stat is starttime; after the comm the first field is field 3.
        let ticks: u64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
        let btime: u64 = fs::read_to_string(self.root.join("stat"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as u64 } else { 100 };
        Some(UNIX_EPOCH + Duration::from_secs(btime) + Duration::from_millis(ticks * 1000 / hz))
    }

    /// Whether a live process is QEMU (its argv[0] is named like `qemu*`): what tells a pid
    /// file of a running domain from a stale one whose pid was reused.
    pub fn is_qemu(&self, pid: u32) -> bool {
        self.cmdline(pid).is_some_and(|args| is_qemu_argv0(&args))
    }

    /// QEMU processes with their command line joined by spaces.
    pub fn qemu_processes(&self) -> Vec<(u32, String)> {
        self.pids()
            .into_iter()
            .filter_map(|p| {
                let args = self.cmdline(p)?;
                is_qemu_argv0(&args).then(|| (p, args.join(" ")))
            })
            .collect()
    }

    /// The QEMU process whose command line mentions `needle` (an mdev UUID, a VF address),
    /// with the domain name from its `-name guest=NAME` argument when present.
    pub fn qemu_using(&self, needle: &str) -> Option<(u32, Option<String>)> {
        self.qemu_processes()
            .into_iter()
            .find(|(_, cmd)| cmd.contains(needle))
            .map(|(pid, cmd)| (pid, qemu_guest_name(&cmd)))
    }
}

fn is_qemu_argv0(args: &[String]) -> bool {
    args.first()
        .and_then(|a| a.rsplit('/').next())
        .is_some_and(|base| base.contains("qemu"))
}

fn qemu_guest_name(cmd: &str) -> Option<String> {
    let mut words = cmd.split(' ');
    while let Some(w) = words.next() {
        if w == "-name" {
            let v = words.next()?;
            let name = v.strip_prefix("guest=").unwrap_or(v);
            return Some(name.split(',').next()?.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(pid: u32, comm: &str, cmdline: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join(pid.to_string());
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        fs::write(d.join("cmdline"), cmdline.join("\0") + "\0").unwrap();
        fs::write(
            d.join("stat"),
            format!("{pid} ({comm} x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 500 20"),
        )
        .unwrap();
        fs::write(t.path().join("stat"), "cpu 1 2 3\nbtime 1000\n").unwrap();
        t
    }

    #[test]
    fn daemon_is_found_by_comm() {
        let t = fake(42, "libvirtd", &["/usr/sbin/libvirtd", "-d"]);
        let p = Procfs::new(t.path());
        assert_eq!(p.find_by_comm(&["libvirtd"]), vec![(42, "libvirtd".into())]);
    }

    #[test]
    fn start_time_is_boot_time_plus_ticks() {
        let t = fake(42, "libvirtd", &["libvirtd"]);
        let p = Procfs::new(t.path());
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(
            p.start_time(42).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1000) + Duration::from_millis(500 * 1000 / hz)
        );
    }

    #[test]
    fn qemu_using_a_device_is_found_with_its_guest_name() {
        let t = fake(
            7,
            "qemu-system-x86",
            &[
                "/usr/bin/qemu-system-x86_64",
                "-name",
                "guest=vm1,debug-threads=on",
                "-device",
                "vfio-pci,sysfsdev=/sys/bus/mdev/devices/6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b",
            ],
        );
        let p = Procfs::new(t.path());
        assert_eq!(
            p.qemu_using("6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b"),
            Some((7, Some("vm1".into())))
        );
        assert_eq!(p.qemu_using("0000:04:02.0"), None);
    }
}
