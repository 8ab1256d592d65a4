//! NVIDIA vGPU profile lists derived from a board name and its framebuffer.
//!
//! Writing every profile of a board into each host file would be tedious and error-prone, so a
//! host names the board and this module derives the list the way NVIDIA's drivers lay it out,
//! series in the driver's order B, Q, A, C:
//!
//! * B (virtual PC): 1 and 2 GB, `num_heads=4, frl_config=45, max_resolution=5120x2880`;
//!   some boards also have B4 variants (`P40-1B4`, `P40-2B4`) with the same description;
//! * Q (virtual workstation): every size dividing the framebuffer, `num_heads=4,
//!   frl_config=60`, `5120x2880` at 1 GB and `7680x4320` from 2 GB (Maxwell: `5120x2880`);
//! * A (virtual applications): the Q sizes, `num_heads=1, max_resolution=1280x1024`;
//! * C (compute): the Q sizes from 4 GB, `num_heads=1, max_resolution=4096x2400`;
//! * Maxwell boards (M60, M10) add 0.5 GB `0B`/`0Q` (`num_heads=2, 2560x1600`, `512M`).
//!
//! `max_instance` is framebuffer / size, capped at 32 (a 48 GB board offers 32 1 GB vGPUs,
//! not 48: RTXA6000 on driver 525.147.01, A40 on a VF). Names carry the board's prefix
//! (`GRID` or `NVIDIA`, per board as in NVIDIA's 510.47.03 table). Type ids are the real
//! driver's where a source gives them for the board at its real framebuffer size (tables below,
//! each naming its source); other boards get invented but stable ids from a per-board base.

use crate::typespec::TypeSpec;

/// A vGPU series, in the order NVIDIA lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// Virtual PC.
    B,
    /// Virtual PC, 4-head variant of older boards.
    B4,
    /// Virtual workstation.
    Q,
    /// Virtual applications.
    A,
    /// Compute.
    C,
}

/// Real type ids of one series, by ascending size; `None`: the board has no such series.
#[derive(Clone, Copy, Debug)]
enum Ids {
    None,
    /// Consecutive from this id.
    From(u32),
    /// One id per size.
    List(&'static [u32]),
}

impl Ids {
    fn present(self) -> bool {
        !matches!(self, Ids::None)
    }

    fn get(self, i: usize) -> Option<u32> {
        match self {
            Ids::None => None,
            Ids::From(first) => Some(first + u32::try_from(i).ok()?),
            Ids::List(l) => l.get(i).copied(),
        }
    }
}

/// A known board: identity, prefix, real framebuffer and which series it has (with their ids
/// when known).
#[derive(Debug)]
struct Board {
    name: &'static str,
    device: u16,
    prefix: &'static str,
    framebuffer_gb: u64,
    maxwell: bool,
    /// Whether the ids below are the real driver's.
    real: bool,
    /// `0B`, `0Q` (Maxwell only).
    half: Ids,
    b: Ids,
    b4: Ids,
    q: Ids,
    a: Ids,
    c: Ids,
    /// Types a later driver added at the end of the list: series, GB, id.
    extra: &'static [(Series, u64, u32)],
}

const fn board(name: &'static str, device: u16, prefix: &'static str, gb: u64) -> Board {
    Board {
        name,
        device,
        prefix,
        framebuffer_gb: gb,
        maxwell: false,
        real: false,
        half: Ids::None,
        b: Ids::From(0),
        b4: Ids::None,
        q: Ids::From(0),
        a: Ids::From(0),
        c: Ids::From(0),
        extra: &[],
    }
}

/// Real boards. Sources: ids, names and series of driver 510.47.03's `vgpuConfig.xml` (the
/// "vGPU Types" table of the vgpu_unlock community docs) unless a line says otherwise.
const BOARDS: &[Board] = &[
    Board {
        maxwell: true,
        real: true,
        half: Ids::List(&[11, 12]),
        b: Ids::List(&[14, 17]),
        b4: Ids::List(&[238, 210]),
        q: Ids::List(&[15, 18, 20, 22]),
        a: Ids::List(&[13, 16, 19, 21]),
        c: Ids::None,
        ..board("M60", 0x13f2, "GRID", 8)
    },
    Board {
        maxwell: true,
        real: true,
        half: Ids::List(&[35, 36]),
        b: Ids::List(&[38, 155]),
        b4: Ids::List(&[240, 208]),
        q: Ids::List(&[39, 41, 43, 45]),
        a: Ids::List(&[37, 40, 42, 44]),
        c: Ids::None,
        ..board("M10", 0x13bd, "GRID", 8)
    },
    // P40: also mdevctl/mdevctl issue #115 (`mdevctl types`, 2B 156, 2B4 215, 1B4 241, 4C..8C 283..285).
    Board {
        real: true,
        b: Ids::List(&[62, 156]),
        b4: Ids::List(&[241, 215]),
        q: Ids::From(46),
        a: Ids::From(54),
        c: Ids::From(283),
        ..board("P40", 0x1b38, "GRID", 24)
    },
    Board {
        real: true,
        b: Ids::List(&[71, 157]),
        b4: Ids::List(&[243, 214]),
        q: Ids::From(63),
        a: Ids::From(67),
        c: Ids::From(288),
        ..board("P4", 0x1bb3, "GRID", 8)
    },
    Board {
        real: true,
        b: Ids::List(&[93, 160]),
        b4: Ids::List(&[244, 211]),
        q: Ids::From(83),
        a: Ids::From(88),
        c: Ids::From(293),
        ..board("P100", 0x15f8, "GRID", 16)
    },
    Board {
        real: true,
        b: Ids::List(&[115, 163]),
        b4: Ids::List(&[247, 217]),
        q: Ids::From(105),
        a: Ids::From(110),
        c: Ids::From(299),
        ..board("V100", 0x1db4, "GRID", 16)
    },
    Board {
        real: true,
        b: Ids::List(&[222, 223]),
        b4: Ids::List(&[252, 224]),
        q: Ids::From(230),
        a: Ids::From(225),
        c: Ids::From(319),
        ..board("T4", 0x1eb8, "GRID", 16)
    },
    Board {
        real: true,
        b: Ids::List(&[435, 436]),
        q: Ids::From(256),
        a: Ids::From(437),
        c: Ids::From(343),
        ..board("RTX6000", 0x1e30, "GRID", 24)
    },
    Board {
        real: true,
        b: Ids::List(&[445, 446]),
        q: Ids::From(264),
        a: Ids::From(447),
        c: Ids::From(348),
        ..board("RTX8000", 0x1e30, "GRID", 48)
    },
    Board {
        real: true,
        b: Ids::None,
        q: Ids::None,
        a: Ids::None,
        c: Ids::From(468),
        ..board("A100", 0x20f1, "GRID", 40)
    },
    Board {
        real: true,
        b: Ids::None,
        q: Ids::None,
        a: Ids::None,
        c: Ids::From(684),
        ..board("A30", 0x20b7, "NVIDIA", 24)
    },
    Board {
        real: true,
        b: Ids::From(588),
        q: Ids::From(590),
        a: Ids::From(598),
        c: Ids::From(610),
        ..board("A10", 0x2236, "NVIDIA", 24)
    },
    Board {
        real: true,
        b: Ids::From(709),
        q: Ids::From(711),
        a: Ids::From(716),
        c: Ids::From(721),
        ..board("A16", 0x25b6, "NVIDIA", 16)
    },
    // A2: also the real A2 VF capture (harvester/pcidevices testdata, 0000:08:01.7): 742..756.
    Board {
        real: true,
        b: Ids::From(742),
        q: Ids::From(744),
        a: Ids::From(749),
        c: Ids::From(754),
        ..board("A2", 0x25b6, "NVIDIA", 16)
    },
    Board {
        real: true,
        b: Ids::From(555),
        q: Ids::From(557),
        a: Ids::From(567),
        c: Ids::From(581),
        ..board("A40", 0x2235, "NVIDIA", 48)
    },
    Board {
        real: true,
        b: Ids::From(657),
        q: Ids::From(659),
        a: Ids::From(667),
        c: Ids::From(675),
        ..board("RTXA5000", 0x2231, "NVIDIA", 24)
    },
    // RTXA6000: real `mdevctl types` on driver 525.147.01 (akb486/vgpu README): B 522..,
    // Q 524..533, A 534..543, C 548..554.
    Board {
        real: true,
        b: Ids::From(522),
        q: Ids::From(524),
        a: Ids::From(534),
        c: Ids::From(548),
        ..board("RTXA6000", 0x2230, "NVIDIA", 48)
    },
    // L40S: the real kernel-6.8 VF capture (harvester/pcidevices testdata, 0000:26:00.4,
    // `creatable_vgpu_types`): B 1145.., Q 1147..1156, A 1157..1166, then L40S-3B 2164; no C.
    Board {
        real: true,
        b: Ids::From(1145),
        q: Ids::From(1147),
        a: Ids::From(1157),
        c: Ids::None,
        extra: &[(Series::B, 3, 2164)],
        ..board("L40S", 0x26b9, "NVIDIA", 48)
    },
    board("L4", 0x27b8, "NVIDIA", 24),
    board("L40", 0x26b5, "NVIDIA", 48),
];

/// First id for boards without real ids: invented ids start here, above every real id listed.
const INVENTED_BASE: u32 = 3000;

/// Spacing between invented bases.
pub const BASE_STEP: u32 = 64;

/// Most instances of one type a physical GPU offers, whatever its size.
const MAX_INSTANCE_CAP: u64 = 32;

fn known(name: &str) -> Option<&'static Board> {
    BOARDS.iter().find(|b| b.name.eq_ignore_ascii_case(name))
}

/// The PCI device id of a known board's physical function, so a host file need not repeat it.
pub fn board_device_id(board: &str) -> Option<u16> {
    known(board).map(|b| b.device)
}

/// The name prefix NVIDIA gives a board (`GRID` for Maxwell to Turing, A100; `NVIDIA` for
/// later boards); unknown boards get `NVIDIA`, the prefix of every board added since.
pub fn board_prefix(board: &str) -> &'static str {
    known(board).map_or("NVIDIA", |b| b.prefix)
}

/// A known board's framebuffer in MiB (per physical GPU).
pub fn board_framebuffer_mb(board: &str) -> Option<u64> {
    known(board).map(|b| b.framebuffer_gb * 1024)
}

/// Whether derived ids for this board and framebuffer are the real driver's.
pub fn has_real_ids(board: &str, framebuffer_gb: u64) -> bool {
    known(board).is_some_and(|b| b.real && b.framebuffer_gb == framebuffer_gb)
}

/// The first invented type id of a board, from a stable hash of its name, so the same board
/// gets the same ids in every host file.
pub fn board_base(board: &str) -> u32 {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for b in board.to_ascii_uppercase().bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    INVENTED_BASE + (hash % 256) * BASE_STEP
}

/// How a derived list spells its type ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdStyle {
    /// `nvidia-<n>`: mdev type directory names.
    Mdev,
    /// `<n>`: the numeric ids of `creatable_vgpu_types` on kernel 6.8+.
    Numeric,
}

/// One derived profile before naming: series, size in MiB, real id if known.
struct Slot {
    series: Series,
    mb: u64,
    half: bool,
    id: Option<u32>,
}

fn push_series(out: &mut Vec<Slot>, series: Series, sizes: &[u64], ids: Ids, real: bool) {
    if !ids.present() {
        return;
    }
    for (i, &gb) in sizes.iter().enumerate() {
        out.push(Slot {
            series,
            mb: gb * 1024,
            half: false,
            id: if real { ids.get(i) } else { None },
        });
    }
}

/// The board's profiles in the driver's order (`0B` before B, `0Q` before Q, later additions
/// last).
fn slots(board_name: &str, framebuffer_gb: u64) -> Vec<Slot> {
    let generic = board("", 0, "", framebuffer_gb);
    let (spec, real) = match known(board_name) {
        Some(b) => (b, b.real && b.framebuffer_gb == framebuffer_gb),
        None => (&generic, false),
    };
    let divisors: Vec<u64> = (1..=framebuffer_gb)
        .filter(|g| framebuffer_gb.is_multiple_of(*g))
        .collect();
    let small: Vec<u64> = divisors.iter().copied().filter(|&g| g <= 2).collect();
    let compute: Vec<u64> = divisors.iter().copied().filter(|&g| g >= 4).collect();
    let half = |series, i: usize| Slot {
        series,
        mb: 512,
        half: true,
        id: if real { spec.half.get(i) } else { None },
    };
    let mut out = Vec::new();
    if spec.half.present() {
        out.push(half(Series::B, 0));
    }
    push_series(&mut out, Series::B, &small, spec.b, real);
    push_series(&mut out, Series::B4, &small, spec.b4, real);
    if spec.half.present() {
        out.push(half(Series::Q, 1));
    }
    push_series(&mut out, Series::Q, &divisors, spec.q, real);
    push_series(&mut out, Series::A, &divisors, spec.a, real);
    push_series(&mut out, Series::C, &compute, spec.c, real);
    for &(series, gb, id) in spec.extra {
        out.push(Slot {
            series,
            mb: gb * 1024,
            half: false,
            id: real.then_some(id),
        });
    }
    out
}

/// `num_heads`, `frl_config` and `max_resolution` of a profile.
fn display(slot: &Slot, maxwell: bool) -> (u32, u32, &'static str) {
    if slot.half {
        let frl = if slot.series == Series::B { 45 } else { 60 };
        return (2, frl, "2560x1600");
    }
    match slot.series {
        Series::B | Series::B4 => (4, 45, "5120x2880"),
        Series::Q if slot.mb <= 1024 || maxwell => (4, 60, "5120x2880"),
        Series::Q => (4, 60, "7680x4320"),
        Series::A => (1, 60, "1280x1024"),
        Series::C => (1, 60, "4096x2400"),
    }
}

fn suffix(slot: &Slot) -> String {
    let size = if slot.half {
        "0".to_string()
    } else {
        (slot.mb / 1024).to_string()
    };
    let series = match slot.series {
        Series::B => "B",
        Series::B4 => "B4",
        Series::Q => "Q",
        Series::A => "A",
        Series::C => "C",
    };
    format!("{size}{series}")
}

/// Derives a board's profiles.
///
/// `framebuffer_gb` must be at least 1. Real ids are used when the board is known at its real
/// framebuffer size; otherwise ids count up from `base` in list order.
pub fn derive(
    board: &str,
    prefix: &str,
    framebuffer_gb: u64,
    base: u32,
    style: IdStyle,
) -> Vec<TypeSpec> {
    let maxwell = known(board).is_some_and(|b| b.maxwell);
    let fb_mb = framebuffer_gb * 1024;
    let mut next = base;
    slots(board, framebuffer_gb)
        .into_iter()
        .map(|slot| {
            let n = slot.id.unwrap_or_else(|| {
                next += 1;
                next - 1
            });
            let id = match style {
                IdStyle::Mdev => format!("nvidia-{n}"),
                IdStyle::Numeric => n.to_string(),
            };
            let max = (fb_mb / slot.mb).min(MAX_INSTANCE_CAP);
            let (heads, frl, res) = display(&slot, maxwell);
            TypeSpec {
                id,
                name: Some(format!("{prefix} {board}-{}", suffix(&slot))),
                description: Some(format!(
                    "num_heads={heads}, frl_config={frl}, framebuffer={}M, max_resolution={res}, max_instance={max}",
                    slot.mb
                )),
                device_api: "vfio-pci".to_string(),
                framebuffer_mb: Some(slot.mb),
                max_instances: u32::try_from(max).unwrap_or(u32::MAX),
                units: 1,
            }
        })
        .collect()
}

/// How many invented ids [`derive()`] uses, to keep bases of different boards apart.
pub fn derived_count(board: &str, framebuffer_gb: u64) -> u32 {
    u32::try_from(slots(board, framebuffer_gb).len()).unwrap_or(u32::MAX)
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

    fn p40() -> Vec<TypeSpec> {
        derive("P40", "GRID", 24, board_base("P40"), IdStyle::Mdev)
    }

    #[test]
    fn p40_lists_b_b4_q_a_c_with_the_real_ids() {
        let got = summary(&p40());
        let names: Vec<&str> = got.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(
            &names[..6],
            [
                "GRID P40-1B",
                "GRID P40-2B",
                "GRID P40-1B4",
                "GRID P40-2B4",
                "GRID P40-1Q",
                "GRID P40-2Q"
            ]
        );
        let id = |name: &str| got.iter().find(|t| t.1 == name).map(|t| t.0.clone());
        assert_eq!(id("GRID P40-1Q").as_deref(), Some("nvidia-46"));
        assert_eq!(id("GRID P40-1A").as_deref(), Some("nvidia-54"));
        assert_eq!(id("GRID P40-1B").as_deref(), Some("nvidia-62"));
        assert_eq!(id("GRID P40-2B").as_deref(), Some("nvidia-156"));
        assert_eq!(id("GRID P40-24C").as_deref(), Some("nvidia-287"));
        assert_eq!(got.len(), 2 + 2 + 8 + 8 + 5);
    }

    #[test]
    fn descriptions_follow_the_series() {
        let t = p40();
        let desc = |name: &str| {
            t.iter()
                .find(|x| x.name.as_deref() == Some(name))
                .and_then(|x| x.description.clone())
                .unwrap_or_default()
        };
        assert_eq!(desc("GRID P40-1Q"), "num_heads=4, frl_config=60, framebuffer=1024M, max_resolution=5120x2880, max_instance=24");
        assert_eq!(desc("GRID P40-2Q"), "num_heads=4, frl_config=60, framebuffer=2048M, max_resolution=7680x4320, max_instance=12");
        assert_eq!(desc("GRID P40-2B4"), "num_heads=4, frl_config=45, framebuffer=2048M, max_resolution=5120x2880, max_instance=12");
        assert_eq!(desc("GRID P40-3A"), "num_heads=1, frl_config=60, framebuffer=3072M, max_resolution=1280x1024, max_instance=8");
        assert_eq!(desc("GRID P40-8C"), "num_heads=1, frl_config=60, framebuffer=8192M, max_resolution=4096x2400, max_instance=3");
    }

    #[test]
    fn one_gb_profiles_of_48_gb_boards_are_capped_at_32() {
        let t = derive("A40", "NVIDIA", 48, board_base("A40"), IdStyle::Mdev);
        assert_eq!(t[0].name.as_deref(), Some("NVIDIA A40-1B"));
        assert_eq!(t[0].id, "nvidia-555");
        assert_eq!(t[0].max_instances, 32);
        assert_eq!(t[1].max_instances, 24);
    }

    #[test]
    fn maxwell_has_half_gb_profiles() {
        let t = derive("M60", "GRID", 8, board_base("M60"), IdStyle::Mdev);
        assert_eq!(t[0].name.as_deref(), Some("GRID M60-0B"));
        assert_eq!(t[0].id, "nvidia-11");
        assert_eq!(
            t[0].description.as_deref(),
            Some("num_heads=2, frl_config=45, framebuffer=512M, max_resolution=2560x1600, max_instance=16")
        );
        let q0 = t
            .iter()
            .find(|x| x.name.as_deref() == Some("GRID M60-0Q"))
            .expect("0Q");
        assert_eq!(q0.id, "nvidia-12");
        let q8 = t
            .iter()
            .find(|x| x.name.as_deref() == Some("GRID M60-8Q"))
            .expect("8Q");
        assert!(q8
            .description
            .as_deref()
            .unwrap_or("")
            .contains("5120x2880"));
    }

    #[test]
    fn a_board_at_another_size_gets_invented_ids() {
        let t = derive("P40", "GRID", 12, board_base("P40"), IdStyle::Mdev);
        assert_eq!(t[0].id, format!("nvidia-{}", board_base("P40")));
        assert!(!has_real_ids("P40", 12) && has_real_ids("P40", 24));
    }

    #[test]
    fn numeric_style_has_bare_ids_and_l40s_ends_with_3b() {
        let t = derive("L40S", "NVIDIA", 48, 0, IdStyle::Numeric);
        assert_eq!(t[0].id, "1145");
        assert_eq!(t[0].name.as_deref(), Some("NVIDIA L40S-1B"));
        let last = t.last().expect("types");
        assert_eq!(
            (last.id.as_str(), last.name.as_deref()),
            ("2164", Some("NVIDIA L40S-3B"))
        );
        assert_eq!(derived_count("L40S", 48), t.len() as u32);
    }

    #[test]
    fn board_names_may_have_spaces() {
        let t = derive(
            "RTX Pro 6000 Blackwell DC",
            "NVIDIA",
            96,
            board_base("x"),
            IdStyle::Mdev,
        );
        assert!(t
            .iter()
            .any(|x| x.name.as_deref() == Some("NVIDIA RTX Pro 6000 Blackwell DC-48C")));
    }

    #[test]
    fn unknown_boards_get_a_stable_base_above_real_ids() {
        let a = board_base("RTXPRO6000");
        assert_eq!(a, board_base("rtxpro6000"));
        assert!(a >= INVENTED_BASE);
    }
}
