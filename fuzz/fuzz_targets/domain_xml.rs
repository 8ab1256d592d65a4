//! The hook's reading of a domain definition: `Domain::parse` never panics on any input, and the
//! fast path (`mentions_namespace`, a byte search done before any parse) never skips a document
//! in which the full parse finds our metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgpu_hook::model::domain::{mentions_namespace, Domain};

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = Domain::parse(xml) {
        if d.has_metadata || !d.requests.is_empty() {
            assert!(
                mentions_namespace(data),
                "the fast path would skip a domain whose metadata the full parse acts on: {d:?}"
            );
        }
    }
});
