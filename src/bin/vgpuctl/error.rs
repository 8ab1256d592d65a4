//! vgpuctl's errors: one line naming the thing and the fix, and the exit status scripts can test
//! (documented in `--help` and docs/vgpuctl.md).
//!
//! Every failure is one variant of [`CtlError`]: the library's errors are carried whole (as the
//! `source`), so the exit status is decided from what went wrong, not from the words of the
//! message, and tests can match the variant. A closed stdout has its own variant, because it is
//! not a failure to report: `vgpuctl list | head` ends quietly.

use std::fmt;
use std::io;

use vgpu_hook::ctl::drain::DrainCtlError;
use vgpu_hook::ctl::install::InstallError;
use vgpu_hook::ctl::plan::PlanError;
use vgpu_hook::ctl::xmledit::EditError;
use vgpu_hook::hook::HookError;
use vgpu_hook::host::drains::DrainError;
use vgpu_hook::host::state::StateError;
use vgpu_hook::model::config::ConfigError;
use vgpu_hook::model::domain::DomainError;

/// The exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Nothing failed: the reader closed stdout early (`vgpuctl list | head`).
    Quiet = 0,
    /// The request cannot be met, or an operation failed.
    Failed = 1,
    /// A value on the command line is malformed.
    Usage = 2,
    /// libvirt unreachable or refused.
    Libvirt = 3,
    /// A domain, device, type, parent or PF does not exist.
    NotFound = 4,
    /// Config or state missing or invalid.
    Config = 5,
    /// Not allowed (not root).
    Permission = 6,
}

/// Why vgpuctl stops: printed as `vgpuctl: MESSAGE` (except [`CtlError::BrokenPipe`]) and
/// exited with [`CtlError::exit`].
#[derive(Debug)]
pub enum CtlError {
    /// The reader of stdout went away (`vgpuctl list | head`): end quietly.
    BrokenPipe,
    /// A value on the command line is malformed or contradicts another.
    Usage(String),
    /// A file, domain or other named thing does not exist.
    NotFound(String),
    /// An operation failed, or the request cannot be met.
    Failed(String),
    /// Something needed the config and there is none.
    NeedsConfig(&'static str),
    /// A file operation failed.
    Io {
        /// What was being read or written.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// libvirt could not be reached.
    Connect {
        /// The URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// libvirt refused an operation.
    Libvirt {
        /// What was asked of it, naming the domain or URI.
        what: String,
        /// libvirt's message.
        message: String,
        /// Whether libvirt said the domain does not exist.
        no_domain: bool,
    },
    /// The config is missing or invalid.
    Config(ConfigError),
    /// The ownership state is unreadable or corrupt.
    State(StateError),
    /// A domain definition could not be parsed.
    Domain(DomainError),
    /// A domain definition could not be rewritten.
    Edit(EditError),
    /// The request cannot be planned on this host.
    Plan(PlanError),
    /// Installing or uninstalling the hook failed.
    Install(InstallError),
    /// A device could not be made for a hot-plug.
    Prepare(HookError),
    /// A check before an edit failed, and `--force` would skip it.
    Unchecked(Box<CtlError>),
    /// The list of drained GPUs cannot be read or written.
    Drains(DrainError),
}

/// Whether an I/O error is a permission problem, which gets its own exit status and a hint.
fn denied(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

fn root_hint(denied: bool) -> &'static str {
    if denied {
        " (run as root)"
    } else {
        ""
    }
}

impl CtlError {
    /// A failed operation.
    pub fn failed(message: impl Into<String>) -> CtlError {
        CtlError::Failed(message.into())
    }

    /// A malformed command line.
    pub fn usage(message: impl fmt::Display) -> CtlError {
        CtlError::Usage(message.to_string())
    }

    /// An I/O error on `what` (a path, or what was being done).
    pub fn io(what: impl fmt::Display, source: io::Error) -> CtlError {
        CtlError::Io {
            what: what.to_string(),
            source,
        }
    }

    /// A failed write to stdout: a closed pipe is [`CtlError::BrokenPipe`].
    pub fn output(source: io::Error) -> CtlError {
        if source.kind() == io::ErrorKind::BrokenPipe {
            CtlError::BrokenPipe
        } else {
            CtlError::io("writing the output", source)
        }
    }

    /// The status to exit with.
    pub fn exit(&self) -> Exit {
        match self {
            CtlError::BrokenPipe => Exit::Quiet,
            CtlError::Failed(_) | CtlError::Domain(_) => Exit::Failed,
            CtlError::Prepare(_) => Exit::Failed,
            CtlError::Usage(_) => Exit::Usage,
            CtlError::NotFound(_) => Exit::NotFound,
            CtlError::NeedsConfig(_) | CtlError::Config(_) => Exit::Config,
            CtlError::Io { source, .. } | CtlError::Install(InstallError::Io { source, .. }) => {
                io_exit(source)
            }
            CtlError::Install(_) => Exit::Failed,
            CtlError::Connect { .. } => Exit::Libvirt,
            CtlError::Libvirt {
                no_domain: true, ..
            } => Exit::NotFound,
            CtlError::Libvirt { .. } => Exit::Libvirt,
            CtlError::State(StateError::Io { source, .. }) => io_exit(source),
            CtlError::State(StateError::Busy { .. }) => Exit::Failed,
            CtlError::State(
                StateError::Corrupt { .. } | StateError::Newer { .. } | StateError::Unsafe { .. },
            ) => Exit::Config,
            CtlError::Edit(EditError::NotFound(_)) => Exit::NotFound,
            CtlError::Edit(_) => Exit::Failed,
            CtlError::Plan(e) if e.is_not_found() => Exit::NotFound,
            CtlError::Plan(_) => Exit::Failed,
            CtlError::Unchecked(e) => e.exit(),
            CtlError::Drains(DrainError::Io { source, .. }) => io_exit(source),
            CtlError::Drains(DrainError::Corrupt { .. }) => Exit::Config,
        }
    }

    /// The message as built, before line breaks are flattened for the one-line output; empty
    /// for [`CtlError::BrokenPipe`].
    pub fn message(&self) -> String {
        match self {
            CtlError::BrokenPipe => String::new(),
            CtlError::Usage(m) | CtlError::NotFound(m) | CtlError::Failed(m) => m.clone(),
            CtlError::NeedsConfig(m) => m.to_string(),
            CtlError::Io { what, source } => format!("{what}: {source}{}", root_hint(denied(source))),
            CtlError::Connect { uri, message } => format!(
                "cannot connect to {uri}: {message}; is the libvirt daemon running (systemctl start libvirtd, or virtqemud)? Otherwise pass --connect URI"
            ),
            CtlError::Libvirt { what, message, .. } => format!("{what}: {message}"),
            CtlError::Config(e) => e.to_string(),
            CtlError::State(e @ StateError::Io { source, .. }) => {
                format!("{e}{}", root_hint(denied(source)))
            }
            CtlError::State(e) => e.to_string(),
            CtlError::Domain(e) => e.to_string(),
            CtlError::Edit(e) => e.to_string(),
            CtlError::Plan(e) => e.to_string(),
            CtlError::Install(e @ InstallError::Io { source, .. }) => {
                format!("{e}{}", root_hint(denied(source)))
            }
            CtlError::Install(e) => e.to_string(),
            CtlError::Prepare(e) => format!("cannot create the device now: {e}"),
            CtlError::Unchecked(e) => {
                format!("{}; or pass --force to skip the checks", e.message())
            }
            CtlError::Drains(e @ DrainError::Io { source, .. }) => {
                format!("{e}{}", root_hint(denied(source)))
            }
            CtlError::Drains(e) => e.to_string(),
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message().replace('\n', " "))
    }
}

impl std::error::Error for CtlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CtlError::Io { source, .. } => Some(source),
            CtlError::Config(e) => Some(e),
            CtlError::State(e) => Some(e),
            CtlError::Domain(e) => Some(e),
            CtlError::Edit(e) => Some(e),
            CtlError::Plan(e) => Some(e),
            CtlError::Install(e) => Some(e),
            CtlError::Prepare(e) => Some(e),
            CtlError::Unchecked(e) => Some(e.as_ref()),
            CtlError::Drains(e) => Some(e),
            _ => None,
        }
    }
}

fn io_exit(e: &io::Error) -> Exit {
    if denied(e) {
        Exit::Permission
    } else {
        Exit::Failed
    }
}

impl From<ConfigError> for CtlError {
    fn from(e: ConfigError) -> Self {
        CtlError::Config(e)
    }
}

impl From<StateError> for CtlError {
    fn from(e: StateError) -> Self {
        CtlError::State(e)
    }
}

impl From<EditError> for CtlError {
    fn from(e: EditError) -> Self {
        CtlError::Edit(e)
    }
}

impl From<PlanError> for CtlError {
    fn from(e: PlanError) -> Self {
        CtlError::Plan(e)
    }
}

impl From<DomainError> for CtlError {
    fn from(e: DomainError) -> Self {
        CtlError::Domain(e)
    }
}

impl From<DrainCtlError> for CtlError {
    fn from(e: DrainCtlError) -> Self {
        match e {
            e @ DrainCtlError::NotConfigured { .. } => CtlError::NotFound(e.to_string()),
            DrainCtlError::State(e) => CtlError::State(e),
            DrainCtlError::List(e) => CtlError::Drains(e),
        }
    }
}

impl From<InstallError> for CtlError {
    fn from(e: InstallError) -> Self {
        CtlError::Install(e)
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn a_closed_pipe_is_its_own_quiet_variant() {
        let e = CtlError::output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(e, CtlError::BrokenPipe));
        assert_eq!(e.exit(), Exit::Quiet);
        assert_eq!(e.message(), "");
    }

    #[test]
    fn permission_problems_exit_6_and_say_run_as_root() {
        let e = CtlError::io("/x", io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(e.exit(), Exit::Permission);
        assert!(e.to_string().ends_with(" (run as root)"), "{e}");
        let other = CtlError::output(io::Error::other("disk full"));
        assert_eq!(other.exit(), Exit::Failed);
        assert_eq!(other.to_string(), "writing the output: disk full");
    }

    #[test]
    fn unchecked_keeps_the_exit_of_what_failed_and_adds_the_way_out() {
        let e = CtlError::Unchecked(Box::new(CtlError::NeedsConfig("no config")));
        assert_eq!(e.exit(), Exit::Config);
        assert_eq!(
            e.to_string(),
            "no config; or pass --force to skip the checks"
        );
    }

    #[test]
    fn line_breaks_are_flattened_in_the_printed_line() {
        assert_eq!(CtlError::failed("a\nb").to_string(), "a b");
    }
}
