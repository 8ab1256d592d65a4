//! `vgpuctl guest`'s report: one row per domain (what its guest says about NVIDIA's driver and
//! licence), and every reason a row is incomplete as a problem with its fix. A table for people,
//! JSON (docs/json.md) for scripts.

use std::io::{self, Write};

use serde::Serialize;

use crate::ctl::report::{write_json, Table, JSON_VERSION};

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GuestReport {
    /// Shape version.
    pub version: u32,
    /// One row per domain asked about.
    pub guests: Vec<GuestRow>,
}

/// What one domain's guest says.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GuestRow {
    /// Domain name.
    pub domain: String,
    /// libvirt's state: `running`, `paused`, `shut off`, ...
    pub state: String,
    /// qemu-ga's version, when it answered.
    pub agent: Option<String>,
    /// `linux` or `windows`, when known.
    pub os_family: Option<String>,
    /// The OS's own name (`Debian GNU/Linux 12 (bookworm)`).
    pub os: Option<String>,
    /// NVIDIA's guest driver version.
    pub driver_version: Option<String>,
    /// The GPUs the guest driver sees, by product name (the vGPU type).
    pub vgpus: Vec<String>,
    /// The licensed product (`NVIDIA RTX Virtual Workstation`).
    pub licensed_product: Option<String>,
    /// `licensed`, `expired`, `unlicensed` or `unknown` (other text); `null` when not read.
    pub license: Option<String>,
    /// The `License Status` text as printed.
    pub license_text: Option<String>,
    /// The expiry as printed.
    pub license_expiry: Option<String>,
    /// The expiry as Unix seconds.
    pub license_expiry_unix: Option<i64>,
    /// The licensing service: `running`, `stopped` or `unknown`.
    pub service: Option<String>,
    /// What is wrong or could not be read, each with its fix.
    pub problems: Vec<Problem>,
}

/// One thing wrong with a guest, or why it could not be read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// Stable snake_case name (docs/json.md lists them).
    pub kind: &'static str,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl GuestRow {
    /// A row for `domain` in `state`, nothing read yet.
    pub fn new(domain: &str, state: &str) -> GuestRow {
        GuestRow {
            domain: domain.to_string(),
            state: state.to_string(),
            ..Default::default()
        }
    }

    /// Adds a problem.
    pub fn problem(
        &mut self,
        kind: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.problems.push(Problem {
            kind,
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// Whether the guest is licensed and its service runs, with nothing wrong.
    pub fn healthy(&self) -> bool {
        self.problems.is_empty() && self.license.as_deref() == Some("licensed")
    }
}

fn dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".to_string())
}

impl GuestReport {
    /// Wraps rows.
    pub fn new(guests: Vec<GuestRow>) -> GuestReport {
        GuestReport {
            version: JSON_VERSION,
            guests,
        }
    }

    /// JSON.
    pub fn write_json(&self, w: &mut dyn Write) -> io::Result<()> {
        write_json(w, self)
    }

    /// The table, then one line per problem: `DOMAIN: message; fix: ...`.
    pub fn write_table(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut t = Table::new(&[
            "DOMAIN",
            "STATE",
            "DRIVER",
            "VGPU",
            "LICENSED PRODUCT",
            "LICENSE",
            "EXPIRY",
            "SERVICE",
        ]);
        for g in &self.guests {
            t.row(vec![
                g.domain.clone(),
                g.state.clone(),
                dash(&g.driver_version),
                if g.vgpus.is_empty() {
                    "-".into()
                } else {
                    g.vgpus.join(", ")
                },
                dash(&g.licensed_product),
                dash(&g.license),
                dash(&g.license_expiry),
                dash(&g.service),
            ]);
        }
        t.write(w)?;
        for g in &self.guests {
            for p in &g.problems {
                writeln!(w, "{}: {}; fix: {}", g.domain, p.message, p.fix)?;
            }
        }
        Ok(())
    }
}
