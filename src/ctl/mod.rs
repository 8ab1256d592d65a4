//! What only `vgpuctl` does, off the hook's path and out of its build (behind the `vgpuctl`
//! feature): planning and splicing domain XML edits, reports, the type catalogue across driver upgrades, reconcile, install, the daemon
//! reload, the doctor's checks, drains, scheduling policies, readying GPUs at boot, metrics, and the guest side (driver and
//! licence through the guest agent).

pub mod boot;
pub mod catalogue;
pub mod daemon;
pub mod doctor;
pub mod drain;
pub mod guest;
pub mod install;
pub mod metrics;
pub mod migrate_check;
pub mod plan;
pub mod reconcile;
pub mod report;
pub mod scheduler;
pub mod similar;
pub mod xmledit;
