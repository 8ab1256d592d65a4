//! How the hook reads libvirt's call: argv, stdin, environment; what it does for domains that ask
//! for nothing; how it refuses bad config and crafted XML without touching anything.
//!
//! These run on a plain directory tree shaped like sysfs (no kernel reactions needed): every case
//! here must end before any write, and the tree is compared byte for byte afterwards.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::hook::*;

/// A plain sysfs-shaped tree with one mdev parent `mtty` (type mtty-2).
fn fixture_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let dev = t.path().join("sys/devices/virtual/mtty/mtty");
    let ty = dev.join("mdev_supported_types/mtty-2");
    std::fs::create_dir_all(ty.join("devices")).unwrap();
    for (f, v) in [
        ("name", "Dual port serial\n"),
        ("available_instances", "12\n"),
        ("device_api", "vfio-pci\n"),
        ("create", ""),
    ] {
        std::fs::write(ty.join(f), v).unwrap();
    }
    std::fs::create_dir_all(t.path().join("sys/class/mdev_bus")).unwrap();
    std::os::unix::fs::symlink(
        "../../devices/virtual/mtty/mtty",
        t.path().join("sys/class/mdev_bus/mtty"),
    )
    .unwrap();
    std::fs::create_dir_all(t.path().join("sys/bus/mdev/devices")).unwrap();
    t
}

/// Every file and link under `root` with its content or target.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(
                    path.clone(),
                    std::fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else if ft.is_dir() {
                out.insert(path.clone(), b"<dir>".to_vec());
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

const MTTY_CONFIG: &str = "mdev_parents = [\"mtty\"]\nparent_wait_secs = 0\ndevice_wait_secs = 1\n";

fn host() -> (tempfile::TempDir, TestHost) {
    let tree = fixture_tree();
    let h = TestHost::new(tree.path(), MTTY_CONFIG);
    (tree, h)
}

fn refused_without_a_write(meta: &str, needles: &[&str]) {
    let (tree, h) = host();
    let before = snapshot(tree.path());
    let o = h.prepare(&domain("crafted", Some(meta), ""));
    assert_refused(&o, needles);
    assert_eq!(snapshot(tree.path()), before, "the sysfs tree changed");
    assert!(h.records().is_empty());
}

#[test]
fn domain_without_metadata_exits_0_silently_even_with_broken_config_and_no_sysfs() {
    let h = TestHost::new(Path::new("/nonexistent"), "this is [not toml");
    for (op, sub) in [
        ("prepare", "begin"),
        ("start", "begin"),
        ("started", "begin"),
        ("stopped", "end"),
        ("release", "end"),
        ("reconnect", "begin"),
        ("migrate", "begin"),
        ("restore", "begin"),
    ] {
        assert_ok(&h.call("tiny", op, sub, "-", FIXTURE));
    }
    assert!(
        !h.state_dir().exists(),
        "no state for a domain that asks for nothing"
    );
}

#[test]
fn every_real_libvirt_capture_without_metadata_is_a_no_op() {
    let h = TestHost::new(Path::new("/nonexistent"), "");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (file, op, sub) in [
        ("hook-stdin-prepare-begin.xml", "prepare", "begin"),
        ("hook-stdin-start-begin.xml", "start", "begin"),
        ("hook-stdin-started-begin.xml", "started", "begin"),
        ("hook-stdin-stopped-end.xml", "stopped", "end"),
        ("hook-stdin-release-end.xml", "release", "end"),
    ] {
        let xml = std::fs::read_to_string(dir.join(file)).unwrap();
        assert_ok(&h.call("tiny", op, sub, "-", &xml));
    }
}

#[test]
fn metadata_under_another_namespace_with_our_prefix_is_not_ours() {
    let (tree, h) = host();
    let before = snapshot(tree.path());
    // Our namespace is declared (so the document is parsed), but the vgpu: prefix is another's.
    let xml = FIXTURE.replace(
        "  <memory unit='KiB'>",
        &format!("  <metadata xmlns:ours='{NS}'><vgpu:vgpu xmlns:vgpu='urn:someone-else'><vgpu:mdev uuid='{}' type='mtty-2'/></vgpu:vgpu></metadata>\n  <memory unit='KiB'>", mdev_uuid(1)),
    );
    assert_ok(&h.call("tiny", "prepare", "begin", "-", &xml));
    assert_eq!(snapshot(tree.path()), before);
    assert!(!h.state_dir().exists());
}

#[test]
fn an_empty_metadata_element_asks_for_nothing_even_without_a_config() {
    let h = TestHost::new(Path::new("/nonexistent"), "");
    std::fs::remove_file(&h.config).unwrap();
    let xml = domain("empty", Some(""), "");
    for (op, sub) in [
        ("prepare", "begin"),
        ("restore", "begin"),
        ("migrate", "begin"),
        ("reconnect", "begin"),
        ("release", "end"),
    ] {
        assert_ok(&h.call("empty", op, sub, "-", &xml.text));
    }
}

#[test]
fn a_vgpu_domain_coming_here_is_refused_at_the_filter_when_the_config_is_broken() {
    // its start would be refused the same way; said now, nothing has been moved yet
    let tree = fixture_tree();
    let h = TestHost::new(tree.path(), "broken = [");
    let xml = mdev_domain("vm1", &[(1, "type=\"mtty-2\"")]);
    let config = h.config.display().to_string();
    assert_refused(
        &h.call("vm1", "restore", "begin", "-", &xml.text),
        &[&config],
    );
}

#[test]
fn calls_other_than_prepare_release_reconnect_and_filters_do_nothing_for_our_domains() {
    let (tree, h) = host();
    let before = snapshot(tree.path());
    let xml = mdev_domain("vm1", &[(1, "type=\"mtty-2\"")]);
    for (op, sub) in [
        ("start", "begin"),
        ("started", "begin"),
        ("stopped", "end"),
        ("attach", "begin"),
    ] {
        assert_ok(&h.call("vm1", op, sub, "-", &xml.text));
    }
    assert_eq!(snapshot(tree.path()), before);
    assert!(!h.state_dir().exists());
}

#[test]
fn program_called_qemu_dispatches_the_same_way() {
    let (_tree, h) = host();
    let xml = mdev_domain("vm1", &[(1, "type=\"mtty-9\"")]);
    let mut c = h.command(&h.hook_as("qemu"), &["vm1", "prepare", "begin", "-"]);
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_refused(&o, &["domain 'vm1'", "mtty-9", "mtty (no such type)"]);
}

#[test]
fn release_end_with_libvirt_10_5_reason_argument_exits_0() {
    let (_tree, h) = host();
    let xml = mdev_domain("vm1", &[(1, "type=\"mtty-2\"")]);
    for reason in ["destroyed", "shutdown", "from snapshot", "daemon"] {
        assert_ok(&h.call("vm1", "release", "end", reason, &xml.text));
    }
}

#[test]
fn too_few_arguments_print_usage_and_exit_2() {
    let (_tree, h) = host();
    let o = h.command(&h.hook_as("vgpu-hook"), &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("DOMAIN OPERATION SUB-OPERATION"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn broken_config_at_prepare_names_file_line_and_key() {
    let tree = fixture_tree();
    let h = TestHost::new(
        tree.path(),
        "placement = \"pack\"\nmdev_parents = [\"mtty\"]\nnvidia_vgpu_pfs = [\"82:00\"]\n",
    );
    let o = h.prepare(&mdev_domain("vm1", &[(1, "type=\"mtty-2\"")]));
    assert_refused(&o, &["config.toml", "line 3", "nvidia_vgpu_pfs", "'82:00'"]);
}

#[test]
fn missing_config_at_prepare_says_how_to_create_one() {
    let tree = fixture_tree();
    let h = TestHost::new(tree.path(), "");
    std::fs::remove_file(&h.config).unwrap();
    assert_refused(
        &h.prepare(&mdev_domain("vm1", &[(1, "type=\"mtty-2\"")])),
        &["not found", "vgpuctl install"],
    );
}

#[test]
fn broken_config_does_not_fail_release_or_reconnect() {
    let tree = fixture_tree();
    let h = TestHost::new(tree.path(), "nonsense = 1");
    let xml = mdev_domain("vm1", &[(1, "type=\"mtty-2\"")]);
    assert_ok(&h.call("vm1", "release", "end", "-", &xml.text));
    assert_ok(&h.call("vm1", "reconnect", "begin", "-", &xml.text));
}

#[test]
fn no_configured_parent_is_explained() {
    let tree = fixture_tree();
    let h = TestHost::new(tree.path(), "");
    assert_refused(
        &h.prepare(&mdev_domain("vm1", &[(1, "type=\"mtty-2\"")])),
        &["lists no mdev parents", "mdev_parents"],
    );
}

#[test]
fn malformed_xml_with_our_metadata_is_refused_at_prepare() {
    let (_tree, h) = host();
    let xml = mdev_domain("vm1", &[(1, "type=\"mtty-2\"")])
        .text
        .replace("</devices>", "</device>");
    assert_refused(
        &h.call("vm1", "prepare", "begin", "-", &xml),
        &["not well-formed"],
    );
}

#[test]
fn malformed_xml_with_our_metadata_still_exits_0_at_release() {
    let (_tree, h) = host();
    let xml = mdev_domain("vm1", &[(1, "type=\"mtty-2\"")])
        .text
        .replace("</devices>", "</device>");
    assert_ok(&h.call("vm1", "release", "end", "-", &xml));
}

#[test]
fn oversized_stdin_with_our_namespace_is_refused() {
    let (_tree, h) = host();
    let mut xml = mdev_domain("vm1", &[(1, "type=\"mtty-2\"")]).text;
    xml.push_str(&format!("<!--{}-->", "x".repeat(17 << 20)));
    assert_refused(
        &h.call("vm1", "prepare", "begin", "-", &xml),
        &["exceeds 16 MiB"],
    );
}

#[test]
fn oversized_stdin_without_our_namespace_is_a_no_op() {
    let (_tree, h) = host();
    let xml = format!("{FIXTURE}<!--{}-->", "x".repeat(17 << 20));
    assert_ok(&h.call("tiny", "prepare", "begin", "-", &xml));
}

#[test]
fn non_utf8_stdin_with_our_namespace_is_refused() {
    let (_tree, h) = host();
    let xml = mdev_domain("vm1", &[(1, "type=\"mtty-2\"")]).text;
    let mut bytes = xml.into_bytes();
    let at = bytes.windows(6).position(|w| w == b"mtty-2").unwrap();
    bytes[at + 4] = 0xff;
    let mut c = h.command(
        &h.hook_as("50-vgpu-hook"),
        &["vm1", "prepare", "begin", "-"],
    );
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    assert_refused(&child.wait_with_output().unwrap(), &["not UTF-8"]);
}

#[test]
fn type_with_path_traversal_is_refused_without_a_write() {
    refused_without_a_write(
        &format!(
            "<vgpu:mdev uuid=\"{}\" type=\"../../../../block\"/>",
            mdev_uuid(1)
        ),
        &["vgpu:mdev #1", "type", "not a valid mdev type id"],
    );
}

#[test]
fn type_with_a_slash_is_refused_without_a_write() {
    refused_without_a_write(
        &format!(
            "<vgpu:mdev uuid=\"{}\" type=\"mtty-2/create\"/>",
            mdev_uuid(1)
        ),
        &["mdev type id"],
    );
}

#[test]
fn uuid_with_path_traversal_is_refused_without_a_write() {
    refused_without_a_write(
        "<vgpu:mdev uuid=\"../../../devices/virtual/mtty/mtty/x\" type=\"mtty-2\"/>",
        &["uuid", "not a UUID"],
    );
}

#[test]
fn nul_character_in_uuid_is_refused_without_a_write() {
    refused_without_a_write(
        "<vgpu:mdev uuid=\"6f2e9a4c-8d1b-4c1e-9a41-&#0;00000000001\" type=\"mtty-2\"/>",
        &["uuid"],
    );
}

#[test]
fn parent_with_path_traversal_is_refused_without_a_write() {
    refused_without_a_write(
        &format!(
            "<vgpu:mdev uuid=\"{}\" type=\"mtty-2\" parent=\"../../..\"/>",
            mdev_uuid(1)
        ),
        &["parent", "mdev parent name"],
    );
}

#[test]
fn overlong_type_is_refused_without_a_write() {
    refused_without_a_write(
        &format!(
            "<vgpu:mdev uuid=\"{}\" type=\"{}\"/>",
            mdev_uuid(1),
            "a".repeat(300)
        ),
        &["mdev type id"],
    );
}

#[test]
fn vf_address_that_is_not_pci_is_refused_without_a_write() {
    refused_without_a_write(
        "<vgpu:vf address=\"../../../0000:04:00.0\"/>",
        &["vgpu:vf #1", "not a PCI address"],
    );
}

#[test]
fn params_with_a_newline_are_refused_without_a_write() {
    refused_without_a_write(
        &format!(
            "<vgpu:mdev uuid=\"{}\" type=\"mtty-2\" params=\"a=1&#10;b=2\"/>",
            mdev_uuid(1)
        ),
        &["vgpu_params"],
    );
}

#[test]
fn unknown_element_in_our_namespace_is_refused() {
    refused_without_a_write("<vgpu:gpu uuid=\"x\"/>", &["vgpu:gpu", "unknown element"]);
}

#[test]
fn request_without_type_or_profile_is_refused() {
    refused_without_a_write(
        &format!("<vgpu:mdev uuid=\"{}\"/>", mdev_uuid(1)),
        &["missing type or profile"],
    );
}
