//! The guest side of a vGPU: NVIDIA's guest driver and its licence, seen and fixed from the host
//! through the QEMU guest agent (`vgpuctl guest`).
//!
//! A vGPU works fully only when the guest runs NVIDIA's vGPU guest driver and holds a licence;
//! unlicensed, it is throttled after a grace period. Those steps happen inside each VM, where
//! the host has no eyes, except through the guest agent libvirt already talks to. So:
//! [`agent`] speaks the agent's commands (run a program, write a file) with a timeout on every
//! call; [`smi`] reads `nvidia-smi -q`; [`probe`] turns both into one [`report::GuestRow`] per
//! domain, where every way of not knowing (no channel, no agent, no driver, paused) is a
//! problem with its fix rather than an error; [`license`] checks a token or server on the host
//! before anything is written; [`push`] writes it where the guest's OS expects it, keeping
//! what it replaces, and restarts the licensing service.

pub mod agent;
pub mod b64;
pub mod license;
pub mod probe;
pub mod push;
pub mod report;
pub mod smi;
#[cfg(test)]
mod tests;

/// Why talking to a guest's agent failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// The domain has no guest-agent channel.
    #[error("the domain has no guest agent channel: {0}")]
    NoChannel(String),
    /// The channel is there, but no agent answers on it.
    #[error("the guest agent is not connected: {0}")]
    NotConnected(String),
    /// A call or a program did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The domain is not running.
    #[error("the domain is not running")]
    NotRunning,
    /// The agent refused or failed a command.
    #[error("the guest agent failed the command: {0}")]
    CommandFailed(String),
    /// A program to run does not exist in the guest.
    #[error("{0} does not exist in the guest")]
    NoProgram(String),
    /// A program ran and failed.
    #[error("{0}")]
    Program(String),
    /// The agent's reply did not have the expected shape.
    #[error("guest agent protocol: {0}")]
    Protocol(String),
}
