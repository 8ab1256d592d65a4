//! vgpuctl's errors: one line naming the thing and the fix, and the exit status scripts can test
//! (documented in `--help` and docs/vgpuctl.md).

use std::fmt;

/// The exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
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

/// An error to print as `vgpuctl: MESSAGE` and exit with.
#[derive(Debug)]
pub struct CtlError {
    /// Which exit status.
    pub exit: Exit,
    /// The one line.
    pub message: String,
}

impl CtlError {
    /// An error of this kind.
    pub fn new(exit: Exit, message: impl Into<String>) -> CtlError {
        CtlError {
            exit,
            message: message.into(),
        }
    }

    /// A failed operation.
    pub fn failed(message: impl Into<String>) -> CtlError {
        CtlError::new(Exit::Failed, message)
    }

    /// An I/O error on a path, mapped to "permission" when it is one.
    pub fn io(what: impl fmt::Display, e: &std::io::Error) -> CtlError {
        let exit = if e.kind() == std::io::ErrorKind::PermissionDenied {
            Exit::Permission
        } else {
            Exit::Failed
        };
        let hint = if exit == Exit::Permission {
            " (run as root)"
        } else {
            ""
        };
        CtlError::new(exit, format!("{what}: {e}{hint}"))
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message.replace('\n', " "))
    }
}

impl From<vgpu_hook::model::config::ConfigError> for CtlError {
    fn from(e: vgpu_hook::model::config::ConfigError) -> Self {
        CtlError::new(Exit::Config, e.to_string())
    }
}

impl From<vgpu_hook::host::state::StateError> for CtlError {
    fn from(e: vgpu_hook::host::state::StateError) -> Self {
        use vgpu_hook::host::state::StateError;
        match &e {
            StateError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                CtlError::new(Exit::Permission, format!("{e} (run as root)"))
            }
            StateError::Io { .. } => CtlError::failed(e.to_string()),
            StateError::Corrupt { .. } => CtlError::new(Exit::Config, e.to_string()),
        }
    }
}

impl From<vgpu_hook::ctl::xmledit::EditError> for CtlError {
    fn from(e: vgpu_hook::ctl::xmledit::EditError) -> Self {
        use vgpu_hook::ctl::xmledit::EditError;
        let exit = match e {
            EditError::NotFound(_) => Exit::NotFound,
            _ => Exit::Failed,
        };
        CtlError::new(exit, e.to_string())
    }
}

impl From<vgpu_hook::ctl::plan::PlanError> for CtlError {
    fn from(e: vgpu_hook::ctl::plan::PlanError) -> Self {
        use vgpu_hook::ctl::plan::PlanError;
        let exit = match e {
            PlanError::NotFound(_) => Exit::NotFound,
            PlanError::Refused(_) => Exit::Failed,
        };
        CtlError::new(exit, e.to_string())
    }
}

impl From<vgpu_hook::model::domain::DomainError> for CtlError {
    fn from(e: vgpu_hook::model::domain::DomainError) -> Self {
        CtlError::failed(e.to_string())
    }
}
