//! The sysfs attribute parsers never panic: an mdev type's `description` (framebuffer,
//! max_instance), `nvidia/creatable_vgpu_types`, count attributes, and a PF's config space
//! (where its VFs will appear: as many as asked, each at its own address).
//!
//! Input: the first byte picks the parser; for the config space the next byte is a VF count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgpu_hook::host::sysfs::{parse_count, parse_creatable, pci_config, MdevType};
use vgpu_hook::model::pci::PciAddress;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 4 == 3 {
        let Some((&count, config)) = rest.split_first() else {
            return;
        };
        let _ = pci_config::vf_offset_stride(config);
        for pf in ["0000:00:00.0", "0000:41:00.0", "ffff:ff:1f.7"] {
            let pf: PciAddress = pf.parse().unwrap();
            if let Some(vfs) = pci_config::future_vfs(config, pf, u32::from(count)) {
                assert_eq!(vfs.len(), usize::from(count));
                // Distinct VFs have distinct addresses: vgpuctl picks one of these for a domain.
                let mut sorted = vfs.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), vfs.len(), "two VFs at one address: {vfs:?}");
                assert!(!vfs.contains(&pf), "a VF at its PF's own address: {vfs:?}");
            }
        }
        return;
    }
    let text = String::from_utf8_lossy(rest);
    match which % 4 {
        0 => {
            let t = MdevType {
                id: "nvidia-1".into(),
                name: None,
                description: Some(text.into_owned()),
            };
            let _ = t.framebuffer_mb();
            let _ = t.max_instances();
            let _ = t.label();
        }
        1 => {
            for (_, name) in parse_creatable(&text) {
                assert!(!name.contains('\n'));
            }
        }
        _ => {
            let _ = parse_count(text.trim());
        }
    }
});
