//! A domain that moves: the `migrate begin` / `restore begin` filter for mdevs, against a
//! simulated host, then the `prepare` that follows it as libvirt runs it on the destination. The
//! filter keeps what is free here, renames what collides, refuses what has no room, and never
//! takes or makes anything itself. One behaviour per test.

mod common;

use std::path::PathBuf;

use common::hook::*;
use common::sim::Sim;

const MTTY: &str = r#"
[[gpu]]
kind = "mdev"
name = "mtty"
types = [{ id = "mtty-1", name = "Single port serial", max_instances = 24 },
         { id = "mtty-2", name = "Dual port serial", max_instances = 2 }]
"#;

fn mtty_host() -> Option<(Sim, TestHost)> {
    let sim = Sim::start(MTTY)?;
    let h = TestHost::new(
        sim.root(),
        &format!("mdev_parents = [\"mtty\"]\n{FAST_TIMING}"),
    );
    Some((sim, h))
}

fn migrate_begin(h: &TestHost, vm: &DomainXml) -> std::process::Output {
    h.call(&vm.name, "migrate", "begin", "-", &vm.text)
}

fn mdevs(sim: &Sim) -> Vec<String> {
    let dir: PathBuf = sim.root().join("sys/bus/mdev/devices");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// The filtered XML, asserting the call succeeded and printed something.
fn rewritten(o: &std::process::Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(!out.is_empty(), "the filter printed nothing");
    out
}

#[test]
fn a_uuid_free_here_is_kept_and_nothing_is_printed() {
    let Some((sim, h)) = mtty_host() else { return };
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&migrate_begin(&h, &vm));
    assert!(mdevs(&sim).is_empty(), "the filter made a device");
    assert!(h.records().is_empty(), "the filter recorded an owner");
}

#[test]
fn restore_begin_filters_the_same_way() {
    let Some((_sim, h)) = mtty_host() else { return };
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.call("a", "restore", "begin", "-", &vm.text));
}

#[test]
fn a_uuid_another_domain_holds_here_is_renamed_in_hostdev_and_metadata_only() {
    let Some((_sim, mut h)) = mtty_host() else {
        return;
    };
    assert_ok(&h.prepare(&mdev_domain("b", &[(1, "type=\"mtty-1\"")])));
    h.start_qemu("b");
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    let out = rewritten(&migrate_begin(&h, &vm));
    let old = mdev_uuid(1);
    assert!(!out.contains(&old), "{out}");
    let new = out
        .split("uuid='")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("a hostdev uuid")
        .to_string();
    assert_eq!(out, vm.text.replace(&old, &new));
}

#[test]
fn a_uuid_made_by_hand_here_is_renamed() {
    let Some((sim, h)) = mtty_host() else { return };
    let made = sim.type_dir("mtty", "Single port serial").join("create");
    std::fs::write(made, mdev_uuid(1)).unwrap();
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    let out = rewritten(&migrate_begin(&h, &vm));
    assert!(!out.contains(&mdev_uuid(1)), "{out}");
    assert_eq!(mdevs(&sim), [mdev_uuid(1)], "the filter touched the device");
}

#[test]
fn the_renamed_definition_starts_on_a_new_mdev_and_leaves_the_other_alone() {
    let Some((sim, mut h)) = mtty_host() else {
        return;
    };
    assert_ok(&h.prepare(&mdev_domain("b", &[(1, "type=\"mtty-1\"")])));
    h.start_qemu("b");
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    let filtered = DomainXml {
        text: rewritten(&migrate_begin(&h, &vm)),
        ..vm
    };
    assert_ok(&h.prepare(&filtered));
    assert_eq!(mdevs(&sim).len(), 2);
    let mut owners = h.owners();
    owners.sort();
    assert_eq!(owners, ["a", "b"]);
}

#[test]
fn this_domains_own_leftover_keeps_its_uuid() {
    let Some((_sim, h)) = mtty_host() else { return };
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.prepare(&vm));
    assert_ok(&migrate_begin(&h, &vm));
}

#[test]
fn a_full_host_is_refused_naming_the_host_and_the_type() {
    let Some((sim, h)) = mtty_host() else { return };
    assert_ok(&h.prepare(&mdev_domain(
        "b",
        &[(1, "type=\"mtty-2\""), (2, "type=\"mtty-2\"")],
    )));
    let vm = mdev_domain("a", &[(3, "type=\"mtty-2\"")]);
    let o = migrate_begin(&h, &vm);
    assert_refused(
        &o,
        &[
            &format!("cannot come to host '{}'", this_host()),
            "no free 'mtty-2'",
            "on mtty (0 left",
        ],
    );
    assert_eq!(mdevs(&sim).len(), 2, "the refusal changed the host");
}

#[test]
fn every_request_of_the_domain_needs_room_not_only_the_first() {
    let Some((_sim, h)) = mtty_host() else { return };
    assert_ok(&h.prepare(&mdev_domain("b", &[(1, "type=\"mtty-2\"")])));
    let vm = mdev_domain("a", &[(2, "type=\"mtty-2\""), (3, "type=\"mtty-2\"")]);
    assert_refused(
        &migrate_begin(&h, &vm),
        &[
            "no free 'mtty-2'",
            "1 taken by this domain's earlier requests",
        ],
    );
}

#[test]
fn a_type_this_host_does_not_offer_is_refused() {
    let Some((_sim, h)) = mtty_host() else { return };
    let vm = mdev_domain("a", &[(1, "type=\"mtty-9\"")]);
    assert_refused(
        &migrate_begin(&h, &vm),
        &["no free 'mtty-9'", "no such type"],
    );
}

#[test]
fn the_prepare_after_the_filter_rechecks_room_and_refuses_a_lost_race_cleanly() {
    let Some((sim, h)) = mtty_host() else { return };
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&migrate_begin(&h, &vm));
    assert_ok(&h.prepare(&mdev_domain(
        "b",
        &[(2, "type=\"mtty-2\""), (3, "type=\"mtty-2\"")],
    )));
    assert_refused(&h.prepare(&vm), &["no free 'mtty-2'"]);
    assert!(!mdevs(&sim).contains(&mdev_uuid(1)));
    assert_eq!(h.owners(), ["b", "b"]);
}

#[test]
fn a_failed_migration_releases_only_what_this_host_holds_for_the_domain() {
    let Some((sim, h)) = mtty_host() else { return };
    assert_ok(&h.prepare(&mdev_domain("b", &[(2, "type=\"mtty-2\"")])));
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&migrate_begin(&h, &vm));
    assert_ok(&h.prepare(&vm));
    for _ in 0..2 {
        assert_ok(&h.call("a", "release", "end", "failed", &vm.text));
    }
    assert_eq!(mdevs(&sim), [mdev_uuid(2)]);
    assert_eq!(h.owners(), ["b"]);
}

#[test]
fn a_renamed_domain_is_released_by_its_uuid() {
    let Some((sim, h)) = mtty_host() else { return };
    let vm = mdev_domain("a", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.prepare(&vm));
    let renamed = vm.text.replace("<name>a</name>", "<name>a-moved</name>");
    assert_ok(&h.call("a-moved", "release", "end", "migrated", &renamed));
    assert!(mdevs(&sim).is_empty());
    assert!(h.owners().is_empty());
}
