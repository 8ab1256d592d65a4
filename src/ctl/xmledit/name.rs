//! XML's rule for element and attribute names (XML 1.0, fifth edition, section 2.3). quick-xml
//! takes anything up to whitespace, `/` or `>` as a name; libvirt's libxml2 refuses the rest,
//! so a document with such a name never comes from libvirt and vgpuctl refuses it as well
//! rather than write a tag no reader takes.

/// Whether `s` is an XML `Name` (prefixed names included: `:` is a name character).
pub(super) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_start) && chars.all(is_char)
}

fn is_start(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_char(c: char) -> bool {
    is_start(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

#[cfg(test)]
mod tests {
    use super::is_name;

    #[test]
    fn names_libvirt_writes_are_names() {
        for n in [
            "domain",
            "vgpu:vgpu",
            "xmlns:vgpu",
            "libosinfo:os",
            "_x",
            "a-b.c1",
            "é",
        ] {
            assert!(is_name(n), "{n}");
        }
    }

    #[test]
    fn a_name_with_a_quote_a_control_character_or_a_leading_digit_is_not() {
        for n in [
            "",
            "v\0s",
            "7f:00.1\"",
            "a\"b",
            "1a",
            "-a",
            "a'b",
            "a=b",
            "cr@eated",
        ] {
            assert!(!is_name(n), "{n:?}");
        }
    }
}
