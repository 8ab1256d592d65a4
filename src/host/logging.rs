//! Where the hook's details go: the journal, else syslog, never stdout.
//!
//! libvirt shows only the hook's stderr, and only on failure; everything an operator needs to
//! reconstruct what happened (what was tried, what was removed, what was retried) goes to the
//! journal with syslog identifier `vgpu-hook`, or to syslog where no journal runs. stdout is
//! reserved for the migrate/restore filter's XML.

use log::LevelFilter;

/// The syslog identifier.
pub const IDENTIFIER: &str = "vgpu-hook";

/// Installs the journal logger, else a syslog logger; silently none when neither exists
/// (a hook must not fail because logging is unavailable).
pub fn init() {
    if systemd_journal_logger::connected_to_journal()
        || std::path::Path::new("/run/systemd/journal/socket").exists()
    {
        if let Ok(logger) = systemd_journal_logger::JournalLog::new() {
            if logger
                .with_syslog_identifier(IDENTIFIER.to_string())
                .install()
                .is_ok()
            {
                log::set_max_level(LevelFilter::Info);
                return;
            }
        }
    }
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: IDENTIFIER.into(),
        pid: std::process::id(),
    };
    if let Ok(logger) = syslog::unix(formatter) {
        if log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger))).is_ok() {
            log::set_max_level(LevelFilter::Info);
        }
    }
}
