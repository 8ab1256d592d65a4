//! "Did you mean": names close to a mistyped one.
//!
//! An operator who types `vgpuctl attach wn11` should learn that `win11` exists instead of being
//! left to run `virsh list --all`. Closeness is edit distance (insertions, deletions,
//! substitutions, ignoring case) within a third of the name's length, plus names that contain
//! the typed one or are contained in it.

/// Levenshtein distance between two strings, by characters, ignoring ASCII case.
pub fn distance(a: &str, b: &str) -> usize {
    strsim::levenshtein(&a.to_ascii_lowercase(), &b.to_ascii_lowercase())
}

/// Up to `max` candidates close to `typed`, closest first (ties in the given order).
pub fn close_names<'a>(typed: &str, candidates: &'a [String], max: usize) -> Vec<&'a str> {
    let limit = (typed.chars().count() / 3).max(2);
    let lower = typed.to_ascii_lowercase();
    let mut scored: Vec<(usize, usize, &str)> = candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let d = distance(typed, c);
            let cl = c.to_ascii_lowercase();
            let contains = !lower.is_empty() && (cl.contains(&lower) || lower.contains(&cl));
            (d <= limit || contains).then_some((d, i, c.as_str()))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(max).map(|(_, _, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("win11", "wn11"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("ABC", "abc"), 0);
    }

    #[test]
    fn close_names_are_sorted_by_distance() {
        let c: Vec<String> = ["win10", "ubuntu", "win11", "win11-test"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(close_names("wn11", &c, 5), vec!["win11", "win10"]);
        assert_eq!(
            close_names("win11-", &c, 5),
            vec!["win11", "win10", "win11-test"]
        );
        assert!(close_names("zzzzzz", &c, 5).is_empty());
    }
}
