//! What only `vgpuctl` does, off the hook's path and out of its build (behind the `vgpuctl`
//! feature): planning and splicing domain XML edits, reports, reconcile, install, the daemon
//! reload, and the doctor's checks.

pub mod daemon;
pub mod doctor;
pub mod install;
pub mod plan;
pub mod reconcile;
pub mod report;
pub mod similar;
pub mod xmledit;
