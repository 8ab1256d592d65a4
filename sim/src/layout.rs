//! The sysfs layout: which directories, attribute files and symlinks exist at which paths.
//!
//! The tree is never stored; every directory listing is computed from the model on demand, and
//! a path is resolved by walking those listings, so a lookup and a `readdir` can never disagree
//! and a device vanishes from every place at once. Symlink targets are relative, computed from
//! the link's directory to the target's path, so the kernel resolves them inside the mount the
//! way it resolves real sysfs links (`sys/bus/mdev/devices/<uuid>` ->
//! `../../../devices/pci0000:00/<parent>/<uuid>`).

use crate::model::{Attr, DriverAttr, Model, PciAttr, Role, TypeAttr, VfioAttr};

/// One node of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular (attribute) file.
    File(Attr),
    /// A symbolic link with this relative target.
    Link(String),
}

type Entries = Vec<(String, Node)>;

/// The relative path from directory `from` (mount-relative components) to mount-relative `to`.
fn rel(from: &[&str], to: &str) -> String {
    let to: Vec<&str> = to.split('/').collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

fn dir(name: &str) -> (String, Node) {
    (name.to_string(), Node::Dir)
}

fn file(name: &str, attr: Attr) -> (String, Node) {
    (name.to_string(), Node::File(attr))
}

fn link(name: &str, from: &[&str], to: &str) -> (String, Node) {
    (name.to_string(), Node::Link(rel(from, to)))
}

/// Resolves a mount-relative path (components, no `.`/`..`) to its node.
pub fn lookup(m: &Model, path: &[&str]) -> Option<Node> {
    let Some((last, parent)) = path.split_last() else {
        return Some(Node::Dir);
    };
    children(m, parent)?
        .into_iter()
        .find(|(n, _)| n == last)
        .map(|(_, node)| node)
}

/// Lists a directory; `None` if `path` is not a directory.
///
/// Each subtree has its own lister, and each checks that the names it matches exist (devices,
/// types, drivers, groups), so a stale path lists nothing without walking its ancestors again.
pub fn children(m: &Model, path: &[&str]) -> Option<Entries> {
    match path {
        [] if m.modules().iter().any(|x| x == "nvidia") => {
            Some(vec![dir("proc"), dir("sim"), dir("sys")])
        }
        [] => Some(vec![dir("sim"), dir("sys")]),
        ["proc"] if m.modules().iter().any(|x| x == "nvidia") => Some(vec![dir("driver")]),
        ["proc", "driver"] if m.modules().iter().any(|x| x == "nvidia") => {
            Some(vec![dir("nvidia")])
        }
        ["proc", "driver", "nvidia"] if m.modules().iter().any(|x| x == "nvidia") => {
            Some(vec![file("params", Attr::Fixed(m.nvidia_params()))])
        }
        ["sim"] => Some(vec![
            file("control", Attr::Control),
            file("events", Attr::Events),
            dir("nvml"),
            file("requests", Attr::Requests),
        ]),
        ["sim", "nvml", rest @ ..] => nvml_children(m, rest),
        ["sys"] => Some(vec![
            dir("bus"),
            dir("class"),
            dir("devices"),
            dir("kernel"),
            dir("module"),
        ]),
        ["sys", "devices", rest @ ..] => devices_children(m, path, rest),
        ["sys", "bus", rest @ ..] => bus_children(m, path, rest),
        ["sys", "class", rest @ ..] => class_children(m, path, rest),
        ["sys", "kernel", rest @ ..] => kernel_children(m, path, rest),
        ["sys", "module", rest @ ..] => module_children(m, rest),
        _ => None,
    }
}

/// `sim/nvml`: what NVML knows of each NVIDIA PF with placement ids (its mixed-size mode and
/// placement lists), which no sysfs file shows; the stand-in `nvidia-smi` reads and sets it.
fn nvml_children(m: &Model, rest: &[&str]) -> Option<Entries> {
    let pfs = m
        .pci_devices()
        .filter(|d| matches!(d.role, crate::model::Role::Pf { .. }))
        .filter(|d| m.generation(&d.address).is_some());
    match rest {
        [] => Some(pfs.map(|d| dir(&d.address)).collect()),
        [pf] => {
            let addr = pfs.map(|d| d.address.clone()).find(|a| a == pf)?;
            Some(vec![
                file("placements", Attr::Placements(addr.clone())),
                file("vgpu_heterogeneous_mode", Attr::Heterogeneous(addr)),
            ])
        }
        _ => None,
    }
}

/// `sys/devices`: PCI functions under `pci0000:00`, non-PCI parents under `virtual`.
fn devices_children(m: &Model, path: &[&str], rest: &[&str]) -> Option<Entries> {
    Some(match rest {
        [] => {
            let mut v = vec![dir("pci0000:00")];
            if !m.virtual_devices().is_empty() {
                v.push(dir("virtual"));
            }
            if !m.nodes().is_empty() {
                v.push(dir("system"));
            }
            v
        }
        ["system", rest @ ..] if !m.nodes().is_empty() => node_children(m, rest)?,
        ["pci0000:00"] => m.pci_devices().map(|d| dir(&d.address)).collect(),
        ["pci0000:00", addr, rest @ ..] => pci_children(m, path, addr, rest)?,
        ["virtual"] => m.virtual_devices().into_iter().map(dir).collect(),
        ["virtual", name] if m.virtual_devices().contains(name) => vec![dir(name)],
        ["virtual", name, name2, rest @ ..]
            if name == name2 && m.virtual_devices().contains(name) =>
        {
            if m.parent_registered(name) {
                parent_children(m, path, name, rest)?
            } else if rest.is_empty() {
                Vec::new()
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

/// `sys/devices/system/node`: each NUMA node with its CPUs and distances.
fn node_children(m: &Model, rest: &[&str]) -> Option<Entries> {
    let node = |name: &str| {
        let id: u32 = name.strip_prefix("node")?.parse().ok()?;
        m.nodes().iter().find(|n| n.id == id)
    };
    Some(match rest {
        [] => vec![dir("node")],
        ["node"] => m
            .nodes()
            .iter()
            .map(|n| dir(&format!("node{}", n.id)))
            .collect(),
        ["node", name] => {
            let n = node(name)?;
            let distance: Vec<String> = n.distance.iter().map(u32::to_string).collect();
            vec![
                file("cpulist", Attr::Fixed(format!("{}\n", n.cpus))),
                file("distance", Attr::Fixed(format!("{}\n", distance.join(" ")))),
            ]
        }
        _ => return None,
    })
}

/// `sys/bus`: the PCI bus with its drivers, and the mdev bus while `mdev` is loaded.
fn bus_children(m: &Model, path: &[&str], rest: &[&str]) -> Option<Entries> {
    Some(match rest {
        [] => {
            let mut v = vec![dir("pci")];
            if m.mdev_loaded() {
                v.push(dir("mdev"));
            }
            v
        }
        ["pci"] => vec![
            dir("devices"),
            dir("drivers"),
            file("drivers_probe", Attr::DriversProbe),
        ],
        ["pci", "devices"] => m
            .pci_devices()
            .map(|d| pci_device_link(&d.address, path))
            .collect(),
        ["pci", "drivers"] => m.drivers().iter().map(|d| dir(d)).collect(),
        ["pci", "drivers", drv] if m.drivers().contains(*drv) => driver_children(m, path, drv),
        ["mdev"] if m.mdev_loaded() => vec![dir("devices")],
        ["mdev", "devices"] if m.mdev_loaded() => m
            .mdevs()
            .filter_map(|d| Some(link(&d.uuid, path, &m.device_path(&d.uuid)?)))
            .collect(),
        _ => return None,
    })
}

/// A link named after a PCI function, pointing at its device directory.
fn pci_device_link(addr: &str, from: &[&str]) -> (String, Node) {
    link(addr, from, &format!("sys/devices/pci0000:00/{addr}"))
}

/// `sys/bus/pci/drivers/<drv>`: the driver's control files and a link per bound device.
fn driver_children(m: &Model, path: &[&str], drv: &str) -> Entries {
    let a = |x| Attr::Driver(drv.to_string(), x);
    let mut v = vec![
        file("bind", a(DriverAttr::Bind)),
        file("new_id", a(DriverAttr::NewId)),
        file("remove_id", a(DriverAttr::RemoveId)),
        file("unbind", a(DriverAttr::Unbind)),
    ];
    v.extend(
        m.pci_devices()
            .filter(|d| d.driver.as_deref() == Some(drv))
            .map(|d| pci_device_link(&d.address, path)),
    );
    v
}

/// `sys/class`: `mdev_bus`, with a link per registered parent, while `mdev` is loaded.
fn class_children(m: &Model, path: &[&str], rest: &[&str]) -> Option<Entries> {
    Some(match rest {
        [] if m.mdev_loaded() => vec![dir("mdev_bus")],
        [] => Vec::new(),
        ["mdev_bus"] if m.mdev_loaded() => m
            .parents()
            .iter()
            .filter_map(|p| Some(link(p, path, &m.device_path(p)?)))
            .collect(),
        _ => return None,
    })
}

/// `sys/kernel/iommu_groups`: a directory per group, linking to its members.
fn kernel_children(m: &Model, path: &[&str], rest: &[&str]) -> Option<Entries> {
    Some(match rest {
        [] => vec![dir("iommu_groups")],
        ["iommu_groups"] => m
            .iommu_groups()
            .keys()
            .map(|g| dir(&g.to_string()))
            .collect(),
        ["iommu_groups", g]
            if g.parse::<u32>()
                .is_ok_and(|n| m.iommu_groups().contains_key(&n)) =>
        {
            vec![dir("devices")]
        }
        ["iommu_groups", g, "devices"] => {
            let n: u32 = g.parse().ok()?;
            m.iommu_groups()
                .get(&n)?
                .iter()
                .filter_map(|member| Some(link(member, path, &m.device_path(member)?)))
                .collect()
        }
        _ => return None,
    })
}

/// `sys/module`: the host file's modules, each `live`.
fn module_children(m: &Model, rest: &[&str]) -> Option<Entries> {
    match rest {
        [] => Some(m.modules().iter().map(|n| dir(n)).collect()),
        [name] if m.modules().iter().any(|x| x == name) => {
            let mut v = vec![file("initstate", Attr::ModuleInitstate(name.to_string()))];
            if *name == "nvidia" {
                let version = format!("{}\n", m.nvidia_version());
                v.push(file("version", Attr::Fixed(version)));
            }
            Some(v)
        }
        _ => None,
    }
}

/// Entries under a PCI function's directory (`rest` is the path below it).
fn pci_children(m: &Model, path: &[&str], addr: &str, rest: &[&str]) -> Option<Entries> {
    let d = m.pci_device(addr)?;
    if m.parent_registered(addr) {
        let v = parent_children(m, path, addr, rest)?;
        if !rest.is_empty() {
            return Some(v);
        }
        let mut all = pci_attrs(m, path, addr);
        all.extend(v);
        return Some(all);
    }
    match rest {
        [] => Some(pci_attrs(m, path, addr)),
        ["nvidia"] if m.vfio_dir_visible(addr) => {
            let a = |x| Attr::Vfio(d.address.clone(), x);
            Some(vec![
                file("creatable_vgpu_types", a(VfioAttr::Creatable)),
                file("current_vgpu_type", a(VfioAttr::Current)),
                file("gpu_instance_id", a(VfioAttr::GpuInstanceId)),
                file("placement_id", a(VfioAttr::PlacementId)),
                file("vgpu_params", a(VfioAttr::Params)),
                file("warm_update", a(VfioAttr::WarmUpdate)),
            ])
        }
        _ => None,
    }
}

/// The Instinct GIM's partition files on its PF, as `gim_shim/sysfs/gim_monitor.c` prints them
/// (amd/MxGPU-Virtualization): `spatial_partition_mode` is `SPX`..`CPX` (or "failed to get
/// current sp mode" on a card without spatial partitions), `memory_partition_mode` starts with
/// `memory_partition_mode: NPSn` and `numa_count: N`. The real files are root-only (0400, 0600)
/// and the memory one takes writes; here both are read-only.
fn gim_partition_files(compute: &str, memory: &str) -> Entries {
    let spatial = if compute.is_empty() {
        "failed to get current sp mode\n".to_string()
    } else {
        format!("{compute}\n")
    };
    let numa = memory.trim_start_matches("NPS");
    vec![
        file(
            "memory_partition_mode",
            Attr::Fixed(format!(
                "memory_partition_mode: {memory}\nnuma_count: {numa}\n"
            )),
        ),
        file("spatial_partition_mode", Attr::Fixed(spatial)),
    ]
}

fn pci_attrs(m: &Model, path: &[&str], addr: &str) -> Entries {
    let Some(d) = m.pci_device(addr) else {
        return Vec::new();
    };
    let a = |x| Attr::Pci(addr.to_string(), x);
    let mut v = vec![
        file("class", a(PciAttr::Class)),
        file("config", a(PciAttr::Config)),
        file("device", a(PciAttr::Device)),
        file("driver_override", a(PciAttr::DriverOverride)),
        file("numa_node", a(PciAttr::NumaNode)),
        file("vendor", a(PciAttr::Vendor)),
        link(
            "iommu_group",
            path,
            &format!("sys/kernel/iommu_groups/{}", d.iommu_group),
        ),
    ];
    if let Some(drv) = &d.driver {
        v.push(link("driver", path, &format!("sys/bus/pci/drivers/{drv}")));
    }
    match &d.role {
        Role::Pf { numvfs, .. } if m.gpu_spec(d.gpu).kind.has_sriov() => {
            v.push(file("sriov_drivers_autoprobe", a(PciAttr::SriovAutoprobe)));
            v.push(file("sriov_numvfs", a(PciAttr::SriovNumvfs)));
            v.push(file("sriov_offset", a(PciAttr::SriovOffset)));
            v.push(file("sriov_stride", a(PciAttr::SriovStride)));
            v.push(file("sriov_totalvfs", a(PciAttr::SriovTotalvfs)));
            v.push(file("sriov_vf_device", a(PciAttr::SriovVfDevice)));
            let spec = m.gpu_spec(d.gpu);
            if let (Some((compute, memory)), Some(_)) = (&spec.partition, &d.driver) {
                v.extend(gim_partition_files(compute, memory));
            }
            for i in 0..*numvfs {
                if let Some(vf) = spec.vf_address(i) {
                    v.push(link(
                        &format!("virtfn{i}"),
                        path,
                        &format!("sys/devices/pci0000:00/{vf}"),
                    ));
                }
            }
        }
        Role::Pf { .. } => {}
        Role::Vf { pf, .. } => {
            v.push(link(
                "physfn",
                path,
                &format!("sys/devices/pci0000:00/{pf}"),
            ));
        }
    }
    if m.vfio_dir_visible(addr) {
        v.push(dir("nvidia"));
    }
    v
}

/// Entries of a registered mdev parent below its device directory; `None`: no such path.
fn parent_children(m: &Model, path: &[&str], parent: &str, rest: &[&str]) -> Option<Entries> {
    let types = m.parent_types(parent);
    let ty = |id: &str| types.iter().find(|t| t.id == id);
    let mdev_here = |u: &str| m.mdev(u).filter(|d| d.parent == parent);
    let entries = match rest {
        [] => {
            let mut v = vec![dir("mdev_supported_types")];
            v.extend(m.mdevs_of(parent).iter().map(|d| dir(&d.uuid)));
            v
        }
        ["mdev_supported_types"] => types.iter().map(|t| dir(&t.id)).collect(),
        ["mdev_supported_types", id] => {
            let t = ty(id)?;
            let a = |x| Attr::Type {
                parent: parent.to_string(),
                type_id: t.id.clone(),
                attr: x,
            };
            let mut v = vec![
                file("available_instances", a(TypeAttr::AvailableInstances)),
                file("create", a(TypeAttr::Create)),
                file("device_api", a(TypeAttr::DeviceApi)),
                dir("devices"),
            ];
            if t.name.is_some() {
                v.push(file("name", a(TypeAttr::Name)));
            }
            if t.description.is_some() {
                v.push(file("description", a(TypeAttr::Description)));
            }
            v
        }
        ["mdev_supported_types", id, "devices"] => {
            let t = ty(id)?;
            let base = &path[..path.len() - 3];
            m.mdevs_of(parent)
                .iter()
                .filter(|d| d.type_id == t.id)
                .map(|d| link(&d.uuid, path, &format!("{}/{}", base.join("/"), d.uuid)))
                .collect()
        }
        [uuid] => {
            let d = mdev_here(uuid)?;
            let base = &path[..path.len() - 1];
            let mut v = vec![
                link(
                    "iommu_group",
                    path,
                    &format!("sys/kernel/iommu_groups/{}", d.iommu_group),
                ),
                link(
                    "mdev_type",
                    path,
                    &format!("{}/mdev_supported_types/{}", base.join("/"), d.type_id),
                ),
                file("remove", Attr::MdevRemove(d.uuid.clone())),
            ];
            if m.parent_is_nvidia(parent) {
                v.push(dir("nvidia"));
            }
            v
        }
        [uuid, "nvidia"] if m.parent_is_nvidia(parent) => {
            let d = mdev_here(uuid)?;
            vec![file("vgpu_params", Attr::MdevParams(d.uuid.clone()))]
        }
        _ => return None,
    };
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host;
    use crate::model::WriteOutcome;
    use std::time::Instant;

    const HOST: &str = r#"
[[gpu]]
address = "0000:82:00.0"
kind = "nvidia-classic"
board = "P40"
framebuffer_mb = 24576
[[gpu]]
address = "0000:41:00.0"
kind = "nvidia-sriov"
board = "A10"
framebuffer_mb = 24576
numvfs = 2
[[gpu]]
address = "0000:c1:00.0"
kind = "nvidia-vfio"
board = "L40S"
framebuffer_mb = 49152
numvfs = 2
[[gpu]]
address = "0000:04:00.0"
kind = "amd-gim"
gim = "old"
numvfs = 2
[[gpu]]
kind = "mdev"
name = "mtty"
types = [{ id = "mtty-1", max_instances = 2 }]
"#;

    fn populated() -> Model {
        let h = host::parse(HOST, "t.toml").expect("valid host");
        let mut m = Model::new(h, Instant::now());
        for (parent, ty, u) in [
            (
                "0000:82:00.0",
                "nvidia-46",
                "00000000-0000-4000-8000-000000000001",
            ),
            (
                "0000:41:00.4",
                "nvidia-593",
                "00000000-0000-4000-8000-000000000002",
            ),
            ("mtty", "mtty-1", "00000000-0000-4000-8000-000000000003"),
        ] {
            let attr = Attr::Type {
                parent: parent.into(),
                type_id: ty.into(),
                attr: TypeAttr::Create,
            };
            assert_eq!(
                m.write(&attr, u.as_bytes()),
                WriteOutcome::Done(Ok(())),
                "{parent} {ty}"
            );
        }
        m
    }

    /// Walks the whole tree: every listed entry looks up to the same node, only directories
    /// list, unknown names resolve to nothing; returns how many nodes were seen.
    fn walk(m: &Model, path: &mut Vec<String>) -> usize {
        let comps: Vec<&str> = path.iter().map(String::as_str).collect();
        let entries = children(m, &comps).expect("a directory lists");
        let mut seen = 1;
        let mut probe = comps.clone();
        probe.push("no-such-entry");
        assert_eq!(lookup(m, &probe), None, "{probe:?}");
        for (name, node) in entries {
            path.push(name.clone());
            let comps: Vec<&str> = path.iter().map(String::as_str).collect();
            assert_eq!(lookup(m, &comps).as_ref(), Some(&node), "{comps:?}");
            if node == Node::Dir {
                seen += walk(m, path);
            } else {
                assert_eq!(children(m, &comps), None, "{comps:?} is not a directory");
                seen += 1;
            }
            path.pop();
        }
        seen
    }

    #[test]
    fn listings_and_lookups_agree_everywhere() {
        let m = populated();
        assert!(walk(&m, &mut Vec::new()) > 200);
    }

    #[test]
    fn stale_names_under_every_keyed_directory_resolve_to_nothing() {
        let m = populated();
        for p in [
            "sys/devices/virtual/nosuch",
            "sys/devices/virtual/nosuch/nosuch",
            "sys/devices/pci0000:00/0000:99:00.0",
            "sys/devices/pci0000:00/0000:82:00.0/mdev_supported_types/nvidia-9999",
            "sys/devices/pci0000:00/0000:82:00.0/00000000-0000-4000-8000-000000000009",
            "sys/devices/pci0000:00/0000:82:00.0/nvidia",
            "sys/bus/pci/drivers/nosuch",
            "sys/kernel/iommu_groups/9999",
            "sys/module/nosuch",
        ] {
            let comps: Vec<&str> = p.split('/').collect();
            assert_eq!(lookup(&m, &comps), None, "{p}");
            assert_eq!(children(&m, &comps), None, "{p}");
        }
    }

    #[test]
    fn links_point_where_the_readme_says() {
        let m = populated();
        let u = "00000000-0000-4000-8000-000000000001";
        let at = |p: &str| lookup(&m, &p.split('/').collect::<Vec<_>>());
        assert_eq!(
            at(&format!("sys/bus/mdev/devices/{u}")),
            Some(Node::Link(format!(
                "../../../devices/pci0000:00/0000:82:00.0/{u}"
            )))
        );
        assert_eq!(
            at(&format!(
                "sys/devices/pci0000:00/0000:82:00.0/{u}/mdev_type"
            )),
            Some(Node::Link("../mdev_supported_types/nvidia-46".into()))
        );
        assert_eq!(
            at("sys/class/mdev_bus/mtty"),
            Some(Node::Link("../../devices/virtual/mtty/mtty".into()))
        );
        assert_eq!(
            at("sys/devices/pci0000:00/0000:41:00.0/virtfn1"),
            Some(Node::Link("../0000:41:00.5".into()))
        );
        assert_eq!(
            at("sys/devices/pci0000:00/0000:41:00.5/physfn"),
            Some(Node::Link("../0000:41:00.0".into()))
        );
        assert_eq!(
            at("sys/devices/pci0000:00/0000:82:00.0/driver"),
            Some(Node::Link("../../../bus/pci/drivers/nvidia".into()))
        );
        assert_eq!(
            at("sys/bus/pci/drivers/nvidia/0000:82:00.0"),
            Some(Node::Link(
                "../../../../devices/pci0000:00/0000:82:00.0".into()
            ))
        );
    }

    #[test]
    fn kernel_6_8_host_has_no_mdev_class_without_the_module() {
        let h = host::parse(
            "modules = [\"vfio\", \"vfio_pci\"]\n[[gpu]]\naddress = \"0000:c1:00.0\"\nkind = \"nvidia-vfio\"\nboard = \"L40S\"\nframebuffer_mb = 49152\nnumvfs = 1\n",
            "t.toml",
        )
        .expect("valid host");
        let m = Model::new(h, Instant::now());
        assert_eq!(children(&m, &["sys", "class"]), Some(vec![]));
        assert_eq!(lookup(&m, &["sys", "bus", "mdev"]), None);
        assert_eq!(
            lookup(
                &m,
                &["sys", "devices", "pci0000:00", "0000:c1:00.4", "nvidia"]
            ),
            Some(Node::Dir)
        );
    }

    #[test]
    fn rel_climbs_to_the_common_prefix() {
        assert_eq!(
            rel(
                &["sys", "bus", "mdev", "devices"],
                "sys/devices/pci0000:00/0000:82:00.0/u"
            ),
            "../../../devices/pci0000:00/0000:82:00.0/u"
        );
        assert_eq!(
            rel(
                &["sys", "devices", "pci0000:00", "0000:82:00.0", "u"],
                "sys/devices/pci0000:00/0000:82:00.0/mdev_supported_types/nvidia-46"
            ),
            "../mdev_supported_types/nvidia-46"
        );
        assert_eq!(
            rel(
                &["sys", "devices", "pci0000:00", "a"],
                "sys/devices/pci0000:00/b"
            ),
            "../b"
        );
    }
}
