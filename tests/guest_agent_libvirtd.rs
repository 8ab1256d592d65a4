//! `vgpuctl guest` end to end: a domain on the real libvirtd that boots a tiny Linux under TCG
//! (the e2e tier's Debian kernel, an initramfs with Debian's real qemu-guest-agent, a STAND-IN
//! nvidia-smi and a STAND-IN systemctl for nvidia-gridd; built by tests/guest-agent/build.sh),
//! reached through libvirt's guest-agent call: status read, token pushed (the file lands, the
//! service restart runs), status read again; and a domain without the agent channel gives the
//! clear line.
//!
//! Ignored by `cargo test`: the guest needs the e2e tier's rootfs, so tests/run-all.sh runs these
//! after the e2e tier (`cargo test --test guest_agent_libvirtd -- --ignored`); there, a missing
//! piece fails rather than skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::libvirtd::{virsh, virsh_ok, Libvirtd};

/// How long the guest may take to boot and start its agent under TCG.
const BOOT_LIMIT: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds (or finds cached) the kernel and initramfs; panics when it cannot.
fn guest_files() -> PathBuf {
    let work = std::env::var_os("VGPU_E2E_WORK")
        .map_or_else(|| repo().join("tests/e2e/work"), PathBuf::from);
    let out = work.join("guest-agent");
    let o = Command::new(repo().join("tests/guest-agent/build.sh"))
        .arg(&out)
        .output()
        .expect("run tests/guest-agent/build.sh");
    assert!(
        o.status.success(),
        "tests/guest-agent/build.sh failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn vgpuctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .args(args)
        .env_remove("LIBVIRT_DEFAULT_URI")
        .stdin(Stdio::null())
        .output()
        .expect("run vgpuctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A running tiny guest, destroyed and undefined when dropped.
struct Guest {
    name: String,
    console: PathBuf,
}

impl Guest {
    fn start(files: &Path, agent_channel: bool) -> Guest {
        let name = format!(
            "guest-agent-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let console = std::env::temp_dir().join(format!("{name}.console"));
        let channel = if agent_channel {
            "    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>\n"
        } else {
            ""
        };
        let xml = format!(
            "<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n    <kernel>{k}</kernel>\n    <initrd>{i}</initrd>\n    <cmdline>console=ttyS0 quiet panic=-1</cmdline>\n  </os>\n  <on_poweroff>destroy</on_poweroff>\n  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n    <serial type='file'><source path='{c}'/></serial>\n{channel}  </devices>\n</domain>\n",
            k = files.join("vmlinuz").display(),
            i = files.join("initramfs.gz").display(),
            c = console.display(),
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dom.xml");
        std::fs::write(&file, xml).unwrap();
        virsh_ok(&["define", file.to_str().unwrap()]);
        let g = Guest { name, console };
        virsh_ok(&["start", &g.name]);
        g
    }

    /// `vgpuctl guest NAME --json` until the agent answers; panics with the console after
    /// [`BOOT_LIMIT`].
    fn wait_for_agent(&self) -> serde_json::Value {
        let deadline = Instant::now() + BOOT_LIMIT;
        loop {
            let o = vgpuctl(&["guest", &self.name, "--json"]);
            assert!(o.status.success(), "{}", text(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let row = v["guests"][0].clone();
            if !row["agent"].is_null() {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "no guest agent after {} s: {row}\nconsole:\n{}",
                BOOT_LIMIT.as_secs(),
                std::fs::read_to_string(&self.console).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Runs a shell command in the guest through virsh's own agent call (not vgpuctl's).
    fn sh(&self, script: &str) -> String {
        let cmd = serde_json::json!({"execute": "guest-exec", "arguments": {
            "path": "/bin/sh", "arg": ["-c", script], "capture-output": true}});
        let r: serde_json::Value = serde_json::from_str(&virsh_ok(&[
            "qemu-agent-command",
            &self.name,
            &cmd.to_string(),
        ]))
        .unwrap();
        let pid = r["return"]["pid"].as_i64().unwrap();
        for _ in 0..100 {
            let st = serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}});
            let s: serde_json::Value = serde_json::from_str(&virsh_ok(&[
                "qemu-agent-command",
                &self.name,
                &st.to_string(),
            ]))
            .unwrap();
            if s["return"]["exited"].as_bool() == Some(true) {
                let b64 = s["return"]["out-data"].as_str().unwrap_or("");
                let o = Command::new("base64")
                    .arg("-d")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                use std::io::Write;
                o.stdin.as_ref().unwrap().write_all(b64.as_bytes()).unwrap();
                return text(&o.wait_with_output().unwrap().stdout);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{script} did not finish in the guest");
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name]);
        let _ = std::fs::remove_file(&self.console);
    }
}

/// A token-shaped file (a compact JWS: header, claims, signature), named like the portal's.
fn token_file(dir: &Path) -> PathBuf {
    let claims = "eyJpc3MiOiJOTFMgU2VydmljZSBJbnN0YW5jZSIsImF1ZCI6Ik5MUyBMaWNlbnNlZCBDbGllbnQiLCJpYXQiOjE3MDAwMDAwMDB9";
    let p = dir.join("client_configuration_token_01-02-2025-10-00-00.tok");
    std::fs::write(
        &p,
        format!("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.{claims}.c2lnbmF0dXJlLWJ5dGVzLWdvLWhlcmU\n"),
    )
    .unwrap();
    p
}

#[test]
#[ignore = "needs the e2e tier's rootfs; tests/run-all.sh runs it after the e2e tier"]
fn status_is_read_a_token_is_pushed_and_the_guest_reads_licensed_after_the_restart() {
    let Some(_d) = Libvirtd::ensure() else { return };
    let files = guest_files();
    let g = Guest::start(&files, true);

    let before = g.wait_for_agent();
    assert_eq!(before["driver_version"], "550.127.05", "{before}");
    assert_eq!(before["vgpus"][0], "GRID P40-2Q", "{before}");
    assert_eq!(before["licensed_product"], "NVIDIA RTX Virtual Workstation");
    assert_eq!(before["license"], "unlicensed", "{before}");
    assert_eq!(before["license_text"], "Unlicensed (Restricted)");
    assert_eq!(before["service"], "running");
    assert_eq!(before["problems"][0]["kind"], "unlicensed");

    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(dir.path());
    let tok = tok.to_str().unwrap();
    let dry = vgpuctl(&["guest", &g.name, "--license-token", tok, "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(
        text(&dry.stdout).contains("nothing written"),
        "{}",
        text(&dry.stdout)
    );
    assert_eq!(
        g.sh("[ -e /etc/nvidia/ClientConfigToken ] && echo written || echo nothing"),
        "nothing\n",
        "a dry run writes nothing"
    );

    let o = vgpuctl(&[
        "guest",
        &g.name,
        "--license-token",
        tok,
        "--wait-secs",
        "30",
    ]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.contains("wrote /etc/nvidia/ClientConfigToken/client_configuration_token_01-02-2025-10-00-00.tok"), "{out}");
    assert!(out.contains("restarted nvidia-gridd"), "{out}");
    assert!(out.contains("licensed  2099-1-1 0:00:00 GMT"), "{out}");
    let landed = g
        .sh("cat /etc/nvidia/ClientConfigToken/client_configuration_token_01-02-2025-10-00-00.tok");
    assert_eq!(landed, std::fs::read_to_string(tok).unwrap());
    assert!(g
        .sh("cat /run/standin/systemctl.log")
        .contains("restart nvidia-gridd"));

    // Pushed again: the first token is kept as a backup, the status stays licensed.
    let o = vgpuctl(&["guest", &g.name, "--license-token", tok, "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("\"license\": \"licensed\""));
    let listing = g.sh("ls /etc/nvidia/ClientConfigToken");
    assert_eq!(
        listing.lines().filter(|l| l.contains(".tok.bak-")).count(),
        1,
        "{listing}"
    );
    assert_eq!(
        listing.lines().filter(|l| l.ends_with(".tok")).count(),
        1,
        "{listing}"
    );
}

#[test]
#[ignore = "needs the e2e tier's rootfs; tests/run-all.sh runs it after the e2e tier"]
fn a_domain_without_the_agent_channel_is_one_line_with_the_channel_xml() {
    let Some(_d) = Libvirtd::ensure() else { return };
    let files = guest_files();
    let g = Guest::start(&files, false);
    let o = vgpuctl(&["guest", &g.name]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with(&format!("{}:", g.name)))
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains("has no guest agent channel"), "{out}");
    assert!(
        lines[0].contains("<target type='virtio' name='org.qemu.guest_agent.0'/>"),
        "{out}"
    );
    let o = vgpuctl(&[
        "guest",
        &g.name,
        "--license-token",
        token_file(tempfile::tempdir().unwrap().path())
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("no guest agent channel"),
        "{}",
        text(&o.stderr)
    );
}
