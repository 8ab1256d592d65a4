//! NVIDIA vGPU profile lists derived from a board name and its framebuffer.
//!
//! Writing every profile of a board into each host file would be tedious and error-prone, so a
//! host names the board and its framebuffer and this module derives the list the way NVIDIA's
//! drivers lay it out: one Q (virtual workstation) profile per size that divides the framebuffer
//! evenly, plus B (virtual PC) profiles for 1 and 2 GB. Type ids are `nvidia-<n>` (bare `<n>` on
//! the kernel-6.8+ interface) numbered from a per-board base, so two different boards in one host
//! get different ids, as real ones do; for the P40 and T4 the Q-series ids are the real driver's.

use crate::host::TypeSpec;

/// Known boards: name, PCI device id of the physical function, first type id.
///
/// Bases are 32 apart at least, so derived lists of known boards never overlap.
const BOARDS: &[(&str, u16, u32)] = &[
    ("M60", 0x13f2, 11),
    ("M10", 0x13bd, 35),
    ("P40", 0x1b38, 46),
    ("P4", 0x1bb3, 63),
    ("P100", 0x15f8, 96),
    ("V100", 0x1db4, 180),
    ("T4", 0x1eb8, 230),
    ("RTX6000", 0x1e30, 256),
    ("RTX8000", 0x1e30, 290),
    ("A2", 0x25b6, 700),
    ("A10", 0x2236, 732),
    ("A16", 0x25b6, 764),
    ("A40", 0x2235, 796),
    ("L4", 0x27b8, 900),
    ("L40", 0x26b5, 932),
    ("L40S", 0x26b9, 964),
];

/// First id for boards not in the table: derived ids of unknown boards start here.
const UNKNOWN_BASE: u32 = 1000;

/// Spacing between bases of unknown boards.
pub const BASE_STEP: u32 = 32;

/// The PCI device id of a known board's physical function, so a host file need not repeat it.
pub fn board_device_id(board: &str) -> Option<u16> {
    BOARDS
        .iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(board))
        .map(|&(_, id, _)| id)
}

/// The first type id of a board: from the table for known boards, else from a stable hash of
/// the name, so the same unknown board gets the same ids in every host file.
pub fn board_base(board: &str) -> u32 {
    if let Some(&(_, _, base)) = BOARDS
        .iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(board))
    {
        return base;
    }
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for b in board.to_ascii_uppercase().bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    UNKNOWN_BASE + (hash % 256) * BASE_STEP
}

/// How a derived list spells its type ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdStyle {
    /// `nvidia-<n>`: mdev type directory names.
    Mdev,
    /// `<n>`: the numeric ids of `creatable_vgpu_types` on kernel 6.8+.
    Numeric,
}

/// Derives a board's profiles.
///
/// `framebuffer_gb` must be at least 1; sizes are its divisors, ascending: Q for every size,
/// then B for 1 and 2 GB. `max_instances` of a size is how many fit in the framebuffer.
pub fn derive(
    board: &str,
    prefix: &str,
    framebuffer_gb: u64,
    base: u32,
    style: IdStyle,
) -> Vec<TypeSpec> {
    let sizes: Vec<u64> = (1..=framebuffer_gb)
        .filter(|g| framebuffer_gb.is_multiple_of(*g))
        .collect();
    let mut out = Vec::new();
    let mut next = base;
    let mut push = |series: char, gb: u64, frl: u32| {
        let id = match style {
            IdStyle::Mdev => format!("nvidia-{next}"),
            IdStyle::Numeric => next.to_string(),
        };
        next += 1;
        let max = u32::try_from(framebuffer_gb / gb).unwrap_or(u32::MAX);
        out.push(TypeSpec {
            id,
            name: Some(format!("{prefix} {board}-{gb}{series}")),
            description: Some(format!(
                "num_heads=4, frl_config={frl}, framebuffer={}M, max_resolution=5120x2880, max_instance={max}",
                gb * 1024
            )),
            device_api: "vfio-pci".to_string(),
            framebuffer_mb: Some(gb * 1024),
            max_instances: max,
        });
    };
    for &gb in &sizes {
        push('Q', gb, 60);
    }
    for &gb in sizes.iter().filter(|&&g| g <= 2) {
        push('B', gb, 45);
    }
    out
}

/// How many ids [`derive()`] uses for a framebuffer size, to check bases do not overlap.
pub fn derived_count(framebuffer_gb: u64) -> u32 {
    let sizes = (1..=framebuffer_gb)
        .filter(|g| framebuffer_gb.is_multiple_of(*g))
        .count();
    let b = (1..=framebuffer_gb.min(2))
        .filter(|g| framebuffer_gb.is_multiple_of(*g))
        .count();
    u32::try_from(sizes + b).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(types: &[TypeSpec]) -> Vec<(String, String, u64, u32)> {
        types
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    t.name.clone().unwrap_or_default(),
                    t.framebuffer_mb.unwrap_or(0),
                    t.max_instances,
                )
            })
            .collect()
    }

    #[test]
    fn p40_profiles_are_eight_q_sizes_and_two_b() {
        let got = summary(&derive("P40", "GRID", 24, board_base("P40"), IdStyle::Mdev));
        let want: Vec<(String, String, u64, u32)> = [
            ("nvidia-46", "GRID P40-1Q", 1024, 24),
            ("nvidia-47", "GRID P40-2Q", 2048, 12),
            ("nvidia-48", "GRID P40-3Q", 3072, 8),
            ("nvidia-49", "GRID P40-4Q", 4096, 6),
            ("nvidia-50", "GRID P40-6Q", 6144, 4),
            ("nvidia-51", "GRID P40-8Q", 8192, 3),
            ("nvidia-52", "GRID P40-12Q", 12288, 2),
            ("nvidia-53", "GRID P40-24Q", 24576, 1),
            ("nvidia-54", "GRID P40-1B", 1024, 24),
            ("nvidia-55", "GRID P40-2B", 2048, 12),
        ]
        .iter()
        .map(|&(a, b, c, d)| (a.to_string(), b.to_string(), c, d))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn t4_profiles_start_at_the_real_q_ids() {
        let got = summary(&derive("T4", "GRID", 16, board_base("T4"), IdStyle::Mdev));
        let ids: Vec<&str> = got.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(
            ids,
            [
                "nvidia-230",
                "nvidia-231",
                "nvidia-232",
                "nvidia-233",
                "nvidia-234",
                "nvidia-235",
                "nvidia-236"
            ]
        );
        assert_eq!(got[4].1, "GRID T4-16Q");
        assert_eq!(got[4].3, 1);
        assert_eq!(got[6].1, "GRID T4-2B");
    }

    #[test]
    fn description_matches_nvidia_format() {
        let t = &derive("P40", "GRID", 24, 46, IdStyle::Mdev)[0];
        assert_eq!(
            t.description.as_deref(),
            Some("num_heads=4, frl_config=60, framebuffer=1024M, max_resolution=5120x2880, max_instance=24")
        );
    }

    #[test]
    fn numeric_style_has_bare_ids() {
        let t = derive("L40S", "NVIDIA", 48, board_base("L40S"), IdStyle::Numeric);
        assert_eq!(t[0].id, "964");
        assert_eq!(t[0].name.as_deref(), Some("NVIDIA L40S-1Q"));
        assert_eq!(derived_count(48), t.len() as u32);
    }

    #[test]
    fn unknown_boards_get_a_stable_base_outside_known_ones() {
        let a = board_base("RTXPRO6000");
        assert_eq!(a, board_base("rtxpro6000"));
        assert!(a >= UNKNOWN_BASE);
    }
}
