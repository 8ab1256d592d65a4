//! What `vgpuctl types`, `list` and `status` show: the configured GPUs and their types with
//! capacity, the devices that exist now and who holds them, and one domain's requests against its
//! holdings.
//!
//! Each report is plain data built from sysfs, the state and the config (never cached), with two
//! renderings: aligned tables for people and JSON for scripts. The JSON shape is a contract
//! (documented in docs/json.md, versioned by its `version` field): fields are only ever added.
//! Rendering writes to a passed-in writer so that tests compare it with golden files.
//!
//! One module per report ([`types`], [`list`], [`status`]); this one holds what they share:
//! the table writer, times, JSON output and how a holding stands.

mod list;
mod status;
mod types;

/// Seconds since the epoch as `2024-05-01T12:00:00Z` (`-` past what a date can say).
pub use crate::utc;
pub use list::{list_report, DeviceReport, ListReport};
pub use status::{mark_displays, status_report, StatusDevice, StatusReport};
pub use types::{types_report, GpuReport, TypeReport, TypesReport, VfCounts};

use std::io::{self, Write};

use serde::Serialize;

use crate::host::state::{Liveness, Record};

/// Version of the JSON shapes below; bumped only for incompatible changes.
pub const JSON_VERSION: u32 = 1;

/// An aligned text table: columns separated by two spaces, the last one unpadded.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes the table.
    pub fn write(&self, w: &mut dyn Write) -> io::Result<()> {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        // The whole table in one write: a host of thousands of types prints one row each.
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let start = out.len();
            for (i, width) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                out.push_str(c);
                if i + 1 < n {
                    out.extend(std::iter::repeat_n(' ', width - c.chars().count() + 2));
                }
            }
            let end = out[start..].trim_end().len() + start;
            out.truncate(end);
            out.push('\n');
        };
        line(&self.headers);
        for r in &self.rows {
            line(r);
        }
        w.write_all(out.as_bytes())
    }
}

/// A value, or `-` when there is none.
fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Writes any report as pretty JSON with a final newline.
pub fn write_json<T: Serialize>(w: &mut dyn Write, value: &T) -> io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    text.push('\n');
    w.write_all(text.as_bytes())
}

/// How a record's domain stands now.
fn hold_state(r: Option<&Record>, live: &Liveness) -> &'static str {
    match r {
        None => "unowned",
        Some(r) if live.running(&r.domain_name) => "running",
        Some(r) if live.holds(r) => "starting",
        Some(_) => "stale",
    }
}

/// Framebuffer in MiB from an NVIDIA profile name (`NVIDIA L40S-4Q` -> 4096): the number
/// before the series letter is gigabytes by NVIDIA's naming rule.
fn framebuffer_from_name(name: &str) -> Option<u64> {
    let short = name.rsplit(char::is_whitespace).next()?;
    let (_, tail) = short.rsplit_once('-')?;
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    let series = &tail[digits.len()..];
    if digits.is_empty() || series.is_empty() || !series.chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    digits.parse::<u64>().ok().map(|gb| gb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn table_aligns_columns_and_trims_the_last() {
        let mut t = Table::new(&["A", "BB", "C"]);
        t.row(vec!["xxx".into(), "y".into(), "".into()]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "A    BB  C\nxxx  y\n");
    }

    #[test]
    fn framebuffer_is_derived_from_nvidia_profile_names() {
        assert_eq!(framebuffer_from_name("NVIDIA L40S-4Q"), Some(4096));
        assert_eq!(framebuffer_from_name("GRID P40-24Q"), Some(24576));
        assert_eq!(framebuffer_from_name("Dual port serial"), None);
    }
}
