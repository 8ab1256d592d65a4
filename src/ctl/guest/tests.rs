//! The guest side as a spec: published `nvidia-smi -q` outputs read right, and a scripted guest
//! agent showing what `vgpuctl guest` reports and does for each kind of guest.

use std::cell::RefCell;
use std::time::Duration;

use serde_json::{json, Value};

use super::agent::{Agent, Os};
use super::license::Server;
use super::push::{self, Licence};
use super::report::GuestRow;
use super::smi::{self, License};
use super::{b64, probe, GuestError};

/// A fixture without its first line (the source).
fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/nvidia-smi/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let (source, rest) = text.split_once('\n').unwrap();
    assert!(
        source.starts_with("# source: https://"),
        "{name} names its source"
    );
    rest.to_string()
}

/// 2024-01-01T00:00:00Z.
const NOW: i64 = 1_704_067_200;
/// 2023-07-22T12:00:00Z, when the licensed output was captured.
const CAPTURED: i64 = 1_690_027_200;

#[test]
fn a_published_nls_licensed_output_is_licensed_until_its_expiry_and_expired_after() {
    let r = smi::parse(&fixture("licensed-nls-expiry.txt"));
    let l = r.license.expect("licence section");
    let License::Licensed { expiry: Some(e) } = &l else {
        panic!("{l:?}")
    };
    assert_eq!(e.text, "2023-7-23 13:17:27 GMT");
    assert!(l.valid_at(CAPTURED));
    assert!(l.expired_at(NOW));
}

#[test]
fn published_unlicensed_outputs_are_unlicensed_with_their_product() {
    let r = smi::parse(&fixture("unlicensed-restricted.txt"));
    assert_eq!(
        r.licensed_product.as_deref(),
        Some("NVIDIA Virtual Compute Server")
    );
    assert_eq!(
        r.license,
        Some(License::Unlicensed {
            detail: Some("Restricted".into())
        })
    );
    let r = smi::parse(&fixture("unlicensed.txt"));
    assert_eq!(r.license, Some(License::Unlicensed { detail: None }));
}

#[test]
fn a_published_output_header_gives_the_driver_and_the_vgpu() {
    let r = smi::parse(&fixture("header-h100-80c.txt"));
    assert_eq!(r.driver_version.as_deref(), Some("595.58.03"));
    assert_eq!(r.gpus.len(), 1);
    assert_eq!(r.gpus[0].bus_id, "00000000:02:01.0");
    assert_eq!(r.gpus[0].product_name.as_deref(), Some("NVIDIA H100-80C"));
}

/// A Linux guest behind a scripted agent: what nvidia-smi prints (`None`: not installed), the
/// service state, and whether file writes fail. Records every program run.
#[derive(Default)]
struct Guest {
    smi: Option<String>,
    service: &'static str,
    exec_disabled: bool,
    fail_write: bool,
    ran: RefCell<Vec<String>>,
    outputs: RefCell<Vec<String>>,
}

impl Agent for Guest {
    fn call(&self, cmd: &Value, _timeout: Duration) -> Result<Value, GuestError> {
        let args = &cmd["arguments"];
        let fail = |m: &str| Err(GuestError::CommandFailed(m.to_string()));
        Ok(match cmd["execute"].as_str().unwrap() {
            "guest-info" => json!({"version": "7.2.0", "supported_commands": [
                {"name": "guest-exec", "enabled": !self.exec_disabled}]}),
            "guest-get-osinfo" => {
                json!({"id": "debian", "pretty-name": "Debian GNU/Linux 12 (bookworm)"})
            }
            "guest-exec" => {
                let path = args["path"].as_str().unwrap();
                let argv: Vec<&str> = args["arg"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                self.ran
                    .borrow_mut()
                    .push(format!("{path} {}", argv.join(" ")));
                let out = match path {
                    "/usr/bin/nvidia-smi" => match &self.smi {
                        Some(s) => s.clone(),
                        None => return fail("Failed to execute child process “/usr/bin/nvidia-smi” (No such file or directory)"),
                    },
                    _ if argv[1].contains("is-active") => self.service.to_string(),
                    _ => String::new(),
                };
                self.outputs.borrow_mut().push(out);
                json!({"pid": self.outputs.borrow().len()})
            }
            "guest-exec-status" => {
                let out = self.outputs.borrow()[args["pid"].as_u64().unwrap() as usize - 1].clone();
                json!({"exited": true, "exitcode": 0, "out-data": b64::encode(out.as_bytes())})
            }
            "guest-file-open" if args["mode"] == "rb" => return fail("No such file or directory"),
            "guest-file-open" => json!(7),
            "guest-file-write" if self.fail_write => return fail("No space left on device"),
            "guest-file-write" => {
                json!({"count": b64::decode(args["buf-b64"].as_str().unwrap()).unwrap().len()})
            }
            _ => json!({}),
        })
    }
}

fn licensed_smi() -> String {
    format!(
        "{}{}",
        fixture("header-h100-80c.txt"),
        fixture("licensed-nls-expiry.txt")
    )
}

fn read(guest: &Guest, now: i64) -> GuestRow {
    let mut row = GuestRow::new("vm1", "running");
    probe::probe(guest, &mut row, now);
    row
}

fn kinds(row: &GuestRow) -> Vec<&'static str> {
    row.problems.iter().map(|p| p.kind).collect()
}

#[test]
fn a_licensed_guest_is_one_complete_row_without_problems() {
    let g = Guest {
        smi: Some(licensed_smi()),
        service: "active",
        ..Default::default()
    };
    let row = read(&g, CAPTURED);
    assert_eq!(row.driver_version.as_deref(), Some("595.58.03"));
    assert_eq!(row.vgpus, ["NVIDIA H100-80C"]);
    assert_eq!(row.license.as_deref(), Some("licensed"));
    assert_eq!(
        row.license_expiry.as_deref(),
        Some("2023-7-23 13:17:27 GMT")
    );
    assert_eq!(row.service.as_deref(), Some("running"));
    assert_eq!(row.os.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    assert!(row.healthy(), "{:?}", row.problems);
}

#[test]
fn an_expired_or_unlicensed_guest_says_so_and_how_to_license_it() {
    let g = Guest {
        smi: Some(licensed_smi()),
        service: "active",
        ..Default::default()
    };
    let row = read(&g, NOW);
    assert_eq!(row.license.as_deref(), Some("expired"));
    assert_eq!(kinds(&row), ["license_expired"]);
    assert!(row.problems[0]
        .fix
        .contains("vgpuctl guest vm1 --license-token FILE"));
    let g = Guest {
        smi: Some(fixture("unlicensed-restricted.txt")),
        service: "inactive",
        ..Default::default()
    };
    let row = read(&g, NOW);
    assert_eq!(row.license.as_deref(), Some("unlicensed"));
    assert_eq!(row.license_text.as_deref(), Some("Unlicensed (Restricted)"));
    assert_eq!(kinds(&row), ["unlicensed", "service_stopped"]);
}

#[test]
fn a_guest_without_the_driver_is_a_row_naming_the_package() {
    let g = Guest {
        smi: None,
        ..Default::default()
    };
    let row = read(&g, NOW);
    assert_eq!(kinds(&row), ["no_driver"]);
    assert!(row.problems[0].fix.contains("-grid.run"));
    assert_eq!(row.driver_version, None);
}

#[test]
fn an_agent_that_forbids_guest_exec_is_named_with_the_fix() {
    let g = Guest {
        exec_disabled: true,
        ..Default::default()
    };
    let row = read(&g, NOW);
    assert_eq!(kinds(&row), ["exec_disabled"]);
    assert!(g.ran.borrow().is_empty());
}

#[test]
fn agent_failures_become_one_problem_each_with_the_fix() {
    for (e, kind, fix) in [
        (
            GuestError::NoChannel("x".into()),
            "no_agent_channel",
            "org.qemu.guest_agent.0",
        ),
        (
            GuestError::NotConnected("x".into()),
            "agent_not_connected",
            "apt-get install qemu-guest-agent",
        ),
        (
            GuestError::Timeout("x".into()),
            "agent_timeout",
            "restart qemu-guest-agent",
        ),
    ] {
        let mut row = GuestRow::new("vm1", "running");
        probe::agent_problem(&mut row, &e);
        assert_eq!(kinds(&row), [kind]);
        assert!(row.problems[0].fix.contains(fix), "{}", row.problems[0].fix);
    }
}

fn token() -> Licence {
    Licence::Token {
        name: "site.tok".into(),
        token: "aaa.bbb.ccc".into(),
    }
}

#[test]
fn a_token_push_writes_a_temp_file_then_backs_up_and_renames_then_restarts() {
    let g = Guest::default();
    let plan = push::plan(&g, Os::Linux, &token(), "20240101T000000Z").unwrap();
    let done = plan.apply(&g).unwrap();
    assert_eq!(done.last().unwrap(), "restarted nvidia-gridd");
    assert!(done.contains(&"wrote /etc/nvidia/ClientConfigToken/site.tok".to_string()));
    let ran = g.ran.borrow();
    assert!(
        ran[0].ends_with("vgpuctl /etc/nvidia/ClientConfigToken"),
        "mkdir first: {ran:?}"
    );
    assert!(ran[1].contains("mv -f \"$2\" \"$3\"") && ran[1].ends_with("/etc/nvidia/ClientConfigToken/.vgpuctl-20240101T000000Z.tmp /etc/nvidia/ClientConfigToken/site.tok 20240101T000000Z"), "{ran:?}");
    assert!(
        ran[2].contains("systemctl restart \"$1\"") && ran[2].ends_with("nvidia-gridd"),
        "{ran:?}"
    );
}

#[test]
fn a_failed_write_moves_nothing_restarts_nothing_and_removes_its_temp_file() {
    let g = Guest {
        fail_write: true,
        ..Default::default()
    };
    let plan = push::plan(&g, Os::Linux, &token(), "S").unwrap();
    let e = plan.apply(&g).unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");
    let ran = g.ran.borrow();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(
        ran[1].starts_with(
            "/bin/sh -c rm -f \"$1\" vgpuctl /etc/nvidia/ClientConfigToken/.vgpuctl-S.tmp"
        ),
        "{ran:?}"
    );
}

#[test]
fn a_dry_run_describes_the_file_and_the_restart_without_running_anything() {
    let g = Guest::default();
    let server = Licence::Server {
        server: Server::parse("lic.example:7071").unwrap(),
        feature_type: 2,
    };
    let plan = push::plan(&g, Os::Linux, &server, "S").unwrap();
    let lines = plan.describe();
    assert!(
        lines[0].starts_with("write ")
            && lines[0]
                .contains("to /etc/nvidia/gridd.conf (via /etc/nvidia/.gridd.conf.vgpuctl-S.tmp)"),
        "{lines:?}"
    );
    assert!(lines.contains(&"    ServerAddress=lic.example".to_string()));
    assert!(lines.contains(&"    ServerPort=7071".to_string()));
    assert!(lines.contains(&"    FeatureType=2".to_string()));
    assert_eq!(lines.last().unwrap(), "restart nvidia-gridd");
    assert!(g.ran.borrow().is_empty());
}

#[test]
fn windows_guests_get_the_token_in_nvidias_directory_and_the_display_container_restarted() {
    let g = Guest::default();
    let plan = push::plan(&g, Os::Windows, &token(), "S").unwrap();
    let lines = plan.describe();
    assert!(
        lines[0].contains(
            r"to C:\Program Files\NVIDIA Corporation\vGPU Licensing\ClientConfigToken\site.tok"
        ),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().unwrap(),
        "restart NVDisplay.ContainerLocalSystem"
    );
}

#[test]
fn token_file_names_are_kept_when_plain_and_replaced_otherwise() {
    assert_eq!(
        push::token_name("client_configuration_token_07-22-2023.tok"),
        "client_configuration_token_07-22-2023.tok"
    );
    for odd in ["token.txt", "../x.tok", ".hidden.tok", "a b.tok"] {
        assert_eq!(
            push::token_name(odd),
            "client_configuration_token.tok",
            "{odd}"
        );
    }
}

// The definition side: the agent channel and the vGPU display (xmledit).

use crate::ctl::xmledit::{self, DeviceKey, EditError};

const U1: &str = "6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b";
const U2: &str = "9a41c0de-0000-4c1e-9a41-0c2d3e4f5a07";

fn mdev_domain(graphics: bool) -> String {
    let g = if graphics {
        "    <graphics type='spice'/>\n"
    } else {
        ""
    };
    format!("<domain>\n  <devices>\n{g}    <hostdev mode='subsystem' type='mdev' model='vfio-pci'>\n      <source>\n        <address uuid='{U1}'/>\n      </source>\n    </hostdev>\n    <hostdev mode='subsystem' type='mdev' model='vfio-pci'>\n      <source>\n        <address uuid='{U2}'/>\n      </source>\n    </hostdev>\n    <hostdev mode='subsystem' type='pci' managed='yes'>\n      <source>\n        <address domain='0x0000' bus='0x04' slot='0x00' function='0x1'/>\n      </source>\n    </hostdev>\n  </devices>\n</domain>\n")
}

#[test]
fn the_agent_channel_is_added_once_at_the_end_of_devices_like_its_neighbours() {
    let xml = mdev_domain(false);
    let with = xmledit::add_agent_channel(&xml).unwrap().unwrap();
    assert!(with.ends_with("    </hostdev>\n    <channel type='unix'>\n      <target type='virtio' name='org.qemu.guest_agent.0'/>\n    </channel>\n  </devices>\n</domain>\n"), "{with}");
    assert_eq!(xmledit::add_agent_channel(&with).unwrap(), None);
    let bare = xmledit::add_agent_channel("<domain><name>x</name></domain>")
        .unwrap()
        .unwrap();
    assert!(xmledit::has_agent_channel(&bare).unwrap(), "{bare}");
}

#[test]
fn display_goes_on_each_mdev_and_ramfb_on_the_first_only() {
    let keys = [DeviceKey::Mdev(U1.into()), DeviceKey::Mdev(U2.into())];
    let out = xmledit::set_display(&mdev_domain(true), &keys).unwrap();
    assert_eq!(
        out.matches("model='vfio-pci' display='on' ramfb='on'>")
            .count(),
        1
    );
    assert_eq!(out.matches("model='vfio-pci' display='on'>").count(), 1);
    let d = xmledit::displays(&out).unwrap();
    assert_eq!(
        d,
        [(U1.to_string(), true, true), (U2.to_string(), true, false)]
    );
    // A second display later does not take the boot display from the first.
    let again = xmledit::set_display(&out, &keys[1..]).unwrap();
    assert_eq!(again.matches("ramfb='on'").count(), 1);
}

#[test]
fn display_is_refused_with_the_reason_where_libvirt_cannot_show_one() {
    let keys = [DeviceKey::Mdev(U1.into())];
    let e = xmledit::set_display(&mdev_domain(false), &keys).unwrap_err();
    assert!(
        matches!(&e, EditError::Unsupported(m) if m.contains("<graphics>")),
        "{e}"
    );
    let vf = [DeviceKey::Vf("0000:04:00.1".parse().unwrap())];
    let e = xmledit::set_display(&mdev_domain(true), &vf).unwrap_err();
    assert!(
        matches!(&e, EditError::Unsupported(m) if m.contains("vfio-pci")),
        "{e}"
    );
}
