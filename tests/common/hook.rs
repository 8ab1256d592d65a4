//! Running the real `vgpu-hook` binary the way libvirt does: argv `NAME DOMAIN OP SUB EXTRA`,
//! the domain XML on stdin, a minimal environment, plus the path overrides that point it at a
//! test host (sysfs root, state dir, libvirt run dir, config).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The prepare-begin stdin libvirt 9.0 really sent for a domain named `tiny`.
pub const FIXTURE: &str = include_str!("../fixtures/hook-stdin-prepare-begin.xml");
/// Our metadata namespace.
pub const NS: &str = "urn:vgpu-hook:domain:1";
/// Config lines that keep a test host's waits short (no boot-time waits, quick retries).
pub const FAST_TIMING: &str = "parent_wait_secs = 0\ncleanup_wait_secs = 0\nremove_timeout_secs = 1\nretries = 3\nretry_interval_ms = 50\ndevice_wait_secs = 2\n";
/// The stand-in for NVIDIA's `sriov-manage` (tests/fixtures/sriov-manage): the same sysfs steps,
/// under `VGPU_HOOK_SYSFS_ROOT`.
pub const SRIOV_MANAGE_STAND_IN: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sriov-manage");

/// The stand-in for NVIDIA's host `nvidia-smi` (tests/fixtures/nvidia-smi-host): mixed-size
/// mode and placements from the simulator's NVML model, with nvidia-smi's exit codes.
pub const NVIDIA_SMI_STAND_IN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/nvidia-smi-host"
);

/// A test host: a temp dir with state, libvirt run dir and config, over some sysfs root.
pub struct TestHost {
    pub dir: tempfile::TempDir,
    pub sysfs_root: PathBuf,
    pub config: PathBuf,
    qemus: Vec<(String, Child)>,
}

impl TestHost {
    /// A host over `sysfs_root` with this config text.
    pub fn new(sysfs_root: &Path, config: &str) -> TestHost {
        Self::with_dir(tempfile::tempdir().expect("tempdir"), sysfs_root, config)
    }

    /// The same with state on tmpfs, as `/run` is on a real host (fsync is free there).
    pub fn on_tmpfs(sysfs_root: &Path, config: &str) -> TestHost {
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("tempdir");
        Self::with_dir(dir, sysfs_root, config)
    }

    fn with_dir(dir: tempfile::TempDir, sysfs_root: &Path, config: &str) -> TestHost {
        std::fs::create_dir_all(dir.path().join("libvirt-run")).unwrap();
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        TestHost {
            sysfs_root: sysfs_root.to_path_buf(),
            config: config_path,
            dir,
            qemus: Vec::new(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("libvirt-run")
    }

    /// The hook binary installed under `name` (libvirt calls it `qemu` or by its qemu.d name).
    pub fn hook_as(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("hooks").join(name);
        if !p.exists() {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vgpu-hook"), &p).unwrap();
        }
        p
    }

    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args)
            .env_clear()
            .env("LC_ALL", "C")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("VGPU_HOOK_SYSFS_ROOT", &self.sysfs_root)
            .env("VGPU_HOOK_STATE_DIR", self.state_dir())
            .env("VGPU_HOOK_LIBVIRT_RUN_DIR", self.run_dir())
            .env("VGPU_HOOK_CONFIG", &self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Starts the hook without waiting (for races and kills).
    pub fn spawn(&self, domain: &str, op: &str, sub: &str, extra: &str, stdin: &str) -> Child {
        self.spawn_under(&[], domain, op, sub, extra, stdin)
    }

    /// Starts the hook under a wrapper command (`wrapper` then the hook and its argv), with the
    /// hook's environment, without waiting.
    pub fn spawn_under(
        &self,
        wrapper: &[&str],
        domain: &str,
        op: &str,
        sub: &str,
        extra: &str,
        stdin: &str,
    ) -> Child {
        let hook = self.hook_as("50-vgpu-hook");
        let mut argv: Vec<&str> = wrapper.to_vec();
        let hook_arg = hook.to_string_lossy();
        argv.extend([hook_arg.as_ref(), domain, op, sub, extra]);
        let mut child = self
            .command(Path::new(argv[0]), &argv[1..])
            .spawn()
            .expect("spawn hook");
        let mut input = child.stdin.take().unwrap();
        let data = stdin.as_bytes().to_vec();
        std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        child
    }

    /// Runs one hook call to the end.
    pub fn call(&self, domain: &str, op: &str, sub: &str, extra: &str, stdin: &str) -> Output {
        self.spawn(domain, op, sub, extra, stdin)
            .wait_with_output()
            .expect("hook output")
    }

    pub fn prepare(&self, xml: &DomainXml) -> Output {
        self.call(&xml.name, "prepare", "begin", "-", &xml.text)
    }

    pub fn release(&self, xml: &DomainXml) -> Output {
        self.call(&xml.name, "release", "end", "-", &xml.text)
    }

    /// Runs `vgpuctl` on this host (its sysfs, state, libvirt run dir and config) to the end.
    pub fn vgpuctl(&self, args: &[&str]) -> Output {
        let Some(bin) = option_env!("CARGO_BIN_EXE_vgpuctl") else {
            panic!("vgpuctl is built with the `vgpuctl` feature; declare it for this test")
        };
        self.command(Path::new(bin), args)
            .stdin(Stdio::null())
            .output()
            .expect("run vgpuctl")
    }

    /// Pretends libvirt started QEMU for `domain`: a live process whose argv0 says qemu, and
    /// `<run>/<name>.pid`.
    pub fn start_qemu(&mut self, domain: &str) {
        let fake = self.dir.path().join("qemu-system-x86_64");
        if !fake.exists() {
            std::os::unix::fs::symlink("/bin/sleep", &fake).unwrap();
        }
        let child = Command::new(&fake).arg("3600").spawn().expect("fake qemu");
        std::fs::write(
            self.run_dir().join(format!("{domain}.pid")),
            format!("{}\n", child.id()),
        )
        .unwrap();
        self.qemus.push((domain.to_string(), child));
    }

    /// Writes libvirt's status file of a running domain (`<run>/<name>.xml`: its live definition
    /// inside `<domstatus>`), as libvirt keeps it while the domain runs.
    pub fn write_status(&self, dom: &DomainXml) {
        std::fs::write(
            self.run_dir().join(format!("{}.xml", dom.name)),
            format!(
                "<domstatus state='running' reason='booted' pid='1'>\n{}</domstatus>\n",
                dom.text
            ),
        )
        .unwrap();
    }

    /// Pretends QEMU of `domain` exited.
    pub fn stop_qemu(&mut self, domain: &str) {
        let _ = std::fs::remove_file(self.run_dir().join(format!("{domain}.pid")));
        self.qemus.retain_mut(|(d, c)| {
            if d == domain {
                let _ = c.kill();
                let _ = c.wait();
                false
            } else {
                true
            }
        });
    }

    /// The ownership records as JSON.
    pub fn records(&self) -> Vec<serde_json::Value> {
        match std::fs::read(self.state_dir().join("owners.json")) {
            Ok(b) => {
                let v: serde_json::Value = serde_json::from_slice(&b).expect("state is JSON");
                v["records"].as_array().cloned().unwrap_or_default()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Makes every record `secs` older, as records of a run long ago are.
    pub fn age_records(&self, secs: u64) {
        let path = self.state_dir().join("owners.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("state")).expect("state is JSON");
        for r in v["records"].as_array_mut().expect("records") {
            let since = r["since"].as_u64().expect("since");
            r["since"] = since.saturating_sub(secs).into();
        }
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    /// Domain names owning records, in order.
    pub fn owners(&self) -> Vec<String> {
        self.records()
            .iter()
            .map(|r| r["domain_name"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        for (_, c) in &mut self.qemus {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A domain definition built from the real libvirt capture.
#[derive(Clone)]
pub struct DomainXml {
    pub name: String,
    pub uuid: String,
    pub text: String,
}

/// A domain named `name` with `metadata` inside our `<vgpu:vgpu>` element (None: no metadata at
/// all) and extra `devices` XML.
pub fn domain(name: &str, metadata: Option<&str>, devices: &str) -> DomainXml {
    let uuid = uuid_for(name);
    let mut text = FIXTURE
        .replace("<name>tiny</name>", &format!("<name>{name}</name>"))
        .replace("ad7bc399-ee94-4664-814e-9f0650fb15c5", &uuid);
    if let Some(meta) = metadata {
        text = text.replace(
            "  <memory unit='KiB'>",
            &format!("  <metadata>\n    <vgpu:vgpu xmlns:vgpu=\"{NS}\">\n{meta}\n    </vgpu:vgpu>\n  </metadata>\n  <memory unit='KiB'>"),
        );
    }
    text = text.replace(
        "    <memballoon model='none'/>",
        &format!("{devices}    <memballoon model='none'/>"),
    );
    DomainXml {
        name: name.to_string(),
        uuid,
        text,
    }
}

/// The same domain asking its vGPUs to run under the vGPU scheduling policy `policy`.
pub fn with_scheduler(mut dom: DomainXml, policy: &str) -> DomainXml {
    dom.text = dom.text.replace(
        &format!("<vgpu:vgpu xmlns:vgpu=\"{NS}\">"),
        &format!("<vgpu:vgpu xmlns:vgpu=\"{NS}\" scheduler=\"{policy}\">"),
    );
    dom
}

/// A stable UUID for a test domain name.
pub fn uuid_for(name: &str) -> String {
    let mut h: u64 = 1469598103934665603;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(1099511628211);
    }
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 20) & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

/// An mdev UUID numbered `n`.
pub fn mdev_uuid(n: u32) -> String {
    format!("6f2e9a4c-8d1b-4c1e-9a41-{n:012x}")
}

/// One `vgpu:mdev` line plus its hostdev, as (metadata, devices).
pub fn mdev_request(n: u32, attrs: &str) -> (String, String) {
    let u = mdev_uuid(n);
    (
        format!("      <vgpu:mdev uuid=\"{u}\" {attrs}/>\n"),
        format!("    <hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='{u}'/></source></hostdev>\n"),
    )
}

/// A domain asking for mdevs `(n, attrs)`.
pub fn mdev_domain(name: &str, reqs: &[(u32, &str)]) -> DomainXml {
    let (mut meta, mut devs) = (String::new(), String::new());
    for (n, attrs) in reqs {
        let (m, d) = mdev_request(*n, attrs);
        meta.push_str(&m);
        devs.push_str(&d);
    }
    domain(name, Some(&meta), &devs)
}

/// A domain asking for VFs: `(address, extra attrs, managed)`.
pub fn vf_domain(name: &str, vfs: &[(&str, &str, bool)]) -> DomainXml {
    let (mut meta, mut devs) = (String::new(), String::new());
    for (addr, attrs, managed) in vfs {
        meta.push_str(&format!("      <vgpu:vf address=\"{addr}\" {attrs}/>\n"));
        let (bus, rest) = addr.split_at(2);
        let slot = &rest[1..3];
        let func = &rest[4..5];
        devs.push_str(&format!(
            "    <hostdev mode='subsystem' type='pci' managed='{}'><source><address domain='0x0000' bus='0x{bus}' slot='0x{slot}' function='0x{func}'/></source></hostdev>\n",
            if *managed { "yes" } else { "no" }
        ));
    }
    domain(name, Some(&meta), &devs)
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a refusal: exit 1, empty stdout, exactly one stderr line starting `vgpu-hook: `
/// and containing every `needle`.
pub fn assert_refused(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected refusal, got {:?}; stderr: {err}",
        o.status
    );
    assert!(
        o.stdout.is_empty(),
        "stdout must stay empty: {:?}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.starts_with("vgpu-hook: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
}

/// Asserts success: exit 0, nothing on stdout or stderr.
pub fn assert_ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    assert!(
        o.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(o.stderr.is_empty(), "stderr: {}", stderr(o));
}
