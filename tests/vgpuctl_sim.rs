//! vgpuctl on a simulated GPU host (the FUSE simulator): the `types`, `list` and `status`
//! reports against golden files, `reconcile`, `doctor`, `install`'s config skeleton and the
//! offline `attach --xml` checks against what the host offers.
//!
//! The host: an NVIDIA P40 (classic mdev), an NVIDIA L40S on kernel 6.8+ (vGPU types on VFs),
//! an AMD MxGPU PF (GIM, 2 VFs), a generic SR-IOV PF with no VFs enabled, the kernel's mtty
//! sample parent, and a configured GPU that is absent. `win11` runs (a process named like QEMU
//! holds libvirt's pid file) and holds a P40-2Q and an AMD VF; `gone` and `l40` stopped without
//! their devices being freed; one mtty device was made by someone else.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use vgpu_hook::host::state::{Device, Record, State, StateDir};
use vgpu_hook::model::names::MdevUuid;

const HOST: &str = r#"
modules = ["vfio", "vfio_pci", "vfio_iommu_type1", "mdev"]

[[gpu]]
address = "0000:82:00.0"
kind = "nvidia-classic"
numa_node = 0
types = [{ id = "nvidia-46", name = "GRID P40-1Q", framebuffer_mb = 1024, max_instances = 24, description = "num_heads=4, frl_config=60, framebuffer=1024M, max_resolution=5120x2880, max_instance=24" },
         { id = "nvidia-47", name = "GRID P40-2Q", framebuffer_mb = 2048, max_instances = 12, description = "num_heads=4, frl_config=60, framebuffer=2048M, max_resolution=5120x2880, max_instance=12" }]

[[gpu]]
address = "0000:41:00.0"
kind = "nvidia-vfio"
numa_node = 1
numvfs = 2
totalvfs = 4
types = [{ id = "1145", name = "NVIDIA L40S-1B", framebuffer_mb = 1024, max_instances = 32 },
         { id = "2164", name = "NVIDIA L40S-4Q", framebuffer_mb = 4096, max_instances = 12 }]

[[gpu]]
address = "0000:04:00.0"
kind = "amd-gim"
gim = "old"
numvfs = 2

[[gpu]]
address = "0000:05:00.0"
kind = "sriov"
totalvfs = 4

[[gpu]]
kind = "mdev"
name = "mtty"
types = [{ id = "mtty-1", name = "Single port serial", max_instances = 24 },
         { id = "mtty-2", name = "Dual port serial", max_instances = 12 }]
"#;

const CONFIG: &str = r#"nvidia_vgpu_pfs = ["82:00.0", "41:00.0", "0000:99:00.0"]
amd_vgpu_pfs = ["04:00.0"]
mdev_parents = ["mtty"]
sriov_pfs = ["05:00.0"]
"#;

const WIN11: &str = "0e0c8f3b-9f5a-4b8e-8d4e-3c2b1a0f9e8d";
/// win11's P40-2Q (running).
const A: &str = "6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b";
/// 'gone' left this mtty-2 behind.
const B: &str = "9a41c0de-0000-4c1e-9a41-0c2d3e4f5a07";
/// Someone else's mtty-1.
const C: &str = "11111111-2222-4333-8444-555555555555";
/// A record of 'old' whose device no longer exists.
const D: &str = "deadbeef-0000-4000-8000-000000000001";
const SINCE: u64 = 1_700_000_000;

struct SimHost {
    sim: common::sim::Sim,
    dir: tempfile::TempDir,
    qemus: Vec<Child>,
}

impl Drop for SimHost {
    fn drop(&mut self) {
        for c in &mut self.qemus {
            // Each fake QEMU leads its own process group (a shell and its sleep).
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: kill(2) on the process group of a child this test started.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = c.wait();
        }
    }
}

fn record(
    domain_uuid: &str,
    domain: &str,
    device: Device,
    parent: &str,
    t: Option<&str>,
) -> Record {
    Record {
        domain_uuid: domain_uuid.into(),
        domain_name: domain.into(),
        device,
        parent: parent.into(),
        type_id: t.map(str::to_string),
        since: SINCE,
        created: true,
        numa_note: None,
    }
}

fn mdev(u: &str) -> Device {
    Device::Mdev {
        uuid: MdevUuid::parse(u).unwrap(),
    }
}

fn vf(a: &str) -> Device {
    Device::Vf {
        address: a.parse().unwrap(),
    }
}

impl SimHost {
    /// The simulated host with the config and empty state; `None` when FUSE is unavailable.
    fn bare() -> Option<SimHost> {
        let sim = common::sim::Sim::start(HOST)?;
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.toml"), CONFIG).unwrap();
        fs::create_dir_all(dir.path().join("run")).unwrap();
        Some(SimHost {
            sim,
            dir,
            qemus: Vec::new(),
        })
    }

    /// The host in the state the module doc describes.
    fn populated() -> Option<SimHost> {
        let mut h = SimHost::bare()?;
        h.create_mdev("0000:82:00.0", "nvidia-47", A);
        h.create_mdev("mtty", "mtty-2", B);
        h.create_mdev("mtty", "mtty-1", C);
        h.write_sys(
            "bus/pci/devices/0000:41:00.4/nvidia/current_vgpu_type",
            "2164",
        );
        let mut state = State::default();
        state.put(Record {
            numa_note: Some("on NUMA node 0, not the VM's node 1: no room there at start".into()),
            ..record(WIN11, "win11", mdev(A), "0000:82:00.0", Some("nvidia-47"))
        });
        state.put(Record {
            created: false,
            ..record(WIN11, "win11", vf("0000:04:00.4"), "0000:04:00.0", None)
        });
        state.put(record("uuid-gone", "gone", mdev(B), "mtty", Some("mtty-2")));
        state.put(record(
            "uuid-l40",
            "l40",
            vf("0000:41:00.4"),
            "0000:41:00.0",
            Some("2164"),
        ));
        state.put(record("uuid-old", "old", mdev(D), "mtty", Some("mtty-1")));
        StateDir::new(&h.state_dir())
            .lock()
            .unwrap()
            .save(&state)
            .unwrap();
        h.fake_qemu(Some("win11"), &[]);
        Some(h)
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn write_sys(&self, rel: &str, value: &str) {
        let p = self.sim.root().join("sys").join(rel);
        fs::write(&p, value).unwrap_or_else(|e| panic!("write {value} to {}: {e}", p.display()));
    }

    fn create_mdev(&self, parent: &str, type_id: &str, uuid: &str) {
        self.write_sys(
            &format!("class/mdev_bus/{parent}/mdev_supported_types/{type_id}/create"),
            uuid,
        );
    }

    fn mdev_exists(&self, uuid: &str) -> bool {
        self.sim
            .root()
            .join("sys/bus/mdev/devices")
            .join(uuid)
            .exists()
    }

    /// Starts a process that looks like QEMU (argv[0] `qemu-system-x86_64`, with `words` on
    /// its command line); with a domain name, libvirt's pid file names it.
    fn fake_qemu(&mut self, domain: Option<&str>, words: &[&str]) -> u32 {
        use std::os::unix::process::CommandExt;
        let qemu = self.dir.path().join("qemu-system-x86_64");
        if !qemu.exists() {
            // A link, not a copy: a copy still open for writing in a sibling test's fork
            // would make the exec fail with ETXTBSY.
            std::os::unix::fs::symlink("/bin/sh", &qemu).unwrap();
        }
        // `sleep; true` keeps the shell (and its command line) alive instead of exec'ing sleep.
        let child = Command::new(&qemu)
            .arg("-c")
            .arg("sleep 600; true")
            .args(words)
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        if let Some(name) = domain {
            fs::write(
                self.dir.path().join("run").join(format!("{name}.pid")),
                format!("{pid}\n"),
            )
            .unwrap();
        }
        self.qemus.push(child);
        pid
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vgpuctl"));
        c.env("VGPU_HOOK_SYSFS_ROOT", self.sim.root())
            .env("VGPU_HOOK_CONFIG", self.dir.path().join("config.toml"))
            .env("VGPU_HOOK_STATE_DIR", self.state_dir())
            .env("VGPU_HOOK_LIBVIRT_RUN_DIR", self.dir.path().join("run"))
            .env_remove("LIBVIRT_DEFAULT_URI")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Runs vgpuctl; returns (stdout, stderr, exit code).
    fn run(&self, args: &[&str]) -> (String, String, i32) {
        let o = self.cmd().args(args).output().unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            o.status.code().unwrap_or(-1),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (out, err, code) = self.run(args);
        assert_eq!(code, 0, "vgpuctl {args:?} failed: {err}");
        out
    }
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// types

#[test]
fn types_table_lists_each_configured_gpu_with_generation_and_capacity() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    common::golden::check("types.txt", &h.ok(&["types"]));
}

#[test]
fn types_json_has_the_documented_shape() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    let out = h.ok(&["types", "--json"]);
    common::golden::check("types.json", &out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], 1);
    for g in v["gpus"].as_array().unwrap() {
        for key in ["gpu", "config_key", "generation", "parents", "vfs", "types"] {
            assert!(g.get(key).is_some(), "gpu without {key}: {g}");
        }
    }
}

#[test]
fn types_on_an_untouched_host_show_full_capacity() {
    let Some(h) = SimHost::bare() else { return };
    common::golden::check("types-empty-host.txt", &h.ok(&["types"]));
}

#[test]
fn types_without_a_config_exits_5_naming_the_file() {
    let Some(h) = SimHost::bare() else { return };
    fs::remove_file(h.dir.path().join("config.toml")).unwrap();
    let (_, err, code) = h.run(&["types"]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("config.toml") && err.contains("vgpuctl install"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

// ---------------------------------------------------------------------------------------------
// list

#[test]
fn list_table_shows_who_holds_each_device_and_since_when() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    common::golden::check("list.txt", &h.ok(&["list"]));
}

#[test]
fn list_json_has_the_documented_shape() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    let out = h.ok(&["list", "--json"]);
    common::golden::check("list.json", &out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let states: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    for s in ["running", "stale", "unowned"] {
        assert!(states.contains(&s), "no {s} device in {states:?}");
    }
}

#[test]
fn list_on_an_untouched_host_says_there_is_nothing() {
    let Some(h) = SimHost::bare() else { return };
    assert_eq!(h.ok(&["list"]), "no vGPU devices on the configured GPUs\n");
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["list", "--json"])).unwrap();
    assert_eq!(v["devices"].as_array().unwrap().len(), 0);
}

// ---------------------------------------------------------------------------------------------
// status

#[test]
fn status_table_shows_requests_against_holdings_and_problems() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    common::golden::check(
        "status.txt",
        &h.ok(&["status", "--xml", &fixture("vgpuctl-win11.xml")]),
    );
}

#[test]
fn status_json_has_the_documented_shape() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    let out = h.ok(&["status", "--json", "--xml", &fixture("vgpuctl-win11.xml")]);
    common::golden::check("status.json", &out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["running"], true);
    assert_eq!(v["devices"].as_array().unwrap().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// reconcile

#[test]
fn reconcile_dry_run_lists_leaks_and_changes_nothing() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    let before = fs::read(h.state_dir().join("owners.json")).unwrap();
    let out = h.ok(&["reconcile", "--dry-run"]);
    assert!(
        out.contains(&format!("would remove mdev {B}")) && out.contains("'gone'"),
        "{out}"
    );
    assert!(out.contains(&format!("would remove mdev {C}")), "{out}");
    assert!(
        out.contains("would reset vGPU type 2164 of VF 0000:41:00.4"),
        "{out}"
    );
    assert!(
        out.contains("'old'") && out.contains("the device is gone"),
        "{out}"
    );
    assert!(
        !out.contains(A),
        "a running domain's device is not a leak: {out}"
    );
    assert!(h.mdev_exists(B) && h.mdev_exists(C));
    assert_eq!(fs::read(h.state_dir().join("owners.json")).unwrap(), before);
}

#[test]
fn reconcile_frees_leaked_devices_and_keeps_what_running_domains_hold() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    let out = h.ok(&["reconcile"]);
    assert!(out.contains(&format!("removed mdev {B}")), "{out}");
    assert!(!h.mdev_exists(B) && !h.mdev_exists(C));
    assert!(h.mdev_exists(A));
    let t = fs::read_to_string(
        h.sim
            .root()
            .join("sys/bus/pci/devices/0000:41:00.4/nvidia/current_vgpu_type"),
    )
    .unwrap();
    assert_eq!(t.trim(), "0");
    let state = StateDir::new(&h.state_dir()).peek().unwrap();
    let names: Vec<&str> = state
        .records
        .iter()
        .map(|r| r.domain_name.as_str())
        .collect();
    assert_eq!(names, ["win11", "win11"], "{state:?}");
    assert_eq!(
        h.ok(&["reconcile"]),
        "nothing to do: every device on the configured GPUs is accounted for\n"
    );
}

#[test]
fn reconcile_never_removes_a_device_a_qemu_process_uses() {
    let Some(mut h) = SimHost::populated() else {
        return;
    };
    // A device of its own: the process table is shared with the tests running beside this one.
    const E: &str = "22222222-3333-4444-8555-666666666666";
    h.create_mdev("mtty", "mtty-1", E);
    let pid = h.fake_qemu(
        None,
        &[
            "-name",
            "guest=stray",
            "-device",
            &format!("vfio-pci,sysfsdev=/sys/bus/mdev/devices/{E}"),
        ],
    );
    let out = h.ok(&["reconcile"]);
    assert!(
        out.contains(&format!("left alone mdev {E}"))
            && out.contains(&format!("QEMU pid {pid} (domain 'stray')")),
        "{out}"
    );
    assert!(h.mdev_exists(E));
    assert!(!h.mdev_exists(B) && !h.mdev_exists(C));
}

// ---------------------------------------------------------------------------------------------
// doctor

#[test]
fn doctor_names_each_problem_with_its_fix_and_exits_1() {
    let Some(h) = SimHost::bare() else { return };
    let hooks = h.dir.path().join("hooks");
    let (out, _, code) = h.run(&[
        "doctor",
        "--connect",
        "test:///default",
        "--hooks-dir",
        hooks.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  device           0000:99:00.0: not present on this host"),
        "{out}"
    );
    assert!(
        out.contains("fix: check the address with lspci -D"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  hook") && out.contains("fix: vgpuctl install"),
        "{out}"
    );
    assert!(
        out.contains("ok    iommu") && out.contains("ok    modules"),
        "{out}"
    );
    assert!(out.contains("0000:05:00.0: no VFs enabled (of 4)"), "{out}");
    assert!(out.contains("ok    libvirt          libvirt "), "{out}");
}

#[test]
fn doctor_json_lists_findings_with_severity() {
    let Some(h) = SimHost::bare() else { return };
    let hooks = h.dir.path().join("hooks");
    let (out, _, _) = h.run(&[
        "doctor",
        "--json",
        "--connect",
        "test:///default",
        "--hooks-dir",
        hooks.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = v["findings"].as_array().unwrap();
    assert!(
        f.iter()
            .any(|x| x["check"] == "iommu" && x["severity"] == "ok"),
        "{out}"
    );
    assert!(
        f.iter().any(|x| x["check"] == "hook"
            && x["severity"] == "error"
            && x["fix"] == "vgpuctl install"),
        "{out}"
    );
}

#[test]
fn doctor_reports_missing_vfio_modules_with_modprobe() {
    let Some(h) = SimHost::bare() else { return };
    // The same host without modules.
    drop(h);
    let Some(sim) = common::sim::Sim::start(&HOST.replace(
        "modules = [\"vfio\", \"vfio_pci\", \"vfio_iommu_type1\", \"mdev\"]",
        "modules = [\"vfio\"]",
    )) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config.toml"), CONFIG).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .args(["doctor", "--connect", "test:///default", "--hooks-dir"])
        .arg(dir.path().join("hooks"))
        .env("VGPU_HOOK_SYSFS_ROOT", sim.root())
        .env("VGPU_HOOK_CONFIG", dir.path().join("config.toml"))
        .env("VGPU_HOOK_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("FAIL  modules")
            && out.contains("not loaded: vfio_pci, vfio_iommu_type1, mdev"),
        "{out}"
    );
    assert!(
        out.contains("fix: modprobe -a vfio_pci vfio_iommu_type1 mdev"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// install

#[test]
fn install_writes_a_config_skeleton_listing_what_the_host_offers() {
    let Some(h) = SimHost::bare() else { return };
    let hooks = h.dir.path().join("hooks");
    let config = h.dir.path().join("etc/vgpu-hook/config.toml");
    let out = h
        .cmd()
        .env("VGPU_HOOK_CONFIG", &config)
        .args([
            "install",
            "--no-reload",
            "--no-units",
            "--hooks-dir",
            hooks.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&config).unwrap();
    common::golden::check("config-skeleton.toml", &text);
    let parsed = vgpu_hook::model::config::Config::parse(&text, &config).unwrap();
    assert!(
        parsed.nvidia_vgpu_pfs.is_empty(),
        "the skeleton hands out nothing until edited"
    );
    let uncommented: String = text
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .filter(|r| r.contains(" = ["))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = vgpu_hook::model::config::Config::parse(&uncommented, &config).unwrap();
    assert_eq!(c.nvidia_vgpu_pfs.len(), 2, "{uncommented}");
    assert_eq!(c.amd_vgpu_pfs.len(), 1);
    assert_eq!(c.mdev_parents.len(), 1);
}

#[test]
fn install_copies_the_hook_found_next_to_vgpuctl_executable_0755() {
    use std::os::unix::fs::PermissionsExt;
    let Some(h) = SimHost::bare() else { return };
    let hooks = h.dir.path().join("hooks");
    let out = h.ok(&[
        "install",
        "--no-reload",
        "--no-units",
        "--hooks-dir",
        hooks.to_str().unwrap(),
    ]);
    let target = hooks.join("qemu.d/50-vgpu-hook");
    assert!(
        out.contains(&format!("installed hook {}", target.display())),
        "{out}"
    );
    assert_eq!(
        fs::read(&target).unwrap(),
        fs::read(env!("CARGO_BIN_EXE_vgpu-hook")).unwrap()
    );
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(out.contains("kept the existing config"), "{out}");
    let again = h.ok(&[
        "install",
        "--no-reload",
        "--no-units",
        "--hooks-dir",
        hooks.to_str().unwrap(),
    ]);
    assert!(
        again.contains("already installed and up to date"),
        "{again}"
    );
}

// ---------------------------------------------------------------------------------------------
// attach --xml checks against the host

fn plain_domain(dir: &Path) -> PathBuf {
    let p = dir.join("plain.xml");
    fs::write(
        &p,
        "<domain type='kvm'>\n  <name>plain</name>\n  <uuid>5b1e7c39-2a6f-4d3b-8e9c-1f2a3b4c5d6e</uuid>\n  <devices>\n  </devices>\n</domain>\n",
    )
    .unwrap();
    p
}

#[test]
fn attach_refuses_a_profile_no_configured_gpu_offers_and_lists_what_exists() {
    let Some(h) = SimHost::bare() else { return };
    let xml = plain_domain(h.dir.path());
    let (out, err, code) = h.run(&[
        "attach",
        "--xml",
        xml.to_str().unwrap(),
        "--profile",
        "P40-3Q",
    ]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no configured parent offers 'P40-3Q'"),
        "{err}"
    );
    assert!(
        err.contains("GRID P40-2Q (nvidia-47)") && err.contains("Dual port serial (mtty-2)"),
        "{err}"
    );
    assert!(err.contains("0000:99:00.0 (missing)"), "{err}");
}

#[test]
fn attach_accepts_a_short_profile_name_and_records_it_as_typed() {
    let Some(h) = SimHost::bare() else { return };
    let xml = plain_domain(h.dir.path());
    let out = h.ok(&[
        "attach",
        "--xml",
        xml.to_str().unwrap(),
        "--profile",
        "p40-2q",
        "--parent",
        "82:00.0",
    ]);
    assert!(
        out.contains("profile='p40-2q' parent='0000:82:00.0'/>"),
        "{out}"
    );
}

#[test]
fn attach_refuses_a_parent_that_is_not_configured() {
    let Some(h) = SimHost::bare() else { return };
    let xml = plain_domain(h.dir.path());
    let (_, err, code) = h.run(&[
        "attach",
        "--xml",
        xml.to_str().unwrap(),
        "--type",
        "mtty-2",
        "--parent",
        "0000:83:00.0",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("--parent 0000:83:00.0 is not a configured mdev parent")
            && err.contains("mtty"),
        "{err}"
    );
}

#[test]
fn attach_vf_picks_a_vf_that_no_running_domain_holds() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    let xml = plain_domain(h.dir.path());
    let out = h.ok(&[
        "attach",
        "--xml",
        xml.to_str().unwrap(),
        "--vf",
        "--pf",
        "04:00.0",
    ]);
    assert!(
        out.contains("<vgpu:vf address='0000:04:00.5'/>"),
        "04:00.4 is win11's: {out}"
    );
    assert!(
        out.contains("managed='yes'") && out.contains("function='0x5'"),
        "{out}"
    );
}

#[test]
fn attach_vf_with_a_profile_takes_a_kernel_6_8_nvidia_vf_unmanaged() {
    let Some(h) = SimHost::bare() else { return };
    let xml = plain_domain(h.dir.path());
    let out = h.ok(&[
        "attach",
        "--xml",
        xml.to_str().unwrap(),
        "--vf",
        "--profile",
        "L40S-4Q",
    ]);
    assert!(
        out.contains("<vgpu:vf address='0000:41:00.4' profile='L40S-4Q'/>"),
        "{out}"
    );
    assert!(out.contains("managed='no'"), "{out}");
}

#[test]
fn attach_profile_of_a_kernel_6_8_gpu_becomes_a_vf_request() {
    let Some(h) = SimHost::bare() else { return };
    let xml = plain_domain(h.dir.path());
    let o = h
        .cmd()
        .args([
            "attach",
            "--xml",
            xml.to_str().unwrap(),
            "--profile",
            "L40S-1B",
        ])
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("<vgpu:vf address='0000:41:00.4' profile='L40S-1B'/>"),
        "{out}"
    );
    assert!(err.contains("attaching VFs"), "{err}");
}

#[test]
fn attach_vf_of_a_pf_without_vfs_picks_one_its_config_space_promises() {
    let Some(h) = SimHost::bare() else { return };
    let xml = plain_domain(h.dir.path());
    let (out, err, code) = h.run(&[
        "attach",
        "--xml",
        xml.to_str().unwrap(),
        "--vf",
        "--pf",
        "05:00.0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("<vgpu:vf address='0000:05:00.4'/>"), "{out}");
    assert!(
        err.contains("the hook enables them when the domain starts"),
        "{err}"
    );
}

#[test]
fn attach_more_vfs_than_free_says_who_uses_them() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    let xml = plain_domain(h.dir.path());
    let (_, err, code) = h.run(&[
        "attach",
        "--xml",
        xml.to_str().unwrap(),
        "--vf",
        "--pf",
        "04:00.0",
        "--count",
        "2",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("1 free VF found, 2 asked") && err.contains("0000:04:00.4 by 'win11'"),
        "{err}"
    );
}

#[test]
fn install_refuses_an_executable_that_does_not_behave_like_the_hook() {
    let Some(h) = SimHost::bare() else { return };
    let hooks = h.dir.path().join("hooks");
    let (_, err, code) = h.run(&[
        "install",
        "--no-reload",
        "--no-units",
        "--hooks-dir",
        hooks.to_str().unwrap(),
        "--hook-binary",
        env!("CARGO_BIN_EXE_vgpuctl"),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not behave like vgpu-hook"), "{err}");
    assert!(!hooks.join("qemu.d/50-vgpu-hook").exists());
}

// ---------------------------------------------------------------------------------------------
// metrics

#[test]
fn metrics_show_capacity_holders_and_counters_in_prometheus_format() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    let counters = h.state_dir().join("counters");
    fs::create_dir_all(&counters).unwrap();
    fs::write(counters.join("refused.no_room"), "3\n").unwrap();
    fs::write(counters.join("release_failed"), "1\n").unwrap();
    fs::write(counters.join("last_reconcile"), "1700000100\n").unwrap();
    common::golden::check("metrics.prom", &h.ok(&["metrics"]));
}

#[test]
fn metrics_output_file_is_replaced_whole_and_equals_stdout() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    let file = h.dir.path().join("textfile/vgpu_hook.prom");
    let printed = h.ok(&["metrics"]);
    assert_eq!(h.ok(&["metrics", "--output", file.to_str().unwrap()]), "");
    assert_eq!(fs::read_to_string(&file).unwrap(), printed);
    let names: Vec<_> = fs::read_dir(file.parent().unwrap()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temp file left behind");
}

#[test]
fn reconcile_records_when_it_ran_for_metrics() {
    let Some(h) = SimHost::populated() else {
        return;
    };
    h.ok(&["reconcile", "--dry-run"]);
    assert!(!h.state_dir().join("counters/last_reconcile").exists());
    h.run(&["reconcile"]);
    let at: u64 = fs::read_to_string(h.state_dir().join("counters/last_reconcile"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let out = h.ok(&["metrics"]);
    assert!(
        out.contains(&format!(
            "vgpu_hook_last_reconcile_timestamp_seconds {at}\n"
        )),
        "{out}"
    );
}
