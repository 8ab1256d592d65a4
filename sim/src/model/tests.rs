//! The model's rules, one behaviour per test, without FUSE.

use std::time::{Duration, Instant};

use super::*;
use crate::host;

const P40: &str = r#"
[[gpu]]
address = "0000:82:00.0"
kind = "nvidia-classic"
board = "P40"
framebuffer_mb = 24576
"#;

const T4: &str = r#"
[[gpu]]
address = "0000:83:00.0"
kind = "nvidia-classic"
board = "T4"
framebuffer_mb = 16384
"#;

const MTTY: &str = r#"
[[gpu]]
kind = "mdev"
name = "mtty"
types = [{ id = "mtty-1", name = "Single port serial", max_instances = 2 },
         { id = "mtty-2", name = "Dual port serial", max_instances = 1 }]
"#;

const A10: &str = r#"
[[gpu]]
address = "0000:41:00.0"
kind = "nvidia-sriov"
board = "A10"
framebuffer_mb = 24576
numvfs = 4
"#;

const L40S: &str = r#"
[[gpu]]
address = "0000:c1:00.0"
kind = "nvidia-vfio"
board = "L40S"
framebuffer_mb = 49152
numvfs = 3
reset_busy_ms = 1000
"#;

const GIM: &str = r#"
[[gpu]]
address = "0000:04:00.0"
kind = "amd-gim"
gim = "old"
numvfs = 2
"#;

const NIC: &str = r#"
[[gpu]]
address = "0000:05:00.0"
kind = "sriov"
totalvfs = 8
"#;

const PF: &str = "0000:82:00.0";

fn model(toml: &str) -> (Model, Instant) {
    let t0 = Instant::now();
    let h = host::parse(toml, "test.toml").expect("test host file is valid");
    (Model::new(h, t0), t0)
}

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn create_attr(parent: &str, ty: &str) -> Attr {
    Attr::Type {
        parent: parent.to_string(),
        type_id: ty.to_string(),
        attr: TypeAttr::Create,
    }
}

fn write_create(m: &mut Model, parent: &str, ty: &str, data: &[u8]) -> WriteOutcome {
    m.write(&create_attr(parent, ty), data)
}

fn create(m: &mut Model, parent: &str, ty: &str, n: u32) -> Result<(), Errno> {
    match write_create(m, parent, ty, format!("{}\n", uuid(n)).as_bytes()) {
        WriteOutcome::Done(r) => r,
        other => panic!("create did not finish: {other:?}"),
    }
}

fn remove(m: &mut Model, n: u32, value: &str) -> WriteOutcome {
    m.write(&Attr::MdevRemove(uuid(n)), value.as_bytes())
}

fn done(r: Result<(), Errno>) -> WriteOutcome {
    WriteOutcome::Done(r)
}

fn pci_write(m: &mut Model, addr: &str, a: PciAttr, v: &str) -> WriteOutcome {
    m.write(&Attr::Pci(addr.to_string(), a), v.as_bytes())
}

fn read(m: &Model, attr: Attr) -> String {
    m.read(&attr).expect("attribute is readable")
}

/// The id of the type called `name` on `parent`.
fn type_named(m: &Model, parent: &str, name: &str) -> String {
    m.parent_types(parent)
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
        .map(|t| t.id.clone())
        .unwrap_or_else(|| panic!("{parent} has no type {name}"))
}

fn drv_write(m: &mut Model, drv: &str, a: DriverAttr, v: &str) -> Result<(), Errno> {
    match m.write(&Attr::Driver(drv.into(), a), v.as_bytes()) {
        WriteOutcome::Done(r) => r,
        other => panic!("driver write did not finish: {other:?}"),
    }
}

/// NVIDIA's `sriov-manage -e` through sysfs alone: nvidia -> pci-pf-stub, enable every VF,
/// back to nvidia, then each VF bound to nvidia.
fn sriov_manage_enable(m: &mut Model, pf: &str, id: &str) {
    assert_eq!(drv_write(m, "nvidia", DriverAttr::Unbind, pf), Ok(()));
    assert_eq!(drv_write(m, "pci-pf-stub", DriverAttr::NewId, id), Ok(()));
    let total = read(m, Attr::Pci(pf.into(), PciAttr::SriovTotalvfs));
    assert_eq!(pci_write(m, pf, PciAttr::SriovNumvfs, &total), done(Ok(())));
    assert_eq!(drv_write(m, "pci-pf-stub", DriverAttr::Unbind, pf), Ok(()));
    assert_eq!(
        drv_write(m, "pci-pf-stub", DriverAttr::RemoveId, id),
        Ok(())
    );
    assert_eq!(drv_write(m, "nvidia", DriverAttr::Bind, pf), Ok(()));
    let vfs: Vec<String> = m
        .pci_devices()
        .filter(|d| matches!(&d.role, Role::Vf { pf: p, .. } if p == pf))
        .map(|d| d.address.clone())
        .collect();
    for vf in vfs {
        let bound = m.pci_device(&vf).and_then(|d| d.driver.clone());
        if bound.as_deref() == Some("nvidia") {
            continue;
        }
        if let Some(other) = bound {
            assert_eq!(drv_write(m, &other, DriverAttr::Unbind, &vf), Ok(()));
        }
        assert_eq!(drv_write(m, "nvidia", DriverAttr::Bind, &vf), Ok(()));
    }
}

// ----- mdev create -----

#[test]
fn create_makes_device_visible_and_drops_available_instances() {
    let (mut m, _) = model(P40);
    assert_eq!(m.available_instances(PF, "nvidia-49"), 6);
    assert_eq!(create(&mut m, PF, "nvidia-49", 1), Ok(()));
    assert_eq!(
        m.mdev(&uuid(1)).map(|d| d.type_id.as_str()),
        Some("nvidia-49")
    );
    assert_eq!(m.available_instances(PF, "nvidia-49"), 5);
}

#[test]
fn create_of_wrong_length_is_einval() {
    let (mut m, _) = model(P40);
    let short = &uuid(1)[..35];
    assert_eq!(
        write_create(&mut m, PF, "nvidia-46", short.as_bytes()),
        done(Err(libc::EINVAL))
    );
    let long = format!("{}\n\n", uuid(1));
    assert_eq!(
        write_create(&mut m, PF, "nvidia-46", long.as_bytes()),
        done(Err(libc::EINVAL))
    );
}

#[test]
fn create_of_37_bytes_accepts_any_last_byte() {
    let (mut m, _) = model(P40);
    let data = format!("{} ", uuid(1));
    assert_eq!(
        write_create(&mut m, PF, "nvidia-46", data.as_bytes()),
        done(Ok(()))
    );
    let data = format!("{}x", uuid(2));
    assert_eq!(
        write_create(&mut m, PF, "nvidia-46", data.as_bytes()),
        done(Ok(()))
    );
    assert_eq!(remove(&mut m, 1, "1"), done(Ok(())));
    assert_eq!(
        write_create(&mut m, PF, "nvidia-46", uuid(1).as_bytes()),
        done(Ok(()))
    );
}

#[test]
fn create_of_a_non_uuid_is_einval() {
    let (mut m, _) = model(P40);
    let data = b"zzzzzzzz-0000-4000-8000-000000000001";
    assert_eq!(
        write_create(&mut m, PF, "nvidia-46", data),
        done(Err(libc::EINVAL))
    );
}

#[test]
fn create_with_upper_case_uuid_names_the_device_in_lower_case() {
    let (mut m, _) = model(P40);
    let data = b"ABCDEF00-0000-4000-8000-00000000000A";
    assert_eq!(write_create(&mut m, PF, "nvidia-46", data), done(Ok(())));
    assert!(m.mdev("abcdef00-0000-4000-8000-00000000000a").is_some());
}

#[test]
fn create_with_uuid_live_under_other_parent_is_eexist() {
    let (mut m, _) = model(&format!("{P40}{T4}"));
    assert_eq!(create(&mut m, PF, "nvidia-46", 1), Ok(()));
    let t4_type = m.parent_types("0000:83:00.0")[0].id.clone();
    assert_eq!(
        create(&mut m, "0000:83:00.0", &t4_type, 1),
        Err(libc::EEXIST)
    );
}

#[test]
fn create_on_nvidia_without_capacity_is_eio() {
    let (mut m, _) = model(P40);
    assert_eq!(create(&mut m, PF, "nvidia-53", 1), Ok(()));
    assert_eq!(m.available_instances(PF, "nvidia-53"), 0);
    assert_eq!(create(&mut m, PF, "nvidia-53", 2), Err(libc::EIO));
}

#[test]
fn create_on_a_full_parent_whose_driver_counts_is_enospc() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-2", 1), Ok(()));
    assert_eq!(create(&mut m, "mtty", "mtty-2", 2), Err(libc::ENOSPC));
}

#[test]
fn create_on_a_full_parent_counted_by_the_core_is_eusers_per_parent() {
    let (mut m, _) = model(
        "[[gpu]]\nkind = \"mdev\"\nname = \"mdpy\"\navailable = \"core\"\npool = 2\ntypes = [{ id = \"mdpy-vga\" }, { id = \"mdpy-xga\" }]\n",
    );
    assert_eq!(create(&mut m, "mdpy", "mdpy-vga", 1), Ok(()));
    assert_eq!(m.available_instances("mdpy", "mdpy-xga"), 1);
    assert_eq!(create(&mut m, "mdpy", "mdpy-xga", 2), Ok(()));
    assert_eq!(m.available_instances("mdpy", "mdpy-vga"), 0);
    assert_eq!(create(&mut m, "mdpy", "mdpy-vga", 3), Err(libc::EUSERS));
}

#[test]
fn mtty_types_share_one_pool_of_24_ports() {
    let (mut m, _) = model("[[gpu]]\nkind = \"mdev\"\nname = \"mtty\"\n");
    assert_eq!(m.available_instances("mtty", "mtty-2"), 12);
    for n in 1..=11 {
        assert_eq!(create(&mut m, "mtty", "mtty-2", n), Ok(()));
    }
    assert_eq!(m.available_instances("mtty", "mtty-1"), 2);
    assert_eq!(create(&mut m, "mtty", "mtty-1", 20), Ok(()));
    assert_eq!(m.available_instances("mtty", "mtty-2"), 0);
    assert_eq!(create(&mut m, "mtty", "mtty-2", 21), Err(libc::ENOSPC));
    assert_eq!(create(&mut m, "mtty", "mtty-1", 22), Ok(()));
    assert_eq!(create(&mut m, "mtty", "mtty-1", 23), Err(libc::ENOSPC));
}

#[test]
fn generic_parent_types_count_separately() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-2", 1), Ok(()));
    assert_eq!(m.available_instances("mtty", "mtty-1"), 2);
}

#[test]
fn nvidia_first_vgpu_zeroes_types_of_other_sizes() {
    let (mut m, _) = model(P40);
    assert_eq!(create(&mut m, PF, "nvidia-47", 1), Ok(()));
    assert_eq!(m.available_instances(PF, "nvidia-46"), 0);
    assert_eq!(m.available_instances(PF, "nvidia-53"), 0);
    assert_eq!(create(&mut m, PF, "nvidia-46", 2), Err(libc::EIO));
}

#[test]
fn nvidia_same_size_type_of_other_series_shares_capacity() {
    let (mut m, _) = model(P40);
    // nvidia-47 is P40-2Q, nvidia-156 is P40-2B: both 2 GB, 12 per GPU.
    assert_eq!(create(&mut m, PF, "nvidia-47", 1), Ok(()));
    assert_eq!(m.available_instances(PF, "nvidia-156"), 11);
    assert_eq!(create(&mut m, PF, "nvidia-156", 2), Ok(()));
    assert_eq!(m.available_instances(PF, "nvidia-47"), 10);
}

#[test]
fn nvidia_sizes_free_up_when_the_gpu_empties() {
    let (mut m, _) = model(P40);
    assert_eq!(create(&mut m, PF, "nvidia-47", 1), Ok(()));
    assert_eq!(remove(&mut m, 1, "1"), done(Ok(())));
    assert_eq!(m.available_instances(PF, "nvidia-53"), 1);
}

#[test]
fn create_eio_fault_fails_the_next_n_creates_only() {
    let (mut m, _) = model(MTTY);
    assert_eq!(
        m.write(&Attr::Control, b"fault create-eio mtty 2\n"),
        done(Ok(()))
    );
    assert_eq!(create(&mut m, "mtty", "mtty-1", 1), Err(libc::EIO));
    assert_eq!(create(&mut m, "mtty", "mtty-1", 1), Err(libc::EIO));
    assert_eq!(create(&mut m, "mtty", "mtty-1", 1), Ok(()));
}

#[test]
fn delayed_create_is_invisible_but_reserved_until_finished() {
    let (mut m, _) = model(MTTY);
    m.fault_create_delay("mtty", Duration::from_millis(300))
        .expect("known parent");
    let out = write_create(&mut m, "mtty", "mtty-2", uuid(1).as_bytes());
    let WriteOutcome::Delayed {
        uuid: u,
        serial,
        delay,
    } = out
    else {
        panic!("expected a delayed create, got {out:?}");
    };
    assert_eq!(delay, Duration::from_millis(300));
    assert!(m.mdev(&u).is_none());
    assert_eq!(m.available_instances("mtty", "mtty-2"), 0);
    assert_eq!(create(&mut m, "mtty", "mtty-1", 1), Err(libc::EEXIST));
    assert_eq!(remove(&mut m, 1, "1"), done(Err(libc::EAGAIN)));
    assert_eq!(m.finish_create(&u, serial), Ok(()));
    assert!(m.mdev(&u).is_some());
}

#[test]
fn delayed_create_whose_parent_went_away_is_enodev() {
    let (mut m, _) = model(MTTY);
    m.fault_create_delay("mtty", Duration::from_millis(300))
        .expect("known parent");
    let WriteOutcome::Delayed {
        uuid: u, serial, ..
    } = write_create(&mut m, "mtty", "mtty-1", uuid(1).as_bytes())
    else {
        panic!("expected a delayed create");
    };
    assert_eq!(m.unplug("mtty"), Ok(()));
    assert_eq!(m.finish_create(&u, serial), Err(libc::ENODEV));
}

#[test]
fn create_on_an_unregistered_parent_is_enodev() {
    let (mut m, _) = model(MTTY);
    assert_eq!(m.unplug("mtty"), Ok(()));
    assert_eq!(create(&mut m, "mtty", "mtty-1", 1), Err(libc::ENODEV));
}

// ----- mdev remove -----

#[test]
fn remove_one_removes_the_device_and_restores_capacity() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-2", 1), Ok(()));
    assert_eq!(remove(&mut m, 1, "1\n"), done(Ok(())));
    assert!(m.mdev(&uuid(1)).is_none());
    assert_eq!(m.available_instances("mtty", "mtty-2"), 1);
}

#[test]
fn remove_zero_does_nothing() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-2", 1), Ok(()));
    assert_eq!(remove(&mut m, 1, "0\n"), done(Ok(())));
    assert!(m.mdev(&uuid(1)).is_some());
}

#[test]
fn remove_of_a_non_number_is_einval() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-2", 1), Ok(()));
    assert_eq!(remove(&mut m, 1, "yes"), done(Err(libc::EINVAL)));
    assert_eq!(remove(&mut m, 1, ""), done(Err(libc::EINVAL)));
}

#[test]
fn remove_of_a_held_device_blocks_until_release() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-2", 1), Ok(()));
    assert_eq!(m.hold(&uuid(1)), Ok(()));
    let WriteOutcome::Blocked { uuid: u, serial } = remove(&mut m, 1, "1") else {
        panic!("expected a blocked remove");
    };
    assert!(m.remove_pending(&u, serial));
    assert!(m.mdev(&u).is_some(), "still visible while the remove waits");
    assert_eq!(m.release(&u), Ok(()));
    assert!(!m.remove_pending(&u, serial));
    assert!(m.mdev(&u).is_none());
}

#[test]
fn remove_of_a_device_already_going_away_is_enodev() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-2", 1), Ok(()));
    assert_eq!(m.hold(&uuid(1)), Ok(()));
    assert!(matches!(
        remove(&mut m, 1, "1"),
        WriteOutcome::Blocked { .. }
    ));
    assert_eq!(remove(&mut m, 1, "1"), done(Err(libc::ENODEV)));
}

#[test]
fn create_with_uuid_of_a_device_being_removed_is_eexist() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-1", 1), Ok(()));
    assert_eq!(m.hold(&uuid(1)), Ok(()));
    assert!(matches!(
        remove(&mut m, 1, "1"),
        WriteOutcome::Blocked { .. }
    ));
    assert_eq!(create(&mut m, "mtty", "mtty-1", 1), Err(libc::EEXIST));
}

#[test]
fn remove_of_a_held_device_without_remove_blocks_is_ebusy() {
    let (mut m, _) =
        model(&MTTY.replace("kind = \"mdev\"", "kind = \"mdev\"\nremove_blocks = false"));
    assert_eq!(create(&mut m, "mtty", "mtty-2", 1), Ok(()));
    assert_eq!(m.hold(&uuid(1)), Ok(()));
    assert_eq!(remove(&mut m, 1, "1"), done(Err(libc::EBUSY)));
}

#[test]
fn remove_eio_fault_fails_one_remove() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-2", 1), Ok(()));
    assert_eq!(m.fault_remove_eio(&uuid(1)), Ok(()));
    assert_eq!(remove(&mut m, 1, "1"), done(Err(libc::EIO)));
    assert_eq!(remove(&mut m, 1, "1"), done(Ok(())));
}

#[test]
fn self_cleanup_removes_the_device_that_long_after_release() {
    let (mut m, t0) = model(&P40.replace(
        "framebuffer_mb = 24576",
        "framebuffer_mb = 24576\nself_cleanup_ms = 500",
    ));
    assert_eq!(create(&mut m, PF, "nvidia-46", 1), Ok(()));
    assert_eq!(m.hold(&uuid(1)), Ok(()));
    m.advance(t0 + Duration::from_secs(5));
    assert!(
        m.mdev(&uuid(1)).is_some(),
        "held devices are never cleaned up"
    );
    assert_eq!(m.release(&uuid(1)), Ok(()));
    m.advance(t0 + Duration::from_millis(5400));
    assert!(m.mdev(&uuid(1)).is_some());
    m.advance(t0 + Duration::from_millis(5500));
    assert!(m.mdev(&uuid(1)).is_none());
}

#[test]
fn self_cleanup_does_not_touch_devices_never_held() {
    let (mut m, t0) = model(&P40.replace(
        "framebuffer_mb = 24576",
        "framebuffer_mb = 24576\nself_cleanup_ms = 10",
    ));
    assert_eq!(create(&mut m, PF, "nvidia-46", 1), Ok(()));
    m.advance(t0 + Duration::from_secs(60));
    assert!(m.mdev(&uuid(1)).is_some());
}

#[test]
fn hold_again_before_self_cleanup_cancels_it() {
    let (mut m, t0) = model(&P40.replace(
        "framebuffer_mb = 24576",
        "framebuffer_mb = 24576\nself_cleanup_ms = 500",
    ));
    assert_eq!(create(&mut m, PF, "nvidia-46", 1), Ok(()));
    assert_eq!(m.hold(&uuid(1)), Ok(()));
    assert_eq!(m.release(&uuid(1)), Ok(()));
    assert_eq!(m.hold(&uuid(1)), Ok(()));
    assert_eq!(m.release(&uuid(1)), Ok(()));
    m.advance(t0 + Duration::from_millis(499));
    assert!(m.mdev(&uuid(1)).is_some());
}

#[test]
fn hold_of_a_held_device_is_ebusy() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-1", 1), Ok(()));
    assert_eq!(m.hold(&uuid(1)), Ok(()));
    assert_eq!(m.hold(&uuid(1)), Err(libc::EBUSY));
}

#[test]
fn release_of_a_device_not_held_is_einval() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-1", 1), Ok(()));
    assert_eq!(m.release(&uuid(1)), Err(libc::EINVAL));
}

#[test]
fn hold_of_an_unknown_device_is_enoent() {
    let (mut m, _) = model(MTTY);
    assert_eq!(m.hold(&uuid(9)), Err(libc::ENOENT));
    assert_eq!(m.hold("0000:99:00.0"), Err(libc::ENOENT));
    assert_eq!(m.hold("nonsense"), Err(libc::EINVAL));
}

#[test]
fn vgpu_params_keep_all_but_the_last_byte_written() {
    let (mut m, _) = model(P40);
    assert_eq!(create(&mut m, PF, "nvidia-46", 1), Ok(()));
    let a = Attr::MdevParams(uuid(1));
    assert_eq!(read(&m, a.clone()), "\n", "empty reads as a lone newline");
    assert_eq!(m.write(&a, b"frame_rate_limiter=0\n"), done(Ok(())));
    assert_eq!(read(&m, a.clone()), "frame_rate_limiter=0\n");
    assert_eq!(m.write(&a, b"frame_rate_limiter=0"), done(Ok(())));
    assert_eq!(read(&m, a.clone()), "frame_rate_limiter=\n");
    assert_eq!(m.write(&a, b"no syntax check\n"), done(Ok(())));
    assert_eq!(read(&m, a), "no syntax check\n");
}

#[test]
fn vgpu_params_over_the_driver_limit_are_e2big_and_held_devices_eperm() {
    let (mut m, _) = model(P40);
    assert_eq!(create(&mut m, PF, "nvidia-46", 1), Ok(()));
    let a = Attr::MdevParams(uuid(1));
    assert_eq!(m.write(&a, &[b'a'; 1024]), done(Ok(())));
    assert_eq!(m.write(&a, &[b'a'; 1025]), done(Err(libc::E2BIG)));
    assert_eq!(m.hold(&uuid(1)), Ok(()));
    assert_eq!(m.write(&a, b"x=1\n"), done(Err(libc::EPERM)));
}

// ----- registration, plug, unplug -----

#[test]
fn appear_after_delays_parent_registration() {
    let (mut m, t0) = model(&P40.replace(
        "framebuffer_mb = 24576",
        "framebuffer_mb = 24576\nappear_after_ms = 2000",
    ));
    assert!(!m.parent_registered(PF));
    assert!(m.parents().is_empty());
    assert_eq!(create(&mut m, PF, "nvidia-46", 1), Err(libc::ENODEV));
    m.advance(t0 + Duration::from_millis(2000));
    assert_eq!(m.parents(), [PF]);
}

#[test]
fn unplug_removes_the_device_its_parent_and_its_mdevs() {
    let (mut m, _) = model(P40);
    assert_eq!(create(&mut m, PF, "nvidia-46", 1), Ok(()));
    assert_eq!(
        m.write(&Attr::Control, format!("unplug {PF}\n").as_bytes()),
        done(Ok(()))
    );
    assert!(m.pci_device(PF).is_none());
    assert!(m.parents().is_empty());
    assert!(m.mdev(&uuid(1)).is_none());
}

#[test]
fn plug_brings_the_gpu_back_empty() {
    let (mut m, _) = model(P40);
    assert_eq!(create(&mut m, PF, "nvidia-46", 1), Ok(()));
    assert_eq!(m.unplug(PF), Ok(()));
    assert_eq!(m.plug(PF), Ok(()));
    assert_eq!(m.parents(), [PF]);
    assert_eq!(m.available_instances(PF, "nvidia-46"), 24);
}

#[test]
fn unplug_twice_is_enodev_and_unknown_is_enoent() {
    let (mut m, _) = model(P40);
    assert_eq!(m.unplug(PF), Ok(()));
    assert_eq!(m.unplug(PF), Err(libc::ENODEV));
    assert_eq!(m.unplug("0000:99:00.0"), Err(libc::ENOENT));
}

#[test]
fn without_the_mdev_module_there_are_no_parents() {
    let (m, _) = model(&format!("modules = [\"vfio\", \"vfio_pci\"]\n{P40}"));
    assert!(!m.mdev_loaded());
    assert!(m.parents().is_empty());
}

#[test]
fn unbinding_a_classic_gpu_unregisters_it_and_drops_its_mdevs() {
    let (mut m, _) = model(P40);
    assert_eq!(create(&mut m, PF, "nvidia-46", 1), Ok(()));
    let unbind = Attr::Driver("nvidia".into(), DriverAttr::Unbind);
    assert_eq!(m.write(&unbind, format!("{PF}\n").as_bytes()), done(Ok(())));
    assert!(m.parents().is_empty());
    assert!(m.mdev(&uuid(1)).is_none());
}

// ----- NVIDIA SR-IOV with mdev -----

#[test]
fn nvidia_sriov_each_vf_hosts_at_most_one_vgpu() {
    let (mut m, _) = model(A10);
    let vf = "0000:41:00.4";
    let q4 = type_named(&m, vf, "NVIDIA A10-4Q");
    assert_eq!(m.available_instances(vf, &q4), 1);
    assert_eq!(create(&mut m, vf, &q4, 1), Ok(()));
    assert_eq!(m.available_instances(vf, &q4), 0);
    assert_eq!(create(&mut m, vf, &q4, 2), Err(libc::EIO));
}

#[test]
fn nvidia_sriov_size_rule_spans_sibling_vfs() {
    let (mut m, _) = model(A10);
    let q4 = type_named(&m, "0000:41:00.4", "NVIDIA A10-4Q");
    let q2 = type_named(&m, "0000:41:00.4", "NVIDIA A10-2Q");
    let c4 = type_named(&m, "0000:41:00.4", "NVIDIA A10-4C");
    assert_eq!(create(&mut m, "0000:41:00.4", &q4, 1), Ok(()));
    assert_eq!(m.available_instances("0000:41:00.5", &q2), 0);
    assert_eq!(m.available_instances("0000:41:00.5", &q4), 1);
    assert_eq!(m.available_instances("0000:41:00.5", &c4), 1);
    assert_eq!(create(&mut m, "0000:41:00.5", &q2, 2), Err(libc::EIO));
}

#[test]
fn nvidia_sriov_vfs_drop_to_zero_when_the_pf_is_full() {
    let (mut m, _) = model(A10);
    let q12 = type_named(&m, "0000:41:00.4", "NVIDIA A10-12Q"); // 2 per GPU
    assert_eq!(create(&mut m, "0000:41:00.4", &q12, 1), Ok(()));
    assert_eq!(create(&mut m, "0000:41:00.5", &q12, 2), Ok(()));
    assert_eq!(m.available_instances("0000:41:00.6", &q12), 0);
}

#[test]
fn nvidia_sriov_vfs_are_parents_only_once_enabled() {
    let (mut m, _) = model(&A10.replace("numvfs = 4", "numvfs = 0\ntotalvfs = 2"));
    assert!(m.parents().is_empty());
    sriov_manage_enable(&mut m, "0000:41:00.0", "10de 2236");
    assert_eq!(m.parents(), ["0000:41:00.4", "0000:41:00.5"]);
}

#[test]
fn nvidia_pf_bound_to_nvidia_has_no_sriov_configure() {
    let (mut m, _) = model(&A10.replace("numvfs = 4", "numvfs = 0"));
    assert_eq!(
        pci_write(&mut m, "0000:41:00.0", PciAttr::SriovNumvfs, "2"),
        done(Err(libc::ENOENT))
    );
}

#[test]
fn sriov_manage_flow_leaves_kernel_6_8_vfs_with_their_nvidia_dir() {
    let (mut m, _) = model(&L40S.replace("numvfs = 3", "numvfs = 0\ntotalvfs = 4"));
    let pf = "0000:c1:00.0";
    sriov_manage_enable(&mut m, pf, "10de 26b9");
    assert_eq!(read(&m, Attr::Pci(pf.into(), PciAttr::SriovNumvfs)), "4\n");
    assert!(m.vfio_dir_visible("0000:c1:00.7"));
    assert_eq!(
        m.pci_device(pf).and_then(|d| d.driver.clone()).as_deref(),
        Some("nvidia")
    );
    // Unbinding the PF from nvidia keeps its VFs; `sriov-manage -d` is the reverse flow.
    assert_eq!(drv_write(&mut m, "nvidia", DriverAttr::Unbind, pf), Ok(()));
    assert!(m.pci_device("0000:c1:00.4").is_some());
    assert_eq!(
        drv_write(&mut m, "pci-pf-stub", DriverAttr::NewId, "10de 26b9"),
        Ok(())
    );
    assert_eq!(
        pci_write(&mut m, pf, PciAttr::SriovNumvfs, "0"),
        done(Ok(()))
    );
    assert!(m.pci_device("0000:c1:00.4").is_none());
    assert_eq!(
        drv_write(&mut m, "pci-pf-stub", DriverAttr::RemoveId, "10de 26b9"),
        Ok(())
    );
    assert_eq!(
        drv_write(&mut m, "pci-pf-stub", DriverAttr::RemoveId, "10de 26b9"),
        Err(libc::ENODEV)
    );
}

#[test]
fn vfio_pci_configures_sriov_only_with_enable_sriov() {
    for (flag, want) in [("", libc::ENOENT), ("vfio_pci_enable_sriov = true\n", 0)] {
        let (mut m, _) = model(&format!("{flag}{NIC}"));
        let pf = "0000:05:00.0";
        assert_eq!(drv_write(&mut m, "i915", DriverAttr::Unbind, pf), Ok(()));
        assert_eq!(
            pci_write(&mut m, pf, PciAttr::DriverOverride, "vfio-pci"),
            done(Ok(()))
        );
        assert_eq!(drv_write(&mut m, "vfio-pci", DriverAttr::Bind, pf), Ok(()));
        let got = match pci_write(&mut m, pf, PciAttr::SriovNumvfs, "2") {
            WriteOutcome::Done(r) => r.err().unwrap_or(0),
            other => panic!("{other:?}"),
        };
        assert_eq!(got, want, "{flag:?}");
    }
}

#[test]
fn pf_config_space_carries_the_sriov_capability() {
    let (m, _) = model(&A10.replace("numvfs = 4", "numvfs = 0\nvf_offset = 8\nvf_stride = 2"));
    let c = m
        .read_bytes(&Attr::Pci("0000:41:00.0".into(), PciAttr::Config))
        .expect("config");
    assert_eq!(c.len(), 4096);
    assert_eq!(&c[0..4], &[0xde, 0x10, 0x36, 0x22]);
    assert_eq!(&c[0x100..0x104], &0x0001_0010u32.to_le_bytes());
    assert_eq!(&c[0x114..0x118], &[8, 0, 2, 0]);
    assert_eq!(
        read(&m, Attr::Pci("0000:41:00.0".into(), PciAttr::SriovOffset)),
        "8\n"
    );
    assert_eq!(
        read(&m, Attr::Pci("0000:41:00.0".into(), PciAttr::SriovStride)),
        "2\n"
    );
    assert_eq!(
        read(&m, Attr::Pci("0000:41:00.0".into(), PciAttr::SriovVfDevice)),
        "2236\n"
    );
}

// ----- SR-IOV -----

#[test]
fn sriov_numvfs_above_total_is_erange() {
    let (mut m, _) = model(NIC);
    assert_eq!(
        pci_write(&mut m, "0000:05:00.0", PciAttr::SriovNumvfs, "9"),
        done(Err(libc::ERANGE))
    );
}

#[test]
fn sriov_numvfs_between_two_nonzero_counts_is_ebusy() {
    let (mut m, _) = model(NIC);
    let pf = "0000:05:00.0";
    assert_eq!(
        pci_write(&mut m, pf, PciAttr::SriovNumvfs, "2"),
        done(Ok(()))
    );
    assert_eq!(
        pci_write(&mut m, pf, PciAttr::SriovNumvfs, "3"),
        done(Err(libc::EBUSY))
    );
    assert_eq!(
        pci_write(&mut m, pf, PciAttr::SriovNumvfs, "0"),
        done(Ok(()))
    );
    assert_eq!(
        pci_write(&mut m, pf, PciAttr::SriovNumvfs, "3"),
        done(Ok(()))
    );
}

#[test]
fn sriov_numvfs_of_a_non_number_is_einval() {
    let (mut m, _) = model(NIC);
    assert_eq!(
        pci_write(&mut m, "0000:05:00.0", PciAttr::SriovNumvfs, "two"),
        done(Err(libc::EINVAL))
    );
    // kstrtou16 fails on 65536 and sriov_numvfs_store turns any failure into EINVAL.
    assert_eq!(
        pci_write(&mut m, "0000:05:00.0", PciAttr::SriovNumvfs, "65536"),
        done(Err(libc::EINVAL))
    );
}

#[test]
fn sriov_numvfs_not_configurable_is_enoent() {
    let (mut m, _) =
        model(&NIC.replace("totalvfs = 8", "totalvfs = 8\nsriov_configurable = false"));
    assert_eq!(
        pci_write(&mut m, "0000:05:00.0", PciAttr::SriovNumvfs, "2"),
        done(Err(libc::ENOENT))
    );
}

#[test]
fn sriov_numvfs_without_a_pf_driver_is_enoent() {
    let (mut m, _) = model(NIC);
    let unbind = Attr::Driver("i915".into(), DriverAttr::Unbind);
    assert_eq!(m.write(&unbind, b"0000:05:00.0"), done(Ok(())));
    assert_eq!(
        pci_write(&mut m, "0000:05:00.0", PciAttr::SriovNumvfs, "2"),
        done(Err(libc::ENOENT))
    );
}

#[test]
fn sriov_numvfs_rewriting_the_current_count_succeeds_even_without_configure() {
    let (mut m, _) = model(GIM);
    assert_eq!(
        pci_write(&mut m, "0000:04:00.0", PciAttr::SriovNumvfs, "2\n"),
        done(Ok(()))
    );
}

#[test]
fn sriov_enable_creates_vfs_with_links_data_and_groups() {
    let (mut m, _) = model(NIC);
    let pf = "0000:05:00.0";
    assert_eq!(
        pci_write(&mut m, pf, PciAttr::SriovNumvfs, "2"),
        done(Ok(()))
    );
    let vf = m.pci_device("0000:05:00.5").expect("VF 1 exists");
    assert_eq!(
        vf.role,
        Role::Vf {
            pf: pf.into(),
            index: 1
        }
    );
    assert_ne!(
        vf.iommu_group,
        m.pci_device(pf).map_or(0, |p| p.iommu_group)
    );
    assert_eq!(read(&m, Attr::Pci(pf.into(), PciAttr::SriovNumvfs)), "2\n");
}

#[test]
fn sriov_vfs_without_a_vf_driver_stay_unbound() {
    let (mut m, _) = model(NIC);
    assert_eq!(
        pci_write(&mut m, "0000:05:00.0", PciAttr::SriovNumvfs, "1"),
        done(Ok(()))
    );
    assert_eq!(
        m.pci_device("0000:05:00.4").and_then(|d| d.driver.clone()),
        None
    );
}

#[test]
fn sriov_autoprobe_off_leaves_new_vfs_unbound() {
    let (mut m, _) = model(&A10.replace("numvfs = 4", "numvfs = 0"));
    let pf = "0000:41:00.0";
    assert_eq!(
        pci_write(&mut m, pf, PciAttr::SriovAutoprobe, "0\n"),
        done(Ok(()))
    );
    assert_eq!(drv_write(&mut m, "nvidia", DriverAttr::Unbind, pf), Ok(()));
    assert_eq!(
        drv_write(&mut m, "pci-pf-stub", DriverAttr::NewId, "10de 2236"),
        Ok(())
    );
    assert_eq!(
        pci_write(&mut m, pf, PciAttr::SriovNumvfs, "1"),
        done(Ok(()))
    );
    assert_eq!(
        m.pci_device("0000:41:00.4").and_then(|d| d.driver.clone()),
        None
    );
    assert!(m.parents().is_empty());
}

#[test]
fn sriov_disable_with_a_held_vf_is_ebusy() {
    let (mut m, _) = model(NIC);
    let pf = "0000:05:00.0";
    assert_eq!(
        pci_write(&mut m, pf, PciAttr::SriovNumvfs, "2"),
        done(Ok(()))
    );
    assert_eq!(m.hold("0000:05:00.4"), Ok(()));
    assert_eq!(
        pci_write(&mut m, pf, PciAttr::SriovNumvfs, "0"),
        done(Err(libc::EBUSY))
    );
    assert_eq!(m.release("0000:05:00.4"), Ok(()));
    assert_eq!(
        pci_write(&mut m, pf, PciAttr::SriovNumvfs, "0"),
        done(Ok(()))
    );
    assert!(m.pci_device("0000:05:00.4").is_none());
}

#[test]
fn amd_gim_vfs_exist_from_mount_and_cannot_be_reconfigured() {
    let (mut m, _) = model(GIM);
    assert!(m.pci_device("0000:04:00.4").is_some());
    assert!(m.pci_device("0000:04:00.5").is_some());
    assert_eq!(
        pci_write(&mut m, "0000:04:00.0", PciAttr::SriovNumvfs, "0"),
        done(Err(libc::ENOENT))
    );
}

// ----- driver binding -----

#[test]
fn bind_to_vfio_pci_without_override_or_id_is_enodev() {
    let (mut m, _) = model(GIM);
    let bind = Attr::Driver("vfio-pci".into(), DriverAttr::Bind);
    assert_eq!(m.write(&bind, b"0000:04:00.4\n"), done(Err(libc::ENODEV)));
}

#[test]
fn bind_after_driver_override_moves_the_driver() {
    let (mut m, _) = model(GIM);
    let vf = "0000:04:00.4";
    assert_eq!(
        pci_write(&mut m, vf, PciAttr::DriverOverride, "vfio-pci\n"),
        done(Ok(()))
    );
    let bind = Attr::Driver("vfio-pci".into(), DriverAttr::Bind);
    assert_eq!(m.write(&bind, vf.as_bytes()), done(Ok(())));
    assert_eq!(
        m.pci_device(vf).and_then(|d| d.driver.clone()).as_deref(),
        Some("vfio-pci")
    );
    assert_eq!(
        read(&m, Attr::Pci(vf.into(), PciAttr::DriverOverride)),
        "vfio-pci\n"
    );
}

#[test]
fn bind_of_a_bound_device_is_ebusy() {
    let (mut m, _) = model(P40);
    assert_eq!(
        pci_write(&mut m, PF, PciAttr::DriverOverride, "vfio-pci"),
        done(Ok(()))
    );
    let bind = Attr::Driver("vfio-pci".into(), DriverAttr::Bind);
    assert_eq!(m.write(&bind, PF.as_bytes()), done(Err(libc::EBUSY)));
}

#[test]
fn unbind_from_a_driver_the_device_is_not_bound_to_is_enodev() {
    let (mut m, _) = model(P40);
    let unbind = Attr::Driver("vfio-pci".into(), DriverAttr::Unbind);
    assert_eq!(m.write(&unbind, PF.as_bytes()), done(Err(libc::ENODEV)));
}

#[test]
fn driver_override_cleared_by_a_newline_reads_null() {
    let (mut m, _) = model(P40);
    assert_eq!(
        pci_write(&mut m, PF, PciAttr::DriverOverride, "vfio-pci"),
        done(Ok(()))
    );
    assert_eq!(
        pci_write(&mut m, PF, PciAttr::DriverOverride, "\n"),
        done(Ok(()))
    );
    assert_eq!(
        read(&m, Attr::Pci(PF.into(), PciAttr::DriverOverride)),
        "(null)\n"
    );
}

#[test]
fn new_id_binds_every_unbound_matching_device() {
    let (mut m, _) = model(GIM);
    let new_id = Attr::Driver("vfio-pci".into(), DriverAttr::NewId);
    assert_eq!(m.write(&new_id, b"1002 6929\n"), done(Ok(())));
    for vf in ["0000:04:00.4", "0000:04:00.5"] {
        assert_eq!(
            m.pci_device(vf).and_then(|d| d.driver.clone()).as_deref(),
            Some("vfio-pci")
        );
    }
    assert_eq!(
        m.pci_device("0000:04:00.0")
            .and_then(|d| d.driver.clone())
            .as_deref(),
        Some("vfio-pci"),
        "the old GIM's PF has no driver, so it matches too"
    );
    assert_eq!(m.write(&new_id, b"1002 6929\n"), done(Err(libc::EEXIST)));
}

#[test]
fn drivers_probe_rebinds_the_host_driver() {
    let (mut m, _) = model(P40);
    let unbind = Attr::Driver("nvidia".into(), DriverAttr::Unbind);
    assert_eq!(m.write(&unbind, PF.as_bytes()), done(Ok(())));
    assert_eq!(m.write(&Attr::DriversProbe, PF.as_bytes()), done(Ok(())));
    assert_eq!(m.parents(), [PF]);
}

// ----- kernel 6.8+ NVIDIA -----

#[test]
fn vfio_creatable_types_use_nvidia_format() {
    let (m, _) = model(L40S);
    let text = read(&m, Attr::Vfio("0000:c1:00.4".into(), VfioAttr::Creatable));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ID    : vGPU Name"));
    assert_eq!(lines.next(), Some("1145  : NVIDIA L40S-1B"));
    assert_eq!(text.lines().last(), Some("2164  : NVIDIA L40S-3B"));
}

#[test]
fn vfio_current_type_reads_zero_when_free_and_the_id_once_set() {
    let (mut m, _) = model(L40S);
    let vf = "0000:c1:00.4";
    let cur = Attr::Vfio(vf.into(), VfioAttr::Current);
    assert_eq!(read(&m, cur.clone()), "0\n");
    assert_eq!(read(&m, Attr::Vfio(vf.into(), VfioAttr::Params)), "");
    assert_eq!(m.write(&cur, b"1150\n"), done(Ok(())));
    assert_eq!(read(&m, cur), "1150\n");
    assert_eq!(read(&m, Attr::Vfio(vf.into(), VfioAttr::Params)), "\n");
    assert_eq!(read(&m, Attr::Vfio(vf.into(), VfioAttr::PlacementId)), "");
}

#[test]
fn vfio_current_type_is_decimal_and_uncreatable_ids_are_eio() {
    let (mut m, _) = model(L40S);
    let cur = Attr::Vfio("0000:c1:00.4".into(), VfioAttr::Current);
    assert_eq!(m.write(&cur, b"12345"), done(Err(libc::EIO)));
    assert_eq!(m.write(&cur, b"L40S-4Q"), done(Err(libc::EINVAL)));
    assert_eq!(m.write(&cur, b"0x47e"), done(Err(libc::EINVAL)));
    assert_eq!(
        m.write(&cur, b"01150\n"),
        done(Ok(())),
        "a leading 0 is still decimal"
    );
}

#[test]
fn vfio_clear_without_a_vgpu_and_a_second_type_are_eperm() {
    let (mut m, _) = model(L40S);
    let cur = Attr::Vfio("0000:c1:00.4".into(), VfioAttr::Current);
    assert_eq!(m.write(&cur, b"0"), done(Err(libc::EPERM)));
    assert_eq!(m.write(&cur, b"1150"), done(Ok(())));
    assert_eq!(m.write(&cur, b"1150"), done(Err(libc::EPERM)));
    assert_eq!(m.write(&cur, b"0\n"), done(Ok(())));
}

#[test]
fn vfio_creatable_types_shrink_with_siblings_and_empty_a_configured_vf() {
    let (mut m, _) = model(L40S);
    // 1156 is L40S-48Q: the whole card.
    let cur = |vf: &str| Attr::Vfio(vf.into(), VfioAttr::Current);
    assert_eq!(m.write(&cur("0000:c1:00.4"), b"1156"), done(Ok(())));
    assert_eq!(
        read(&m, Attr::Vfio("0000:c1:00.5".into(), VfioAttr::Creatable)),
        "ID    : vGPU Name\n"
    );
    assert_eq!(
        read(&m, Attr::Vfio("0000:c1:00.4".into(), VfioAttr::Creatable)),
        "ID    : vGPU Name\n"
    );
    assert_eq!(m.write(&cur("0000:c1:00.5"), b"1147"), done(Err(libc::EIO)));
}

#[test]
fn vfio_sibling_of_same_size_keeps_its_share() {
    let (mut m, _) = model(L40S);
    let cur = |vf: &str| Attr::Vfio(vf.into(), VfioAttr::Current);
    assert_eq!(m.write(&cur("0000:c1:00.4"), b"1155"), done(Ok(()))); // 24Q: 2 per card
    let ids: Vec<String> = m
        .creatable_types("0000:c1:00.5")
        .iter()
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(ids, ["1155", "1165"], "24Q and 24A");
}

#[test]
fn vfio_write_while_held_is_eperm() {
    let (mut m, _) = model(L40S);
    let cur = Attr::Vfio("0000:c1:00.4".into(), VfioAttr::Current);
    assert_eq!(m.write(&cur, b"1147"), done(Ok(())));
    assert_eq!(m.hold("0000:c1:00.4"), Ok(()));
    assert_eq!(m.write(&cur, b"0"), done(Err(libc::EPERM)));
}

#[test]
fn vfio_clear_within_reset_busy_window_waits_then_succeeds_or_is_ebusy() {
    let (mut m, t0) = model(&L40S.replace(
        "reset_busy_ms = 1000",
        "reset_busy_ms = 1000\nexit_timeout_ms = 300",
    ));
    let vf = "0000:c1:00.4";
    let cur = Attr::Vfio(vf.into(), VfioAttr::Current);
    assert_eq!(m.write(&cur, b"1147"), done(Ok(())));
    assert_eq!(m.hold(vf), Ok(()));
    assert_eq!(m.release(vf), Ok(()));
    assert_eq!(
        m.write(&cur, b"0"),
        WriteOutcome::Waiting {
            addr: vf.into(),
            delay: Duration::from_millis(300)
        }
    );
    m.advance(t0 + Duration::from_millis(300));
    assert_eq!(m.finish_clear(vf), Err(libc::EBUSY));
    m.advance(t0 + Duration::from_millis(800));
    assert_eq!(
        m.write(&cur, b"0"),
        WriteOutcome::Waiting {
            addr: vf.into(),
            delay: Duration::from_millis(200)
        }
    );
    m.advance(t0 + Duration::from_millis(1000));
    assert_eq!(m.finish_clear(vf), Ok(()));
    assert_eq!(read(&m, cur), "0\n");
}

#[test]
fn vfio_interface_exists_only_on_vfs_bound_to_nvidia() {
    let (mut m, _) = model(L40S);
    assert!(m.vfio_dir_visible("0000:c1:00.4"));
    assert!(!m.vfio_dir_visible("0000:c1:00.0"));
    let unbind = Attr::Driver("nvidia".into(), DriverAttr::Unbind);
    assert_eq!(m.write(&unbind, b"0000:c1:00.4"), done(Ok(())));
    assert!(!m.vfio_dir_visible("0000:c1:00.4"));
}

// ----- attributes, control, events -----

#[test]
fn read_only_attributes_refuse_writes_with_eacces() {
    let (mut m, _) = model(P40);
    assert_eq!(
        pci_write(&mut m, PF, PciAttr::Vendor, "0x1234"),
        done(Err(libc::EACCES))
    );
}

#[test]
fn pci_identity_reads_in_sysfs_format() {
    let (m, _) = model(P40);
    assert_eq!(read(&m, Attr::Pci(PF.into(), PciAttr::Vendor)), "0x10de\n");
    assert_eq!(read(&m, Attr::Pci(PF.into(), PciAttr::Device)), "0x1b38\n");
    assert_eq!(read(&m, Attr::Pci(PF.into(), PciAttr::Class)), "0x030200\n");
    assert_eq!(read(&m, Attr::Pci(PF.into(), PciAttr::NumaNode)), "-1\n");
}

#[test]
fn control_unknown_command_is_einval() {
    let (mut m, _) = model(P40);
    assert_eq!(
        m.write(&Attr::Control, b"explode now\n"),
        done(Err(libc::EINVAL))
    );
}

#[test]
fn control_runs_every_line_of_one_write() {
    let (mut m, _) = model(MTTY);
    assert_eq!(create(&mut m, "mtty", "mtty-1", 1), Ok(()));
    let cmds = format!("hold {}\nrelease {}\n", uuid(1), uuid(1));
    assert_eq!(m.write(&Attr::Control, cmds.as_bytes()), done(Ok(())));
    assert!(!m.mdev(&uuid(1)).is_some_and(|d| d.held));
}

#[test]
fn fault_on_an_unknown_parent_is_enoent() {
    let (mut m, _) = model(MTTY);
    assert_eq!(
        m.write(&Attr::Control, b"fault create-eio nosuch\n"),
        done(Err(libc::ENOENT))
    );
}

#[test]
fn events_record_path_value_and_errno_name() {
    let (mut m, _) = model(P40);
    m.record("sys/a/create", b"x\n", Ok(()));
    m.record("sys/a/remove", b"", Err(libc::EEXIST));
    assert_eq!(
        m.events_text(),
        "sys/a/create x -> ok\nsys/a/remove \"\" -> EEXIST\n"
    );
}

#[test]
fn mdev_iommu_groups_are_listed_with_pci_ones() {
    let (mut m, _) = model(P40);
    assert_eq!(create(&mut m, PF, "nvidia-46", 1), Ok(()));
    let g = m
        .mdev(&uuid(1))
        .map(|d| d.iommu_group)
        .expect("device exists");
    assert_eq!(m.iommu_groups().get(&g), Some(&vec![uuid(1)]));
}

// ----- NVIDIA mixed-size mode and placements (kernel 6.8+) -----

/// An L40S with Ada's placement rules and four VFs.
const L40S_MIXED: &str = r#"
[[gpu]]
address = "0000:c1:00.0"
kind = "nvidia-vfio"
board = "L40S"
framebuffer_mb = 49152
numvfs = 4
generation = "ada"
"#;

const L40S_PF: &str = "0000:c1:00.0";

fn mode(pf: &str) -> Attr {
    Attr::Heterogeneous(pf.into())
}

fn set_type(m: &mut Model, vf: &str, id: &str) -> WriteOutcome {
    m.write(&Attr::Vfio(vf.into(), VfioAttr::Current), id.as_bytes())
}

fn placement(m: &Model, vf: &str) -> String {
    read(m, Attr::Vfio(vf.into(), VfioAttr::PlacementId))
}

fn mixed_l40s() -> Model {
    let (mut m, _) = model(L40S_MIXED);
    assert_eq!(m.write(&mode(L40S_PF), b"1"), done(Ok(())));
    m
}

#[test]
fn mixed_size_mode_is_off_until_set_and_then_hosts_two_sizes() {
    let (m, _) = model(L40S_MIXED);
    assert_eq!(read(&m, mode(L40S_PF)), "0\n");
    let mut m = mixed_l40s();
    assert_eq!(read(&m, mode(L40S_PF)), "1\n");
    assert_eq!(set_type(&mut m, "0000:c1:00.4", "1152"), done(Ok(()))); // 8Q
    assert_eq!(set_type(&mut m, "0000:c1:00.5", "1154"), done(Ok(()))); // 16Q
    assert_eq!(placement(&m, "0000:c1:00.4"), "0\n");
    assert_eq!(
        placement(&m, "0000:c1:00.5"),
        "32\n",
        "16Q's ids are 0 and 32"
    );
}

#[test]
fn mixed_size_mode_cannot_change_once_a_vgpu_exists() {
    let (mut m, _) = model(L40S_MIXED);
    assert_eq!(set_type(&mut m, "0000:c1:00.4", "1152"), done(Ok(())));
    assert_eq!(m.write(&mode(L40S_PF), b"1"), done(Err(libc::EBUSY)));
}

#[test]
fn mixed_size_mode_is_not_supported_on_a_board_without_placements() {
    let (mut m, _) = model(L40S);
    assert_eq!(
        m.write(&mode("0000:c1:00.0"), b"1"),
        done(Err(libc::EOPNOTSUPP))
    );
}

#[test]
fn mixed_size_mode_is_lost_when_the_pf_leaves_its_driver() {
    let mut m = mixed_l40s();
    let unbind = Attr::Driver("nvidia".into(), DriverAttr::Unbind);
    assert_eq!(m.write(&unbind, L40S_PF.as_bytes()), done(Ok(())));
    let bind = Attr::Driver("nvidia".into(), DriverAttr::Bind);
    assert_eq!(m.write(&bind, L40S_PF.as_bytes()), done(Ok(())));
    assert_eq!(read(&m, mode(L40S_PF)), "0\n");
}

#[test]
fn mixed_size_creatable_types_are_those_with_a_free_placement() {
    let mut m = mixed_l40s();
    assert_eq!(set_type(&mut m, "0000:c1:00.4", "1155"), done(Ok(()))); // 24Q at 0
    let ids: Vec<String> = m
        .creatable_types("0000:c1:00.5")
        .iter()
        .map(|t| t.id.clone())
        .collect();
    assert!(
        !ids.contains(&"1156".to_string()),
        "48Q needs the whole card"
    );
    assert!(ids.contains(&"1154".to_string()), "16Q still fits at 32");
    assert!(
        ids.contains(&"1147".to_string()),
        "1Q fits in the free half"
    );
}

#[test]
fn one_size_mode_still_takes_one_size_and_places_from_zero() {
    let (mut m, _) = model(L40S_MIXED);
    assert_eq!(set_type(&mut m, "0000:c1:00.4", "1154"), done(Ok(())));
    assert_eq!(
        set_type(&mut m, "0000:c1:00.5", "1152"),
        done(Err(libc::EIO))
    );
    assert_eq!(set_type(&mut m, "0000:c1:00.5", "1154"), done(Ok(())));
    assert_eq!(placement(&m, "0000:c1:00.5"), "16\n");
}

#[test]
fn a_placement_write_moves_the_vgpu_to_a_creatable_id_only() {
    let mut m = mixed_l40s();
    let at = |vf: &str| Attr::Vfio(vf.into(), VfioAttr::PlacementId);
    assert_eq!(set_type(&mut m, "0000:c1:00.4", "1152"), done(Ok(()))); // 8Q at 0
    assert_eq!(m.write(&at("0000:c1:00.4"), b"40"), done(Ok(())));
    assert_eq!(placement(&m, "0000:c1:00.4"), "40\n");
    assert_eq!(m.write(&at("0000:c1:00.4"), b"41"), done(Err(libc::EINVAL)));
    assert_eq!(set_type(&mut m, "0000:c1:00.5", "1155"), done(Ok(()))); // 24Q at 0
    assert_eq!(
        m.write(&at("0000:c1:00.4"), b"16"),
        done(Err(libc::EINVAL)),
        "16 overlaps the 24Q"
    );
    assert_eq!(m.write(&at("0000:c1:00.6"), b"0"), done(Err(libc::ENXIO)));
    m.hold("0000:c1:00.4").unwrap();
    assert_eq!(m.write(&at("0000:c1:00.4"), b"24"), done(Err(libc::EPERM)));
}

#[test]
fn nvml_placement_lists_show_size_supported_and_creatable_ids() {
    let mut m = mixed_l40s();
    assert_eq!(set_type(&mut m, "0000:c1:00.4", "1153"), done(Ok(()))); // 12Q at 0
    let text = read(&m, Attr::Placements(L40S_PF.into()));
    assert!(
        text.contains("1153 size=12 supported=0,12,24,36 creatable=12,24,36\n"),
        "{text}"
    );
    assert!(
        text.contains("1156 size=48 supported=0 creatable=\n"),
        "{text}"
    );
}
