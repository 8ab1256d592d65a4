//! vgpu-sim: a FUSE filesystem that behaves like the parts of Linux `/sys` that drive mediated
//! devices (mdev), NVIDIA vGPU (classic mdev, SR-IOV mdev and the kernel-6.8+ per-VF interface),
//! AMD MxGPU (GIM) and PCI SR-IOV.
//!
//! Plain files in a temporary directory cannot answer a write with `EEXIST`, make a device appear
//! or block a remove while a VM holds the device, so tests against them prove little. This crate
//! models those interfaces errno for errno (see `README.md` for the layout and the rules) and
//! serves them through FUSE, so a program that drives sysfs can be tested unchanged against a
//! mount point. The model ([`model`]) is independent of FUSE ([`fs`]) and is unit-tested on its
//! own.

pub mod control;
pub mod fs;
pub mod host;
pub mod kparse;
pub mod layout;
pub mod model;
pub mod placement;
pub mod profiles;
pub mod typespec;
