//! What NVIDIA's driver and tools print is read without panicking, into values that hold
//! together: the `nvidia` module's parameters (`/proc/driver/nvidia/params`) give each GPU a
//! scheduling policy that encodes back to itself as `RmPVMRL`; a `vgpu_scheduler` setting that
//! parses prints back to the same setting; `nvidia-smi vgpu -s -v` gives each type a size and
//! sorted, distinct placement ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgpu_hook::host::nvidia_smi::parse_placements;
use vgpu_hook::model::pci::PciAddress;
use vgpu_hook::model::scheduler::{running, Scheduler};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for pf in ["0000:41:00.0", "0000:82:00.0", "ffff:ff:1f.7"] {
        let pf: PciAddress = pf.parse().unwrap();
        let s = running(&text, pf);
        assert_eq!(Scheduler::from_rmpvmrl(s.rmpvmrl()), s, "{s} from {text:?}");
    }
    if let Ok(s) = Scheduler::parse(&text) {
        assert_eq!(Scheduler::parse(&s.to_string()).ok(), Some(s));
    }
    for t in parse_placements(&text) {
        assert!(t.size > 0 && !t.ids.is_empty());
        assert!(t.ids.windows(2).all(|w| w[0] < w[1]), "{:?}", t.ids);
    }
});
