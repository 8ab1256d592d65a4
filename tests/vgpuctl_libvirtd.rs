//! vgpuctl against a real libvirt daemon (`qemu:///system`, TCG domains without disks): attach
//! and detach round trips seen through `virsh`, VF choice across defined domains, live attach
//! rollback, and `vgpuctl install` making the running daemon call the hook at `virsh start`.
//!
//! Needs root and libvirtd (tests/common/libvirtd.rs starts it when it is installed); without
//! them each test says why and returns, or panics when CI=true.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::libvirtd::{virsh, virsh_ok, HostLock, Libvirtd, Restore, TestDomain, URI};

const NS: &str = "urn:vgpu-hook:domain:1";

/// vgpuctl with the environment pointed at `dir` (config, state, runtime dir) unless `system`.
fn vgpuctl(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vgpuctl"));
    c.args(args)
        .env_remove("LIBVIRT_DEFAULT_URI")
        .env_remove("VGPU_HOOK_SYSFS_ROOT")
        .env_remove("VGPU_HOOK_CONFIG")
        .env_remove("VGPU_HOOK_STATE_DIR")
        .env_remove("VGPU_HOOK_LIBVIRT_RUN_DIR")
        .stdin(Stdio::null());
    if let Some(d) = dir {
        c.env("VGPU_HOOK_CONFIG", d.join("config.toml"))
            .env("VGPU_HOOK_STATE_DIR", d.join("state"))
            .env("VGPU_HOOK_LIBVIRT_RUN_DIR", "/run/libvirt/qemu");
        if d.join("sysroot").exists() {
            c.env("VGPU_HOOK_SYSFS_ROOT", d.join("sysroot"));
        }
    }
    c.output().expect("run vgpuctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "vgpuctl failed ({:?}): {}",
        o.status.code(),
        text(&o.stderr)
    );
    text(&o.stdout)
}

#[test]
fn attach_then_detach_through_libvirtd_leaves_the_definition_as_it_was() {
    let Some(_d) = Libvirtd::ensure() else { return };
    let t = tempfile::tempdir().unwrap();
    let dom = TestDomain::define("vgpuctl-rt", "", "");
    let before = dom.inactive_xml();

    let out = ok(&vgpuctl(
        Some(t.path()),
        &[
            "attach",
            &dom.name,
            "--type",
            "mtty-2",
            "--force",
            "--no-agent-channel",
        ],
    ));
    let uuid = out.split_whitespace().nth(2).unwrap().to_string();
    let meta = virsh_ok(&["metadata", &dom.name, NS]);
    assert!(
        meta.contains(&format!("mdev uuid=\"{uuid}\"")) && meta.contains("type=\"mtty-2\""),
        "virsh metadata: {meta}"
    );
    let xml = dom.inactive_xml();
    assert!(xml.contains("type='mdev'"), "{xml}");
    assert!(xml.contains(&format!("<address uuid='{uuid}'/>")), "{xml}");

    let out = ok(&vgpuctl(Some(t.path()), &["detach", &dom.name, "--all"]));
    assert!(
        out.contains(&format!("removed mdev {uuid} and its <hostdev>")),
        "{out}"
    );
    assert_eq!(dom.inactive_xml(), before);
    assert!(!virsh(&["metadata", &dom.name, NS]).status.success());
}

#[test]
fn attach_keeps_other_applications_metadata() {
    let Some(_d) = Libvirtd::ensure() else { return };
    let t = tempfile::tempdir().unwrap();
    let dom = TestDomain::define(
        "vgpuctl-meta",
        "<app:info xmlns:app='urn:example:app:1'>keep &amp; me</app:info>",
        "",
    );
    ok(&vgpuctl(
        Some(t.path()),
        &["attach", &dom.name, "--profile", "GRID P40-2Q", "--force"],
    ));
    let app = virsh_ok(&["metadata", &dom.name, "urn:example:app:1"]);
    assert!(app.contains("keep &amp; me"), "{app}");
    assert!(virsh_ok(&["metadata", &dom.name, NS]).contains("profile=\"GRID P40-2Q\""));
}

#[test]
fn unknown_domain_is_refused_with_the_closest_defined_names() {
    let Some(_d) = Libvirtd::ensure() else { return };
    let t = tempfile::tempdir().unwrap();
    let dom = TestDomain::define("vgpuctl-close", "", "");
    let typo = format!("{}x", dom.name);
    let o = vgpuctl(
        Some(t.path()),
        &["attach", &typo, "--type", "mtty-2", "--force"],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("domain '{typo}' not found at {URI}"))
            && err.contains(&format!("'{}'", dom.name)),
        "{err}"
    );
}

const SRIOV_HOST: &str = r#"
modules = ["vfio", "vfio_pci", "vfio_iommu_type1", "mdev"]

[[gpu]]
address = "0000:05:00.0"
kind = "sriov"
numvfs = 2
totalvfs = 4

[[gpu]]
kind = "mdev"
name = "mtty"
types = [{ id = "mtty-2", name = "Dual port serial", max_instances = 12 }]
"#;

/// A temp dir whose `sysroot` is a mounted simulated host, with a config listing it.
fn sim_dir(sim: &common::sim::Sim) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(sim.root(), t.path().join("sysroot")).unwrap();
    fs::write(
        t.path().join("config.toml"),
        "sriov_pfs = [\"05:00.0\"]\nmdev_parents = [\"mtty\"]\nparent_wait_secs = 0\n",
    )
    .unwrap();
    t
}

#[test]
fn attach_vf_picks_a_vf_no_other_defined_domain_names() {
    let Some(_d) = Libvirtd::ensure() else { return };
    let Some(sim) = common::sim::Sim::start(SRIOV_HOST) else {
        return;
    };
    let t = sim_dir(&sim);
    let a = TestDomain::define("vgpuctl-vfa", "", "");
    let b = TestDomain::define("vgpuctl-vfb", "", "");
    let c = TestDomain::define("vgpuctl-vfc", "", "");
    let out_a = ok(&vgpuctl(
        Some(t.path()),
        &["attach", &a.name, "--vf", "--pf", "05:00.0"],
    ));
    let out_b = ok(&vgpuctl(Some(t.path()), &["attach", &b.name, "--vf"]));
    assert!(out_a.contains("VF 0000:05:00.4 (managed='yes')"), "{out_a}");
    assert!(out_b.contains("VF 0000:05:00.5"), "{out_b}");
    assert!(
        b.inactive_xml()
            .contains("<address domain='0x0000' bus='0x05' slot='0x00' function='0x5'/>"),
        "{}",
        b.inactive_xml()
    );
    let o = vgpuctl(Some(t.path()), &["attach", &c.name, "--vf"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("0000:05:00.4 by '{}'", a.name))
            && err.contains(&format!("0000:05:00.5 by '{}'", b.name)),
        "{err}"
    );
}

#[test]
fn live_attach_that_libvirt_cannot_plug_frees_the_device_it_created() {
    let Some(_d) = Libvirtd::ensure() else { return };
    let Some(sim) = common::sim::Sim::start(SRIOV_HOST) else {
        return;
    };
    let t = sim_dir(&sim);
    let dom = TestDomain::define("vgpuctl-live", "", "");
    virsh_ok(&["start", "--paused", &dom.name]);
    // The mdev is made on the simulated host, so the real libvirt cannot find it to plug it.
    let o = vgpuctl(
        Some(t.path()),
        &["attach", &dom.name, "--type", "mtty-2", "--live"],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("hot-plug into '{}'", dom.name)),
        "{err}"
    );
    let left: Vec<_> = fs::read_dir(sim.root().join("sys/bus/mdev/devices"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "mdevs left behind: {left:?}");
    let state = fs::read_to_string(t.path().join("state/owners.json")).unwrap_or_default();
    assert!(!state.contains(&dom.name), "record left behind: {state}");
    assert!(!dom.inactive_xml().contains("type='mdev'"));
}

#[test]
fn live_attach_to_a_shut_off_domain_is_refused() {
    let Some(_d) = Libvirtd::ensure() else { return };
    let t = tempfile::tempdir().unwrap();
    let dom = TestDomain::define("vgpuctl-off", "", "");
    let o = vgpuctl(
        Some(t.path()),
        &["attach", &dom.name, "--type", "mtty-2", "--force", "--live"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("is not running; drop --live"));
}

/// Starts a domain paused; `Err(virsh's stderr)` when libvirt refuses.
fn start(dom: &TestDomain) -> Result<(), String> {
    let o = virsh(&["start", "--paused", &dom.name]);
    if o.status.success() {
        Ok(())
    } else {
        Err(text(&o.stderr))
    }
}

#[test]
fn install_makes_the_running_daemon_call_the_hook_at_start() {
    let Some(_d) = Libvirtd::ensure() else { return };
    let _lock = HostLock::take();
    let hook = Path::new("/etc/libvirt/hooks/qemu.d/50-vgpu-hook");
    let config = Path::new("/etc/vgpu-hook/config.toml");
    let _keep_hook = Restore::new(hook);
    let _keep_config = Restore::new(config);
    let _ = fs::remove_file(config);
    let _ = fs::remove_file(hook);
    let pid_before = fs::read_to_string("/run/libvirtd.pid").unwrap_or_default();

    let out = ok(&vgpuctl(None, &["install"]));
    assert!(
        out.contains(&format!("installed hook {}", hook.display())),
        "{out}"
    );
    assert!(
        out.contains("wrote config skeleton /etc/vgpu-hook/config.toml"),
        "{out}"
    );
    assert!(out.contains("reloaded libvirtd (pid"), "{out}");
    assert_eq!(
        fs::read(hook).unwrap(),
        fs::read(env!("CARGO_BIN_EXE_vgpu-hook")).unwrap()
    );
    assert_eq!(
        fs::read_to_string("/run/libvirtd.pid").unwrap_or_default(),
        pid_before,
        "reloaded in place, not restarted"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        virsh(&["version"]).status.success(),
        "libvirtd answers after the reload"
    );

    // A domain that asks for nothing starts as before.
    let plain = TestDomain::define("vgpuctl-plain", "", "");
    start(&plain)
        .unwrap_or_else(|e| panic!("plain domain did not start with the hook installed: {e}"));
    virsh_ok(&["destroy", &plain.name]);

    // A domain whose request cannot be met is refused with the hook's line.
    fs::write(
        config,
        "mdev_parents = [\"no-such-parent\"]\nparent_wait_secs = 0\n",
    )
    .unwrap();
    let t = tempfile::tempdir().unwrap();
    let asks = TestDomain::define("vgpuctl-asks", "", "");
    ok(&vgpuctl(
        Some(t.path()),
        &["attach", &asks.name, "--type", "mtty-2", "--force"],
    ));
    let err = start(&asks).expect_err("a start whose vGPU cannot be made must fail");
    assert!(
        err.contains("vgpu-hook: "),
        "virsh did not show the hook's reason: {err}"
    );
    assert!(err.contains("no-such-parent"), "{err}");
    assert_eq!(asks.state(), "shut off");

    // doctor sees the hook installed and the daemon having seen it.
    let o = vgpuctl(None, &["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let finding = |check: &str| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["check"] == check)
            .map(|f| f["severity"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(finding("hook"), ["ok"], "{v}");
    assert_eq!(finding("daemon"), ["ok"], "{v}");
    assert_eq!(finding("confinement"), ["ok"], "{v}");
    assert_eq!(finding("libvirt"), ["ok"], "{v}");

    let out = ok(&vgpuctl(None, &["uninstall"]));
    assert!(
        out.contains(&format!("removed hook {}", hook.display())),
        "{out}"
    );
    assert!(out.contains("kept config"), "{out}");
    assert!(!hook.exists());
}

/// The first mdev UUID a definition's hostdevs name.
fn first_mdev_uuid(xml: &str) -> String {
    xml.split("<address uuid='")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("an mdev hostdev")
        .to_string()
}

/// A simulated host and a domain given one mtty-2 vGPU by `vgpuctl attach` (None: no daemon or
/// simulator here, said by the helpers).
fn with_one_vgpu(prefix: &str) -> Option<(common::sim::Sim, tempfile::TempDir, TestDomain)> {
    Libvirtd::ensure()?;
    let sim = common::sim::Sim::start(SRIOV_HOST)?;
    let t = sim_dir(&sim);
    let dom = TestDomain::define(prefix, "", "");
    ok(&vgpuctl(
        Some(t.path()),
        &["attach", &dom.name, "--type", "mtty-2"],
    ));
    Some((sim, t, dom))
}

#[test]
fn resync_gives_a_uuid_taken_here_a_fresh_one_and_changes_nothing_else() {
    let Some((sim, t, dom)) = with_one_vgpu("vgpuctl-resync") else {
        return;
    };
    let before = dom.inactive_xml();
    let old = first_mdev_uuid(&before);
    let create = sim.type_dir("mtty", "Dual port serial").join("create");
    fs::write(create, &old).unwrap();
    let out = ok(&vgpuctl(Some(t.path()), &["resync", &dom.name]));
    let after = dom.inactive_xml();
    let new = first_mdev_uuid(&after);
    assert_ne!(new, old);
    assert!(
        out.contains(&format!("mdev {old} becomes mdev {new}")),
        "{out}"
    );
    assert_eq!(after, before.replace(&old, &new));
}

#[test]
fn resync_leaves_a_definition_that_fits_as_it_is() {
    let Some((_sim, t, dom)) = with_one_vgpu("vgpuctl-resync-ok") else {
        return;
    };
    let before = dom.inactive_xml();
    let out = ok(&vgpuctl(
        Some(t.path()),
        &["resync", &dom.name, "--dry-run"],
    ));
    assert!(out.contains("fit this host as they are"), "{out}");
    assert_eq!(dom.inactive_xml(), before);
}
