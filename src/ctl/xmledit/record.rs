//! What an attach made, kept in the document it made it in, so that the detach which takes the
//! last device out undoes exactly that and nothing the operator wrote.
//!
//! Whether a container was there before cannot be read off the document afterwards: an empty
//! `<devices>` the operator wrote can look exactly like one an attach creates, and one the
//! operator wrote as `<devices/>` exactly like one an attach expanded. So the attach says so, in
//! a `created` attribute on our own `vgpu:vgpu` element (which the hook reads no attributes of,
//! and libvirt keeps as written): a space-separated list of local names, `NAME` for an element
//! the attach added (`vgpu`, `metadata`, `devices`, `channel` for the guest agent's channel) and
//! `NAME/` for one it found self-closing and opened (`domain/`, `metadata/`, `devices/`,
//! `vgpu/`). The detach that empties our element reads it and removes what was added, closes
//! again what was opened, and takes the attribute out of a `vgpu:vgpu` it keeps.

use std::ops::Range;

/// The attribute of our `vgpu:vgpu` element that holds the record.
pub(super) const ATTR: &str = "created";

/// The record: the tokens in the order they were added, each once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Record {
    tokens: Vec<String>,
}

impl Record {
    /// The record an attribute value holds (unknown tokens are kept, so a newer writer's survive).
    pub(super) fn parse(value: &str) -> Record {
        let mut r = Record::default();
        for t in value.split_ascii_whitespace() {
            r.add(t);
        }
        r
    }

    pub(super) fn add(&mut self, token: &str) {
        if !self.tokens.iter().any(|t| t == token) {
            self.tokens.push(token.to_string());
        }
    }

    /// Adds `other`'s tokens after this one's.
    pub(super) fn merge(&mut self, other: &Record) {
        for t in &other.tokens {
            self.add(t);
        }
    }

    pub(super) fn remove(&mut self, token: &str) {
        self.tokens.retain(|t| t != token);
    }

    /// `local` was added by an attach.
    pub(super) fn created(&self, local: &str) -> bool {
        self.tokens.iter().any(|t| t == local)
    }

    /// `local` was self-closing (`<x/>`) until an attach opened it.
    pub(super) fn opened(&self, local: &str) -> bool {
        self.tokens
            .iter()
            .any(|t| t.strip_suffix('/') == Some(local))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The attribute as it is written into a start tag, leading space included.
    pub(super) fn attribute(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        // Tokens are read unescaped: one another writer put there may hold `&` or `'`.
        let tokens: Vec<_> = self
            .tokens
            .iter()
            .map(|t| quick_xml::escape::escape(t.as_str()))
            .collect();
        format!(" {ATTR}='{}'", tokens.join(" "))
    }
}

/// A start tag (`<x a='1'>`, `<x a='1' />`) without its closing `>` or `/>`.
pub(super) fn open_part(tag: &str) -> &str {
    tag.strip_suffix("/>")
        .or_else(|| tag.strip_suffix('>'))
        .unwrap_or(tag)
}

/// A start tag's opening part with the record set to `record`: the old attribute (and the space
/// before it) taken out, the new one, when there is one, put after the last attribute, so that
/// taking it out again gives back the tag as it was.
pub(super) fn retag(tag: &str, record: &Record) -> String {
    let open = open_part(tag);
    let (kept, at) = match attribute_span(open, ATTR) {
        Some(span) => (
            format!("{}{}", &open[..span.start], &open[span.end..]),
            span.start,
        ),
        None => {
            let end = open.trim_end().len();
            (open.to_string(), end)
        }
    };
    format!("{}{}{}", &kept[..at], record.attribute(), &kept[at..])
}

/// Where attribute `name` is in a start tag's opening part, from the whitespace before it to
/// its closing quote. Tags come from a document quick-xml has already read, so they are
/// well-formed.
fn attribute_span(open: &str, name: &str) -> Option<Range<usize>> {
    let b = open.as_bytes();
    let mut i = open.find(|c: char| c.is_ascii_whitespace())?;
    while i < b.len() {
        let ws = i;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key_end = i;
        while i < b.len() && b[i] != b'\'' && b[i] != b'"' {
            i += 1;
        }
        let quote = *b.get(i)?;
        let close = i + 1 + open[i + 1..].find(quote as char)?;
        i = close + 1;
        if &open[key..key_end] == name {
            return Some(ws..i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &str) -> Record {
        Record::parse(s)
    }

    #[test]
    fn a_token_another_writer_left_is_written_back_escaped() {
        assert_eq!(
            rec("vgpu a&b'c").attribute(),
            " created='vgpu a&amp;b&apos;c'"
        );
    }

    #[test]
    fn a_record_names_what_was_created_and_what_was_opened() {
        let r = rec("vgpu devices/ metadata");
        assert!(r.created("vgpu") && r.created("metadata") && !r.created("devices"));
        assert!(r.opened("devices") && !r.opened("metadata"));
        assert_eq!(r.attribute(), " created='vgpu devices/ metadata'");
    }

    #[test]
    fn tokens_are_kept_once_in_the_order_they_came() {
        let mut r = rec("devices");
        r.add("vgpu");
        r.add("devices");
        assert_eq!(r, rec("devices vgpu"));
    }

    #[test]
    fn retag_adds_the_record_after_the_last_attribute_and_takes_it_out_again() {
        let r = rec("vgpu");
        for tag in ["<v:vgpu xmlns:v='u'>", "<v:vgpu xmlns:v=\"u\" />", "<vgpu>"] {
            let with = retag(tag, &r);
            assert!(with.contains(" created='vgpu'"), "{with}");
            let back = retag(&format!("{with}>"), &Record::default());
            assert_eq!(back, open_part(tag), "{tag}");
        }
    }

    #[test]
    fn retag_replaces_a_record_written_with_either_quote() {
        let r = rec("vgpu devices");
        let tag = "<vgpu:vgpu a='x' created=\"vgpu\" b='y'>";
        assert_eq!(
            retag(tag, &r),
            "<vgpu:vgpu a='x' created='vgpu devices' b='y'"
        );
    }

    #[test]
    fn an_attribute_whose_value_mentions_the_name_is_not_the_record() {
        let tag = "<vgpu:vgpu note='created=no'>";
        assert_eq!(attribute_span(open_part(tag), ATTR), None);
    }
}
