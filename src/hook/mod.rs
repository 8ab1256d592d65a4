//! What the hook does for each libvirt call: allocate at `prepare begin`, tear down at
//! `release end`, re-record at `reconnect begin`, rewrite VF addresses in the migrate/restore
//! filters.
//!
//! Allocation happens under the host-wide state lock and is all or nothing: every device this call
//! created is undone before a refusal is returned, and the refusal is one line that says what was
//! asked, what was tried on each GPU and why it failed. Release never fails (libvirt ignores its
//! exit code, and a VM is already down), never waits without a bound, and never touches a device
//! that a later owner has taken over.
//!
//! One module per call: [`prepare`] (allocation through [`crate::alloc`]), [`release`],
//! [`reconnect`] and [`filter`] (`migrate begin` / `restore begin`). The `vgpu-hook` binary
//! reads libvirt's argv and stdin and calls exactly one of them.

mod filter;
mod prepare;
mod reconnect;
mod recover;
mod release;

pub use filter::filter;
pub use prepare::prepare;
pub use reconnect::reconnect;
pub use release::{failed_start_quotes, release, release_selected, StopReason};

use crate::alloc::refusal::Refusal;
use crate::host::state::StateError;
use crate::model::config::ConfigError;
use crate::model::domain::DomainError;

/// Why the hook refuses a call; its text is the operator's only explanation.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The config is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The domain XML is malformed or our metadata is invalid.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The request cannot be met; the reason says why and what would fix it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A migrated or restored domain's VFs cannot be mapped onto this host.
    #[error(transparent)]
    Filter(#[from] filter::FilterRefusal),
    /// The list of drained GPUs cannot be read.
    #[error(transparent)]
    Drains(#[from] crate::host::drains::DrainError),
}

/// The state under the lock; a damaged data file is kept aside and the records rebuilt from the
/// running domains (see [`recover`]). `vgpuctl reconcile` reads it the same way, so it mends
/// what the hook would mend rather than refusing it.
pub fn load_state(
    host: &crate::host::Host,
    locked: &crate::host::state::Locked,
    grace: std::time::Duration,
    read: crate::host::state::Read,
) -> Result<crate::host::state::State, StateError> {
    locked.load_or_rebuild(read, || {
        recover::from_running_domains(host, &host.liveness(grace))
    })
}
