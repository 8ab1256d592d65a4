//! Where a VM wants its devices: the host NUMA nodes its definition asks for, and how far a GPU
//! is from them.
//!
//! A VM pinned to node 1 that gets a GPU on node 0 pays cross-socket traffic on every frame, so
//! among GPUs with room those on the VM's nodes come first, then the nearest by the kernel's
//! distances. The wishes come from the definition (`<numatune>`, `<vcpu cpuset>`, `<cputune>`
//! pins; CPUs are mapped to nodes with the host's layout). A wish the hook cannot read, or one
//! naming nodes the host lacks, never stops a VM: it is logged and the VM is placed as if it had
//! none, unless the config says `numa = "require"`, which then refuses with the reason.

use std::collections::BTreeSet;

use crate::host::numa::{Topology, LOCAL_DISTANCE};
use crate::host::sysfs::Sysfs;
use crate::model::config::NumaPolicy;
use crate::model::cpuset;
use crate::model::domain::NumaWish;

/// How far a GPU whose node the kernel does not know counts: after every known one.
pub const UNKNOWN_DISTANCE: u32 = u32::MAX;

/// The host nodes a VM wants, with the host's layout to measure against.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The nodes.
    pub nodes: BTreeSet<u32>,
    /// Whether only those nodes may be used.
    pub required: bool,
    topology: Topology,
}

/// Why a VM's wishes cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WishError {
    /// A set does not parse.
    #[error("{0}")]
    Set(#[from] cpuset::SetError),
    /// A node the host does not have.
    #[error("node {0} does not exist on this host")]
    NoSuchNode(u32),
    /// A CPU the host's nodes do not list.
    #[error("CPU {0} belongs to no NUMA node of this host")]
    NoSuchCpu(u32),
}

impl Wanted {
    /// [`Wanted::resolve`] against this host's layout, read only when there are wishes to
    /// resolve (most domains have none).
    pub fn of(
        wish: &NumaWish,
        sysfs: &Sysfs,
        policy: NumaPolicy,
    ) -> Result<Option<Wanted>, WishError> {
        if wish.is_empty() || policy == NumaPolicy::Ignore {
            return Ok(None);
        }
        Wanted::resolve(wish, Topology::read(sysfs), policy)
    }

    /// The wishes of a definition under a policy: `Ok(None)` when there are none (or the
    /// policy ignores them), `Err` when they cannot be used.
    pub fn resolve(
        wish: &NumaWish,
        topology: Topology,
        policy: NumaPolicy,
    ) -> Result<Option<Wanted>, WishError> {
        if wish.is_empty() || policy == NumaPolicy::Ignore {
            return Ok(None);
        }
        let mut nodes = BTreeSet::new();
        for set in &wish.nodesets {
            for node in cpuset::parse(set)? {
                if !topology.has(node) {
                    return Err(WishError::NoSuchNode(node));
                }
                nodes.insert(node);
            }
        }
        for set in &wish.cpusets {
            for cpu in cpuset::parse(set)? {
                nodes.insert(topology.node_of_cpu(cpu).ok_or(WishError::NoSuchCpu(cpu))?);
            }
        }
        Ok(Some(Wanted {
            nodes,
            required: policy == NumaPolicy::Require,
            topology,
        }))
    }

    /// How far a device on `node` is from the VM: 0 on one of its nodes, else the kernel's
    /// distance to the nearest of them; [`UNKNOWN_DISTANCE`] when the device's node is unknown.
    pub fn distance(&self, node: Option<u32>) -> u32 {
        let Some(node) = node else {
            return UNKNOWN_DISTANCE;
        };
        if self.nodes.contains(&node) {
            return 0;
        }
        self.nodes
            .iter()
            .map(|&n| self.topology.distance(n, node).max(LOCAL_DISTANCE + 1))
            .min()
            .unwrap_or(UNKNOWN_DISTANCE)
    }

    /// `1` or `0,1`, for messages.
    pub fn label(&self) -> String {
        let v: Vec<String> = self.nodes.iter().map(u32::to_string).collect();
        v.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        Topology::from_nodes(&[
            (0, "0-3", &[10, 21, 31]),
            (1, "4-7", &[21, 10, 21]),
            (2, "8-11", &[31, 21, 10]),
        ])
    }

    fn wish(nodesets: &[&str], cpusets: &[&str]) -> NumaWish {
        NumaWish {
            nodesets: nodesets.iter().map(|s| s.to_string()).collect(),
            cpusets: cpusets.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn wanted(w: NumaWish) -> Wanted {
        Wanted::resolve(&w, topo(), NumaPolicy::Prefer)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn cpus_pinned_on_a_socket_want_that_node() {
        assert_eq!(wanted(wish(&[], &["4-5"])).nodes, [1].into());
    }

    #[test]
    fn devices_on_the_vms_nodes_are_nearest_then_by_distance() {
        let w = wanted(wish(&["0"], &[]));
        assert_eq!(w.distance(Some(0)), 0);
        assert!(w.distance(Some(1)) < w.distance(Some(2)));
        assert_eq!(w.distance(None), UNKNOWN_DISTANCE);
    }

    #[test]
    fn a_definition_without_wishes_has_none() {
        assert!(
            Wanted::resolve(&wish(&[], &[]), topo(), NumaPolicy::Require)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_ignore_policy_drops_wishes() {
        assert!(
            Wanted::resolve(&wish(&["1"], &[]), topo(), NumaPolicy::Ignore)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_node_the_host_lacks_or_a_bad_set_is_an_error() {
        let e = Wanted::resolve(&wish(&["5"], &[]), topo(), NumaPolicy::Prefer).unwrap_err();
        assert_eq!(e, WishError::NoSuchNode(5));
        assert!(Wanted::resolve(&wish(&[], &["x"]), topo(), NumaPolicy::Prefer).is_err());
        let e = Wanted::resolve(&wish(&[], &["40"]), topo(), NumaPolicy::Prefer).unwrap_err();
        assert_eq!(e, WishError::NoSuchCpu(40));
    }
}
