//! NVIDIA's vGPU placements: where on a physical GPU's framebuffer each vGPU sits.
//!
//! Source: NVIDIA/open-gpu-kernel-modules @df1c9a3d (595.45.04),
//! `src/nvidia/src/kernel/virtualization/kernel_vgpu_mgr.c`. The framebuffer is a row of 1 GiB
//! slots (`placementRegionSize`, the board's nominal size in GiB); a type takes
//! `profile size / 1 GiB` slots (`_kvgpumgrGetplacementSize`, one exception: the 2 GB profile
//! of a 96 GB board takes 3). Which first slots ("placement ids") a type may start at depends
//! on the mode and the generation:
//! - mixed-size ("heterogeneous") mode before GB100 (`_kvgpumgrSetHeterogeneousResources`):
//!   the region is halved recursively down to sixteenths; a type whose `maxInstance` is a power
//!   of two gets two placements, at both ends, of the partition that holds two of it; other
//!   types get one at the outer end of each partition of `prevPow2(maxInstance)`, so a 16 GB
//!   profile of a 48 GB board has 2 placements there, not 3. 1 GB profiles lose a deny-list of
//!   ids (`_kvgpumgrIsPlacementValid`: Ampere 8 and 32; Ada and Hopper, which run GSP, 2, 3,
//!   8, 9, 14, 15, ...).
//! - mixed-size mode from GB100 on (`_kvgpumgrSetHeterogeneousResources_GB100`):
//!   `region * j / maxInstance` for every instance j.
//! - one-size mode, Ada and later (`_kvgpumgrSetHomogeneousResources`): `j * size` for
//!   `j < min(region / size, maxInstance)`.
//!
//! A vGPU takes the first creatable id of its type when it is created, unless one is written
//! to `placement_id` (`kvgpumgrSetPlacementId`); an id is creatable while its slots overlap no
//! vGPU's (`_kvgpumgrUpdateHeterogeneousCreatablePlacementIds`, which keeps that list
//! incrementally; computing it from the vGPUs present gives the same list).

/// The GPU generations whose placement rules differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// Ampere (A10, A16, A40): halving, Ampere's deny list, no one-size placements.
    Ampere,
    /// Ada Lovelace (L4, L40, L40S) and Hopper: halving, the GSP deny list.
    Ada,
    /// Blackwell (GB100 and later, RTX PRO 6000): even spacing.
    Blackwell,
}

impl Generation {
    /// Parses a host file's `generation`.
    pub fn parse(s: &str) -> Option<Generation> {
        Some(match s {
            "ampere" => Generation::Ampere,
            "ada" | "hopper" => Generation::Ada,
            "blackwell" => Generation::Blackwell,
            _ => return None,
        })
    }
}

/// RM's `MAX_VGPU_DEVICES_PER_PGPU`.
pub const MAX_VGPUS: u32 = 32;

/// Slots one vGPU of `fb_mb` takes on a board of `region` slots.
pub fn size(fb_mb: u64, region: u32) -> u32 {
    let gib = u32::try_from(fb_mb / 1024).unwrap_or(u32::MAX);
    if region == 96 && gib == 2 {
        3
    } else {
        gib
    }
}

/// The placement ids a type of `size` slots and `max` instances supports.
pub fn supported(gen: Generation, mixed: bool, region: u32, size: u32, max: u32) -> Vec<u32> {
    if size == 0 || max == 0 {
        return Vec::new();
    }
    match (mixed, gen) {
        (false, Generation::Ampere) => Vec::new(),
        (false, _) => (0..max.min(region / size)).map(|j| j * size).collect(),
        (true, Generation::Blackwell) => (0..max).map(|j| region * j / max).collect(),
        (true, _) => {
            let mut out = Vec::new();
            halving(gen, size, max, 0, region, 1, true, &mut out);
            out
        }
    }
}

/// `_kvgpumgrSetHeterogeneousResources` for one type: the ids defined in the partition
/// `[min, max)`, one of `count` equal parts of the region, then in its halves.
#[allow(clippy::too_many_arguments)]
fn halving(
    gen: Generation,
    size: u32,
    max_instance: u32,
    min: u32,
    max: u32,
    count: u32,
    left: bool,
    out: &mut Vec<u32>,
) {
    if count > MAX_VGPUS / 2 {
        return;
    }
    let pow2 = prev_pow2(max_instance);
    let (define_left, define_right) = if count * 2 == max_instance {
        (true, true)
    } else if (pow2 < max_instance && pow2 == count) || (count == 1 && max_instance == 1) {
        (left, !left)
    } else {
        (false, false)
    };
    if define_left && valid(gen, size, min) {
        out.push(min);
    }
    if define_right && max >= size && valid(gen, size, max - size) {
        out.push(max - size);
    }
    let mid = (min + max) / 2;
    halving(gen, size, max_instance, min, mid, count * 2, true, out);
    halving(gen, size, max_instance, mid, max, count * 2, false, out);
}

/// `nvPrevPow2_U32`: the largest power of two not above `x` (0 for 0).
fn prev_pow2(x: u32) -> u32 {
    if x == 0 {
        0
    } else {
        1 << (31 - x.leading_zeros())
    }
}

/// `_kvgpumgrIsPlacementValid`: 1 GB profiles may not start at the deny-listed ids.
fn valid(gen: Generation, size: u32, id: u32) -> bool {
    const ADA_HOPPER: [u32; 16] = [2, 3, 8, 9, 14, 15, 20, 21, 26, 27, 32, 33, 38, 39, 44, 45];
    const AMPERE: [u32; 2] = [8, 32];
    if size != 1 {
        return true;
    }
    match gen {
        Generation::Ampere => !AMPERE.contains(&id),
        _ => !ADA_HOPPER.contains(&id),
    }
}

/// Whether `[a, a + a_size)` and `[b, b + b_size)` share a slot.
pub fn overlaps(a: u32, a_size: u32, b: u32, b_size: u32) -> bool {
    a < b + b_size && b < a + a_size
}

#[cfg(test)]
mod tests {
    use super::*;

    const L40S: Generation = Generation::Ada;

    #[test]
    fn a_slot_is_a_gib_and_the_96_gb_boards_2_gb_profile_takes_three() {
        assert_eq!(size(8192, 48), 8);
        assert_eq!(size(2048, 48), 2);
        assert_eq!(size(2048, 96), 3);
    }

    #[test]
    fn mixed_size_halving_gives_power_of_two_types_both_ends_of_each_partition() {
        assert_eq!(supported(L40S, true, 48, 48, 1), [0]);
        assert_eq!(supported(L40S, true, 48, 24, 2), [0, 24]);
        assert_eq!(supported(L40S, true, 48, 12, 4), [0, 12, 24, 36]);
        assert_eq!(
            supported(L40S, true, 48, 6, 8),
            [0, 6, 12, 18, 24, 30, 36, 42]
        );
    }

    #[test]
    fn mixed_size_halving_gives_other_types_prev_pow2_placements_at_the_outer_ends() {
        // 16 GB on 48 GB: maxInstance 3, prevPow2 2, one placement per half, at its outer end.
        assert_eq!(supported(L40S, true, 48, 16, 3), [0, 32]);
        // 8 GB: maxInstance 6, prevPow2 4, one per quarter: left quarters at their start,
        // right quarters at their end.
        assert_eq!(supported(L40S, true, 48, 8, 6), [0, 16, 24, 40]);
    }

    #[test]
    fn one_gb_profiles_skip_the_generations_deny_list() {
        let ada = supported(L40S, true, 48, 1, 32);
        assert_eq!(ada.len(), 16);
        assert!(!ada.contains(&2) && !ada.contains(&8) && ada.contains(&0));
        let ampere = supported(Generation::Ampere, true, 48, 1, 32);
        assert!(!ampere.contains(&8) && !ampere.contains(&32));
    }

    #[test]
    fn blackwell_spaces_every_instance_evenly() {
        assert_eq!(
            supported(Generation::Blackwell, true, 96, 24, 4),
            [0, 24, 48, 72]
        );
        assert_eq!(
            supported(Generation::Blackwell, true, 96, 32, 3),
            [0, 32, 64]
        );
    }

    #[test]
    fn one_size_mode_packs_from_slot_zero_and_ampere_has_none() {
        assert_eq!(supported(L40S, false, 48, 16, 3), [0, 16, 32]);
        assert!(supported(Generation::Ampere, false, 48, 16, 3).is_empty());
    }

    #[test]
    fn overlap_is_a_shared_slot() {
        assert!(overlaps(0, 8, 7, 1));
        assert!(!overlaps(0, 8, 8, 8));
    }
}
