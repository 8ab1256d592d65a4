//! A start that failed on an NVIDIA vGPU is explained with what NVIDIA's vGPU manager said
//! against that vGPU: the hook quotes it at `release end` (libvirt 10.5+ says the start failed)
//! and `vgpuctl status` shows it among the domain's problems. The journal is the stand-in
//! `tests/fixtures/journalctl`, fed entries in the shape real hosts log them.

mod common;

use std::path::{Path, PathBuf};

use common::hook::*;
use common::sim::{Sim, TWO_P40};
use vgpu_hook::host::procfs::Procfs;
use vgpu_hook::host::state::StateDir;
use vgpu_hook::host::sysfs::Sysfs;
use vgpu_hook::host::Host;
use vgpu_hook::model::domain::Domain;
use vgpu_hook::model::names::MdevUuid;

const STAND_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/journalctl");

/// A P40 host whose config reads the journal through the stand-in, installed in the host's dir.
fn host_with_journal() -> Option<(Sim, TestHost, PathBuf)> {
    let sim = Sim::start(TWO_P40)?;
    let h = TestHost::new(sim.root(), "");
    let journalctl = h.dir.path().join("journalctl");
    std::fs::copy(STAND_IN, &journalctl).unwrap();
    let config = format!(
        "nvidia_vgpu_pfs = [\"82:00.0\"]\njournalctl = \"{}\"\n{FAST_TIMING}",
        journalctl.display()
    );
    std::fs::write(&h.config, config).unwrap();
    Some((sim, h, journalctl))
}

/// The manager's journal: the per-vGPU process announcing `uuid` and failing, and another
/// vGPU's process failing too (as NVIDIA/nvidia-installer#15 shows the lines).
fn manager_logged_a_failure(journalctl: &Path, uuid: &str) {
    let entry = |pid: u32, m: &str| {
        serde_json::json!({"_PID": pid.to_string(), "SYSLOG_IDENTIFIER": "nvidia-vgpu-mgr", "MESSAGE": m})
            .to_string()
    };
    let lines = [
        entry(8626, &format!("notice: vmiop_env_log: (0x0): Received start call from nvidia-vgpu-vfio module: mdev uuid {uuid} GPU PCI id 00:82:00.0 config params vgpu_type_id=47")),
        entry(8626, "notice: vmiop_env_log: (0x0): pluginconfig: vgpu_type_id=47"),
        entry(8626, "error: vmiop_log: (0x0): vGPU is supported only on VGX capable boards"),
        entry(9100, "error: vmiop_log: (0x0): another vGPU's failure"),
    ];
    std::fs::write(
        journalctl.with_file_name("journal.json"),
        lines.join("\n") + "\n",
    )
    .unwrap();
}

/// Domain `a` with vGPU 1, prepared; then the manager fails a start of vGPU `failed`.
fn prepared_then_failed(h: &TestHost, journalctl: &Path, failed: u32) -> (DomainXml, Domain) {
    let vm = mdev_domain("a", &[(1, "profile=\"P40-2Q\"")]);
    assert_ok(&h.prepare(&vm));
    manager_logged_a_failure(journalctl, &mdev_uuid(failed));
    let dom = Domain::parse(&vm.text).unwrap();
    (vm, dom)
}

fn host(h: &TestHost) -> Host {
    Host {
        sysfs: Sysfs::new(&h.sysfs_root),
        procfs: Procfs::system(),
        state: StateDir::new(&h.state_dir()),
        libvirt_run_dir: h.run_dir(),
        config_path: h.config.clone(),
    }
}

#[test]
fn a_failed_start_is_explained_by_what_the_manager_said_about_its_vgpu() {
    let Some((_sim, h, journalctl)) = host_with_journal() else {
        return;
    };
    let (vm, dom) = prepared_then_failed(&h, &journalctl, 1);
    let quotes = vgpu_hook::hook::failed_start_quotes(&host(&h), &journalctl, &dom);
    assert_eq!(
        quotes,
        [(
            MdevUuid::parse(&mdev_uuid(1)).unwrap(),
            vec!["nvidia-vgpu-mgr[8626]: error: vmiop_log: (0x0): vGPU is supported only on VGX capable boards".to_string()]
        )]
    );
    assert_ok(&h.call("a", "release", "end", "failed", &vm.text));
    assert!(h.records().is_empty(), "the devices are freed all the same");
}

#[test]
fn a_start_the_manager_said_nothing_against_quotes_nothing() {
    let Some((_sim, h, journalctl)) = host_with_journal() else {
        return;
    };
    let (_, dom) = prepared_then_failed(&h, &journalctl, 2);
    assert!(vgpu_hook::hook::failed_start_quotes(&host(&h), &journalctl, &dom).is_empty());
}

#[test]
fn status_shows_what_the_manager_said_about_the_domains_vgpu() {
    let Some((_sim, h, journalctl)) = host_with_journal() else {
        return;
    };
    let (vm, _) = prepared_then_failed(&h, &journalctl, 1);
    let xml = h.dir.path().join("a.xml");
    std::fs::write(&xml, &vm.text).unwrap();
    let o = h.vgpuctl(&["status", "--xml", xml.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        out.contains(&format!("NVIDIA's vGPU manager reported for mdev {}: nvidia-vgpu-mgr[8626]: error: vmiop_log: (0x0): vGPU is supported only on VGX capable boards; the rest: journalctl -u nvidia-vgpu-mgr.service", mdev_uuid(1))),
        "{out}"
    );
    assert!(!out.contains("another vGPU's failure"), "{out}");
}
