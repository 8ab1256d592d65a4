//! Golden files: compare a command's output with `tests/golden/NAME`; with `UPDATE_GOLDEN=1` the
//! file is (re)written instead, so an intended change of output is one command and a diff to
//! review.

#![allow(dead_code)]

use std::path::PathBuf;

/// The golden file's path.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Asserts that `actual` equals the golden file `name` (or rewrites it under UPDATE_GOLDEN=1).
pub fn check(name: &str, actual: &str) {
    let p = path(name);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(p.parent().expect("golden dir")).expect("create tests/golden");
        std::fs::write(&p, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it from this output:\n{actual}",
            p.display()
        )
    });
    if expected != actual {
        let mut diff = String::new();
        let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
        for i in 0..e.len().max(a.len()) {
            match (e.get(i), a.get(i)) {
                (Some(x), Some(y)) if x == y => {}
                (x, y) => diff.push_str(&format!(
                    "line {}:\n  golden: {}\n  actual: {}\n",
                    i + 1,
                    x.unwrap_or(&"<none>"),
                    y.unwrap_or(&"<none>")
                )),
            }
        }
        panic!(
            "output differs from {} (UPDATE_GOLDEN=1 rewrites it):\n{diff}",
            p.display()
        );
    }
}
