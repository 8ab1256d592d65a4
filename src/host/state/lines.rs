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

use std::cell::{OnceCell, RefCell};
use std::ops::Range;

use super::Record;

const HEAD_START: &str = "{\"version\":";
const HEAD_END: &str = ",\"records\":[";
const TAIL: &str = "]}";

/// A file in this form: its version and where its record lines are (without the separating
/// commas), or `None` when the text has another shape. The text is bytes: a line is checked
/// for UTF-8 when it is parsed, so a call that parses one line does not check them all.
pub fn split(text: &[u8]) -> Option<(u32, Vec<Range<usize>>)> {
    let mut start = 0;
    let mut lines = memchr::memchr_iter(b'\n', text).map(|end| {
        let line = start..end;
        start = end + 1;
        line
    });
    let version = std::str::from_utf8(&text[lines.next()?])
        .ok()?
        .strip_prefix(HEAD_START)?
        .strip_suffix(HEAD_END)?
        .parse()
        .ok()?;
    let mut body: Vec<Range<usize>> = lines.collect();
    if &text[body.pop()?] != TAIL.as_bytes() {
        return None;
    }
    let last = body.len().saturating_sub(1);
    for (i, line) in body.iter_mut().enumerate() {
        if i < last {
            if text.get(line.end.wrapping_sub(1)) != Some(&b',') {
                return None;
            }
            line.end -= 1;
        }
        let record = &text[line.clone()];
        if !(record.first() == Some(&b'{') && record.last() == Some(&b'}')) {
            return None;
        }
    }
    Some((version, body))
}

/// The file's text for `version` and these record lines.
pub fn join<'a>(version: u32, records: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = format!("{HEAD_START}{version}{HEAD_END}\n").into_bytes();
    let mut first = true;
    for r in records {
        if !first {
            out.extend_from_slice(b",\n");
        }
        out.extend_from_slice(r);
        first = false;
    }
    if !first {
        out.push(b'\n');
    }
    out.extend_from_slice(TAIL.as_bytes());
    out.push(b'\n');
    out
}

/// A record line as read (where it is in the file's text), parsed the first time a question
/// can concern it. A line that does not parse (edited by hand) answers nothing and is written
/// back as it was; the next whole read (`vgpuctl reconcile`, a reconnect) reports the file
/// damaged and mends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    line: Range<usize>,
    parsed: OnceCell<Option<Record>>,
}

impl Unread {
    /// The record line at `line` of the file's text.
    pub fn new(line: Range<usize>) -> Self {
        Unread {
            line,
            parsed: OnceCell::new(),
        }
    }

    /// The line, as read.
    pub fn line<'t>(&self, text: &'t [u8]) -> &'t [u8] {
        &text[self.line.clone()]
    }

    /// Whether the line holds byte `at` of the text.
    pub fn holds(&self, at: usize) -> bool {
        self.line.contains(&at)
    }

    /// Where the line ends in the text.
    pub fn end(&self) -> usize {
        self.line.end
    }

    /// The record, parsed now if not yet.
    pub fn record(&self, text: &[u8]) -> Option<&Record> {
        self.parsed
            .get_or_init(|| match serde_json::from_slice(self.line(text)) {
                Ok(r) => Some(r),
                Err(e) => {
                    log::error!(
                        "state: a record cannot be read ({e}); it is kept as it is and counts for nothing until `vgpuctl reconcile` mends the file: {}",
                        crate::printable(&String::from_utf8_lossy(self.line(text)), 200)
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
}

/// A string value as the file spells it (escaped as JSON strings are, without the quotes,
/// which every line is full of and would only slow the search), ready to be looked for in many
/// lines. A line that contains it may be about it; the parsed record decides.
pub struct Needle(memchr::memmem::Finder<'static>);

impl Needle {
    /// Where the value occurs in `text`.
    pub fn find_in<'a>(&'a self, text: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        self.0.find_iter(text)
    }

    /// The bytes looked for.
    pub fn bytes(&self) -> &[u8] {
        self.0.needle()
    }

    /// The needle for the string value `s`.
    pub fn new(s: &str) -> Self {
        let json = serde_json::to_string(s).unwrap_or_default();
        let inner = json
            .strip_prefix('"')
            .and_then(|j| j.strip_suffix('"'))
            .unwrap_or(&json);
        Needle(memchr::memmem::Finder::new(inner.as_bytes()).into_owned())
    }
}

/// The lines the last needle was found in: a release asks whose a device is and then removes
/// its record, two questions with one needle, and the text is searched once for both. Kept
/// until the lines change; not part of the state's value.
#[derive(Debug, Clone, Default)]
pub struct LastFound(RefCell<Option<(Vec<u8>, Vec<usize>)>>);

impl LastFound {
    /// The lines found for `needle` if it was the last one, else `find`'s answer, remembered.
    pub fn lines(&self, needle: &Needle, find: impl FnOnce() -> Vec<usize>) -> Vec<usize> {
        if let Some((bytes, lines)) = &*self.0.borrow() {
            if bytes == needle.bytes() {
                return lines.clone();
            }
        }
        let lines = find();
        *self.0.borrow_mut() = Some((needle.bytes().to_vec(), lines.clone()));
        lines
    }

    /// Forgets the answer (the lines moved).
    pub fn clear(&mut self) {
        *self.0.get_mut() = None;
    }
}

impl PartialEq for LastFound {
    fn eq(&self, _: &LastFound) -> bool {
        true
    }
}

impl Eq for LastFound {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_lines_split_back() {
        let lines: [&[u8]; 2] = [b"{\"a\":1}", b"{\"b\":2}"];
        let text = join(1, lines.iter().copied());
        assert_eq!(
            text,
            b"{\"version\":1,\"records\":[\n{\"a\":1},\n{\"b\":2}\n]}\n"
        );
        let (version, ranges) = split(&text).unwrap();
        let got: Vec<&[u8]> = ranges.into_iter().map(|r| &text[r]).collect();
        assert_eq!((version, got), (1, lines.to_vec()));
    }

    #[test]
    fn no_records_split_back() {
        let text = join(1, std::iter::empty());
        assert_eq!(split(&text), Some((1, Vec::new())));
        assert!(serde_json::from_slice::<serde_json::Value>(&text).is_ok());
    }

    #[test]
    fn joined_text_is_json() {
        let text = join(1, [&b"{\"a\":1}"[..], b"{\"b\":2}"].into_iter());
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
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
            assert_eq!(split(text.as_bytes()), None, "{text:?}");
        }
    }
}
