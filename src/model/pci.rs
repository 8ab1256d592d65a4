//! PCI addresses as operators write them and as sysfs names them.
//!
//! Operators copy addresses from `lspci` (`82:00.0`, no domain, lower case), from `nvidia-smi`
//! (`00000000:82:00.0`, upper case) or from libvirt XML (`domain='0x0000' bus='0x82' ...`). Sysfs
//! only knows the canonical `0000:82:00.0`. Every address that reaches a path goes through
//! [`PciAddress`], so a string from a config file or a domain XML can never become `../` or a slash.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A PCI function address (domain, bus, device, function), always shown in sysfs form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PciAddress {
    /// PCI segment; 0 on most hosts, larger on multi-segment and VMD machines.
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub slot: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

/// Why a string is not a PCI address; the message says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{input}' is not a PCI address (expected DDDD:BB:SS.F or BB:SS.F in hex, like 0000:82:00.0)"
)]
pub struct ParsePciError {
    /// The offending input, shortened and stripped of control characters so it prints safely.
    pub input: String,
}

impl PciAddress {
    /// Builds an address from its parts, checking the ranges PCI allows.
    pub fn new(domain: u32, bus: u8, slot: u8, function: u8) -> Option<Self> {
        (slot <= 0x1f && function <= 7).then_some(PciAddress {
            domain,
            bus,
            slot,
            function,
        })
    }

    /// The address `s` spells (`0000:82:00.0`, or `82:00.0` in domain 0), or `None`: for text
    /// that may or may not be an address (an mdev parent's name), without building an error.
    pub fn from_text(s: &str) -> Option<Self> {
        let hex = |p: &str, max_len: usize| -> Option<u32> {
            if p.is_empty() || p.len() > max_len || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(p, 16).ok()
        };
        let (rest, function) = s.rsplit_once('.')?;
        let mut parts = rest.split(':');
        let (first, second, third) = (parts.next()?, parts.next()?, parts.next());
        if parts.next().is_some() {
            return None;
        }
        let (domain, bus, slot) = match third {
            None => (0, hex(first, 2)?, hex(second, 2)?),
            Some(slot) => (hex(first, 8)?, hex(second, 2)?, hex(slot, 2)?),
        };
        if function.len() != 1 {
            return None;
        }
        Self::new(domain, bus as u8, slot as u8, hex(function, 1)? as u8)
    }

    /// Builds an address from libvirt's `<address domain='0x0000' bus='0x04' slot='0x02'
    /// function='0x0'/>` attributes (hex with `0x`, or decimal as libvirt also accepts).
    pub fn from_libvirt(domain: &str, bus: &str, slot: &str, function: &str) -> Option<Self> {
        fn num(s: &str) -> Option<u32> {
            let s = s.trim();
            match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) if !hex.is_empty() && hex.len() <= 8 => u32::from_str_radix(hex, 16).ok(),
                Some(_) => None,
                None if !s.is_empty() && s.len() <= 10 => s.parse().ok(),
                None => None,
            }
        }
        let (d, b, s, f) = (num(domain)?, num(bus)?, num(slot)?, num(function)?);
        Self::new(
            d,
            u8::try_from(b).ok()?,
            u8::try_from(s).ok()?,
            u8::try_from(f).ok()?,
        )
    }

    /// The libvirt `<address .../>` attributes for this address, in libvirt's own spelling.
    pub fn libvirt_attrs(&self) -> [(&'static str, String); 4] {
        [
            ("domain", format!("0x{:04x}", self.domain)),
            ("bus", format!("0x{:02x}", self.bus)),
            ("slot", format!("0x{:02x}", self.slot)),
            ("function", format!("0x{:x}", self.function)),
        ]
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = ParsePciError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_text(s).ok_or_else(|| ParsePciError {
            input: crate::printable(s, 40),
        })
    }
}

impl TryFrom<String> for PciAddress {
    type Error = ParsePciError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PciAddress> for String {
    fn from(a: PciAddress) -> String {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_gets_domain_zero() {
        assert_eq!(
            "82:00.0".parse::<PciAddress>().unwrap().to_string(),
            "0000:82:00.0"
        );
    }

    #[test]
    fn upper_case_is_normalised() {
        assert_eq!(
            "0000:AF:1F.7".parse::<PciAddress>().unwrap().to_string(),
            "0000:af:1f.7"
        );
    }

    #[test]
    fn nvidia_smi_eight_digit_domain_is_accepted() {
        assert_eq!(
            "00000000:82:00.0"
                .parse::<PciAddress>()
                .unwrap()
                .to_string(),
            "0000:82:00.0"
        );
    }

    #[test]
    fn five_digit_vmd_domain_is_kept() {
        assert_eq!(
            "10000:01:00.0".parse::<PciAddress>().unwrap().to_string(),
            "10000:01:00.0"
        );
    }

    #[test]
    fn slot_above_31_is_refused() {
        assert!("0000:82:20.0".parse::<PciAddress>().is_err());
    }

    #[test]
    fn function_above_7_is_refused() {
        assert!("0000:82:00.8".parse::<PciAddress>().is_err());
    }

    #[test]
    fn path_traversal_is_refused() {
        for bad in [
            "../../etc",
            "0000:82:00.0/..",
            "0000:82:00.0\0",
            "0000:82:00.0 ",
            "+82:00.0",
            "",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn error_names_the_input_and_the_expected_form() {
        let e = "nope".parse::<PciAddress>().unwrap_err().to_string();
        assert!(e.contains("'nope'") && e.contains("0000:82:00.0"), "{e}");
    }

    #[test]
    fn libvirt_attributes_round_trip() {
        let a = PciAddress::from_libvirt("0x0000", "0x04", "0x02", "0x0").unwrap();
        assert_eq!(a.to_string(), "0000:04:02.0");
        let attrs = a.libvirt_attrs();
        assert_eq!(attrs[1], ("bus", "0x04".to_string()));
    }

    #[test]
    fn libvirt_slot_out_of_range_is_refused() {
        assert!(PciAddress::from_libvirt("0x0000", "0x04", "0x20", "0x0").is_none());
    }
}
