//! Choosing where a vGPU goes.
//!
//! A pure function over a snapshot of what sysfs said a moment ago, so the policy can be read and
//! tested without a kernel. GPUs on the VM's NUMA nodes come first, then the nearest; within
//! equal distance, `pack` fills the GPU that already hosts the profile, then the one with the
//! least room, keeping whole GPUs free for other framebuffer sizes (NVIDIA's one-size-per-GPU
//! rule), and `spread` takes the GPU with the most room. Ties keep the operator's config order.

use crate::model::config::Placement;
use crate::model::names::{ParentName, TypeId};

/// One mdev parent that offers the wanted type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Position of its GPU in the config (tie breaker).
    pub gpu_index: usize,
    /// The mdev parent (the GPU itself, or one of its VFs).
    pub parent: ParentName,
    /// The matching type on that parent.
    pub type_id: TypeId,
    /// `available_instances` of that type on that parent, just read.
    pub available: u32,
    /// Instances of the type still free on the whole GPU (all its parents).
    pub gpu_free: u32,
    /// Whether the GPU already hosts a device of this type.
    pub gpu_hosts_type: bool,
    /// How far the GPU is from the VM's NUMA nodes (0: on one of them, or the VM has no wishes).
    pub numa_distance: u32,
}

/// The candidates with room, best first.
pub fn order(candidates: &[Candidate], policy: Placement) -> Vec<&Candidate> {
    let mut c: Vec<&Candidate> = candidates.iter().filter(|c| c.available > 0).collect();
    match policy {
        Placement::Pack => {
            c.sort_by_key(|c| (c.numa_distance, !c.gpu_hosts_type, c.gpu_free, c.gpu_index))
        }
        Placement::Spread => {
            c.sort_by_key(|c| (c.numa_distance, std::cmp::Reverse(c.gpu_free), c.gpu_index))
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(gpu: usize, available: u32, hosts: bool) -> Candidate {
        Candidate {
            gpu_index: gpu,
            parent: ParentName::parse(&format!("0000:0{gpu}:00.0")).unwrap(),
            type_id: TypeId::parse("nvidia-47").unwrap(),
            available,
            gpu_free: available,
            gpu_hosts_type: hosts,
            numa_distance: 0,
        }
    }

    fn gpus(v: Vec<&Candidate>) -> Vec<usize> {
        v.iter().map(|c| c.gpu_index).collect()
    }

    #[test]
    fn pack_prefers_the_gpu_already_hosting_the_profile() {
        let c = [cand(0, 2, false), cand(1, 5, true)];
        assert_eq!(gpus(order(&c, Placement::Pack)), [1, 0]);
    }

    #[test]
    fn pack_then_prefers_fewest_free() {
        let c = [cand(0, 8, false), cand(1, 3, false), cand(2, 5, false)];
        assert_eq!(gpus(order(&c, Placement::Pack)), [1, 2, 0]);
    }

    #[test]
    fn spread_prefers_most_free() {
        let c = [cand(0, 3, true), cand(1, 8, false), cand(2, 5, false)];
        assert_eq!(gpus(order(&c, Placement::Spread)), [1, 2, 0]);
    }

    #[test]
    fn ties_keep_config_order() {
        let c = [cand(2, 4, false), cand(0, 4, false), cand(1, 4, false)];
        assert_eq!(gpus(order(&c, Placement::Spread)), [0, 1, 2]);
        assert_eq!(gpus(order(&c, Placement::Pack)), [0, 1, 2]);
    }

    #[test]
    fn sriov_vfs_are_ranked_by_their_gpus_room_not_their_own() {
        // Each VF offers 0 or 1; what counts is how much the whole GPU has left.
        let vf = |gpu: usize, fn_: u8, gpu_free: u32| Candidate {
            gpu_index: gpu,
            parent: ParentName::parse(&format!("0000:4{gpu}:00.{fn_}")).unwrap(),
            type_id: TypeId::parse("nvidia-735").unwrap(),
            available: 1,
            gpu_free,
            gpu_hosts_type: false,
            numa_distance: 0,
        };
        let c = [vf(0, 4, 6), vf(1, 4, 2), vf(1, 5, 2)];
        let pack: Vec<String> = order(&c, Placement::Pack)
            .iter()
            .map(|c| c.parent.to_string())
            .collect();
        assert_eq!(pack, ["0000:41:00.4", "0000:41:00.5", "0000:40:00.4"]);
        assert_eq!(
            order(&c, Placement::Spread)[0].parent.as_str(),
            "0000:40:00.4"
        );
    }

    #[test]
    fn gpus_on_the_vms_nodes_come_first_then_the_nearest() {
        let at = |gpu: usize, d: u32| Candidate {
            numa_distance: d,
            ..cand(gpu, 4, false)
        };
        let c = [at(0, 21), at(1, 0), at(2, 31), at(3, 0)];
        assert_eq!(gpus(order(&c, Placement::Spread)), [1, 3, 0, 2]);
        assert_eq!(gpus(order(&c, Placement::Pack)), [1, 3, 0, 2]);
    }

    #[test]
    fn within_one_distance_the_policy_decides() {
        let c = [
            Candidate {
                numa_distance: 0,
                ..cand(0, 8, false)
            },
            Candidate {
                numa_distance: 0,
                ..cand(1, 3, false)
            },
            Candidate {
                numa_distance: 21,
                ..cand(2, 1, true)
            },
        ];
        assert_eq!(gpus(order(&c, Placement::Pack)), [1, 0, 2]);
        assert_eq!(gpus(order(&c, Placement::Spread)), [0, 1, 2]);
    }

    #[test]
    fn full_parents_are_not_candidates() {
        let c = [cand(0, 0, true), cand(1, 1, false)];
        assert_eq!(gpus(order(&c, Placement::Pack)), [1]);
    }
}
