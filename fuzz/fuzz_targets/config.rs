//! The operator's config: `Config::parse` never panics, whatever the file holds.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vgpu_hook::model::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, Path::new("config.toml"));
    }
});
