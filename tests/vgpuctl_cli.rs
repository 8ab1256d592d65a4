//! vgpuctl as a program, offline: `--xml` rewriting on files and stdin, error lines and exit
//! statuses, help texts, shell completions and the man page. No libvirt daemon, no root.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn vgpuctl(args: &[&str], stdin: Option<&str>) -> Output {
    let t = std::env::temp_dir();
    let mut c = Command::new(env!("CARGO_BIN_EXE_vgpuctl"));
    c.args(args)
        .env_remove("LIBVIRT_DEFAULT_URI")
        .env(
            "VGPU_HOOK_CONFIG",
            t.join("vgpuctl-cli-test-no-config.toml"),
        )
        .env("VGPU_HOOK_STATE_DIR", t.join("vgpuctl-cli-test-no-state"))
        .env("VGPU_HOOK_SYSFS_ROOT", t.join("vgpuctl-cli-test-no-sysfs"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("run vgpuctl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hook-stdin-prepare-begin.xml")
}

fn fixture_text() -> String {
    std::fs::read_to_string(fixture()).unwrap()
}

#[test]
fn attach_xml_prints_only_the_rewritten_document() {
    let o = vgpuctl(
        &[
            "attach",
            "--xml",
            fixture().to_str().unwrap(),
            "--type",
            "mtty-2",
            "--force",
        ],
        None,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "");
    let out = text(&o.stdout);
    let d = vgpu_hook::model::domain::Domain::parse(&out).unwrap();
    assert_eq!(d.name, "tiny");
    assert_eq!(d.requests.len(), 1);
}

/// `vgpuctl ... | head` under `set -o pipefail`: the reader closing early fails nothing.
#[test]
fn a_reader_that_closes_the_output_early_is_not_a_failure() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let file = fixture();
    let args = [
        "attach",
        "--xml",
        file.to_str().unwrap(),
        "--type",
        "mtty-2",
        "--force",
    ];
    let o = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .args(args)
        .env(
            "VGPU_HOOK_CONFIG",
            std::env::temp_dir().join("vgpuctl-cli-test-no-config.toml"),
        )
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "");
}

#[test]
fn attach_then_detach_on_stdin_gives_back_a_libvirt_capture() {
    let original = fixture_text();
    let o = vgpuctl(
        &[
            "attach",
            "--xml",
            "-",
            "--profile",
            "P40-2Q",
            "--count",
            "3",
            "--force",
            "--no-agent-channel",
        ],
        Some(&original),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let attached = text(&o.stdout);
    assert_eq!(attached.matches("<hostdev ").count(), 3);
    let o = vgpuctl(&["detach", "--xml", "-", "--all"], Some(&attached));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), original);
}

#[test]
fn detach_without_selector_of_several_devices_asks_which() {
    let o = vgpuctl(
        &[
            "attach", "--xml", "-", "--type", "a", "--count", "2", "--force",
        ],
        Some(&fixture_text()),
    );
    let o = vgpuctl(&["detach", "--xml", "-"], Some(&text(&o.stdout)));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("vgpuctl: the domain has 2 vgpu-hook devices (mdev "),
        "{err}"
    );
    assert!(err.contains("--uuid or --address, or use --all"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn detach_of_a_device_the_domain_does_not_have_is_not_found() {
    let o = vgpuctl(
        &[
            "detach",
            "--xml",
            fixture().to_str().unwrap(),
            "--address",
            "04:02.0",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(4));
    assert!(text(&o.stderr).contains("VF 0000:04:02.0 is not in the domain"));
}

#[test]
fn a_missing_xml_file_is_not_found() {
    let o = vgpuctl(&["status", "--xml", "/nonexistent/dom.xml"], None);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(
        text(&o.stderr),
        "vgpuctl: /nonexistent/dom.xml: no such file\n"
    );
}

#[test]
fn malformed_xml_is_refused_with_its_position() {
    let o = vgpuctl(
        &["attach", "--xml", "-", "--type", "a", "--force"],
        Some("<domain><name>x</uuid></domain>"),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("not well-formed near byte"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn xml_of_another_domain_than_named_is_a_usage_error() {
    let o = vgpuctl(
        &[
            "attach",
            "other",
            "--xml",
            fixture().to_str().unwrap(),
            "--type",
            "a",
            "--force",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("defines domain 'tiny', not 'other'"));
}

#[test]
fn a_malformed_pci_address_is_a_usage_error_showing_the_form() {
    let o = vgpuctl(
        &[
            "attach",
            "--xml",
            "-",
            "--vf",
            "--address",
            "4:2",
            "--force",
        ],
        Some(&fixture_text()),
    );
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("--address: '4:2' is not a PCI address") && err.contains("0000:82:00.0"),
        "{err}"
    );
}

#[test]
fn attach_without_saying_what_is_a_usage_error() {
    let o = vgpuctl(&["attach", "vm"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--profile"));
}

#[test]
fn an_unreachable_uri_is_one_line_with_exit_3() {
    let o = vgpuctl(
        &[
            "--connect",
            "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
            "status",
            "vm",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(3));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "vgpuctl: cannot connect to qemu+unix:///system?socket=/nonexistent/libvirt-sock: "
        ),
        "{err}"
    );
    assert!(err.contains("--connect URI"), "{err}");
}

#[test]
fn status_xml_of_a_domain_without_devices_says_how_to_add_one() {
    let o = vgpuctl(&["status", "--xml", fixture().to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "domain 'tiny' (ad7bc399-ee94-4664-814e-9f0650fb15c5), shut off\nno vgpu-hook devices (attach one with `vgpuctl attach tiny --profile P`)\n"
    );
}

#[test]
fn every_command_help_shows_examples() {
    for cmd in [
        "attach",
        "detach",
        "types",
        "list",
        "status",
        "reconcile",
        "install",
        "uninstall",
        "doctor",
    ] {
        let o = vgpuctl(&[cmd, "--help"], None);
        assert!(o.status.success());
        let out = text(&o.stdout);
        assert!(out.contains("Examples:\n  vgpuctl "), "{cmd}: {out}");
    }
    let top = text(&vgpuctl(&["--help"], None).stdout);
    assert!(
        top.contains("Exit status:") && top.contains("4  not found"),
        "{top}"
    );
}

#[test]
fn completions_cover_every_subcommand_in_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = vgpuctl(&["completions", shell], None);
        assert!(o.status.success(), "{shell}");
        let out = text(&o.stdout);
        for cmd in [
            "attach",
            "detach",
            "types",
            "list",
            "status",
            "reconcile",
            "install",
            "doctor",
        ] {
            assert!(out.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
}

#[test]
fn man_page_documents_the_commands_and_exit_statuses() {
    let o = vgpuctl(&["man"], None);
    assert!(o.status.success());
    let page = text(&o.stdout);
    assert!(page.starts_with(".ie"), "roff");
    assert!(page.contains(".TH vgpuctl 1"));
    for word in ["attach", "detach", "doctor", "Exit status", "\\-\\-connect"] {
        assert!(page.contains(word), "man page lacks {word}");
    }
    assert!(
        !page.contains("completions"),
        "hidden commands stay out of the page"
    );
}

#[test]
fn man_dir_writes_one_page_per_command() {
    let t = tempfile::tempdir().unwrap();
    let o = vgpuctl(&["man", "--dir", t.path().to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for page in ["vgpuctl.1", "vgpuctl-attach.1", "vgpuctl-doctor.1"] {
        assert!(t.path().join(page).is_file(), "{page} missing");
    }
}

#[test]
fn hidden_commands_stay_out_of_the_help() {
    let top = text(&vgpuctl(&["--help"], None).stdout);
    assert!(
        !top.contains("completions") && !top.contains("\n  man "),
        "{top}"
    );
}
