//! Putting the hook where libvirt runs it, writing a first config, and taking the hook away again.
//!
//! The hook goes to `HOOKS/qemu.d/50-vgpu-hook` (libvirt 6.5+ runs every executable there), so an
//! operator's own `HOOKS/qemu` dispatcher is never touched; `--as-qemu` installs as `HOOKS/qemu`
//! for older setups, but only where no other program sits. Files are replaced atomically (a
//! VM starting mid-install must see the old hook or the new one, never half a file), and "ours"
//! is recognised by content: an ELF executable carrying our metadata namespace. The config
//! skeleton is written only when there is none, listing what this host offers so the operator
//! only has to uncomment lines.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::host::atomic::Durability;
use crate::host::sysfs::Sysfs;
use crate::model::pci::PciAddress;

/// libvirt's hooks directory.
pub const DEFAULT_HOOKS_DIR: &str = "/etc/libvirt/hooks";
/// The hook's file name inside `qemu.d`.
pub const QEMU_D_NAME: &str = "50-vgpu-hook";

const NVIDIA: u16 = 0x10de;
const AMD: u16 = 0x1002;

/// What can go wrong installing; each names the path and the way out.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The file to install is not the vgpu-hook program.
    #[error("{0} is not a vgpu-hook executable (build it with `cargo build --release`, or pass --hook-binary PATH)")]
    NotHook(PathBuf),
    /// The file is ours by content but does not behave like the hook (vgpuctl itself, say).
    #[error("{path} does not behave like vgpu-hook ({why}); pass the vgpu-hook executable with --hook-binary PATH")]
    Probe {
        /// The file.
        path: PathBuf,
        /// What it did.
        why: String,
    },
    /// `HOOKS/qemu` belongs to another program.
    #[error("{0} is another program's hook; vgpuctl never replaces it: install into qemu.d instead (drop --as-qemu)")]
    Foreign(PathBuf),
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the hook goes.
pub fn hook_target(hooks_dir: &Path, as_qemu: bool) -> PathBuf {
    if as_qemu {
        hooks_dir.join("qemu")
    } else {
        hooks_dir.join("qemu.d").join(QEMU_D_NAME)
    }
}

/// Whether `path` is a vgpu-hook executable: ELF, and carries our namespace string (every build
/// of the hook does, it is how the hook recognises the domains it serves).
pub fn is_our_hook(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let needle = crate::model::domain::NAMESPACE.as_bytes();
    bytes.starts_with(b"\x7fELF") && bytes.windows(needle.len()).any(|w| w == needle)
}

/// Runs the executable the way libvirt runs a hook for a call vgpu-hook ignores (`started begin`,
/// empty XML) and checks that it exits 0 silently, as the hook contract demands. This tells the
/// hook from vgpuctl and other builds that carry the same strings, without trusting names.
pub fn probe_hook(path: &Path) -> Result<(), String> {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new(path)
        .args(["vgpuctl-probe", "started", "begin", "-"])
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("it did not exit within 10 s".into());
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "called as a hook it exited with {} and printed '{}'",
            out.status,
            crate::printable(
                String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).trim(),
                80
            )
        ))
    }
}

/// Writes `bytes` to `path` atomically with `mode`: a temp file in `tmp_dir` (same filesystem,
/// somewhere libvirt does not look for hooks), fsync, rename, fsync of the directory.
pub fn atomic_write(path: &Path, tmp_dir: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    crate::host::atomic::replace(path, tmp_dir, bytes, mode, Durability::Synced)
}

/// What `install` should do.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// libvirt's hooks directory.
    pub hooks_dir: PathBuf,
    /// Install as `HOOKS/qemu` instead of into `qemu.d`.
    pub as_qemu: bool,
    /// The vgpu-hook executable to copy.
    pub hook_binary: PathBuf,
    /// Where the config lives.
    pub config_path: PathBuf,
    /// Run the executable once as libvirt would ([`probe_hook`]) before installing it.
    pub probe: bool,
    /// Where to put the boot unit (`/etc/systemd/system`) and the vgpuctl it runs; `None`: no
    /// unit (a host without systemd, or the package ships it).
    pub units: Option<(PathBuf, PathBuf)>,
}

/// What `install` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// Where the hook is now.
    pub target: PathBuf,
    /// Whether the hook file was written (false: it was already identical).
    pub hook_changed: bool,
    /// Whether a config skeleton was written.
    pub config_written: bool,
    /// Whether the boot unit was written or changed.
    pub unit_changed: bool,
    /// One line per step, for the operator.
    pub messages: Vec<String>,
}

fn mkdir(path: &Path) -> Result<(), InstallError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(io_err(path))
}

/// Installs the hook and, when absent, the config skeleton.
pub fn install(opts: &InstallOptions, sysfs: &Sysfs) -> Result<Installed, InstallError> {
    let bytes = read_hook_binary(opts)?;
    let target = hook_target(&opts.hooks_dir, opts.as_qemu);
    if opts.as_qemu && target.exists() && !is_our_hook(&target) {
        return Err(InstallError::Foreign(target));
    }
    let mut out = Installed {
        target: target.clone(),
        ..Installed::default()
    };
    mkdir(&opts.hooks_dir)?;
    if let Some(dir) = target.parent() {
        mkdir(dir)?;
    }
    let (changed, message) = place_hook(opts, &target, &bytes)?;
    out.hook_changed = changed;
    out.messages.push(message);
    out.messages.extend(legacy_hook_note(opts));
    let (written, message) = write_config(opts, sysfs)?;
    out.config_written = written;
    out.messages.push(message);
    if let Some((dir, vgpuctl)) = &opts.units {
        let (changed, message) = place_boot_unit(dir, vgpuctl, &opts.config_path)?;
        out.unit_changed = changed;
        out.messages.push(message);
    }
    Ok(out)
}

/// The executable to install, once it is known to be the hook (by content, and by behaviour
/// when `opts.probe`).
fn read_hook_binary(opts: &InstallOptions) -> Result<Vec<u8>, InstallError> {
    if !is_our_hook(&opts.hook_binary) {
        return Err(InstallError::NotHook(opts.hook_binary.clone()));
    }
    if opts.probe {
        probe_hook(&opts.hook_binary).map_err(|why| InstallError::Probe {
            path: opts.hook_binary.clone(),
            why,
        })?;
    }
    fs::read(&opts.hook_binary).map_err(io_err(&opts.hook_binary))
}

/// Writes the hook to `target` unless an identical executable is already there. Returns
/// whether it was written, and the line for the operator.
fn place_hook(
    opts: &InstallOptions,
    target: &Path,
    bytes: &[u8],
) -> Result<(bool, String), InstallError> {
    let current = fs::read(target).ok();
    let executable = fs::metadata(target).is_ok_and(|m| m.permissions().mode() & 0o111 == 0o111);
    if current.as_deref() == Some(bytes) && executable {
        return Ok((
            false,
            format!(
                "hook {} is already installed and up to date",
                target.display()
            ),
        ));
    }
    // The temp file goes to the hooks directory, where libvirt does not look for hooks; across
    // filesystems (a bind-mounted qemu.d) it goes next to the target instead.
    let written = atomic_write(target, &opts.hooks_dir, bytes, 0o755).or_else(|e| {
        if e.raw_os_error() == Some(libc::EXDEV) {
            atomic_write(
                target,
                target.parent().unwrap_or(&opts.hooks_dir),
                bytes,
                0o755,
            )
        } else {
            Err(e)
        }
    });
    written.map_err(io_err(target))?;
    Ok((
        true,
        format!(
            "{} hook {} (from {})",
            if current.is_some() {
                "updated"
            } else {
                "installed"
            },
            target.display(),
            opts.hook_binary.display()
        ),
    ))
}

/// A note when the hook installed into `qemu.d` is also installed as `HOOKS/qemu`.
fn legacy_hook_note(opts: &InstallOptions) -> Option<String> {
    let legacy = opts.hooks_dir.join("qemu");
    (!opts.as_qemu && legacy.exists() && is_our_hook(&legacy)).then(|| {
        format!(
            "note: {0} is also vgpu-hook, so it runs twice; remove it: rm {0}",
            legacy.display()
        )
    })
}

/// Writes the config skeleton unless a config exists. Returns whether it was written, and the
/// line for the operator.
fn write_config(opts: &InstallOptions, sysfs: &Sysfs) -> Result<(bool, String), InstallError> {
    if opts.config_path.exists() {
        return Ok((
            false,
            format!("kept the existing config {}", opts.config_path.display()),
        ));
    }
    let dir = opts
        .config_path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    mkdir(&dir)?;
    atomic_write(
        &opts.config_path,
        &dir,
        config_skeleton(sysfs).as_bytes(),
        0o644,
    )
    .map_err(io_err(&opts.config_path))?;
    Ok((
        true,
        format!(
            "wrote config skeleton {} (uncomment the devices to hand out)",
            opts.config_path.display()
        ),
    ))
}

/// Where the packages install the hook (placed into `qemu.d` from there).
pub const PACKAGED_HOOK: &str = "/usr/lib/vgpu-hook/vgpu-hook";

/// The boot unit's name.
pub const BOOT_UNIT: &str = "vgpu-hook-boot.service";
/// The boot unit as the packages ship it.
pub const BOOT_UNIT_TEXT: &str = include_str!("../../packaging/systemd/vgpu-hook-boot.service");
/// Where the packages put their units; a unit there takes precedence over writing one.
pub const PACKAGED_UNIT_DIRS: &[&str] = &["/usr/lib/systemd/system", "/lib/systemd/system"];

/// The boot unit for a host without the package: the packaged text with this vgpuctl and this
/// config path.
pub fn boot_unit_text(vgpuctl: &Path, config: &Path) -> String {
    BOOT_UNIT_TEXT
        .replace("/usr/bin/vgpuctl", &vgpuctl.display().to_string())
        .replace("/etc/vgpu-hook/config.toml", &config.display().to_string())
}

/// Whether a unit file is our boot unit (written by us or shipped by the package).
fn is_our_unit(path: &Path) -> bool {
    fs::read_to_string(path).is_ok_and(|t| t.contains("Ready the GPUs configured for vgpu-hook"))
}

/// Writes the boot unit into `dir` and enables it the way `systemctl enable` would (a link in
/// `multi-user.target.wants`), so it works without a running systemd too; unless the package's
/// unit is installed (it is enabled by the package).
fn place_boot_unit(
    dir: &Path,
    vgpuctl: &Path,
    config: &Path,
) -> Result<(bool, String), InstallError> {
    let unit = dir.join(BOOT_UNIT);
    if let Some(p) = PACKAGED_UNIT_DIRS
        .iter()
        .map(|d| Path::new(d).join(BOOT_UNIT))
        .find(|p| p.exists())
    {
        // A unit an earlier hand install wrote would shadow the package's: it goes, and its
        // enabling link now names the package's unit (so the boot unit stays enabled).
        let mut line = format!("boot unit {} is installed by the package", p.display());
        let link = dir.join("multi-user.target.wants").join(BOOT_UNIT);
        if is_our_unit(&unit) {
            if links_to_hand_unit(&link) {
                point_link(&link, &p)?;
            }
            fs::remove_file(&unit).map_err(io_err(&unit))?;
            line = format!(
                "{line}; removed boot unit {} (from an earlier install by hand)",
                unit.display()
            );
        }
        return Ok((false, line));
    }
    let text = boot_unit_text(vgpuctl, config);
    let wants = dir.join("multi-user.target.wants");
    let link = wants.join(BOOT_UNIT);
    // A link that names nothing (left by a removed package) is replaced by ours.
    let enabled = fs::metadata(&link).is_ok();
    let same = fs::read_to_string(&unit).is_ok_and(|t| t == text) && enabled;
    if same {
        return Ok((
            false,
            format!(
                "boot unit {} is already installed and enabled",
                unit.display()
            ),
        ));
    }
    if unit.exists() && !is_our_unit(&unit) {
        return Ok((
            false,
            format!(
                "left {} alone: it is not vgpu-hook's boot unit",
                unit.display()
            ),
        ));
    }
    mkdir(&wants)?;
    atomic_write(&unit, dir, text.as_bytes(), 0o644).map_err(io_err(&unit))?;
    if !enabled {
        point_link(&link, &Path::new("..").join(BOOT_UNIT))?;
    }
    Ok((
        true,
        format!(
            "installed and enabled boot unit {} (readies the GPUs before libvirt at boot)",
            unit.display()
        ),
    ))
}

/// Whether an enabling link names the unit in its own directory (what `place_boot_unit`
/// writes), not a package's.
fn links_to_hand_unit(link: &Path) -> bool {
    fs::read_link(link).is_ok_and(|t| {
        t == Path::new("..").join(BOOT_UNIT)
            || link
                .parent()
                .and_then(Path::parent)
                .map(|d| d.join(BOOT_UNIT))
                == Some(t)
    })
}

/// Makes `link` a symlink to `target`, replacing what is there in one rename.
fn point_link(link: &Path, target: &Path) -> Result<(), InstallError> {
    let tmp = link.with_extension(format!("vgpuctl-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io_err(&tmp))?;
    fs::rename(&tmp, link).map_err(io_err(link))
}

/// Removes the boot unit `place_boot_unit` wrote (never the package's, never another's) and
/// its enabling link. Returns one line per step.
pub fn uninstall_boot_unit(dir: &Path) -> Result<Vec<String>, InstallError> {
    let unit = dir.join(BOOT_UNIT);
    let link = dir.join("multi-user.target.wants").join(BOOT_UNIT);
    let mut messages = Vec::new();
    if !is_our_unit(&unit) {
        return Ok(messages);
    }
    if links_to_hand_unit(&link) {
        fs::remove_file(&link).map_err(io_err(&link))?;
    }
    fs::remove_file(&unit).map_err(io_err(&unit))?;
    messages.push(format!("removed boot unit {}", unit.display()));
    Ok(messages)
}

/// Removes our hook files from `hooks_dir` (never another program's), and the config and the
/// list of drained GPUs when `purge`. Returns one line per step and whether a hook file was removed.
pub fn uninstall(
    hooks_dir: &Path,
    config_path: &Path,
    purge: bool,
) -> Result<(Vec<String>, bool), InstallError> {
    let mut messages = Vec::new();
    let mut removed = false;
    for target in [hook_target(hooks_dir, false), hook_target(hooks_dir, true)] {
        if fs::symlink_metadata(&target).is_err() {
            continue;
        }
        if is_our_hook(&target) {
            fs::remove_file(&target).map_err(io_err(&target))?;
            removed = true;
            messages.push(format!("removed hook {}", target.display()));
        } else {
            messages.push(format!(
                "left {} alone: it is not vgpu-hook",
                target.display()
            ));
        }
    }
    if !removed {
        messages.push(format!("no vgpu-hook found in {}", hooks_dir.display()));
    }
    let beside = [
        (
            crate::host::drains::Drains::path_for(config_path),
            "the drained GPUs' list",
        ),
        (
            crate::ctl::catalogue::Seen::path_for(config_path),
            "the recorded type catalogue",
        ),
    ];
    for (path, what) in beside.iter().filter(|(p, _)| purge && p.exists()) {
        fs::remove_file(path).map_err(io_err(path))?;
        messages.push(format!("removed {what} {}", path.display()));
    }
    if config_path.exists() {
        if purge {
            fs::remove_file(config_path).map_err(io_err(config_path))?;
            messages.push(format!("removed config {}", config_path.display()));
        } else {
            messages.push(format!(
                "kept config {} (remove it with --purge)",
                config_path.display()
            ));
        }
    }
    Ok((messages, removed))
}

/// The devices of this host worth listing in a first config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// NVIDIA GPUs (PFs): classic mdev parents, PFs of VF parents, kernel-6.8+ PFs.
    pub nvidia: Vec<(PciAddress, String)>,
    /// AMD SR-IOV PFs.
    pub amd: Vec<(PciAddress, String)>,
    /// Other mdev parents by name.
    pub mdev: Vec<(String, String)>,
    /// Other SR-IOV PFs.
    pub sriov: Vec<(PciAddress, String)>,
}

fn type_summary(sysfs: &Sysfs, parent: &str) -> String {
    let Ok(p) = crate::model::names::ParentName::parse(parent) else {
        return String::new();
    };
    let types = sysfs.mdev_types(&p);
    let labels: Vec<String> = types
        .iter()
        .take(4)
        .map(|t| match &t.name {
            Some(n) => format!("{} ({})", n, t.id),
            None => t.id.clone(),
        })
        .collect();
    let more = if types.len() > labels.len() {
        format!(", ... {} types in all", types.len())
    } else {
        String::new()
    };
    format!("types {}{more}", labels.join(", "))
}

fn vf_summary(sysfs: &Sysfs, pf: PciAddress) -> String {
    format!(
        "{} of {} VFs enabled",
        sysfs.sriov_numvfs(pf).unwrap_or(0),
        sysfs.sriov_totalvfs(pf)
    )
}

/// Looks at this host the way `vgpuctl types` would, before any config exists.
pub fn discover(sysfs: &Sysfs) -> Discovery {
    let mut d = Discovery::default();
    for name in sysfs.mdev_parents() {
        match name.parse::<PciAddress>() {
            Ok(addr) if sysfs.pci_vendor(addr) == Some(NVIDIA) => {
                let pf = sysfs.physfn(addr).unwrap_or(addr);
                if !d.nvidia.iter().any(|(a, _)| *a == pf) {
                    let what = if pf == addr {
                        format!("mdev parent, {}", type_summary(sysfs, &name))
                    } else {
                        format!("VFs are mdev parents, {}", type_summary(sysfs, &name))
                    };
                    d.nvidia.push((pf, what));
                }
            }
            Ok(addr) if sysfs.physfn(addr).is_some() => {}
            _ => {
                let s = type_summary(sysfs, &name);
                d.mdev.push((name, s));
            }
        }
    }
    for addr in sysfs.pci_devices() {
        if sysfs.sriov_totalvfs(addr) == 0 {
            continue;
        }
        let vendor = sysfs.pci_vendor(addr);
        let summary = vf_summary(sysfs, addr);
        match vendor {
            Some(NVIDIA) => {
                if let Some(e) = d.nvidia.iter_mut().find(|(a, _)| *a == addr) {
                    e.1 = format!("{}; {summary}", e.1);
                } else {
                    let vfio = sysfs.vfs(addr).iter().any(|&v| sysfs.is_nvidia_vfio_vf(v));
                    let what = if vfio {
                        format!("kernel-6.8+ vGPU on VFs; {summary}")
                    } else {
                        summary
                    };
                    d.nvidia.push((addr, what));
                }
            }
            Some(AMD) => d.amd.push((addr, summary)),
            _ => d.sriov.push((addr, summary)),
        }
    }
    d.nvidia.sort();
    d
}

/// The skeleton's opening comment.
const SKELETON_HEAD: &str = "\
# vgpu-hook configuration: which devices the hook may hand out to libvirt domains.
# Written by `vgpuctl install` from what this host offered then; uncomment what applies.
# Addresses may be written with or without the PCI domain (82:00.0 or 0000:82:00.0).
# `vgpuctl types` shows what the listed devices offer; `vgpuctl doctor` checks the setup.
";

/// The skeleton's settings after the device lists, commented out at their defaults.
const SKELETON_SETTINGS: &str = "
# Where a vGPU goes when several GPUs can host it: \"pack\" fills one GPU first, \"spread\"
# takes the one with the most room.
# placement = \"pack\"

# NUMA: GPUs on the nodes a VM's definition pins it to come first (\"prefer\"); \"require\"
# refuses rather than go remote; \"ignore\" places as if no VM had wishes.
# numa = \"prefer\"

# VFs to enable on a configured PF that has none, where the driver allows (0 = all).
# vf_count = 0

# NVIDIA GPUs get their SR-IOV VFs from NVIDIA's sriov-manage (their driver refuses
# sriov_numvfs); the hook runs it for a configured NVIDIA GPU that has none.
# sriov_manage = \"/usr/lib/nvidia/sriov-manage\"
# sriov_manage_timeout_secs = 60

# NVIDIA GPUs (also in nvidia_vgpu_pfs, kernel 6.8+ VFs) that host vGPUs of several sizes at
# once (NVIDIA's mixed-size mode, set with nvidia-smi). The hook switches the mode on while the
# GPU is empty and puts each vGPU on the slot that keeps larger sizes creatable.
# mixed_size_pfs = []
# nvidia_smi = \"/usr/bin/nvidia-smi\"

# The vGPU scheduling policy each NVIDIA GPU should run (best-effort, equal-share, fixed-share,
# optionally with a time slice: equal-share/2ms). NVIDIA reads it when its module loads;
# `vgpuctl doctor` gives the modprobe line when a GPU runs another. A VM that needs one asks
# with <vgpu:vgpu scheduler=\"equal-share\"> and gets only a GPU that runs it.
# vgpu_scheduler = { \"82:00.0\" = \"equal-share\" }

# What NVIDIA's vGPU manager said about a vGPU whose start failed is read with journalctl
# (the hook logs it at release, vgpuctl status shows it).
# journalctl = \"/usr/bin/journalctl\"

# Timing (defaults shown): waiting for a GPU's driver at boot, for a new device to appear,
# for NVIDIA's own clean-up at stop, for one remove; retries and their interval; how long a
# device prepared for a domain counts as taken before QEMU runs; how long after boot absent
# GPUs are waited for even when present ones are full; how long a call waits for the
# host-wide state lock before it names the holder (a start is refused, a stop waits twice more).
# parent_wait_secs = 30
# device_wait_secs = 5
# cleanup_wait_secs = 10
# remove_timeout_secs = 10
# retries = 10
# retry_interval_ms = 1000
# prepare_grace_secs = 300
# boot_window_secs = 600
# lock_wait_secs = 120
";

/// The commented first config: every key with its meaning, and what this host offers.
pub fn config_skeleton(sysfs: &Sysfs) -> String {
    let d = discover(sysfs);
    let by_address = |items: &[(PciAddress, String)]| -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, w)| (a.to_string(), w.clone()))
            .collect()
    };
    let mut s = String::from(SKELETON_HEAD);
    skeleton_section(
        &mut s,
        "NVIDIA GPUs (physical functions) that host vGPUs, any generation:",
        "nvidia_vgpu_pfs",
        &by_address(&d.nvidia),
    );
    skeleton_section(
        &mut s,
        "AMD MxGPU PFs whose SR-IOV VFs are handed out whole:",
        "amd_vgpu_pfs",
        &by_address(&d.amd),
    );
    skeleton_section(
        &mut s,
        "Other mdev parents, by their /sys/class/mdev_bus name:",
        "mdev_parents",
        &d.mdev,
    );
    skeleton_section(
        &mut s,
        "Other SR-IOV PFs whose VFs are handed out whole:",
        "sriov_pfs",
        &by_address(&d.sriov),
    );
    s.push_str(SKELETON_SETTINGS);
    s
}

/// One device list of the skeleton: a title, what was found with what it offers, and the key
/// listing them all, commented out.
fn skeleton_section(s: &mut String, title: &str, key: &str, items: &[(String, String)]) {
    s.push_str(&format!("\n# {title}\n"));
    if items.is_empty() {
        s.push_str("#   (none found)\n");
    }
    for (name, what) in items {
        s.push_str(&format!("#   {name}: {what}\n"));
    }
    let list: Vec<String> = items.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    s.push_str(&format!("# {key} = [{}]\n", list.join(", ")));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_hook(dir: &Path) -> PathBuf {
        let p = dir.join("vgpu-hook");
        let mut bytes = b"\x7fELF-fake-".to_vec();
        bytes.extend_from_slice(crate::model::domain::NAMESPACE.as_bytes());
        fs::write(&p, bytes).unwrap();
        p
    }

    fn opts(t: &Path, as_qemu: bool) -> InstallOptions {
        InstallOptions {
            hooks_dir: t.join("hooks"),
            as_qemu,
            hook_binary: fake_hook(t),
            config_path: t.join("etc/vgpu-hook/config.toml"),
            probe: false,
            units: Some((t.join("systemd"), PathBuf::from("/opt/vgpu/bin/vgpuctl"))),
        }
    }

    #[test]
    fn install_places_an_executable_copy_in_qemu_d() {
        let t = tempfile::tempdir().unwrap();
        let sysfs = Sysfs::new(t.path());
        let r = install(&opts(t.path(), false), &sysfs).unwrap();
        let target = t.path().join("hooks/qemu.d/50-vgpu-hook");
        assert_eq!(r.target, target);
        assert!(is_our_hook(&target));
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(r.config_written);
        let leftovers: Vec<_> = fs::read_dir(t.path().join("hooks"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("qemu.d")]);
    }

    #[test]
    fn install_writes_and_enables_the_boot_unit_and_uninstall_removes_it() {
        let t = tempfile::tempdir().unwrap();
        let o = opts(t.path(), false);
        let r = install(&o, &Sysfs::new(t.path())).unwrap();
        let unit = t.path().join("systemd").join(BOOT_UNIT);
        let text = fs::read_to_string(&unit).unwrap();
        assert!(r.unit_changed);
        assert!(
            text.contains("ExecStart=-/opt/vgpu/bin/vgpuctl boot"),
            "{text}"
        );
        assert!(text.contains(&format!("ConditionPathExists={}", o.config_path.display())));
        assert!(text.contains("Before=libvirtd.service virtqemud.service libvirt-guests.service"));
        let link = t
            .path()
            .join("systemd/multi-user.target.wants")
            .join(BOOT_UNIT);
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("..").join(BOOT_UNIT)
        );
        assert!(!install(&o, &Sysfs::new(t.path())).unwrap().unit_changed);
        let m = uninstall_boot_unit(&t.path().join("systemd")).unwrap();
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(!unit.exists() && fs::symlink_metadata(&link).is_err());
    }

    #[test]
    fn another_unit_of_that_name_is_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let o = opts(t.path(), false);
        fs::create_dir_all(t.path().join("systemd")).unwrap();
        let unit = t.path().join("systemd").join(BOOT_UNIT);
        fs::write(&unit, "[Service]\nExecStart=/bin/true\n").unwrap();
        assert!(!install(&o, &Sysfs::new(t.path())).unwrap().unit_changed);
        assert!(uninstall_boot_unit(&t.path().join("systemd"))
            .unwrap()
            .is_empty());
        assert_eq!(
            fs::read_to_string(&unit).unwrap(),
            "[Service]\nExecStart=/bin/true\n"
        );
    }

    #[test]
    fn second_install_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let sysfs = Sysfs::new(t.path());
        install(&opts(t.path(), false), &sysfs).unwrap();
        let r = install(&opts(t.path(), false), &sysfs).unwrap();
        assert!(!r.hook_changed && !r.config_written, "{r:?}");
    }

    #[test]
    fn a_foreign_qemu_script_is_never_replaced() {
        let t = tempfile::tempdir().unwrap();
        let o = opts(t.path(), true);
        fs::create_dir_all(&o.hooks_dir).unwrap();
        fs::write(o.hooks_dir.join("qemu"), "#!/bin/sh\nexit 0\n").unwrap();
        let e = install(&o, &Sysfs::new(t.path())).unwrap_err();
        assert!(matches!(e, InstallError::Foreign(_)), "{e}");
        assert_eq!(
            fs::read_to_string(o.hooks_dir.join("qemu")).unwrap(),
            "#!/bin/sh\nexit 0\n"
        );
    }

    #[test]
    fn uninstall_removes_only_our_files() {
        let t = tempfile::tempdir().unwrap();
        let o = opts(t.path(), false);
        install(&o, &Sysfs::new(t.path())).unwrap();
        fs::write(o.hooks_dir.join("qemu"), "#!/bin/sh\n").unwrap();
        let (msgs, removed) = uninstall(&o.hooks_dir, &o.config_path, false).unwrap();
        assert!(removed, "{msgs:?}");
        assert!(!o.hooks_dir.join("qemu.d/50-vgpu-hook").exists());
        assert!(o.hooks_dir.join("qemu").exists());
        assert!(o.config_path.exists());
    }

    #[test]
    fn uninstall_purge_removes_the_config_the_drained_gpus_list_and_the_type_catalogue() {
        let t = tempfile::tempdir().unwrap();
        let o = opts(t.path(), false);
        install(&o, &Sysfs::new(t.path())).unwrap();
        let drains = crate::host::drains::Drains::path_for(&o.config_path);
        fs::write(&drains, "[[gpu]]\ngpu = \"mtty\"\nsince = 0\n").unwrap();
        let seen = crate::ctl::catalogue::Seen::path_for(&o.config_path);
        fs::write(&seen, "{}").unwrap();
        uninstall(&o.hooks_dir, &o.config_path, false).unwrap();
        assert!(drains.exists() && seen.exists(), "kept without --purge");
        uninstall(&o.hooks_dir, &o.config_path, true).unwrap();
        assert!(!o.config_path.exists() && !drains.exists() && !seen.exists());
    }

    #[test]
    fn a_non_hook_binary_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let mut o = opts(t.path(), false);
        o.hook_binary = t.path().join("other");
        fs::write(&o.hook_binary, "#!/bin/sh\n").unwrap();
        assert!(matches!(
            install(&o, &Sysfs::new(t.path())),
            Err(InstallError::NotHook(_))
        ));
    }

    #[test]
    fn skeleton_is_a_valid_empty_config() {
        let t = tempfile::tempdir().unwrap();
        let text = config_skeleton(&Sysfs::new(t.path()));
        let c = crate::model::config::Config::parse(&text, Path::new("x")).unwrap();
        assert!(c.nvidia_vgpu_pfs.is_empty() && c.mdev_parents.is_empty());
    }
}
