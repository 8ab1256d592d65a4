//! libvirt's CPU and node set syntax (`0-3,^2,8`), as `<vcpu cpuset>`, `<vcpupin cpuset>`,
//! `<emulatorpin cpuset>` and `<numatune>`'s `nodeset` write it, and the kernel's cpulists
//! (`0-7,16-23`) are the same syntax without exclusions.
//!
//! A VM's NUMA wishes are read from these strings, and a wish the hook cannot read must never
//! stop the VM, so parsing is strict and a failure is reported for the caller to log.

use std::collections::BTreeSet;

/// Why a set could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a set like 0-3,^2,8 ({why})")]
pub struct SetError {
    /// The text, made printable.
    pub text: String,
    /// What is wrong.
    pub why: &'static str,
}

/// The largest CPU or node number accepted (sets name real hardware).
const MAX_ID: u32 = 65_535;

/// The numbers a set names: ranges and single numbers, separated by commas, minus those after
/// `^`.
pub fn parse(text: &str) -> Result<BTreeSet<u32>, SetError> {
    let fail = |why| SetError {
        text: crate::printable(text, 60),
        why,
    };
    let mut set = BTreeSet::new();
    let mut excluded = BTreeSet::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(fail("empty item"));
        }
        let (target, item) = match part.strip_prefix('^') {
            Some(rest) => (&mut excluded, rest),
            None => (&mut set, part),
        };
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (
                number(a).ok_or_else(|| fail("bad number"))?,
                number(b).ok_or_else(|| fail("bad number"))?,
            ),
            None => {
                let n = number(item).ok_or_else(|| fail("bad number"))?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(fail("range runs backwards"));
        }
        target.extend(lo..=hi);
    }
    let result: BTreeSet<u32> = set.difference(&excluded).copied().collect();
    if result.is_empty() {
        return Err(fail("names nothing"));
    }
    Ok(result)
}

fn number(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n <= MAX_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> Vec<u32> {
        parse(s).unwrap().into_iter().collect()
    }

    #[test]
    fn ranges_singles_and_exclusions_combine() {
        assert_eq!(set("0-3,^2,8"), [0, 1, 3, 8]);
    }

    #[test]
    fn a_kernel_cpulist_reads_the_same() {
        assert_eq!(set("0-1,4-5"), [0, 1, 4, 5]);
    }

    #[test]
    fn garbage_backwards_ranges_and_empty_sets_are_refused() {
        for bad in ["", "a", "3-1", "1,,2", "0-2,^0-2", "-1", "99999999", "1-"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
