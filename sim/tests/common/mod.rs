//! What the simulator's integration tests share: the harness, the hosts they mount and the
//! helpers that read files and turn a failed file operation into its errno.
//!
//! Each test file is its own crate, so without this module every file would carry its own copy
//! of the same host snippets and helpers, and the copies would drift. The harness itself is the
//! root package's (`tests/common/sim.rs`), so the simulator is tested through exactly the code
//! the hook's tests use to run it.

#![allow(dead_code)] // each test crate uses its own part

#[path = "../../../tests/common/sim.rs"]
mod sim;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use sim::Sim;

/// The host files the tests mount, each named after what it stands for.
pub mod hosts {
    /// An empty P40 on the classic NVIDIA interface (24 GB from the board table).
    pub const P40: &str = r#"
[[gpu]]
address = "0000:82:00.0"
kind = "nvidia-classic"
board = "P40"
"#;

    /// The PF address of [`P40`].
    pub const P40_PF: &str = "0000:82:00.0";

    /// A non-PCI mdev parent: one type of 64 instances, one of a single instance.
    pub const MTTY: &str = r#"
[[gpu]]
kind = "mdev"
name = "mtty"
types = [{ id = "mtty-1", name = "Single port serial", max_instances = 64 },
         { id = "mtty-2", name = "Dual port serial", max_instances = 1 }]
"#;

    /// An S7150 on the old GIM with 2 VFs at 04:00.4 and .5.
    pub const GIM_OLD: &str = r#"
[[gpu]]
address = "0000:04:00.0"
kind = "amd-gim"
gim = "old"
numvfs = 2
"#;

    /// A generic SR-IOV PF at 05:00.0 with room for 4 VFs, none enabled.
    pub const SRIOV: &str = r#"
[[gpu]]
address = "0000:05:00.0"
kind = "sriov"
totalvfs = 4
"#;

    /// A kernel-6.8+ L40S at c1:00.0 with 2 VFs (c1:00.4, c1:00.5). Last, so a test can append
    /// keys to its entry.
    pub const L40S_VFIO: &str = r#"
[[gpu]]
address = "0000:c1:00.0"
kind = "nvidia-vfio"
board = "L40S"
numvfs = 2
"#;

    /// An A2 at 41:00.0 for NVIDIA SR-IOV with mdev, VFs not enabled yet.
    pub const A2_SRIOV: &str = r#"
[[gpu]]
address = "0000:41:00.0"
kind = "nvidia-sriov"
board = "A2"
totalvfs = 4
"#;

    /// One host of every PCI kind: [`P40`], [`GIM_OLD`], [`SRIOV`] and [`L40S_VFIO`], in
    /// that order.
    pub fn mixed() -> String {
        [P40, GIM_OLD, SRIOV, L40S_VFIO].concat()
    }
}

/// Mounts `host` with the simulator binary built for these tests; `None`: no FUSE here.
pub fn start(host: &str) -> Option<Sim> {
    Sim::start_with(Path::new(env!("CARGO_BIN_EXE_vgpu-sim")), host)
}

/// A valid UUID numbered `n`.
pub fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// The errno of a failed operation; `None` when it succeeded.
pub fn errno(r: std::io::Result<()>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Writes `value` to `path`, returning the errno (`None`: written).
pub fn write(path: impl AsRef<Path>, value: &str) -> Option<i32> {
    errno(std::fs::write(path, value))
}

/// The bytes of a file, panicking with its path.
pub fn bytes(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p.as_ref()).unwrap_or_else(|e| panic!("read {}: {e}", p.as_ref().display()))
}

/// The text of a file, panicking with its path.
pub fn read(p: impl AsRef<Path>) -> String {
    String::from_utf8_lossy(&bytes(p)).into_owned()
}

/// The names in a directory.
pub fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// `mdev_supported_types` of a parent, reached through `sys/class/mdev_bus`.
pub fn types_dir(sim: &Sim, parent: &str) -> PathBuf {
    sim.root()
        .join("sys/class/mdev_bus")
        .join(parent)
        .join("mdev_supported_types")
}

/// A PCI function's directory, reached through `sys/bus/pci/devices`.
pub fn pci(sim: &Sim, addr: &str) -> PathBuf {
    sim.root().join("sys/bus/pci/devices").join(addr)
}

/// An mdev's directory, reached through `sys/bus/mdev/devices`.
pub fn mdev(sim: &Sim, uuid: &str) -> PathBuf {
    sim.root().join("sys/bus/mdev/devices").join(uuid)
}
