//! A host in a temp dir for the checks' unit tests: sysfs, `/proc`, hooks directory and config
//! all under one root, and nothing asked of libvirt unless a test says so.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Context, Inputs, LibvirtProbe, Verdict};
use crate::host::procfs::Procfs;
use crate::host::state::StateDir;
use crate::host::sysfs::Sysfs;
use crate::host::Host;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub host: Host,
    pub proc: Procfs,
    pub libvirt: LibvirtProbe,
    pub qemu_version: Option<u32>,
    /// The domains libvirt would list, by name with their definition.
    pub domains: Vec<(String, String)>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let host = Host {
            sysfs: Sysfs::new(root),
            procfs: Procfs::new(&root.join("proc")),
            state: StateDir::new(&root.join("state")),
            libvirt_run_dir: root.join("run"),
            config_path: root.join("config.toml"),
        };
        Fixture {
            proc: Procfs::new(&root.join("proc")),
            host,
            libvirt: LibvirtProbe::NotChecked,
            qemu_version: None,
            domains: Vec::new(),
            dir,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn hooks_dir(&self) -> PathBuf {
        self.root().join("hooks")
    }

    pub fn write_config(&self, text: &str) {
        fs::write(&self.host.config_path, text).unwrap();
    }

    /// Creates `sys/<rel>` as a directory.
    pub fn sys_dir(&self, rel: &str) {
        fs::create_dir_all(self.root().join("sys").join(rel)).unwrap();
    }

    /// Writes `sys/<rel>`, creating its directory.
    pub fn sys_file(&self, rel: &str, text: &str) {
        let p = self.root().join("sys").join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// A process `comm` with `pid` in the fixture's `/proc`.
    pub fn process(&self, pid: u32, comm: &str) {
        let dir = self.root().join("proc").join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
    }

    /// Writes `proc/<pid>/<rel>` (a process's `attr/current`, say).
    pub fn proc_file(&self, pid: u32, rel: &str, text: &str) {
        let p = self.root().join("proc").join(pid.to_string()).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// Writes `proc/<rel>` (`sys/kernel/osrelease`, say).
    pub fn proc_top_file(&self, rel: &str, text: &str) {
        let p = self.root().join("proc").join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// Writes `boot/<name>` (a kernel's `config-RELEASE`).
    pub fn boot_file(&self, name: &str, text: &str) {
        let p = self.root().join("boot").join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// Runs one check.
    pub fn check(&self, check: fn(&Context<'_>) -> Vec<Verdict>) -> Vec<Verdict> {
        let hooks_dir = self.hooks_dir();
        let apparmor_dir = self.root().join("etc/apparmor.d");
        let inputs = Inputs {
            host: &self.host,
            proc: &self.proc,
            hooks_dir: &hooks_dir,
            apparmor_dir: &apparmor_dir,
            pid_files: &[],
            unit_dirs: &[],
            expected_hook: None,
            libvirt: self.libvirt.clone(),
            qemu_version: self.qemu_version,
            boot_dir: &self.root().join("boot"),
            domains: &self.domains,
        };
        check(&Context::new(&inputs))
    }
}
