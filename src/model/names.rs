//! Validated names: everything from a domain XML or the config that may end up in a path or a
//! sysfs write.
//!
//! The hook runs as root and joins these strings onto `/sys`. A value like `../../block` or one
//! carrying a NUL or a newline must be refused before any path is built, so each kind of name has
//! its own type whose constructor is the only way in, and whose error says what is accepted.

use std::fmt;

/// Longest name component the hook accepts (sysfs names are far shorter in practice).
const MAX_NAME: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a UUID in the 8-4-4-4-12 hex form.
    #[error("'{0}' is not a UUID (expected 8-4-4-4-12 hex digits, like 6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b)")]
    Uuid(String),
    /// Contains a character outside the allowed set, or is empty, `.`/`..`, or too long.
    #[error("'{value}' is not a valid {what} (expected 1 to {MAX_NAME} of A-Z a-z 0-9 . _ : + -, not starting with a dot)")]
    Component {
        /// Which kind of name.
        what: &'static str,
        /// The value, made printable.
        value: String,
    },
    /// Free text (profile names, params) with control characters or too long.
    #[error(
        "'{value}' is not a valid {what} (expected printable text of at most {max} characters)"
    )]
    Text {
        /// Which kind of text.
        what: &'static str,
        /// The value, made printable.
        value: String,
        /// The length limit.
        max: usize,
    },
}

fn component(what: &'static str, s: &str) -> Result<String, NameError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'+' | b'-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(NameError::Component {
            what,
            value: crate::printable(s, 60),
        })
    }
}

fn text(what: &'static str, s: &str, max: usize) -> Result<String, NameError> {
    if s.is_empty() || s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(NameError::Text {
            what,
            value: crate::printable(s, 60),
            max,
        });
    }
    Ok(s.to_string())
}

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// An mdev UUID, lower case and hyphenated as the kernel names it in sysfs.
    MdevUuid
);
string_newtype!(
    /// An mdev parent as named under `/sys/class/mdev_bus` (`0000:82:00.0`, `mtty`).
    ParentName
);
string_newtype!(
    /// An mdev type id as named under `mdev_supported_types` (`nvidia-46`, `mtty-2`).
    TypeId
);
string_newtype!(
    /// A vGPU profile name as the driver shows it (`GRID P40-2Q`), or its short form (`P40-2Q`).
    Profile
);
string_newtype!(
    /// NVIDIA `vgpu_params` text (`frame_rate_limiter=0,disable_vnc=1`).
    Params
);

impl MdevUuid {
    /// Accepts the hyphenated form only (36 characters), in either case.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bad = || NameError::Uuid(crate::printable(s, 60));
        if s.len() != 36 {
            return Err(bad());
        }
        let u = uuid::Uuid::try_parse(s).map_err(|_| bad())?;
        Ok(MdevUuid(u.hyphenated().to_string()))
    }

    /// A fresh random UUID.
    pub fn new_random() -> Self {
        MdevUuid(uuid::Uuid::new_v4().hyphenated().to_string())
    }
}

impl ParentName {
    /// Accepts a sysfs name component.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        component("mdev parent name", s).map(ParentName)
    }
}

impl ParentName {
    /// Parses a comma-separated list of parents, as `parent="..."` and `--parent` take it: PCI
    /// addresses (normalised to sysfs form) or mdev bus names; duplicates count once.
    pub fn parse_list(s: &str) -> Result<Vec<ParentName>, NameError> {
        let mut out = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let name = match p.parse::<crate::model::pci::PciAddress>() {
                Ok(a) => ParentName::from(a),
                Err(_) => ParentName::parse(p)?,
            };
            if !out.contains(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }
}

impl From<crate::model::pci::PciAddress> for ParentName {
    fn from(a: crate::model::pci::PciAddress) -> Self {
        ParentName(a.to_string())
    }
}

impl TypeId {
    /// Accepts a sysfs name component.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        component("mdev type id", s).map(TypeId)
    }
}

impl Profile {
    /// Accepts printable text; it is only ever compared with what the driver reports.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        text("vGPU profile name", s.trim(), 128).map(Profile)
    }

    /// Whether the driver's type `name` is this profile, ignoring case: in full, in full but
    /// for the vendor prefix, or in short form (see [`Profile::pick`]).
    pub fn matches(&self, name: &str) -> bool {
        self.tier(name).is_some()
    }

    /// How closely the driver's type `name` matches: 0 the full name as written, 1 the name
    /// without its vendor prefix (`GRID A100-4C` is `NVIDIA A100-4C`, `RTX Pro 6000 Blackwell
    /// DC-48C` is `NVIDIA RTX Pro 6000 Blackwell DC-48C`), 2 the short form (the last word,
    /// `P40-2Q`), tried only for a profile of one word.
    fn tier(&self, name: &str) -> Option<u8> {
        let name = name.trim();
        let want = self.0.as_str();
        if name.eq_ignore_ascii_case(want) {
            return Some(0);
        }
        if without_vendor(name).eq_ignore_ascii_case(without_vendor(want)) {
            return Some(1);
        }
        let short = name.rsplit(char::is_whitespace).next()?;
        (!want.contains(char::is_whitespace) && short.eq_ignore_ascii_case(want)).then_some(2)
    }
}

/// The vendor prefixes NVIDIA's drivers put before a board name. Which one a type gets depends
/// on the board and on the driver branch (A100 stays `GRID` where A10 is `NVIDIA`, and branches
/// renamed boards), so a profile written before a driver upgrade names the same type after it
/// only if the prefix does not count.
const VENDOR_PREFIXES: [&str; 2] = ["GRID ", "NVIDIA "];

/// `name` without a leading vendor prefix (any case).
fn without_vendor(name: &str) -> &str {
    VENDOR_PREFIXES
        .iter()
        .find_map(|p| {
            name.get(..p.len())
                .filter(|head| head.eq_ignore_ascii_case(p))
                .map(|_| name[p.len()..].trim_start())
        })
        .unwrap_or(name)
}

impl Profile {
    /// The items whose name is this profile, by the closest tier that matches any: the full
    /// name as written; else the full name but for the vendor prefix; else (for a one-word
    /// profile) the short name. More than one result means the profile is ambiguous among them.
    /// This is the one matching rule, shared by the hook and vgpuctl.
    pub fn pick<'a, T>(&self, items: &'a [T], name_of: impl Fn(&T) -> Option<&str>) -> Vec<&'a T> {
        let tiers: Vec<Option<u8>> = items
            .iter()
            .map(|t| name_of(t).and_then(|n| self.tier(n)))
            .collect();
        let Some(best) = tiers.iter().flatten().min().copied() else {
            return Vec::new();
        };
        items
            .iter()
            .zip(&tiers)
            .filter(|(_, t)| **t == Some(best))
            .map(|(item, _)| item)
            .collect()
    }
}

impl Params {
    /// Accepts `key=value` pairs separated by commas, printable, without newlines.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let t = text("vgpu_params value", s, 1024)?;
        let pairs_ok = t.split(',').all(|kv| {
            kv.split_once('=').is_some_and(|(k, v)| {
                !k.trim().is_empty()
                    && k.trim()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !v.trim().is_empty()
            })
        });
        if !pairs_ok {
            return Err(NameError::Text {
                what: "vgpu_params value (key=value[,key=value])",
                value: crate::printable(s, 60),
                max: 1024,
            });
        }
        Ok(Params(t))
    }
}

/// A libvirt domain name, checked before it is used to find `/run/libvirt/qemu/<name>.pid`.
pub fn domain_name_is_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_lower_cased() {
        let u = MdevUuid::parse("6F2E9A4C-8D1B-4C1E-9A41-0C2D3E4F5A6B").unwrap();
        assert_eq!(u.as_str(), "6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b");
    }

    #[test]
    fn uuid_without_hyphens_is_refused() {
        assert!(MdevUuid::parse("6f2e9a4c8d1b4c1e9a410c2d3e4f5a6b").is_err());
    }

    #[test]
    fn uuid_with_traversal_is_refused() {
        assert!(MdevUuid::parse("../../../../../../../../../etc/passwd").is_err());
    }

    #[test]
    fn braced_uuid_of_36_chars_is_refused() {
        assert!(MdevUuid::parse("{6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a}").is_err());
    }

    #[test]
    fn type_id_with_slash_or_dots_is_refused() {
        for bad in [
            "../nvidia-46",
            "nvidia/46",
            "..",
            ".",
            "",
            "nvidia-46\n",
            "a\0b",
        ] {
            assert!(TypeId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overlong_type_id_is_refused() {
        assert!(TypeId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn ordinary_type_ids_pass() {
        for ok in [
            "nvidia-46",
            "mtty-2",
            "i915-GVTg_V5_4",
            "vfio_ap-passthrough",
        ] {
            assert!(TypeId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn profile_matches_full_and_short_names_ignoring_case() {
        let p = Profile::parse("p40-2q").unwrap();
        assert!(p.matches("GRID P40-2Q"));
        assert!(Profile::parse("GRID P40-2Q")
            .unwrap()
            .matches("GRID P40-2Q"));
        assert!(!p.matches("GRID P40-24Q"));
    }

    #[test]
    fn a_profile_keeps_matching_when_a_driver_upgrade_changes_the_vendor_prefix() {
        let p = Profile::parse("GRID A100-4C").unwrap();
        assert!(p.matches("NVIDIA A100-4C"));
        assert!(Profile::parse("NVIDIA T4-2Q")
            .unwrap()
            .matches("GRID T4-2Q"));
        assert!(!p.matches("NVIDIA A100-40C"));
    }

    #[test]
    fn a_board_name_with_spaces_matches_with_or_without_the_vendor() {
        let name = "NVIDIA RTX Pro 6000 Blackwell DC-48C";
        assert!(Profile::parse("RTX Pro 6000 Blackwell DC-48C")
            .unwrap()
            .matches(name));
        assert!(Profile::parse("grid rtx pro 6000 blackwell dc-48c")
            .unwrap()
            .matches(name));
        assert!(Profile::parse("DC-48C").unwrap().matches(name));
        assert!(!Profile::parse("6000 Blackwell DC-48C")
            .unwrap()
            .matches(name));
    }

    #[test]
    fn the_name_as_written_wins_over_one_that_differs_in_prefix_only() {
        let types = ["GRID A100-4C", "NVIDIA A100-4C"];
        let p = Profile::parse("NVIDIA A100-4C").unwrap();
        assert_eq!(p.pick(&types, |t| Some(*t)), [&"NVIDIA A100-4C"]);
    }

    #[test]
    fn a_short_name_on_two_boards_is_still_ambiguous() {
        let types = [
            "NVIDIA A40-4Q",
            "NVIDIA RTX Pro 6000 Blackwell DC-4Q",
            "GRID A40-4Q",
        ];
        let p = Profile::parse("A40-4Q").unwrap();
        assert_eq!(
            p.pick(&types, |t| Some(*t)).len(),
            2,
            "prefix-only twins are both offered"
        );
        assert_eq!(
            Profile::parse("DC-4Q")
                .unwrap()
                .pick(&types, |t| Some(*t))
                .len(),
            1
        );
    }

    #[test]
    fn multi_word_profile_is_matched_in_full_only() {
        let p = Profile::parse("port serial").unwrap();
        assert!(!p.matches("Dual port serial"));
    }

    #[test]
    fn profile_with_control_characters_is_refused() {
        assert!(Profile::parse("P40-2Q\nrm").is_err());
    }

    #[test]
    fn params_need_key_value_pairs() {
        assert!(Params::parse("frame_rate_limiter=0,disable_vnc=1").is_ok());
        assert!(Params::parse("frame_rate_limiter").is_err());
        assert!(Params::parse("a=1\nb=2").is_err());
    }

    #[test]
    fn domain_names_with_slashes_are_unsafe() {
        assert!(!domain_name_is_safe("../etc"));
        assert!(domain_name_is_safe("win11 test"));
    }
}
