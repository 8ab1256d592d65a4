//! The hook's state file damaged or tampered with: domains without our metadata never notice;
//! an unreadable file is kept aside and the records rebuilt from the running domains (libvirt's
//! status files and sysfs); a file of a newer format, or a state path that is a symlink, another
//! owner's, or not what the hook made, is refused with one line naming it and the fix, and
//! nothing is read or written through it. One behaviour per test.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::hook::*;
use common::sim::Sim;

const MTTY: &str = "[[gpu]]\nkind = \"mdev\"\nname = \"mtty\"\n";

fn mtty_host() -> Option<(Sim, TestHost)> {
    let sim = Sim::start(MTTY)?;
    let h = TestHost::new(
        sim.root(),
        &format!("mdev_parents = [\"mtty\"]\n{FAST_TIMING}"),
    );
    Some((sim, h))
}

fn data_file(h: &TestHost) -> PathBuf {
    h.state_dir().join("owners.json")
}

/// A domain that got its mdev and runs, with the status file libvirt keeps for it.
fn running_domain(h: &mut TestHost, name: &str, n: u32) -> DomainXml {
    let vm = mdev_domain(name, &[(n, "type=\"mtty-2\"")]);
    assert_ok(&h.prepare(&vm));
    h.start_qemu(name);
    let status = format!(
        "<domstatus state='running' reason='booted' pid='1'>\n  <monitor path='/run/libvirt/qemu/x.monitor'/>\n{}</domstatus>\n",
        vm.text
    );
    fs::write(h.run_dir().join(format!("{name}.xml")), status).unwrap();
    vm
}

fn damaged_copies(h: &TestHost) -> Vec<String> {
    fs::read_dir(h.state_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("owners.json.damaged-"))
        .collect()
}

fn assert_rebuilt_after(damage: &[u8]) {
    let Some((_sim, mut h)) = mtty_host() else {
        return;
    };
    running_domain(&mut h, "running", 1);
    fs::write(data_file(&h), damage).unwrap();
    assert_ok(&h.prepare(&mdev_domain("new", &[(2, "type=\"mtty-2\"")])));
    assert_eq!(h.owners(), ["running", "new"]);
    let kept = damaged_copies(&h);
    assert_eq!(kept.len(), 1, "the damaged file is kept aside");
    assert_eq!(fs::read(h.state_dir().join(&kept[0])).unwrap(), damage);
}

#[test]
fn a_garbage_state_file_is_kept_aside_and_the_running_domains_records_rebuilt() {
    assert_rebuilt_after(b"\x00\x01not json at all");
}

#[test]
fn a_truncated_state_file_is_kept_aside_and_the_records_rebuilt() {
    assert_rebuilt_after(b"{\"version\": 1, \"records\": [{\"domain_uuid\": \"ab");
}

#[test]
fn an_empty_state_file_is_kept_aside_and_the_records_rebuilt() {
    assert_rebuilt_after(b"");
}

#[test]
fn a_rebuilt_record_still_frees_the_device_when_its_domain_stops() {
    let Some((sim, mut h)) = mtty_host() else {
        return;
    };
    let vm = running_domain(&mut h, "running", 1);
    fs::write(data_file(&h), "garbage").unwrap();
    assert_ok(&h.prepare(&mdev_domain("new", &[(2, "type=\"mtty-2\"")])));
    h.stop_qemu("running");
    assert_ok(&h.release(&vm));
    let dev = sim.root().join("sys/bus/mdev/devices").join(mdev_uuid(1));
    assert!(!dev.exists());
    assert_eq!(h.owners(), ["new"]);
}

#[test]
fn a_state_file_of_a_newer_format_is_refused_and_left_as_it_is() {
    let Some((_sim, h)) = mtty_host() else { return };
    fs::create_dir_all(h.state_dir()).unwrap();
    let newer = b"{\"version\": 99, \"records\": []}\n";
    fs::write(data_file(&h), newer).unwrap();
    let o = h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")]));
    assert_refused(
        &o,
        &[
            "owners.json has format 99",
            "install the vgpu-hook that wrote it",
        ],
    );
    assert_eq!(fs::read(data_file(&h)).unwrap(), newer);
}

#[test]
fn a_state_file_without_a_version_is_read_as_the_first_format() {
    let Some((_sim, h)) = mtty_host() else { return };
    fs::create_dir_all(h.state_dir()).unwrap();
    fs::write(data_file(&h), "{\"records\": []}\n").unwrap();
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")])));
    assert_eq!(h.owners(), ["a"]);
    assert!(damaged_copies(&h).is_empty());
}

#[test]
fn a_state_directory_that_is_a_symlink_is_refused_and_its_target_untouched() {
    let Some((_sim, h)) = mtty_host() else { return };
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), h.state_dir()).unwrap();
    let o = h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")]));
    assert_refused(&o, &["is a symlink; remove it"]);
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn a_state_file_that_is_a_symlink_is_refused_and_its_target_untouched() {
    let Some((_sim, h)) = mtty_host() else { return };
    fs::create_dir_all(h.state_dir()).unwrap();
    let target = h.dir.path().join("elsewhere.json");
    fs::write(&target, "{\"records\": []}\n").unwrap();
    std::os::unix::fs::symlink(&target, data_file(&h)).unwrap();
    let o = h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")]));
    assert_refused(&o, &["owners.json is a symlink"]);
    assert_eq!(fs::read_to_string(&target).unwrap(), "{\"records\": []}\n");
}

#[test]
fn a_state_directory_of_another_owner_is_refused() {
    let Some((_sim, h)) = mtty_host() else { return };
    fs::create_dir_all(h.state_dir()).unwrap();
    std::os::unix::fs::chown(h.state_dir(), Some(65534), Some(65534)).unwrap();
    let o = h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")]));
    assert_refused(&o, &["is owned by uid 65534"]);
}

#[test]
fn a_state_directory_open_to_others_is_closed_again() {
    let Some((_sim, h)) = mtty_host() else { return };
    fs::create_dir_all(h.state_dir()).unwrap();
    fs::set_permissions(h.state_dir(), fs::Permissions::from_mode(0o777)).unwrap();
    assert_ok(&h.prepare(&mdev_domain("a", &[(1, "type=\"mtty-2\"")])));
    let mode = fs::metadata(h.state_dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn reconcile_mends_a_damaged_state_as_the_hook_does() {
    let Some((_sim, mut h)) = mtty_host() else {
        return;
    };
    running_domain(&mut h, "running", 1);
    fs::write(data_file(&h), "garbage").unwrap();
    let o = h.vgpuctl(&["reconcile"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(h.owners(), ["running"]);
    assert_eq!(
        damaged_copies(&h).len(),
        1,
        "the damaged file is kept aside"
    );
}

#[test]
fn a_domain_without_metadata_never_notices_a_damaged_state() {
    let Some((_sim, h)) = mtty_host() else { return };
    fs::create_dir_all(h.state_dir()).unwrap();
    fs::write(data_file(&h), "garbage").unwrap();
    let plain = domain("plain", None, "");
    for (op, sub) in [
        ("prepare", "begin"),
        ("release", "end"),
        ("migrate", "begin"),
    ] {
        assert_ok(&h.call("plain", op, sub, "-", &plain.text));
    }
    assert_eq!(fs::read_to_string(data_file(&h)).unwrap(), "garbage");
}
