//! Where on a mixed-size GPU a vGPU goes: the slot choice that keeps large sizes creatable.
//!
//! In NVIDIA's mixed-size mode a GPU's framebuffer is a row of 1 GiB slots and each type may
//! start only at its placement ids (`nvidia-smi vgpu -s -v`); a vGPU blocks every id of every
//! type whose slots it overlaps. Left alone the driver takes the first free id, which strands
//! space: an 8 GB vGPU at slot 0 of a 48 GB board leaves 40 slots free, yet no 16 GB vGPU fits
//! at 0 any more and only one 24 GB one does. This unit picks, among the ids the type can take
//! now, the one after which the most ids of the largest sizes stay creatable (compared size by
//! size, from the largest), the lowest id on a tie. It is a pure function of what the driver
//! reported, so the rule is tested and benchmarked without a GPU.

use crate::host::nvidia_smi::TypePlacements;

/// A vGPU present on the GPU: its first slot and how many it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// First slot (its `placement_id`).
    pub at: u32,
    /// Slots.
    pub size: u32,
}

/// Whether `[a, a + a_size)` and `[b, b + b_size)` share a slot.
fn overlaps(a: u32, a_size: u32, b: u32, b_size: u32) -> bool {
    a < b + b_size && b < a + a_size
}

/// The ids of `t` whose slots no present vGPU holds.
pub fn creatable<'a>(t: &'a TypePlacements, taken: &'a [Taken]) -> impl Iterator<Item = u32> + 'a {
    t.ids
        .iter()
        .copied()
        .filter(move |&id| taken.iter().all(|v| !overlaps(id, t.size, v.at, v.size)))
}

/// The driver's own choice: the first creatable id.
pub fn first_fit(t: &TypePlacements, taken: &[Taken]) -> Option<u32> {
    creatable(t, taken).next()
}

/// How many ids of each size stay creatable, largest size first.
fn headroom(types: &[TypePlacements], taken: &[Taken]) -> Vec<usize> {
    let mut sizes: Vec<u32> = types.iter().map(|t| t.size).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    sizes
        .iter()
        .map(|&s| {
            let mut ids: Vec<u32> = types
                .iter()
                .filter(|t| t.size == s)
                .flat_map(|t| creatable(t, taken))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids.len()
        })
        .collect()
}

/// The id for a new vGPU of `want` that leaves the most room for the largest sizes; `None`
/// when no id of it is free.
pub fn best(types: &[TypePlacements], want: &TypePlacements, taken: &[Taken]) -> Option<u32> {
    let mut after = taken.to_vec();
    let mut pick: Option<(Vec<usize>, u32)> = None;
    for id in creatable(want, taken) {
        after.push(Taken {
            at: id,
            size: want.size,
        });
        let room = headroom(types, &after);
        after.pop();
        if pick.as_ref().is_none_or(|(r, _)| room > *r) {
            pick = Some((room, id));
        }
    }
    pick.map(|(_, id)| id)
}

/// How many more vGPUs of `want` fit beside `taken`, each placed as [`best`] would place it.
pub fn room(types: &[TypePlacements], want: &TypePlacements, taken: &[Taken]) -> u32 {
    let mut after = taken.to_vec();
    let mut n = 0;
    while let Some(at) = best(types, want, &after) {
        after.push(Taken {
            at,
            size: want.size,
        });
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An L40S in mixed-size mode, as its driver reports the Q types (1 to 48 GiB), from the
    /// simulator's model of NVIDIA's placement rules.
    pub(crate) fn l40s() -> Vec<TypePlacements> {
        use vgpu_sim::placement::{supported, Generation};
        [1, 2, 3, 4, 6, 8, 12, 16, 24, 48]
            .into_iter()
            .zip(1147..)
            .map(|(size, type_id): (u32, u32)| TypePlacements {
                type_id,
                size,
                ids: supported(Generation::Ada, true, 48, size, (48 / size).min(32)),
            })
            .collect()
    }

    fn of(types: &[TypePlacements], size: u32) -> &TypePlacements {
        types.iter().find(|t| t.size == size).unwrap()
    }

    fn at(at: u32, size: u32) -> Taken {
        Taken { at, size }
    }

    #[test]
    fn the_driver_takes_the_first_free_id() {
        let b = l40s();
        assert_eq!(first_fit(of(&b, 8), &[at(0, 8)]), Some(16));
    }

    #[test]
    fn an_8_gb_vgpu_goes_where_both_16_gb_placements_survive() {
        let b = l40s();
        assert_eq!(best(&b, of(&b, 8), &[]), Some(16));
    }

    #[test]
    fn room_counts_the_vgpus_that_still_fit_one_after_another() {
        let b = l40s();
        assert_eq!(
            room(&b, of(&b, 16), &[]),
            2,
            "16 GB: placements 0 and 32 only"
        );
        assert_eq!(room(&b, of(&b, 12), &[at(16, 8)]), 3, "0, 24 and 36");
        assert_eq!(room(&b, of(&b, 48), &[at(0, 1)]), 0);
    }

    #[test]
    fn a_full_type_has_no_placement() {
        let b = l40s();
        assert_eq!(best(&b, of(&b, 24), &[at(0, 8), at(24, 8)]), None);
    }

    #[test]
    fn slot_aware_placement_fits_a_later_16_gb_vgpu_that_first_fit_refuses() {
        // A 4 GB vGPU, a 24 GB one, then a 16 GB one: 20 slots are free either way.
        let b = l40s();
        let run = |choose: &dyn Fn(&TypePlacements, &[Taken]) -> Option<u32>| {
            let mut taken = Vec::new();
            for size in [4, 24] {
                let id = choose(of(&b, size), &taken).expect("fits");
                taken.push(at(id, size));
            }
            choose(of(&b, 16), &taken)
        };
        assert_eq!(
            run(&first_fit),
            None,
            "4 GB at 0 and 24 GB at 24 leave 16 GB no id"
        );
        assert!(run(&|t, v| best(&b, t, v)).is_some());
    }
}
