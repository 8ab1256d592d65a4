//! What every test binary shares: running the hook as libvirt does (`hook`), the FUSE simulator
//! (`sim`) with a mixed-size L40S on it (`mixed`), a real libvirt daemon (`libvirtd`), golden files (`golden`) and what must hold on a host
//! after any mix of calls, kills and reconciles (`invariants`). Each test binary
//! includes this one module (`mod common;`) and uses what it needs.

#![allow(dead_code)]

pub mod golden;
pub mod hook;
pub mod invariants;
pub mod libvirtd;
pub mod mixed;
pub mod sim;
pub mod stop;
