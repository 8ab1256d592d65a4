//! Where a PF's VFs will appear, read from its PCI config space.
//!
//! A VF that does not exist yet (its PF has none enabled) can still be named by a domain, and
//! `vgpuctl attach --vf` must be able to choose one. The SR-IOV extended capability says exactly
//! where they will be: VF `i` has routing id `PF + First VF Offset + i * VF Stride`. Walking the
//! extended capability list is byte work, kept apart from the file access so it can be tested on
//! any bytes.

use crate::model::pci::PciAddress;

/// The SR-IOV extended capability's id.
const SRIOV_CAP: u32 = 0x0010;
/// Extended capabilities start here.
const EXT_START: usize = 0x100;
/// Offsets of First VF Offset and VF Stride inside the SR-IOV capability.
const FIRST_VF_OFFSET: usize = 0x14;
const VF_STRIDE: usize = 0x16;

fn u16_at(config: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*config.get(o)?, *config.get(o + 1)?]))
}

fn u32_at(config: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(config.get(o..o + 4)?.try_into().ok()?))
}

/// (First VF Offset, VF Stride) of the SR-IOV capability, if the config space has one.
pub fn vf_offset_stride(config: &[u8]) -> Option<(u32, u32)> {
    let mut pos = EXT_START;
    for _ in 0..64 {
        let header = u32_at(config, pos)?;
        if header == 0 || header == u32::MAX {
            return None;
        }
        if header & 0xffff == SRIOV_CAP {
            let offset = u32::from(u16_at(config, pos + FIRST_VF_OFFSET)?);
            let stride = u32::from(u16_at(config, pos + VF_STRIDE)?);
            return Some((offset, stride));
        }
        let next = ((header >> 20) & 0xffc) as usize;
        if next < EXT_START {
            return None;
        }
        pos = next;
    }
    None
}

/// The addresses of the first `count` VFs of `pf` whose config space is `config`. `None` when
/// the capability cannot describe them: a First VF Offset of 0 puts VF 0 on the PF itself, and a
/// VF Stride of 0 puts every VF at one address.
pub fn future_vfs(config: &[u8], pf: PciAddress, count: u32) -> Option<Vec<PciAddress>> {
    let (offset, stride) = vf_offset_stride(config)?;
    if offset == 0 || (stride == 0 && count > 1) {
        return None;
    }
    let rid = (u32::from(pf.bus) << 8) | (u32::from(pf.slot) << 3) | u32::from(pf.function);
    (0..count)
        .map(|i| {
            let r = rid + offset + i * stride;
            PciAddress::new(
                pf.domain,
                u8::try_from(r >> 8).ok()?,
                ((r >> 3) & 0x1f) as u8,
                (r & 7) as u8,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_space_without_extended_capabilities_has_no_vf_layout() {
        assert_eq!(vf_offset_stride(&[0u8; 0x100]), None);
        assert_eq!(vf_offset_stride(&[0u8; 0x200]), None);
    }

    #[test]
    fn a_capability_list_that_loops_back_below_its_start_ends() {
        let mut config = vec![0u8; 0x200];
        config[0x100..0x104].copy_from_slice(&(0x0001u32 | (0x40 << 20)).to_le_bytes());
        assert_eq!(vf_offset_stride(&config), None);
    }

    /// Found by fuzzing (sysfs_parsers): an offset or stride of 0 named the PF itself, or one
    /// address for every VF, as the VFs to come.
    #[test]
    fn a_zero_offset_or_stride_describes_no_vfs() {
        let pf: PciAddress = "0000:41:00.0".parse().unwrap();
        let cap = |offset: u16, stride: u16| {
            let mut config = vec![0u8; 0x200];
            config[0x100..0x104].copy_from_slice(&0x0001_0010u32.to_le_bytes());
            config[0x114..0x116].copy_from_slice(&offset.to_le_bytes());
            config[0x116..0x118].copy_from_slice(&stride.to_le_bytes());
            config
        };
        assert_eq!(future_vfs(&cap(0, 1), pf, 1), None);
        assert_eq!(future_vfs(&cap(0, 0), pf, 4), None);
        assert_eq!(future_vfs(&cap(4, 0), pf, 2), None);
        let one: Vec<String> = future_vfs(&cap(4, 0), pf, 1)
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(one, ["0000:41:00.4"]);
    }

    #[test]
    fn vfs_past_the_last_bus_are_not_invented() {
        let mut config = vec![0u8; 0x200];
        config[0x100..0x104].copy_from_slice(&0x0001_0010u32.to_le_bytes());
        config[0x114..0x116].copy_from_slice(&0x100u16.to_le_bytes());
        config[0x116..0x118].copy_from_slice(&1u16.to_le_bytes());
        let pf: PciAddress = "0000:ff:00.0".parse().unwrap();
        assert_eq!(future_vfs(&config, pf, 1), None);
    }
}
