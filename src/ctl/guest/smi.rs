//! Reading `nvidia-smi -q` as a guest prints it: the driver version, the GPUs it sees (in a
//! vGPU guest the product name is the vGPU type, `GRID P40-2Q` or `NVIDIA H100-80C`), and the
//! `vGPU Software Licensed Product` section (licensed product, licence status and expiry).
//!
//! The output is lines of `Label<padding>: value`, indented four spaces per level under section
//! headers (lines without a colon). Labels are matched as NVIDIA prints them; anything else is
//! ignored, so fields added by newer drivers do not matter. Real outputs this is tested on are
//! under tests/fixtures/nvidia-smi/, each with its source.

use serde::Serialize;

/// What a guest's `nvidia-smi -q` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmiReport {
    /// `Driver Version`.
    pub driver_version: Option<String>,
    /// Each `GPU <bus id>` section.
    pub gpus: Vec<SmiGpu>,
    /// `Product Name` of the licensed-product section (`NVIDIA RTX Virtual Workstation`).
    pub licensed_product: Option<String>,
    /// `License Status`, when the section is there.
    pub license: Option<License>,
}

/// One GPU the guest sees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SmiGpu {
    /// Its bus id in the guest.
    pub bus_id: String,
    /// `Product Name`: the vGPU type in a vGPU guest.
    pub product_name: Option<String>,
    /// `GPU Virtualization Mode / Virtualization Mode` (`VGPU` in a vGPU guest).
    pub virtualization_mode: Option<String>,
}

/// The licence status as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum License {
    /// `Licensed`, with `(Expiry: ...)` from NLS drivers.
    Licensed {
        /// The expiry, when printed.
        expiry: Option<Expiry>,
    },
    /// `Unlicensed`, with the qualifier in brackets (`Restricted`, `Unrestricted`).
    Unlicensed {
        /// The qualifier.
        detail: Option<String>,
    },
    /// Any other text.
    Other(String),
}

/// A licence expiry as printed (`2023-7-23 13:17:27 GMT`) and as a Unix time when it parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// The text inside `(Expiry: ...)`.
    pub text: String,
    /// Seconds since the epoch (the text is in GMT).
    pub unix: Option<i64>,
}

impl License {
    /// Parses the `License Status` value.
    pub fn parse(value: &str) -> License {
        let v = value.trim();
        let (head, bracket) = match v.split_once('(') {
            Some((h, rest)) => (h.trim(), Some(rest.trim_end().trim_end_matches(')').trim())),
            None => (v, None),
        };
        match head.to_ascii_lowercase().as_str() {
            "licensed" => License::Licensed {
                expiry: bracket.and_then(|b| {
                    let text = b.strip_prefix("Expiry:")?.trim().to_string();
                    let unix = parse_gmt(&text);
                    Some(Expiry { text, unix })
                }),
            },
            "unlicensed" => License::Unlicensed {
                detail: bracket.filter(|b| !b.is_empty()).map(str::to_string),
            },
            _ => License::Other(v.to_string()),
        }
    }

    /// Whether it is licensed and not past its expiry at `now` (Unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        match self {
            License::Licensed { expiry } => expiry
                .as_ref()
                .and_then(|e| e.unix)
                .is_none_or(|until| until > now),
            _ => false,
        }
    }

    /// Whether it is `Licensed` with an expiry that has passed at `now`.
    pub fn expired_at(&self, now: i64) -> bool {
        matches!(self, License::Licensed { .. }) && !self.valid_at(now)
    }
}

/// `2023-7-23 13:17:27 GMT` (month and day may lack a leading zero) to Unix seconds.
fn parse_gmt(text: &str) -> Option<i64> {
    let mut parts = text.split_whitespace();
    let date = parts.next()?;
    let time = parts.next()?;
    let zone = parts.next().unwrap_or("GMT");
    if !matches!(zone, "GMT" | "UTC") {
        return None;
    }
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let ([y, m, day], [h, mi, s]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    if !(1..=12).contains(m) || !(1..=31).contains(day) || *h > 23 || *mi > 59 || *s > 60 {
        return None;
    }
    Some(days_from_civil(*y, *m, *day) * 86_400 + h * 3600 + mi * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Splits `Label    : value` (the label may contain spaces; the value may contain colons).
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once(" : ").or_else(|| {
        let k = line.strip_suffix(" :")?;
        Some((k, ""))
    })?;
    Some((k.trim(), v.trim()))
}

/// Parses `nvidia-smi -q` output.
pub fn parse(text: &str) -> SmiReport {
    let mut report = SmiReport::default();
    // The open section headers with their indentation.
    let mut stack: Vec<(usize, String)> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with("==") {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let Some((key, value)) = key_value(line) else {
            let header = line.trim().to_string();
            if indent == 0 {
                if let Some(bus) = header.strip_prefix("GPU ") {
                    report.gpus.push(SmiGpu {
                        bus_id: bus.trim().to_string(),
                        ..Default::default()
                    });
                }
            }
            stack.push((indent, header));
            continue;
        };
        take(&mut report, &stack, key, value);
    }
    report
}

/// Files one `key : value` line found under the headers in `stack`.
fn take(report: &mut SmiReport, stack: &[(usize, String)], key: &str, value: &str) {
    let section = stack.last().map(|(_, h)| h.as_str());
    let in_gpu = stack.first().is_some_and(|(_, h)| h.starts_with("GPU "));
    match (section, key) {
        (None, "Driver Version") => report.driver_version = Some(value.to_string()),
        (Some("vGPU Software Licensed Product"), "Product Name") => {
            report
                .licensed_product
                .get_or_insert_with(|| value.to_string());
        }
        (Some("vGPU Software Licensed Product"), "License Status") => {
            report.license.get_or_insert_with(|| License::parse(value));
        }
        (Some(_), "Product Name") if in_gpu && stack.len() == 1 => {
            if let Some(g) = report.gpus.last_mut() {
                g.product_name = Some(value.to_string());
            }
        }
        (Some("GPU Virtualization Mode"), "Virtualization Mode") if in_gpu => {
            if let Some(g) = report.gpus.last_mut() {
                g.virtualization_mode = Some(value.to_string());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licence_status_values_parse_as_nvidia_prints_them() {
        assert_eq!(
            License::parse("Unlicensed (Restricted)"),
            License::Unlicensed {
                detail: Some("Restricted".into())
            }
        );
        assert_eq!(
            License::parse("Unlicensed"),
            License::Unlicensed { detail: None }
        );
        assert_eq!(
            License::parse("Licensed"),
            License::Licensed { expiry: None }
        );
        let l = License::parse("Licensed (Expiry: 2023-7-23 13:17:27 GMT)");
        let License::Licensed { expiry: Some(e) } = &l else {
            panic!("{l:?}")
        };
        assert_eq!(e.text, "2023-7-23 13:17:27 GMT");
        // date -u -d '2023-07-23 13:17:27' +%s
        assert_eq!(e.unix, Some(1_690_118_247));
        assert!(l.valid_at(1_690_000_000) && l.expired_at(1_690_118_248));
        assert_eq!(License::parse("Pending"), License::Other("Pending".into()));
    }

    #[test]
    fn a_licensed_state_without_expiry_never_counts_as_expired() {
        let l = License::Licensed { expiry: None };
        assert!(l.valid_at(i64::MAX) && !l.expired_at(i64::MAX));
        assert!(!License::Unlicensed { detail: None }.expired_at(0));
    }

    #[test]
    fn sections_nest_by_indentation_and_unknown_fields_are_ignored() {
        let text = "Driver Version : 1.2\nGPU 00000000:00:05.0\n    Product Name : GRID T4-2Q\n    Clocks\n        Product Name : not this\n    GPU Virtualization Mode\n        Virtualization Mode : VGPU\n    vGPU Software Licensed Product\n        Product Name : NVIDIA Virtual PC\n        License Status : Unlicensed\n";
        let r = parse(text);
        assert_eq!(r.driver_version.as_deref(), Some("1.2"));
        assert_eq!(r.gpus.len(), 1);
        assert_eq!(r.gpus[0].product_name.as_deref(), Some("GRID T4-2Q"));
        assert_eq!(r.gpus[0].virtualization_mode.as_deref(), Some("VGPU"));
        assert_eq!(r.licensed_product.as_deref(), Some("NVIDIA Virtual PC"));
        assert_eq!(r.license, Some(License::Unlicensed { detail: None }));
    }

    #[test]
    fn output_without_the_licence_section_has_no_licence() {
        let r = parse("Driver Version : 535.54.03\nAttached GPUs : 0\n");
        assert_eq!(r.license, None);
        assert!(r.gpus.is_empty());
    }
}
