//! vgpuctl against libvirt's in-process test driver (`test:///default`): definitions are read,
//! rewritten and defined back through the real `virt` bindings, without a daemon. The test
//! driver's domains are shared by every connection in the process, and some tests look at all
//! of them (VF choice, close names), so the tests take turns ([`TURN`]) and each undefines the
//! domains it defined.

use std::cell::RefCell;
use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use clap::Parser;
use vgpu_hook::host::state::StateDir;
use vgpu_hook::host::sysfs::Sysfs;
use vgpu_hook::host::Host;
use virt::connect::Connect;
use virt::sys;

use crate::cli::Cli;
use crate::commands;
use crate::error::{CtlError, Exit};

const URI: &str = "test:///default";
static SEQ: AtomicU32 = AtomicU32::new(0);
/// One test at a time uses the shared test driver.
static TURN: Mutex<()> = Mutex::new(());

struct Fixture {
    conn: Connect,
    dir: tempfile::TempDir,
    defined: RefCell<Vec<String>>,
    _turn: MutexGuard<'static, ()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for name in self.defined.borrow().iter() {
            if let Ok(d) = self.conn.lookup_domain_by_name(name) {
                let _ = d.undefine();
            }
        }
    }
}

impl Fixture {
    fn new() -> Fixture {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        virt::error::clear_error_callback();
        Fixture {
            conn: Connect::open(Some(URI)).expect("the test driver opens"),
            dir: tempfile::tempdir().unwrap(),
            defined: RefCell::new(Vec::new()),
            _turn: turn,
        }
    }

    fn host(&self) -> Host {
        Host {
            sysfs: Sysfs::new(&self.dir.path().join("root")),
            procfs: vgpu_hook::host::procfs::Procfs::system(),
            state: StateDir::new(&self.dir.path().join("state")),
            libvirt_run_dir: self.dir.path().join("run"),
            config_path: self.dir.path().join("config.toml"),
        }
    }

    fn define(&self, devices: &str) -> String {
        let name = format!("vgpuctl-unit-{}", SEQ.fetch_add(1, Ordering::SeqCst));
        let xml = format!(
            "<domain type='test'>\n  <name>{name}</name>\n  <memory unit='KiB'>65536</memory>\n  <os>\n    <type>hvm</type>\n  </os>\n  <devices>\n{devices}  </devices>\n</domain>\n"
        );
        self.conn.define_domain_xml(&xml).expect("define");
        self.defined.borrow_mut().push(name.clone());
        name
    }

    fn inactive(&self, name: &str) -> String {
        self.conn
            .lookup_domain_by_name(name)
            .unwrap()
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> Result<(ExitCode, String), CtlError> {
        let mut argv = vec!["vgpuctl", "--connect", URI];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("arguments parse");
        let mut out = Vec::new();
        let code = commands::run(&cli, &self.host(), &mut out)?;
        Ok((code, String::from_utf8(out).unwrap()))
    }

    /// A PF with `n` VFs in the fixture sysfs, listed in the config as `sriov_pfs`.
    fn sriov_pf(&self, n: u8) {
        let devs = self.dir.path().join("root/sys/bus/pci/devices");
        let pf = devs.join("0000:05:00.0");
        fs::create_dir_all(&pf).unwrap();
        fs::write(pf.join("sriov_totalvfs"), format!("{n}\n")).unwrap();
        fs::write(pf.join("sriov_numvfs"), format!("{n}\n")).unwrap();
        for i in 0..n {
            let vf = format!("0000:05:00.{}", i + 1);
            fs::create_dir_all(devs.join(&vf)).unwrap();
            std::os::unix::fs::symlink(format!("../{vf}"), pf.join(format!("virtfn{i}"))).unwrap();
            std::os::unix::fs::symlink("../0000:05:00.0", devs.join(&vf).join("physfn")).unwrap();
        }
        fs::write(
            self.dir.path().join("config.toml"),
            "sriov_pfs = [\"05:00.0\"]\n",
        )
        .unwrap();
    }
}

fn metadata(f: &Fixture, name: &str) -> Option<String> {
    f.conn
        .lookup_domain_by_name(name)
        .unwrap()
        .metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(vgpu_hook::model::domain::NAMESPACE),
            sys::VIR_DOMAIN_AFFECT_CONFIG,
        )
        .ok()
}

#[test]
fn attach_adds_the_hostdev_and_metadata_that_libvirt_reports_back() {
    let f = Fixture::new();
    let name = f.define("");
    let (code, out) = f
        .run(&["attach", &name, "--type", "mtty-2", "--force"])
        .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    let uuid = out
        .split_whitespace()
        .nth(2)
        .expect("added mdev UUID ...")
        .to_string();
    assert!(
        out.starts_with(&format!(
            "added mdev {uuid} (type mtty-2) to domain '{name}'"
        )),
        "{out}"
    );
    let meta = metadata(&f, &name).expect("our metadata element");
    assert!(
        meta.contains(&format!("uuid=\"{uuid}\"")) && meta.contains("type=\"mtty-2\""),
        "{meta}"
    );
    let xml = f.inactive(&name);
    assert!(xml.contains(&format!("<address uuid='{uuid}'/>")), "{xml}");
}

#[test]
fn detach_all_gives_back_the_definition_libvirt_had() {
    let f = Fixture::new();
    let name = f.define("");
    let before = f.inactive(&name);
    f.run(&[
        "attach",
        &name,
        "--profile",
        "GRID P40-2Q",
        "--count",
        "2",
        "--force",
        "--no-agent-channel",
    ])
    .unwrap();
    assert_ne!(f.inactive(&name), before);
    let (_, out) = f.run(&["detach", &name, "--all"]).unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(f.inactive(&name), before);
    assert!(metadata(&f, &name).is_none());
}

#[test]
fn attach_adds_the_guest_agent_channel_once_and_the_last_detach_takes_it_out() {
    let f = Fixture::new();
    let name = f.define("");
    let agent = "name='org.qemu.guest_agent.0'";
    f.run(&["attach", &name, "--type", "mtty-2", "--force"])
        .unwrap();
    assert_eq!(f.inactive(&name).matches(agent).count(), 1);
    f.run(&["attach", &name, "--type", "mtty-2", "--force"])
        .unwrap();
    assert_eq!(f.inactive(&name).matches(agent).count(), 1, "added once");
    let (_, out) = f.run(&["detach", &name, "--all"]).unwrap();
    assert_eq!(f.inactive(&name).matches(agent).count(), 0);
    assert!(
        out.contains("removed the QEMU guest agent channel"),
        "{out}"
    );
}

#[test]
fn detach_keeps_the_guest_agent_channel_when_told_to() {
    let f = Fixture::new();
    let name = f.define("");
    let agent = "name='org.qemu.guest_agent.0'";
    f.run(&["attach", &name, "--type", "mtty-2", "--force"])
        .unwrap();
    let (_, out) = f
        .run(&["detach", &name, "--all", "--keep-agent-channel"])
        .unwrap();
    assert_eq!(f.inactive(&name).matches(agent).count(), 1);
    assert!(!out.contains("agent channel"), "{out}");
}

#[test]
fn detach_leaves_a_guest_agent_channel_the_definition_had() {
    let f = Fixture::new();
    let channel =
        "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>";
    let name = f.define(channel);
    f.run(&["attach", &name, "--type", "mtty-2", "--force"])
        .unwrap();
    f.run(&["detach", &name, "--all"]).unwrap();
    assert_eq!(
        f.inactive(&name)
            .matches("name='org.qemu.guest_agent.0'")
            .count(),
        1
    );
}

#[test]
fn unknown_domain_is_not_found_with_the_closest_names() {
    let f = Fixture::new();
    let name = f.define("");
    let typo = &name[..name.len() - 1];
    let e = f.run(&["status", &format!("{typo}x")]).unwrap_err();
    assert_eq!(e.exit(), Exit::NotFound);
    assert!(
        e.to_string().contains(&format!("'{name}'")) && e.to_string().contains("did you mean"),
        "{}",
        e
    );
}

#[test]
fn attach_vf_skips_vfs_that_other_defined_domains_use() {
    let f = Fixture::new();
    f.sriov_pf(3);
    let other = f.define(
        "    <hostdev mode='subsystem' type='pci' managed='yes'>\n      <source>\n        <address domain='0x0000' bus='0x05' slot='0x00' function='0x1'/>\n      </source>\n    </hostdev>\n",
    );
    let name = f.define("");
    let (_, out) = f.run(&["attach", &name, "--vf", "--count", "2"]).unwrap();
    assert!(
        out.contains("VF 0000:05:00.2") && out.contains("VF 0000:05:00.3"),
        "{out}"
    );
    assert!(!out.contains("0000:05:00.1"), "{other} uses 05:00.1: {out}");
    let e = f.run(&["attach", &f.define(""), "--vf"]).unwrap_err();
    assert_eq!(e.exit(), Exit::Failed);
    assert!(
        e.to_string()
            .contains(&format!("0000:05:00.1 by '{other}'")),
        "{}",
        e
    );
}

#[test]
fn detach_of_one_device_leaves_the_others() {
    let f = Fixture::new();
    f.sriov_pf(2);
    let name = f.define("");
    f.run(&["attach", &name, "--vf", "--count", "2"]).unwrap();
    let (_, out) = f.run(&["detach", &name, "--address", "05:00.1"]).unwrap();
    assert!(
        out.contains("removed VF 0000:05:00.1 and its <hostdev>"),
        "{out}"
    );
    let xml = f.inactive(&name);
    assert!(
        xml.contains("function='0x2'") && !xml.contains("function='0x1'"),
        "{xml}"
    );
    let e = f
        .run(&["detach", &name, "--address", "05:00.1"])
        .unwrap_err();
    assert_eq!(e.exit(), Exit::NotFound);
}

#[test]
fn live_attach_to_a_domain_that_is_not_running_is_refused() {
    let f = Fixture::new();
    let name = f.define("");
    let e = f
        .run(&["attach", &name, "--type", "mtty-2", "--force", "--live"])
        .unwrap_err();
    assert_eq!(e.exit(), Exit::Failed);
    assert!(
        e.to_string().contains("is not running; drop --live"),
        "{}",
        e
    );
}

#[test]
fn status_reads_the_definition_through_libvirt() {
    let f = Fixture::new();
    let name = f.define("");
    f.run(&["attach", &name, "--type", "mtty-2", "--force"])
        .unwrap();
    let (_, out) = f.run(&["status", &name, "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["domain"], name.as_str());
    assert_eq!(v["running"], false);
    assert_eq!(v["devices"][0]["type"], "mtty-2");
    assert_eq!(v["devices"][0]["hostdev"], true);
}

#[test]
fn attach_without_config_asks_for_one_or_force() {
    let f = Fixture::new();
    let name = f.define("");
    let e = f.run(&["attach", &name, "--type", "mtty-2"]).unwrap_err();
    assert_eq!(e.exit(), Exit::Config);
    assert!(e.to_string().contains("--force"), "{e}");
    assert!(!Path::new(&f.dir.path().join("state")).exists());
}
