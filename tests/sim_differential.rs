//! The simulator against the real kernel, errno for errno: `tests/e2e/diff/ops.sh` (one fixed
//! sequence of mdev creates and removes on the mtty sample parent and `sriov_numvfs` writes on an
//! SR-IOV PF) runs here against the simulator configured like the e2e guest, and its transcript
//! must equal the real kernel's, recorded by the e2e tier in `tests/e2e/diff/real.txt`, except
//! for the lines `tests/e2e/diff/expected-differences.txt` lists, each with its reason. The e2e
//! scenario `differential` checks on every run that `real.txt` still is what the kernel does.
//!
//! A listed difference the simulator no longer shows fails the test too: once the simulator
//! follows the kernel on a point, its entry goes.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The e2e guest as the simulator sees it: the kernel's mtty sample parent (the simulator's
/// built-in model: 24 ports shared by mtty-1, one port each, and mtty-2, two ports each) and
/// QEMU's emulated NVMe controller (`-device nvme,sriov_max_vfs=4` behind a root port: PF
/// 0000:01:00.0, VFs from function 1), bound to nvme with two VFs enabled, as the guest's init
/// leaves it.
const GUEST: &str = r#"
[[gpu]]
kind = "mdev"
name = "mtty"

[[gpu]]
kind = "sriov"
address = "0000:01:00.0"
vendor = "0x1b36"
device = "0x0010"
vf_device = "0x0010"
class = "0x010802"
driver = "nvme"
vf_driver = "nvme"
numvfs = 2
totalvfs = 4
vf_offset = 1
vf_stride = 1
"#;
const PARENT: &str = "mtty";
const PF: &str = "0000:01:00.0";

fn diff_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/diff")
}

fn read(name: &str) -> String {
    let p = diff_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A transcript's lines, without its `#` header.
fn body(transcript: &str) -> Vec<&str> {
    transcript.lines().filter(|l| !l.starts_with('#')).collect()
}

/// One allowed difference: the real kernel's line, the simulator's line instead, and why.
#[derive(Debug)]
struct Expected {
    real: String,
    sim: String,
    why: String,
}

/// Parses `expected-differences.txt`: entries of one or more `real:` / `sim:` line pairs
/// followed by a `why:` line (the reason, shared by the pairs above it), which indented lines
/// continue. Blank lines and `#` lines are comments.
fn parse_expected(text: &str) -> Result<Vec<Expected>, String> {
    let mut done = Vec::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut real: Option<String> = None;
    let mut why = String::new();
    let finish = |pairs: &mut Vec<(String, String)>, why: &mut String, done: &mut Vec<Expected>| {
        for (real, sim) in pairs.drain(..) {
            done.push(Expected {
                real,
                sim,
                why: why.clone(),
            });
        }
        why.clear();
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if why.is_empty() {
                return Err(format!(
                    "line {n}: an indented line continues only a `why:`"
                ));
            }
            why.push(' ');
            why.push_str(line.trim());
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("line {n}: expected `real:`, `sim:` or `why:`"))?;
        let value = value.trim_start().to_string();
        match key {
            "real" => {
                if !why.is_empty() {
                    finish(&mut pairs, &mut why, &mut done);
                }
                if real.is_some() {
                    return Err(format!(
                        "line {n}: `real:` without the `sim:` line of the one above"
                    ));
                }
                real = Some(value);
            }
            "sim" => {
                let r = real
                    .take()
                    .ok_or_else(|| format!("line {n}: `sim:` without a `real:` line above"))?;
                pairs.push((r, value));
            }
            "why" => {
                if pairs.is_empty() || real.is_some() {
                    return Err(format!(
                        "line {n}: `why:` must follow `real:` / `sim:` pairs"
                    ));
                }
                if !why.is_empty() {
                    why.push(' ');
                }
                why.push_str(&value);
            }
            _ => return Err(format!("line {n}: unknown key `{key}`")),
        }
    }
    if real.is_some() || (!pairs.is_empty() && why.is_empty()) {
        return Err("the last entry has no `why:` (every difference needs its reason)".into());
    }
    finish(&mut pairs, &mut why, &mut done);
    Ok(done)
}

/// Compares the simulator's transcript with the real one: every differing line must be listed
/// (same real line, same simulator line) and every listed difference must still occur.
fn compare(real: &[&str], sim: &[&str], expected: &[Expected]) -> Result<(), String> {
    if real.len() != sim.len() {
        return Err(format!(
            "the transcripts have {} (real) and {} (simulator) lines: the script did not run \
             the same steps",
            real.len(),
            sim.len()
        ));
    }
    let mut used = vec![false; expected.len()];
    let mut report = String::new();
    for (i, (r, s)) in real.iter().zip(sim).enumerate() {
        if r == s {
            continue;
        }
        match expected.iter().position(|e| e.real == *r && e.sim == *s) {
            Some(k) => used[k] = true,
            None => report.push_str(&format!(
                "unexpected difference (line {} of the transcript):\n  real: {r}\n  sim:  {s}\n",
                i + 1
            )),
        }
    }
    for (e, used) in expected.iter().zip(used) {
        if !used {
            report.push_str(&format!(
                "listed difference that no longer occurs (remove it from \
                 expected-differences.txt):\n  real: {}\n  sim:  {}\n  why:  {}\n",
                e.real, e.sim, e.why
            ));
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

#[test]
fn every_listed_difference_names_a_line_of_the_real_transcript_and_has_a_reason() {
    let real = read("real.txt");
    let real = body(&real);
    let expected = parse_expected(&read("expected-differences.txt"))
        .unwrap_or_else(|e| panic!("expected-differences.txt: {e}"));
    for e in &expected {
        assert!(
            real.contains(&e.real.as_str()),
            "expected-differences.txt names a line real.txt does not have: {}",
            e.real
        );
        assert_ne!(
            e.real, e.sim,
            "a listed difference that is none: {}",
            e.real
        );
        assert!(!e.why.is_empty(), "no reason for: {}", e.real);
    }
}

#[test]
fn the_simulator_answers_the_differential_script_like_the_real_kernel() {
    let Some(sim) = common::sim::Sim::start(GUEST) else {
        return;
    };
    let out = Command::new("sh")
        .arg(diff_dir().join("ops.sh"))
        .arg(sim.root())
        .args([PARENT, PF])
        .output()
        .expect("run sh tests/e2e/diff/ops.sh");
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ops.sh failed ({}): {}\n{transcript}\nsimulator: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        sim.log()
    );
    // kept for a look, or for writing expected-differences.txt after a change on either side
    let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sim-differential.txt");
    std::fs::write(&kept, &transcript).expect("keep the simulator's transcript");

    let real = read("real.txt");
    let expected = parse_expected(&read("expected-differences.txt"))
        .unwrap_or_else(|e| panic!("expected-differences.txt: {e}"));
    if let Err(report) = compare(&body(&real), &body(&transcript), &expected) {
        panic!(
            "the simulator differs from the real kernel (tests/e2e/diff/real.txt) other than \
             tests/e2e/diff/expected-differences.txt allows; its transcript: {}\n{report}",
            kept.display()
        );
    }
}

#[test]
fn a_difference_is_allowed_only_as_listed_and_only_while_it_occurs() {
    let expected = parse_expected(
        "# comment\n\nreal: 01 a -> ok\nsim:  01 a -> EIO\nreal: 02 b\nsim:  02 c\n\
         why:  one reason\n      for both\n",
    )
    .expect("a well-formed list");
    assert_eq!(expected.len(), 2);
    assert_eq!(expected[1].why, "one reason for both");
    let real = ["01 a -> ok", "02 b", "03 same"];
    assert_eq!(
        compare(&real, &["01 a -> EIO", "02 c", "03 same"], &expected),
        Ok(())
    );
    let err = compare(&real, &["01 a -> EINVAL", "02 c", "03 same"], &expected).unwrap_err();
    assert!(err.contains("unexpected difference (line 1"), "{err}");
    assert!(err.contains("no longer occurs"), "{err}");
    let err = compare(&real, &["01 a -> ok", "02 c", "03 same"], &expected).unwrap_err();
    assert!(err.contains("no longer occurs"), "{err}");
    assert!(compare(&real, &["01 a -> EIO"], &expected).is_err());
    assert!(
        parse_expected("real: x\nsim: y\n").is_err(),
        "a reason is required"
    );
    assert!(parse_expected("sim: y\nwhy: z\n").is_err());
    assert!(parse_expected("  z\n").is_err());
}
