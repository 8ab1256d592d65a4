//! The host's NUMA layout as sysfs shows it: nodes with their CPUs
//! (`/sys/devices/system/node/nodeN/cpulist`) and distances (`nodeN/distance`), and the node a
//! PCI device hangs off (`numa_node`).
//!
//! Placement needs it to put a VM's vGPU on the socket the VM runs on. A host that shows no
//! node directory (one node, or a kernel without NUMA) has an empty layout, and every GPU is
//! then as near as any other.

use std::collections::{BTreeMap, BTreeSet};

use crate::host::sysfs::Sysfs;
use crate::model::cpuset;
use crate::model::pci::PciAddress;

/// Distance the kernel reports from a node to itself; other nodes are further.
pub const LOCAL_DISTANCE: u32 = 10;
/// Distance assumed between two different nodes when the kernel gives none.
const REMOTE_DISTANCE: u32 = 20;

/// The nodes of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    nodes: BTreeMap<u32, NodeInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NodeInfo {
    cpus: BTreeSet<u32>,
    distance: Vec<u32>,
}

impl Topology {
    /// Reads the layout; nodes whose files cannot be read are left out.
    pub fn read(sysfs: &Sysfs) -> Topology {
        let dir = sysfs.root_path("devices/system/node");
        let mut nodes = BTreeMap::new();
        for name in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = name.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix("node")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let read = |f: &str| std::fs::read_to_string(dir.join(&name).join(f)).ok();
            let cpus = read("cpulist")
                .and_then(|l| cpuset::parse(l.trim()).ok())
                .unwrap_or_default();
            let distance = read("distance")
                .map(|d| {
                    d.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            nodes.insert(id, NodeInfo { cpus, distance });
        }
        Topology { nodes }
    }

    /// A layout from its parts, for tests and callers that know it already.
    pub fn from_nodes(nodes: &[(u32, &str, &[u32])]) -> Topology {
        let nodes = nodes
            .iter()
            .map(|(id, cpus, distance)| {
                let info = NodeInfo {
                    cpus: cpuset::parse(cpus).unwrap_or_default(),
                    distance: distance.to_vec(),
                };
                (*id, info)
            })
            .collect();
        Topology { nodes }
    }

    /// Whether the host has this node.
    pub fn has(&self, node: u32) -> bool {
        self.nodes.contains_key(&node)
    }

    /// The node a CPU belongs to.
    pub fn node_of_cpu(&self, cpu: u32) -> Option<u32> {
        self.nodes
            .iter()
            .find(|(_, n)| n.cpus.contains(&cpu))
            .map(|(id, _)| *id)
    }

    /// How far node `to` is from node `from`: the kernel's figure (indexed by node order), or
    /// 10 for the same node and 20 for another when the kernel gives none.
    pub fn distance(&self, from: u32, to: u32) -> u32 {
        let index = self.nodes.keys().position(|&id| id == to);
        let given = self
            .nodes
            .get(&from)
            .zip(index)
            .and_then(|(n, i)| n.distance.get(i).copied());
        given.unwrap_or(if from == to {
            LOCAL_DISTANCE
        } else {
            REMOTE_DISTANCE
        })
    }
}

impl Sysfs {
    /// The NUMA node a PCI device hangs off, if the kernel knows it (`numa_node` is -1 when not).
    pub fn numa_node(&self, addr: PciAddress) -> Option<u32> {
        let text = self.read(&self.pci_dir(addr).join("numa_node")).ok()?;
        text.parse::<i64>().ok().and_then(|n| u32::try_from(n).ok())
    }

    /// The NUMA node of a device named as config and records name it: a PCI address (a GPU, a
    /// PF, a VF that is an mdev parent); none for a virtual parent such as `mtty`.
    pub fn numa_node_of(&self, name: &str) -> Option<u32> {
        name.parse().ok().and_then(|a| self.numa_node(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_sockets() -> Topology {
        Topology::from_nodes(&[(0, "0-3", &[10, 21]), (1, "4-7", &[21, 10])])
    }

    #[test]
    fn cpus_map_to_their_node() {
        let t = two_sockets();
        assert_eq!(t.node_of_cpu(5), Some(1));
        assert_eq!(t.node_of_cpu(9), None);
    }

    #[test]
    fn distances_come_from_the_kernel_or_fall_back_to_near_and_far() {
        assert_eq!(two_sockets().distance(0, 1), 21);
        let bare = Topology::from_nodes(&[(0, "0", &[]), (1, "1", &[])]);
        assert_eq!(bare.distance(0, 0), LOCAL_DISTANCE);
        assert_eq!(bare.distance(0, 1), REMOTE_DISTANCE);
    }

    #[test]
    fn the_layout_is_read_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("sys/devices/system/node/node1");
        std::fs::create_dir_all(&node).unwrap();
        std::fs::write(node.join("cpulist"), "2-3\n").unwrap();
        std::fs::write(node.join("distance"), "10\n").unwrap();
        let t = Topology::read(&Sysfs::new(dir.path()));
        assert!(t.has(1));
        assert_eq!(t.node_of_cpu(3), Some(1));
    }
}
