//! The simulator through the kernel: real file operations on a mounted host get the model's
//! errno, devices appear, links resolve inside the mount, a blocked remove returns after
//! `release`, the event log records every write. Hosts, helpers and the harness (the hook's
//! own) come from `common`. Without FUSE these tests say why and return (with `CI=true` they
//! fail instead).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::hosts::{self, A2_SRIOV, MTTY, P40, P40_PF as PF};
use common::{errno, mdev, pci, read, start, types_dir, uuid, write, Sim};

#[test]
fn create_errnos_come_back_through_the_kernel() {
    let Some(sim) = start(&[P40, MTTY].concat()) else {
        return;
    };
    let p40 = types_dir(&sim, PF);
    let mtty = types_dir(&sim, "mtty");
    let create = |dir: &Path, ty: &str, v: &str| write(dir.join(ty).join("create"), v);
    assert_eq!(create(&p40, "nvidia-46", "bogus\n"), Some(libc::EINVAL));
    assert_eq!(create(&p40, "nvidia-46", &uuid(1)), None);
    assert_eq!(create(&mtty, "mtty-1", &uuid(1)), Some(libc::EEXIST));
    assert_eq!(create(&mtty, "mtty-2", &format!("{}\n", uuid(2))), None);
    assert_eq!(create(&mtty, "mtty-2", &uuid(3)), Some(libc::ENOSPC));
    assert_eq!(create(&p40, "nvidia-53", &uuid(4)), Some(libc::EIO));
}

#[test]
fn a_create_takes_one_instance_and_lists_the_device_under_its_type() {
    let Some(sim) = start(P40) else { return };
    let ty = types_dir(&sim, PF).join("nvidia-49");
    assert_eq!(read(ty.join("available_instances")), "6\n");
    assert_eq!(write(ty.join("create"), &uuid(7)), None);
    assert_eq!(read(ty.join("available_instances")), "5\n");
    let listed: Vec<String> = common::names(&ty.join("devices")).into_iter().collect();
    assert_eq!(listed, [uuid(7)]);
}

#[test]
fn a_created_device_has_links_that_resolve_inside_the_mount() {
    let Some(sim) = start(P40) else { return };
    let ty = types_dir(&sim, PF).join("nvidia-49");
    assert_eq!(write(ty.join("create"), &uuid(7)), None);
    let root = std::fs::canonicalize(sim.root()).expect("mount point");
    let dev = std::fs::canonicalize(mdev(&sim, &uuid(7))).expect("the mdev link resolves");
    assert!(
        dev.starts_with(&root),
        "{} escapes the mount",
        dev.display()
    );
    assert!(
        dev.ends_with(format!("{PF}/{}", uuid(7))),
        "{}",
        dev.display()
    );
    let parent =
        std::fs::canonicalize(sim.root().join("sys/class/mdev_bus").join(PF)).expect("class link");
    assert_eq!(dev.parent(), Some(parent.as_path()));
    let group = std::fs::canonicalize(dev.join("iommu_group")).expect("iommu_group link");
    assert!(group.starts_with(root.join("sys/kernel/iommu_groups")));
}

#[test]
fn a_created_device_links_to_its_type() {
    let Some(sim) = start(P40) else { return };
    let ty = types_dir(&sim, PF).join("nvidia-49");
    assert_eq!(write(ty.join("create"), &uuid(7)), None);
    let dev = mdev(&sim, &uuid(7));
    let ty_link = std::fs::read_link(dev.join("mdev_type")).expect("mdev_type link");
    assert_eq!(
        ty_link.file_name().and_then(|n| n.to_str()),
        Some("nvidia-49")
    );
    assert_eq!(read(dev.join("mdev_type/name")), "GRID P40-4Q\n");
}

#[test]
fn remove_through_the_bus_link_makes_the_device_vanish() {
    let Some(sim) = start(P40) else { return };
    let ty = types_dir(&sim, PF).join("nvidia-46");
    assert_eq!(write(ty.join("create"), &uuid(1)), None);
    let dev = mdev(&sim, &uuid(1));
    assert_eq!(write(dev.join("remove"), "yes"), Some(libc::EINVAL));
    assert_eq!(write(dev.join("remove"), "1\n"), None);
    assert!(!dev.exists());
    assert_eq!(read(ty.join("available_instances")), "24\n");
}

#[test]
fn attribute_reads_return_the_generated_length_whatever_st_size_says() {
    let Some(sim) = start(P40) else { return };
    let vendor = pci(&sim, PF).join("vendor");
    assert_eq!(std::fs::metadata(&vendor).expect("stat").len(), 4096);
    assert_eq!(read(&vendor), "0x10de\n");
    assert_eq!(
        read(types_dir(&sim, PF).join("nvidia-46/description"))
            .lines()
            .count(),
        1
    );
}

#[test]
fn files_opened_against_their_direction_are_eacces() {
    let Some(sim) = start(P40) else { return };
    let create = types_dir(&sim, PF).join("nvidia-46/create");
    assert_eq!(
        std::fs::read(&create).err().and_then(|e| e.raw_os_error()),
        Some(libc::EACCES)
    );
    assert_eq!(
        write(pci(&sim, PF).join("vendor"), "0x1234"),
        Some(libc::EACCES)
    );
}

#[test]
fn writing_to_an_attribute_of_a_vanished_device_is_enodev() {
    use std::io::Write;
    let Some(sim) = start(P40) else { return };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(types_dir(&sim, PF).join("nvidia-46/create"))
        .expect("open create");
    sim.control(&format!("unplug {PF}")).expect("unplug");
    let r = f.write(uuid(1).as_bytes()).map(|_| ());
    assert_eq!(errno(r), Some(libc::ENODEV));
    assert!(!sim.root().join("sys/class/mdev_bus").join(PF).exists());
}

#[test]
fn a_gpu_plugged_back_registers_its_parent_with_full_capacity() {
    let Some(sim) = start(P40) else { return };
    sim.control(&format!("unplug {PF}")).expect("unplug");
    sim.control(&format!("plug {PF}")).expect("plug");
    assert_eq!(
        read(types_dir(&sim, PF).join("nvidia-46/available_instances")),
        "24\n"
    );
}

#[test]
fn a_blocked_remove_returns_after_release_while_other_requests_are_served() {
    let Some(sim) = start(MTTY) else { return };
    let ty = types_dir(&sim, "mtty").join("mtty-2");
    assert_eq!(write(ty.join("create"), &uuid(1)), None);
    sim.control(&format!("hold {}", uuid(1))).expect("hold");
    let remove = mdev(&sim, &uuid(1)).join("remove");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::write(remove, "1"));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "remove returned while held"
    );
    // The session keeps answering meanwhile.
    assert_eq!(read(ty.join("available_instances")), "0\n");
    assert_eq!(
        write(types_dir(&sim, "mtty").join("mtty-1/create"), &uuid(2)),
        None
    );
    sim.control(&format!("release {}", uuid(1)))
        .expect("release");
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("remove returned after release");
    assert_eq!(errno(result), None);
    assert!(!mdev(&sim, &uuid(1)).exists());
    assert_eq!(read(ty.join("available_instances")), "1\n");
}

#[test]
fn a_slow_create_replies_after_its_delay() {
    let Some(sim) = start(MTTY) else { return };
    sim.control("fault create-delay mtty 400").expect("fault");
    let t = Instant::now();
    assert_eq!(
        write(types_dir(&sim, "mtty").join("mtty-1/create"), &uuid(1)),
        None
    );
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert!(mdev(&sim, &uuid(1)).exists());
}

#[test]
fn create_eio_fault_fails_the_next_create_only() {
    let Some(sim) = start(MTTY) else { return };
    sim.control("fault create-eio mtty").expect("fault");
    let create = types_dir(&sim, "mtty").join("mtty-1/create");
    assert_eq!(write(&create, &uuid(1)), Some(libc::EIO));
    assert_eq!(write(&create, &uuid(1)), None);
}

#[test]
fn the_event_log_records_each_write_with_its_result() {
    let Some(sim) = start(MTTY) else { return };
    let create = types_dir(&sim, "mtty").join("mtty-2/create");
    let _ = write(&create, &format!("{}\n", uuid(1)));
    let _ = write(&create, &uuid(2));
    let dir = "sys/devices/virtual/mtty/mtty";
    assert_eq!(
        sim.events(),
        format!(
            "{dir}/mdev_supported_types/mtty-2/create {} -> ok\n{dir}/mdev_supported_types/mtty-2/create {} -> ENOSPC\n",
            uuid(1),
            uuid(2)
        )
    );
}

#[test]
fn control_errors_come_back_as_errno() {
    let Some(sim) = start(MTTY) else { return };
    assert_eq!(errno(sim.control("explode")), Some(libc::EINVAL));
    assert_eq!(
        errno(sim.control(&format!("hold {}", uuid(9)))),
        Some(libc::ENOENT)
    );
    assert_eq!(sim.events(), "", "control writes are not sys/ writes");
}

#[test]
fn sriov_numvfs_refuses_too_many_vfs_and_a_change_while_enabled() {
    let Some(sim) = start(&hosts::mixed()) else {
        return;
    };
    let numvfs = pci(&sim, "0000:05:00.0").join("sriov_numvfs");
    assert_eq!(write(&numvfs, "5"), Some(libc::ERANGE));
    assert_eq!(write(&numvfs, "2"), None);
    assert_eq!(write(&numvfs, "3"), Some(libc::EBUSY));
}

#[test]
fn virtfn_and_physfn_links_resolve_to_each_other() {
    let Some(sim) = start(&hosts::mixed()) else {
        return;
    };
    let pf = pci(&sim, "0000:05:00.0");
    assert_eq!(write(pf.join("sriov_numvfs"), "2"), None);
    let vf = std::fs::canonicalize(pf.join("virtfn1")).expect("virtfn1 resolves");
    assert!(vf.ends_with("0000:05:00.5"), "{}", vf.display());
    let back = std::fs::canonicalize(vf.join("physfn")).expect("physfn resolves");
    assert_eq!(back, std::fs::canonicalize(&pf).expect("pf"));
}

#[test]
fn a_gim_vf_count_is_fixed_at_load() {
    let Some(sim) = start(&hosts::mixed()) else {
        return;
    };
    let gim = pci(&sim, "0000:04:00.0").join("sriov_numvfs");
    assert_eq!(read(&gim), "2\n");
    assert_eq!(write(&gim, "0"), Some(libc::ENOENT));
}

#[test]
fn driver_override_and_bind_move_the_driver_link() {
    let Some(sim) = start(&hosts::mixed()) else {
        return;
    };
    let vf = "0000:04:00.4";
    let drivers = sim.root().join("sys/bus/pci/drivers");
    assert!(
        std::fs::read_link(pci(&sim, vf).join("driver")).is_err(),
        "GIM VFs start unbound"
    );
    assert_eq!(write(drivers.join("vfio-pci/bind"), vf), Some(libc::ENODEV));
    assert_eq!(
        write(pci(&sim, vf).join("driver_override"), "vfio-pci\n"),
        None
    );
    assert_eq!(write(drivers.join("vfio-pci/bind"), vf), None);
    let drv = std::fs::canonicalize(pci(&sim, vf).join("driver")).expect("driver link");
    assert!(
        drv.ends_with("sys/bus/pci/drivers/vfio-pci"),
        "{}",
        drv.display()
    );
    assert!(drivers.join("vfio-pci").join(vf).exists());
}

/// `nvidia/` of the first VF of the mixed host's L40S.
fn l40s_vf(sim: &Sim) -> PathBuf {
    pci(sim, "0000:c1:00.4").join("nvidia")
}

#[test]
fn a_kernel_6_8_vf_takes_a_creatable_type_through_current_vgpu_type() {
    let Some(sim) = start(&hosts::mixed()) else {
        return;
    };
    let nv = l40s_vf(&sim);
    let creatable = read(nv.join("creatable_vgpu_types"));
    assert!(
        creatable.starts_with("ID    : vGPU Name\n1145  : NVIDIA L40S-1B\n"),
        "{creatable}"
    );
    assert_eq!(write(nv.join("current_vgpu_type"), "1"), Some(libc::EIO));
    assert_eq!(write(nv.join("current_vgpu_type"), "1156\n"), None);
    assert_eq!(read(nv.join("current_vgpu_type")), "1156\n");
}

#[test]
fn a_type_on_one_kernel_6_8_vf_leaves_its_sibling_nothing_creatable() {
    let Some(sim) = start(&hosts::mixed()) else {
        return;
    };
    assert_eq!(
        write(l40s_vf(&sim).join("current_vgpu_type"), "1156\n"),
        None
    );
    let sibling = pci(&sim, "0000:c1:00.5").join("nvidia/creatable_vgpu_types");
    assert_eq!(read(sibling), "ID    : vGPU Name\n");
}

#[test]
fn a_held_kernel_6_8_vf_keeps_its_type() {
    let Some(sim) = start(&hosts::mixed()) else {
        return;
    };
    let cur = l40s_vf(&sim).join("current_vgpu_type");
    assert_eq!(write(&cur, "1156\n"), None);
    sim.control("hold 0000:c1:00.4").expect("hold");
    assert_eq!(write(&cur, "0"), Some(libc::EPERM));
}

#[test]
fn a_clear_right_after_release_blocks_until_the_driver_lets_go() {
    let host = hosts::mixed() + "reset_busy_ms = 400\nexit_timeout_ms = 5000\n";
    let Some(sim) = start(&host) else { return };
    let cur = l40s_vf(&sim).join("current_vgpu_type");
    assert_eq!(write(&cur, "1147\n"), None, "set a type");
    sim.control("hold 0000:c1:00.4\nrelease 0000:c1:00.4")
        .expect("hold and release");
    let t = Instant::now();
    assert_eq!(write(&cur, "0\n"), None);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(read(&cur), "0\n");
}

#[test]
fn pci_pf_stub_enables_the_vfs_of_an_nvidia_pf_as_sriov_manage_does() {
    let Some(sim) = start(A2_SRIOV) else { return };
    let pf = "0000:41:00.0";
    let drivers = sim.root().join("sys/bus/pci/drivers");
    let numvfs = pci(&sim, pf).join("sriov_numvfs");
    assert_eq!(write(&numvfs, "4"), Some(libc::ENOENT));
    for (file, value) in [("nvidia/unbind", pf), ("pci-pf-stub/new_id", "10de 25b6\n")] {
        assert_eq!(write(drivers.join(file), value), None, "{file}");
    }
    assert!(drivers.join("pci-pf-stub").join(pf).exists());
    assert_eq!(write(&numvfs, "4\n"), None, "enable VFs");
    for (file, value) in [
        ("pci-pf-stub/unbind", pf),
        ("pci-pf-stub/remove_id", "10de 25b6\n"),
        ("nvidia/bind", pf),
    ] {
        assert_eq!(write(drivers.join(file), value), None, "{file}");
    }
    assert_eq!(read(&numvfs), "4\n");
    let types = types_dir(&sim, "0000:41:00.7");
    assert_eq!(read(types.join("nvidia-746/name")), "NVIDIA A2-4Q\n");
    let config = std::fs::read(pci(&sim, pf).join("config")).expect("config");
    assert_eq!(&config[0x114..0x118], &[4, 0, 1, 0]);
}

#[test]
fn sixty_four_processes_at_once_all_get_served() {
    let Some(sim) = start(MTTY) else { return };
    let ty = types_dir(&sim, "mtty").join("mtty-1");
    let children: Vec<_> = (0..64)
        .map(|n| {
            Command::new("sh")
                .arg("-c")
                .arg(
                    "cat \"$1/available_instances\" \"$1/name\" >/dev/null && \
                     ls \"$1/../..\" >/dev/null && printf %s \"$2\" > \"$1/create\"",
                )
                .arg("sh")
                .arg(&ty)
                .arg(uuid(n))
                .spawn()
                .expect("spawn sh")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    assert_eq!(read(ty.join("available_instances")), "0\n");
    let live = std::fs::read_dir(sim.root().join("sys/bus/mdev/devices"))
        .expect("bus")
        .count();
    assert_eq!(live, 64);
}

#[test]
fn sigterm_unmounts_and_exits_zero() {
    let Some(sim) = start(MTTY) else { return };
    let root = sim.root().to_path_buf();
    assert!(root.join("sys").exists());
    let status = sim.stop().expect("exit status");
    assert!(status.success(), "{status:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&root.display().to_string()),
        "still mounted: {}",
        root.display()
    );
}

#[test]
fn the_harness_skips_when_the_mount_fails_and_fails_on_ci() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("vgpu-sim");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'vgpu-sim: cannot mount at x: Operation not permitted' >&2\nexit 3\n",
    )
    .expect("write fake binary");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    if !Path::new("/dev/fuse").exists() {
        return;
    }
    let on_ci = std::env::var("CI").as_deref() == Ok("true");
    let r = std::panic::catch_unwind(|| Sim::start_with(&fake, MTTY).is_none());
    match r {
        Ok(skipped) => assert!(skipped && !on_ci, "skipped={skipped} on_ci={on_ci}"),
        Err(_) => assert!(on_ci, "panicked although CI is not true"),
    }
}

#[test]
fn the_harness_names_the_build_command_when_the_binary_is_missing() {
    let r = std::panic::catch_unwind(|| Sim::start_with(Path::new("/nonexistent/vgpu-sim"), MTTY));
    let msg = match r {
        Ok(_) => panic!("a missing binary must panic"),
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(msg.contains("cargo build -p vgpu-sim"), "{msg}");
}

#[test]
fn a_bad_host_file_fails_naming_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = dir.path().join("host.toml");
    std::fs::write(&host, format!("{P40}framebuffer_mb = 1000\n")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_vgpu-sim"))
        .arg("mount")
        .arg(&host)
        .arg(dir.path())
        .output()
        .expect("run vgpu-sim");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: gpu[0].framebuffer_mb: expected",
            host.display()
        )),
        "{err}"
    );
}
