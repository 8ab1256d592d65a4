//! What the programs are told, parsed and validated before anything touches the host: names that
//! may reach a sysfs path, PCI addresses, the domain XML and our metadata in it, the config. No
//! I/O happens here beyond reading the config file, so every rule is unit-testable.

pub mod config;
pub mod cpuset;
pub mod domain;
pub mod names;
pub mod pci;
pub mod scheduler;
