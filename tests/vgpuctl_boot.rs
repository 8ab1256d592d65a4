//! `vgpuctl boot` on a simulated host: NVIDIA SR-IOV GPUs get their VFs from the stand-in
//! `sriov-manage` once (a second run changes nothing), a GPU that fell off the bus and a
//! missing parent are reported, and the command exits 0 whatever it finds, even without a
//! config; `--check` says what a boot would run and runs nothing.

mod common;

use std::fs;
use std::process::{Command, Output, Stdio};

use common::hook::{NVIDIA_SMI_STAND_IN, SRIOV_MANAGE_STAND_IN};
use common::sim::Sim;

/// An A16-like GPU (mdev on VFs) with its VFs off, an L40S (kernel-6.8+ VFs) with its VFs off,
/// and the mtty sample parent.
const HOST: &str = r#"
[[gpu]]
address = "0000:41:00.0"
kind = "nvidia-vfio"
board = "L40S"
framebuffer_mb = 49152
numvfs = 0
totalvfs = 4

[[gpu]]
kind = "mdev"
name = "mtty"
types = [{ id = "mtty-1", name = "Single port serial", max_instances = 24 }]
"#;

fn vgpuctl(sim: &Sim, dir: &std::path::Path, config: Option<&str>, args: &[&str]) -> Output {
    let cfg = dir.join("config.toml");
    if let Some(c) = config {
        fs::write(&cfg, c).unwrap();
    }
    Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .args(args)
        .env("VGPU_HOOK_SYSFS_ROOT", sim.root())
        .env("VGPU_HOOK_CONFIG", &cfg)
        .env("VGPU_HOOK_STATE_DIR", dir.join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn config() -> String {
    format!(
        "nvidia_vgpu_pfs = [\"41:00.0\", \"0000:99:00.0\"]\nmdev_parents = [\"mtty\", \"nothere\"]\nsriov_manage = \"{SRIOV_MANAGE_STAND_IN}\"\n"
    )
}

#[test]
fn boot_enables_nvidia_vfs_once_and_reports_every_gpu() {
    let Some(sim) = Sim::start(HOST) else { return };
    let t = tempfile::tempdir().unwrap();
    let out = text(&vgpuctl(
        &sim,
        t.path(),
        Some(&config()),
        &["boot", "--wait-secs", "1"],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "0000:41:00.0: enabled 4 VFs; ready: nvidia-vfio, 4 VFs",
        "{out}"
    );
    assert!(
        lines[1].starts_with("0000:99:00.0: missing: not on the PCI bus"),
        "{out}"
    );
    assert!(lines[2].starts_with("mtty: ready: mdev parent"), "{out}");
    assert!(lines[3].starts_with("nothere: missing"), "{out}");
    assert_eq!(lines[4], "2 of 4 configured GPUs ready");
    let numvfs = sim
        .root()
        .join("sys/bus/pci/devices/0000:41:00.0/sriov_numvfs");
    assert_eq!(fs::read_to_string(&numvfs).unwrap().trim(), "4");
    let events = sim.events();
    let again = text(&vgpuctl(
        &sim,
        t.path(),
        None,
        &["boot", "--wait-secs", "0"],
    ));
    assert!(
        again.starts_with("0000:41:00.0: ready: nvidia-vfio, 4 VFs\n"),
        "{again}"
    );
    assert_eq!(
        sim.events().matches("sriov_numvfs").count(),
        events.matches("sriov_numvfs").count(),
        "a second run writes nothing"
    );
}

#[test]
fn boot_check_says_what_a_boot_would_run_and_changes_nothing() {
    let Some(sim) = Sim::start(HOST) else { return };
    let t = tempfile::tempdir().unwrap();
    let o = vgpuctl(&sim, t.path(), Some(&config()), &["boot", "--check"]);
    assert_eq!(o.status.code(), Some(1), "not every GPU is ready");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(&format!(
            "0000:41:00.0: SR-IOV VFs off: a boot would run `{SRIOV_MANAGE_STAND_IN} -e 0000:41:00.0`"
        )),
        "{out}"
    );
    assert!(
        out.contains("nothere: not registered as an mdev parent yet: a boot would wait up to"),
        "{out}"
    );
    assert!(
        out.ends_with("1 of 4 configured GPUs ready (checked only: nothing was run or changed)\n"),
        "{out}"
    );
    let numvfs = sim
        .root()
        .join("sys/bus/pci/devices/0000:41:00.0/sriov_numvfs");
    assert_eq!(fs::read_to_string(&numvfs).unwrap().trim(), "0");
    assert!(!sim.events().contains("sriov_numvfs"), "{}", sim.events());
}

#[test]
fn boot_lines_keep_a_gpus_drain_in_view() {
    let Some(sim) = Sim::start(HOST) else { return };
    let t = tempfile::tempdir().unwrap();
    let config = format!("mdev_parents = [\"mtty\"]\nsriov_manage = \"{SRIOV_MANAGE_STAND_IN}\"\n");
    fs::write(t.path().join("config.toml"), config).unwrap();
    fs::write(
        t.path().join("drained.toml"),
        "[[gpu]]\ngpu = \"mtty\"\nsince = 0\nreason = \"driver upgrade\"\n",
    )
    .unwrap();
    let out = text(&vgpuctl(&sim, t.path(), None, &["boot", "--check"]));
    assert!(
        out.starts_with("mtty: ready: mdev parent, 1 types; drained since 1970-01-01T00:00:00Z, reason: driver upgrade; `vgpuctl undrain mtty`"),
        "{out}"
    );
}

#[test]
fn boot_without_sriov_manage_reports_the_command_and_exits_0() {
    let Some(sim) = Sim::start(HOST) else { return };
    let t = tempfile::tempdir().unwrap();
    let c = "nvidia_vgpu_pfs = [\"41:00.0\"]\nsriov_manage = \"/nonexistent/sriov-manage\"\n";
    let out = text(&vgpuctl(
        &sim,
        t.path(),
        Some(c),
        &["boot", "--wait-secs", "0"],
    ));
    assert!(out.contains("SR-IOV VFs not enabled"), "{out}");
    assert!(
        out.contains("/nonexistent/sriov-manage -e 0000:41:00.0"),
        "{out}"
    );
    assert!(out.ends_with("0 of 1 configured GPUs ready\n"), "{out}");
}

#[test]
fn boot_without_a_config_or_with_a_broken_one_exits_0() {
    let Some(sim) = Sim::start(HOST) else { return };
    let t = tempfile::tempdir().unwrap();
    let out = text(&vgpuctl(&sim, t.path(), None, &["boot"]));
    assert!(out.starts_with("nothing to ready: "), "{out}");
    let out = text(&vgpuctl(
        &sim,
        t.path(),
        Some("nvidia_vgpu_pfs = 3\n"),
        &["boot"],
    ));
    assert!(
        out.starts_with("nothing to ready: ") && out.contains("line 1"),
        "{out}"
    );
}

/// The L40S of [`HOST`] with Ada's placement rules, in `mixed_size_pfs`.
fn mixed_host_and_config() -> (String, String) {
    let host = HOST.replace("totalvfs = 4\n", "totalvfs = 4\ngeneration = \"ada\"\n");
    let config = format!(
        "nvidia_vgpu_pfs = [\"41:00.0\"]\nmixed_size_pfs = [\"41:00.0\"]\nsriov_manage = \"{SRIOV_MANAGE_STAND_IN}\"\nnvidia_smi = \"{NVIDIA_SMI_STAND_IN}\"\n"
    );
    (host, config)
}

fn mode(sim: &Sim) -> String {
    let p = sim
        .root()
        .join("sim/nvml/0000:41:00.0/vgpu_heterogeneous_mode");
    fs::read_to_string(p).unwrap().trim().to_string()
}

#[test]
fn boot_switches_mixed_size_mode_on_after_sriov_manage_and_a_second_run_finds_it_on() {
    let (host, config) = mixed_host_and_config();
    let Some(sim) = Sim::start(&host) else { return };
    let t = tempfile::tempdir().unwrap();
    let args = ["boot", "--wait-secs", "0"];
    let out = text(&vgpuctl(&sim, t.path(), Some(&config), &args));
    assert!(
        out.starts_with(
            "0000:41:00.0: enabled 4 VFs; ready: nvidia-vfio, 4 VFs; mixed-size mode switched on"
        ),
        "{out}"
    );
    assert_eq!(mode(&sim), "1");
    let again = text(&vgpuctl(&sim, t.path(), None, &args));
    assert!(
        again.starts_with("0000:41:00.0: ready: nvidia-vfio, 4 VFs; mixed-size mode on\n"),
        "{again}"
    );
}

#[test]
fn boot_check_names_the_mode_command_after_sriov_manage_and_sets_nothing() {
    let (host, config) = mixed_host_and_config();
    let Some(sim) = Sim::start(&host) else { return };
    let t = tempfile::tempdir().unwrap();
    let o = vgpuctl(&sim, t.path(), Some(&config), &["boot", "--check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "then `{NVIDIA_SMI_STAND_IN} vgpu -i 0000:41:00.0 -shm 1` (after it: sriov-manage wipes the mode)"
        )),
        "{out}"
    );
    assert_eq!(mode(&sim), "0");
}

/// What `vgpuctl boot` says of the L40S of [`HOST`] (VFs on) when the `nvidia` module loaded
/// with `registry` (a host-file line) and the config asks for `wish`.
fn boot_with_scheduler(registry: &str, wish: &str) -> Option<String> {
    let host = format!("{registry}\n{HOST}").replace("numvfs = 0", "numvfs = 4");
    let sim = Sim::start(&host)?;
    let t = tempfile::tempdir().unwrap();
    let config = format!(
        "nvidia_vgpu_pfs = [\"41:00.0\"]\nvgpu_scheduler = {{ \"41:00.0\" = \"{wish}\" }}\n"
    );
    Some(text(&vgpuctl(
        &sim,
        t.path(),
        Some(&config),
        &["boot", "--wait-secs", "0"],
    )))
}

#[test]
fn boot_names_a_gpus_scheduler_and_the_modprobe_line_when_the_config_asks_for_another() {
    let Some(out) = boot_with_scheduler("nvidia_registry_dwords = \"RmPVMRL=0x11\"", "equal-share")
    else {
        return;
    };
    assert!(
        out.contains("vGPU scheduler fixed-share, the config asks for equal-share: put `options nvidia NVreg_RegistryDwordsPerDevice=\"pci=0000:41:00.0;RmPVMRL=0x1\"` in /etc/modprobe.d/nvidia-vgpu-scheduler.conf"),
        "{out}"
    );
}

#[test]
fn boot_says_a_gpu_runs_the_scheduler_the_config_asks_for() {
    let registry = "nvidia_registry_dwords_per_device = \"pci=0000:41:00.0;RmPVMRL=0x00020001\"";
    let Some(out) = boot_with_scheduler(registry, "equal-share/2ms") else {
        return;
    };
    assert!(
        out.starts_with(
            "0000:41:00.0: ready: nvidia-vfio, 4 VFs; vGPU scheduler equal-share/2ms\n"
        ),
        "{out}"
    );
}

/// A P40 on NVIDIA driver `version` offering `types` (id, name, framebuffer MiB).
fn p40_on(version: &str, types: &[(&str, &str, u32)]) -> String {
    let list: Vec<String> = types
        .iter()
        .map(|(id, name, fb)| {
            format!(
                "{{ id = \"{id}\", name = \"{name}\", framebuffer_mb = {fb}, max_instances = {} }}",
                24576 / fb
            )
        })
        .collect();
    format!("nvidia_version = \"{version}\"\n[[gpu]]\naddress = \"0000:82:00.0\"\nkind = \"nvidia-classic\"\ntypes = [{}]\n", list.join(", "))
}

#[test]
fn boot_after_a_driver_change_names_the_types_that_went_away_and_keeps_saying_so() {
    let t = tempfile::tempdir().unwrap();
    let config = "nvidia_vgpu_pfs = [\"82:00.0\"]\n";
    let old = p40_on(
        "550.90.07",
        &[
            ("nvidia-46", "GRID P40-1Q", 1024),
            ("nvidia-47", "GRID P40-2Q", 2048),
        ],
    );
    let Some(before) = Sim::start(&old) else {
        return;
    };
    let first = text(&vgpuctl(
        &before,
        t.path(),
        Some(config),
        &["boot", "--wait-secs", "0"],
    ));
    assert!(
        !first.contains("type catalogue"),
        "nothing to compare yet: {first}"
    );
    drop(before);
    let new = p40_on("580.65.06", &[("nvidia-46", "GRID P40-1Q", 1024)]);
    let after = Sim::start(&new).expect("a second simulator");
    let line = "type catalogue: driver 550.90.07 -> 580.65.06: 1 type(s) gone (GRID P40-2Q); `vgpuctl doctor` names the domains that ask for them";
    let out = text(&vgpuctl(
        &after,
        t.path(),
        None,
        &["boot", "--wait-secs", "0"],
    ));
    assert!(out.ends_with(&format!("{line}\n")), "{out}");
    let again = text(&vgpuctl(
        &after,
        t.path(),
        None,
        &["boot", "--wait-secs", "0"],
    ));
    assert!(
        again.contains(line),
        "the previous driver's catalogue is kept: {again}"
    );
}
