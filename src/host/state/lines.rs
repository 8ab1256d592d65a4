//! The data file's form: one record per line, so that a call about one domain or one device
//! parses only the lines that can name it and writes every other line back as it read it. A
//! host running hundreds of vGPUs then starts and stops each VM at the cost of one.
//!
//! ```text
//! {"version":1,"records":[
//! {"domain_uuid":"…","domain_name":"a","device":{"kind":"mdev","uuid":"…"},…},
//! {"domain_uuid":"…","domain_name":"b","device":{"kind":"vf","address":"…"},…}
//! ]}
//! ```
//!
//! It is the same JSON document as before, so every reader of the format reads it; a file of
//! another shape (pretty-printed by an older vgpu-hook, edited by hand) is parsed whole, as it
//! always was, and written in this form by the next save.

use std::cell::OnceCell;

use super::Record;

const HEAD_START: &str = "{\"version\":";
const HEAD_END: &str = ",\"records\":[";
const TAIL: &str = "]}";

/// A file in this form: its version and its record lines (without the separating commas), or
/// `None` when the text has another shape.
pub fn split(text: &str) -> Option<(u32, Vec<&str>)> {
    let mut start = 0;
    let mut lines = memchr::memchr_iter(b'\n', text.as_bytes()).map(|end| {
        let line = &text[start..end];
        start = end + 1;
        line
    });
    let version = lines
        .next()?
        .strip_prefix(HEAD_START)?
        .strip_suffix(HEAD_END)?
        .parse()
        .ok()?;
    let mut body: Vec<&str> = lines.collect();
    if body.pop()? != TAIL {
        return None;
    }
    let last = body.len().saturating_sub(1);
    for (i, line) in body.iter_mut().enumerate() {
        let record = if i < last {
            line.strip_suffix(',')?
        } else {
            *line
        };
        if !(record.starts_with('{') && record.ends_with('}')) {
            return None;
        }
        *line = record;
    }
    Some((version, body))
}

/// The file's text for `version` and these record lines.
pub fn join<'a>(version: u32, records: impl Iterator<Item = &'a str>) -> String {
    let mut out = format!("{HEAD_START}{version}{HEAD_END}\n");
    let mut first = true;
    for r in records {
        if !first {
            out.push_str(",\n");
        }
        out.push_str(r);
        first = false;
    }
    if !first {
        out.push('\n');
    }
    out.push_str(TAIL);
    out.push('\n');
    out
}

/// A record line as read, parsed the first time a question can concern it. A line that does
/// not parse (edited by hand) answers nothing and is written back as it was; the next whole
/// read (`vgpuctl reconcile`, a reconnect) reports the file damaged and mends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    line: Box<str>,
    parsed: OnceCell<Option<Record>>,
}

impl Unread {
    /// A line of the file.
    pub fn new(line: &str) -> Self {
        Unread {
            line: line.into(),
            parsed: OnceCell::new(),
        }
    }

    /// The line, as read.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The record, parsed now if not yet.
    pub fn record(&self) -> Option<&Record> {
        self.parsed
            .get_or_init(|| match serde_json::from_str(&self.line) {
                Ok(r) => Some(r),
                Err(e) => {
                    log::error!(
                        "state: a record cannot be read ({e}); it is kept as it is and counts for nothing until `vgpuctl reconcile` mends the file: {}",
                        crate::printable(&self.line, 200)
                    );
                    None
                }
            })
            .as_ref()
    }

    /// The record if it was parsed already (a question concerned it).
    pub fn parsed(&self) -> Option<&Record> {
        self.parsed.get().and_then(Option::as_ref)
    }

    /// The record when the line contains `needle`: only such a line can be about it.
    pub fn about(&self, needle: &Needle) -> Option<&Record> {
        if needle.0.find(self.line.as_bytes()).is_some() {
            self.record()
        } else {
            None
        }
    }
}

/// A value as the file spells it (a JSON string, quotes included), ready to be looked for in
/// many lines.
pub struct Needle(memchr::memmem::Finder<'static>);

impl Needle {
    /// The needle for the string value `s`.
    pub fn new(s: &str) -> Self {
        let json = serde_json::to_string(s).unwrap_or_default();
        Needle(memchr::memmem::Finder::new(json.as_bytes()).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_lines_split_back() {
        let lines = ["{\"a\":1}", "{\"b\":2}"];
        let text = join(1, lines.iter().copied());
        assert_eq!(
            text,
            "{\"version\":1,\"records\":[\n{\"a\":1},\n{\"b\":2}\n]}\n"
        );
        assert_eq!(split(&text), Some((1, lines.to_vec())));
    }

    #[test]
    fn no_records_split_back() {
        let text = join(1, std::iter::empty());
        assert_eq!(split(&text), Some((1, Vec::new())));
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
    }

    #[test]
    fn joined_text_is_json() {
        let text = join(1, ["{\"a\":1}", "{\"b\":2}"].into_iter());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["records"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn other_shapes_are_not_split() {
        for text in [
            "{\n  \"version\": 1,\n  \"records\": []\n}\n",
            "{\"version\":1,\"records\":[\n{\"a\":1}\n",
            "{\"version\":1,\"records\":[\n{\"a\":1}\n{\"b\":2}\n]}\n",
            "{\"version\":1,\"records\":[\n{\"a\":1},\n]}\n",
            "{\"version\":1,\"records\":[{\"a\":1}]}",
            "",
        ] {
            assert_eq!(split(text), None, "{text:?}");
        }
    }
}
