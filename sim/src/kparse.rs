//! Kernel-style parsing of values written to attributes, and errno names.
//!
//! sysfs store callbacks parse their input with a handful of kernel helpers (`kstrtoul`,
//! `kstrtobool`, `guid_parse`, `sysfs_streq`), each with its own quirks: an optional trailing
//! newline, base prefixes, case-insensitive hex. The simulator must accept and refuse exactly
//! what those helpers do, so that a writer that works here works on a real host; this module
//! holds those helpers, the [`Errno`] type they fail with and the errno names used in the event
//! log.

/// An errno value (`libc::EINVAL`, ...): what the kernel would return for a write. Every layer
/// of the simulator speaks it, so it lives here, below all of them.
pub type Errno = i32;

/// Returns `data` without one trailing newline, as most store callbacks and `sysfs_streq` ignore it.
pub fn strip_newline(data: &[u8]) -> &[u8] {
    data.strip_suffix(b"\n").unwrap_or(data)
}

/// Parses an unsigned integer like the kernel's `kstrtoull(s, 0, ..)`: optional `+`, base from
/// the prefix (`0x` hex, leading `0` octal, else decimal), one trailing newline allowed.
///
/// Errors are the kernel's: `EINVAL` for anything not a number, `ERANGE` on overflow.
pub fn kstrtoull(data: &[u8]) -> Result<u64, Errno> {
    let s = strip_newline(data);
    let s = s.strip_prefix(b"+").unwrap_or(s);
    let (radix, digits) = if let Some(rest) = s
        .strip_prefix(b"0x")
        .or_else(|| s.strip_prefix(b"0X"))
        .filter(|r| !r.is_empty())
    {
        (16, rest)
    } else if s.len() > 1 && s[0] == b'0' {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if digits.is_empty() {
        return Err(libc::EINVAL);
    }
    let mut value: u64 = 0;
    for &c in digits {
        let d = match (c as char).to_digit(radix) {
            Some(d) => u64::from(d),
            None => return Err(libc::EINVAL),
        };
        value = value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(d))
            .ok_or(libc::ERANGE)?;
    }
    Ok(value)
}

/// Parses a signed integer like `kstrtol(s, 10, ..)`: optional `-` or `+`, decimal digits only
/// (`0x10` is `EINVAL`; a leading `0` is still decimal, `010` is 10), one trailing newline.
pub fn kstrtol10(data: &[u8]) -> Result<i64, Errno> {
    let s = strip_newline(data);
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(libc::EINVAL);
    }
    let mut value: i64 = 0;
    for &c in digits {
        let d = i64::from(c - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if neg {
                    v.checked_sub(d)
                } else {
                    v.checked_add(d)
                }
            })
            .ok_or(libc::ERANGE)?;
    }
    Ok(value)
}

/// Parses a `u16` like `kstrtou16(s, 0, ..)`; values above `u16::MAX` are `ERANGE` (callers
/// such as `sriov_numvfs_store` turn any failure into `EINVAL`).
pub fn kstrtou16(data: &[u8]) -> Result<u16, Errno> {
    let v = kstrtoull(data)?;
    u16::try_from(v).map_err(|_| libc::ERANGE)
}

/// Parses a boolean like the kernel's `kstrtobool`: `1 y Y t T` / `0 n N f F`, `on` / `off`.
pub fn kstrtobool(data: &[u8]) -> Result<bool, Errno> {
    let s = strip_newline(data);
    match s {
        [b'1' | b'y' | b'Y' | b't' | b'T', ..] => Ok(true),
        [b'0' | b'n' | b'N' | b'f' | b'F', ..] => Ok(false),
        [b'o' | b'O', b'n' | b'N', ..] => Ok(true),
        [b'o' | b'O', b'f' | b'F', ..] => Ok(false),
        _ => Err(libc::EINVAL),
    }
}

/// Parses a UUID in the 8-4-4-4-12 form (any hex case) and returns it in the lower-case form the
/// kernel names devices with (`%pUl`), or `None` when it is not one.
pub fn parse_uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    for (i, &c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        };
        if !ok {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

/// Parses a PCI address `DDDD:BB:DD.F` (hex, any case) into its lower-case canonical form.
pub fn parse_pci_address(s: &str) -> Option<String> {
    pci_address_parts(s).map(|(d, b, dev, f)| format_pci_address(d, b, dev, f))
}

/// Splits a PCI address into domain, bus, device and function.
pub fn pci_address_parts(s: &str) -> Option<(u16, u8, u8, u8)> {
    let (domain, rest) = s.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    if domain.len() != 4 || bus.len() != 2 || dev.len() != 2 || func.len() != 1 {
        return None;
    }
    let domain = u16::from_str_radix(domain, 16).ok()?;
    let bus = u8::from_str_radix(bus, 16).ok()?;
    let dev = u8::from_str_radix(dev, 16).ok()?;
    let func = u8::from_str_radix(func, 16).ok()?;
    if dev > 0x1f || func > 7 {
        return None;
    }
    Some((domain, bus, dev, func))
}

/// Formats a PCI address the way the kernel names PCI devices.
pub fn format_pci_address(domain: u16, bus: u8, dev: u8, func: u8) -> String {
    format!("{domain:04x}:{bus:02x}:{dev:02x}.{func:x}")
}

/// The symbolic name of an errno value, as printed in the event log (`EEXIST`).
pub fn errno_name(errno: Errno) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::EUSERS => "EUSERS",
        libc::EALREADY => "EALREADY",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kstrtoull_accepts_trailing_newline_and_prefixes() {
        assert_eq!(kstrtoull(b"1\n"), Ok(1));
        assert_eq!(kstrtoull(b"+7"), Ok(7));
        assert_eq!(kstrtoull(b"0x10"), Ok(16));
        assert_eq!(kstrtoull(b"010"), Ok(8));
        assert_eq!(kstrtoull(b"0"), Ok(0));
    }

    #[test]
    fn kstrtoull_refuses_words_spaces_and_signs() {
        for bad in [
            &b""[..],
            b"\n",
            b"yes",
            b" 1",
            b"1 ",
            b"-1",
            b"1\n\n",
            b"0x",
            b"08",
        ] {
            assert_eq!(kstrtoull(bad), Err(libc::EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn kstrtou16_overflow_is_erange() {
        assert_eq!(kstrtou16(b"65536"), Err(libc::ERANGE));
        assert_eq!(kstrtoull(b"99999999999999999999999"), Err(libc::ERANGE));
    }

    #[test]
    fn kstrtol10_is_decimal_only() {
        assert_eq!(kstrtol10(b"1145\n"), Ok(1145));
        assert_eq!(kstrtol10(b"010"), Ok(10));
        assert_eq!(kstrtol10(b"-1"), Ok(-1));
        assert_eq!(kstrtol10(b"+7"), Ok(7));
        for bad in [&b"0x10"[..], b"", b"\n", b"1 ", b"1\n\n", b"L40S-4Q"] {
            assert_eq!(kstrtol10(bad), Err(libc::EINVAL), "{bad:?}");
        }
        assert_eq!(kstrtol10(b"99999999999999999999"), Err(libc::ERANGE));
    }

    #[test]
    fn kstrtobool_knows_kernel_spellings() {
        assert_eq!(kstrtobool(b"1\n"), Ok(true));
        assert_eq!(kstrtobool(b"off"), Ok(false));
        assert_eq!(kstrtobool(b"maybe"), Err(libc::EINVAL));
    }

    #[test]
    fn uuid_is_lowercased_and_checked() {
        assert_eq!(
            parse_uuid("6F0C4D5E-0000-4000-8000-00000000000A").as_deref(),
            Some("6f0c4d5e-0000-4000-8000-00000000000a")
        );
        assert_eq!(parse_uuid("6f0c4d5e-0000-4000-8000-00000000000"), None);
        assert_eq!(parse_uuid("6f0c4d5e+0000-4000-8000-00000000000a"), None);
        assert_eq!(parse_uuid("zf0c4d5e-0000-4000-8000-00000000000a"), None);
    }

    #[test]
    fn pci_address_needs_domain_and_valid_ranges() {
        assert_eq!(
            parse_pci_address("0000:82:00.0").as_deref(),
            Some("0000:82:00.0")
        );
        assert_eq!(
            parse_pci_address("0000:AF:1F.7").as_deref(),
            Some("0000:af:1f.7")
        );
        assert_eq!(parse_pci_address("82:00.0"), None);
        assert_eq!(parse_pci_address("0000:82:20.0"), None);
        assert_eq!(parse_pci_address("0000:82:00.8"), None);
    }
}
