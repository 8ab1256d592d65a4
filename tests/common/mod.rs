//! What every test binary shares: running the hook as libvirt does (`hook`), the FUSE simulator
//! (`sim`), a real libvirt daemon (`libvirtd`) and golden files (`golden`). Each test binary
//! includes this one module (`mod common;`) and uses what it needs.

#![allow(dead_code)]

pub mod golden;
pub mod hook;
pub mod libvirtd;
pub mod sim;
