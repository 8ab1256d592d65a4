//! A simulated L40S in NVIDIA's mixed-size mode's reach: Ada's placement rules, the stand-in
//! `nvidia-smi`, and a config that lists it in `mixed_size_pfs`.

use std::path::PathBuf;

use super::hook::{TestHost, FAST_TIMING, NVIDIA_SMI_STAND_IN, SRIOV_MANAGE_STAND_IN};
use super::sim::Sim;

/// The L40S's PF.
pub const PF: &str = "0000:41:00.0";

/// An L40S with Ada's placement rules, `numvfs` VFs at mount (of 8).
pub fn l40s(numvfs: u32) -> String {
    format!("[[gpu]]\naddress = \"{PF}\"\nkind = \"nvidia-vfio\"\nboard = \"L40S\"\nname_prefix = \"NVIDIA\"\nframebuffer_mb = 49152\nnumvfs = {numvfs}\ntotalvfs = 8\ngeneration = \"ada\"\n")
}

/// The config of a host whose L40S is in `mixed_size_pfs`, with `smi` as nvidia-smi.
pub fn mixed_config(smi: &str) -> String {
    format!("nvidia_vgpu_pfs = [\"41:00.0\"]\nmixed_size_pfs = [\"41:00.0\"]\nnvidia_smi = \"{smi}\"\nsriov_manage = \"{SRIOV_MANAGE_STAND_IN}\"\nprepare_grace_secs = 0\n{FAST_TIMING}")
}

/// The simulated L40S and a host configured for it.
pub fn mixed_host(numvfs: u32) -> Option<(Sim, TestHost)> {
    let sim = Sim::start(&l40s(numvfs))?;
    let h = TestHost::new(sim.root(), &mixed_config(NVIDIA_SMI_STAND_IN));
    Some((sim, h))
}

/// The simulator's NVML file holding the GPU's mixed-size mode.
pub fn mode_file(sim: &Sim) -> PathBuf {
    sim.root()
        .join(format!("sim/nvml/{PF}/vgpu_heterogeneous_mode"))
}
