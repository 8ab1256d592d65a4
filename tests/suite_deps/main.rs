//! The suite's own dependencies: every program and host file that the suite's host-side scripts
//! and Rust tests use comes from a package a new machine has (`tests/deps/new-machine.txt`) or one
//! the suite installs (`tests/deps/packages.txt`, which `tests/run-all.sh` and `tests/e2e/run.sh`
//! install from), by way of the map in `tests/deps/provides.txt`. A tier that passed only where
//! something had been installed by hand fails here in seconds, not twenty minutes into a run on a
//! new machine. What runs inside the end-to-end guest or the guest-agent initramfs is not checked
//! here: those roots are built from scratch on every machine, from lists in their own scripts.

mod shell;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the programs and files the suite uses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Provider {
    /// A Debian package.
    Package(String),
    /// `cargo install`ed by the suite.
    Cargo(String),
    /// rustup's toolchain, on every machine of this kind.
    Toolchain,
    /// Created by the suite itself before it is used.
    Suite,
    /// The machine's own set-up, not a package's file (its apt sources).
    Machine,
    /// Used only where present (behind `command -v`).
    Optional,
}

/// The three lists under `tests/deps/`.
struct Deps {
    new_machine: BTreeSet<String>,
    /// Tier -> what the suite installs for it (`cargo-*` tiers list crates).
    installs: BTreeMap<String, Vec<String>>,
    /// Program name or absolute path (`*` globs) -> its provider.
    provides: Vec<(String, Provider)>,
}

/// A use the lists do not account for.
#[derive(Debug, PartialEq, Eq)]
enum Gap {
    /// Nothing in provides.txt names it.
    Unmapped { at: String, what: String },
    /// Its package is neither on a new machine nor installed by the suite.
    NotInstalled { what: String, package: String },
    /// Its cargo tool is not installed by the suite.
    NotCargoInstalled { what: String, krate: String },
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gap::Unmapped { at, what } => write!(
                f,
                "{at} uses `{what}`, which tests/deps/provides.txt does not account for: add \
                 `{what} <debian-package>` there (and the package to tests/deps/packages.txt \
                 unless a new machine has it)"
            ),
            Gap::NotInstalled { what, package } => write!(
                f,
                "`{what}` comes from the Debian package {package}, which a new machine lacks \
                 (tests/deps/new-machine.txt) and the suite does not install: add it to a tier \
                 of tests/deps/packages.txt"
            ),
            Gap::NotCargoInstalled { what, krate } => write!(
                f,
                "`{what}` comes from the crate {krate}, which the suite does not cargo-install: \
                 add it to a `cargo-*:` line of tests/deps/packages.txt"
            ),
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The lines of a list without comments and blank lines.
fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
}

impl Provider {
    fn parse(s: &str) -> Provider {
        match s.split_once(':') {
            Some(("cargo", krate)) => Provider::Cargo(krate.to_string()),
            _ => match s {
                "toolchain" => Provider::Toolchain,
                "suite" => Provider::Suite,
                "machine" => Provider::Machine,
                "optional" => Provider::Optional,
                pkg => Provider::Package(pkg.to_string()),
            },
        }
    }
}

impl Deps {
    fn committed() -> Deps {
        Deps::parse(
            &read("tests/deps/new-machine.txt"),
            &read("tests/deps/packages.txt"),
            &read("tests/deps/provides.txt"),
        )
    }

    fn parse(new_machine: &str, packages: &str, provides: &str) -> Deps {
        let mut installs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in entries(packages) {
            let (tier, list) = l.split_once(':').expect("packages.txt: `tier: package...`");
            let words = list.split_whitespace().map(str::to_string);
            installs
                .entry(tier.trim().to_string())
                .or_default()
                .extend(words);
        }
        let provides = entries(provides)
            .map(|l| {
                let mut w = l.split_whitespace();
                let (Some(what), Some(by), None) = (w.next(), w.next(), w.next()) else {
                    panic!("provides.txt: `{l}` is not `<program or /path> <provider>`");
                };
                (what.to_string(), Provider::parse(by))
            })
            .collect();
        Deps {
            new_machine: entries(new_machine).map(str::to_string).collect(),
            installs,
            provides,
        }
    }

    fn installed_by_suite(&self, package: &str) -> bool {
        self.installs
            .iter()
            .any(|(tier, list)| !tier.starts_with("cargo") && list.iter().any(|p| p == package))
    }

    fn cargo_installed(&self, krate: &str) -> bool {
        self.installs
            .iter()
            .any(|(tier, list)| tier.starts_with("cargo") && list.iter().any(|c| c == krate))
    }

    fn provider(&self, what: &str) -> Option<&Provider> {
        self.provides
            .iter()
            .find(|(pat, _)| glob(pat, what) || (what.contains('*') && pat == what))
            .map(|(_, p)| p)
    }

    /// What is wrong with one use, if anything.
    fn gap(&self, at: &str, what: &str) -> Option<Gap> {
        let Some(by) = self.provider(what) else {
            return Some(Gap::Unmapped {
                at: at.to_string(),
                what: what.to_string(),
            });
        };
        match by {
            Provider::Package(p)
                if !self.new_machine.contains(p) && !self.installed_by_suite(p) =>
            {
                Some(Gap::NotInstalled {
                    what: what.to_string(),
                    package: p.clone(),
                })
            }
            Provider::Cargo(c) if !self.cargo_installed(c) => Some(Gap::NotCargoInstalled {
                what: what.to_string(),
                krate: c.clone(),
            }),
            _ => None,
        }
    }

    fn gaps(&self, uses: &[Found]) -> Vec<Gap> {
        let mut seen = BTreeSet::new();
        uses.iter()
            .filter(|u| seen.insert(u.what.as_str()))
            .filter_map(|u| self.gap(&u.at, &u.what))
            .collect()
    }
}

/// `*` matches any run of characters, the rest matches itself.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

/// One program or host file the suite uses, and where.
#[derive(Debug)]
struct Found {
    at: String,
    what: String,
}

/// Scripts the suite runs on the host: every shell script under these directories except the
/// ones that run elsewhere (in a guest, or in an operator's rpm transaction).
const SCRIPT_DIRS: &[&str] = &[".ci", "tests", "packaging", "benches"];
const RUNS_ELSEWHERE: &[&str] = &[
    "tests/e2e/guest/",             // in the e2e guest, from its own package list
    "tests/e2e/work/",              // the e2e tier's cache
    "tests/guest-agent/init",       // in the guest-agent initramfs (busybox)
    "tests/guest-agent/nvidia-smi", // ditto: the stand-in
    "tests/guest-agent/systemctl",  // ditto: the stand-in
    "packaging/rpm/",               // rpm's scriptlets on an operator's host
    "packaging/debian/",            // dpkg's maintainer scripts, ditto (and in the e2e guest)
];
/// Host paths that are no package's: the kernel's, the run's own, or made up for a test.
const NOT_FILES: &[&str] = &[
    "/dev/",
    "/proc/",
    "/sys/",
    "/tmp/",
    "/run/",
    "/var/run/",
    "/nonexistent",
];
/// Where packages put files; a Rust string starting with `/` elsewhere is a path's tail
/// (`"/remove"` joined to a device directory), not a host file.
const PACKAGE_ROOTS: &[&str] = &["/bin", "/sbin", "/lib", "/usr", "/etc", "/var", "/opt"];

/// The files below `dir`, not following symbolic links and not descending into what runs
/// elsewhere (the e2e work directory holds whole guest root file systems).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let elsewhere = || {
            let r = format!("{}/", rel(&p));
            RUNS_ELSEWHERE.iter().any(|x| r.starts_with(x))
        };
        match e.file_type() {
            Ok(t) if t.is_dir() && !elsewhere() => walk(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo())
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn host_files(pick: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for d in SCRIPT_DIRS.iter().chain(&["sim"]) {
        walk(&repo().join(d), &mut files);
    }
    let mut out: Vec<(String, String)> = files
        .iter()
        .map(|p| (rel(p), p))
        .filter(|(r, _)| !RUNS_ELSEWHERE.iter().any(|x| r.starts_with(x)))
        .filter(|(r, _)| !r.contains("/target/") && !r.starts_with("tests/suite_deps/"))
        .filter_map(|(r, p)| Some((r, std::fs::read_to_string(p).ok()?)))
        .filter(|(r, text)| pick(r, text))
        .collect();
    out.sort();
    out
}

fn is_shell_script(rel: &str, text: &str) -> bool {
    !rel.starts_with("sim/")
        && (rel.ends_with(".sh")
            || text.starts_with("#!/bin/sh")
            || text.starts_with("#!/usr/bin/env bash")
            || text.starts_with("#!/bin/bash"))
}

fn is_host_file(path: &str) -> bool {
    !NOT_FILES
        .iter()
        .any(|p| path.starts_with(p) || format!("{path}/") == *p)
}

/// Every program and absolute host path the host-side shell scripts use.
fn script_uses() -> Vec<Found> {
    let scripts = host_files(is_shell_script);
    let mut out = Vec::new();
    for (rel, text) in &scripts {
        let (programs, paths) = shell::uses(text, &library(text, &scripts));
        let paths = paths.into_iter().filter(|u| is_host_file(&u.what));
        for u in programs.into_iter().chain(paths) {
            out.push(Found {
                at: format!("{rel}:{}", u.line),
                what: u.what,
            });
        }
    }
    out
}

/// The functions of the suite's scripts that `text` sources (`source "$REPO/tests/deps/lib.sh"`
/// names tests/deps/lib.sh: the part after the last expansion or `..` is matched).
fn library(text: &str, scripts: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for file in shell::sourced(text) {
        let tail = file.rsplit(['$']).next().unwrap_or(&file);
        let tail = tail
            .rsplit("../")
            .next()
            .unwrap_or(tail)
            .trim_start_matches('/');
        if let Some((_, lib)) = scripts
            .iter()
            .find(|(r, _)| !tail.is_empty() && r.ends_with(tail))
        {
            out.extend(shell::functions(lib));
        }
    }
    out
}

/// Programs the Rust tests start (`Command::new("x")`, and the command of `timeout N x`) and
/// absolute host paths they name in string literals.
fn rust_uses() -> Vec<Found> {
    let mut out = Vec::new();
    for (rel, text) in host_files(|r, _| r.ends_with(".rs")) {
        for (line, what) in rust_programs(&text).into_iter().chain(rust_paths(&text)) {
            out.push(Found {
                at: format!("{rel}:{line}"),
                what,
            });
        }
    }
    out
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

fn rust_programs(text: &str) -> Vec<(usize, String)> {
    const NEW: &str = "Command::new(\"";
    let mut out = Vec::new();
    for (at, _) in text.match_indices(NEW) {
        let rest = &text[at + NEW.len()..];
        let name = &rest[..rest.find('"').unwrap_or(0)];
        let wrapped = (name == "timeout").then(|| {
            rest.split(".arg(\"")
                .skip(1)
                .take(4)
                .map(|a| &a[..a.find('"').unwrap_or(0)])
                .find(|a| !a.starts_with('-') && !a.bytes().all(|b| b.is_ascii_digit()))
        });
        out.push((line_of(text, at), name.to_string()));
        if let Some(Some(inner)) = wrapped {
            out.push((line_of(text, at), inner.to_string()));
        }
    }
    out
}

fn rust_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("\"/") {
        let rest = &text[at + 1..];
        let path = &rest[..rest.find('"').unwrap_or(0)];
        let plain = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b));
        let root = PACKAGE_ROOTS.iter().any(|r| {
            path.strip_prefix(r)
                .is_some_and(|t| t.is_empty() || t.starts_with('/'))
        });
        if plain && root && is_host_file(path) && !path.contains("//") {
            out.push((line_of(text, at), path.to_string()));
        }
    }
    out
}

fn assert_no_gaps(uses: &[Found]) {
    let gaps = Deps::committed().gaps(uses);
    let lines: Vec<String> = gaps.iter().map(ToString::to_string).collect();
    assert!(gaps.is_empty(), "{}", lines.join("\n"));
}

#[test]
fn every_program_and_file_the_host_scripts_use_is_on_a_new_machine_or_installed() {
    let uses = script_uses();
    assert!(uses.len() > 100, "found only {} uses", uses.len());
    assert_no_gaps(&uses);
}

#[test]
fn every_program_and_file_the_rust_tests_use_is_on_a_new_machine_or_installed() {
    let uses = rust_uses();
    assert!(uses.iter().any(|u| u.what == "strace"), "{uses:?}");
    assert_no_gaps(&uses);
}

/// The gaps of the host scripts were `dropped` not in the install lists.
fn gaps_without(dropped: &str) -> Vec<Gap> {
    let packages = read("tests/deps/packages.txt").replace(dropped, "");
    let deps = Deps::parse(
        &read("tests/deps/new-machine.txt"),
        &packages,
        &read("tests/deps/provides.txt"),
    );
    deps.gaps(&script_uses())
}

#[test]
fn a_package_dropped_from_the_install_list_is_reported() {
    let gaps = gaps_without("busybox-static");
    assert!(
        gaps.contains(&Gap::NotInstalled {
            what: "/usr/bin/busybox".into(),
            package: "busybox-static".into()
        }),
        "{gaps:?}"
    );
}

#[test]
fn a_cargo_tool_dropped_from_the_install_list_is_reported() {
    let gaps = gaps_without(" cargo-deb");
    assert!(
        gaps.iter()
            .any(|g| matches!(g, Gap::NotCargoInstalled { krate, .. } if krate == "cargo-deb")),
        "{gaps:?}"
    );
}

#[test]
fn a_program_nothing_provides_is_reported_with_where_it_is_used() {
    let deps = Deps::committed();
    let gap = deps.gap("tests/x.sh:3", "frobnicate");
    assert_eq!(
        gap,
        Some(Gap::Unmapped {
            at: "tests/x.sh:3".into(),
            what: "frobnicate".into()
        })
    );
}

/// The install lists the scripts run are the committed ones: nothing installs by a list of its
/// own that this check would not see.
#[test]
fn the_scripts_install_from_the_lists() {
    for script in ["tests/run-all.sh", "tests/e2e/run.sh"] {
        let text = read(script);
        assert!(text.contains("tests/deps/packages.txt"), "{script}");
        for l in text.lines().filter(|l| l.contains("apt-get install")) {
            assert!(
                !l.contains(" lintian") && !l.contains("mmdebstrap"),
                "{script}: {l}"
            );
        }
    }
}

/// Each Debian package the map names owns the program on this machine, where it is installed
/// (directly, or through a package it depends on, as `cc` comes from gcc through gcc-12).
#[test]
fn the_map_agrees_with_dpkg_where_the_program_is_installed() {
    let deps = Deps::committed();
    let mut checked = 0;
    for (what, by) in &deps.provides {
        let Provider::Package(pkg) = by else { continue };
        let Some(owner) = owner(what) else { continue };
        let depends = dpkg_query(&["-W", "-f=${Depends} ${Pre-Depends}", pkg]);
        let via: BTreeSet<&str> = depends
            .split([',', '|', ' '])
            .map(|d| d.split(':').next().unwrap_or(""))
            .collect();
        assert!(
            owner == *pkg || via.contains(owner.as_str()) || alternatives(what).contains(pkg),
            "tests/deps/provides.txt says {what} comes from {pkg}, dpkg says {owner}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} entries could be checked");
}

/// The packages offering a program through Debian's alternatives (`awk`: mawk and gawk, once
/// gawk is installed and takes the link), none when it is not one.
fn alternatives(what: &str) -> Vec<String> {
    let o = Command::new("update-alternatives")
        .args(["--list", what])
        .output();
    let list = o.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    list.unwrap_or_default()
        .lines()
        .filter_map(|path| {
            let out = dpkg_query(&["-S", path]);
            let pkg = out.lines().next()?.split(':').next()?.trim().to_string();
            Some(pkg)
        })
        .collect()
}

fn dpkg_query(args: &[&str]) -> String {
    let o = Command::new("dpkg-query").args(args).output();
    o.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The package owning a program (found on PATH's usual directories) or an absolute file.
fn owner(what: &str) -> Option<String> {
    if what.contains('*') {
        return None;
    }
    let found = if what.starts_with('/') {
        Some(PathBuf::from(what)).filter(|p| p.exists())
    } else {
        ["/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(what))
            .find(|p| p.exists())
    }?;
    let real = std::fs::canonicalize(&found).ok()?;
    let mut candidates = vec![found.clone(), real.clone()];
    for p in [&found, &real] {
        let s = p.to_string_lossy();
        if let Some(rest) = s.strip_prefix("/usr") {
            candidates.push(PathBuf::from(rest));
        } else {
            candidates.push(PathBuf::from(format!("/usr{s}")));
        }
    }
    candidates.iter().find_map(|c| {
        let out = dpkg_query(&["-S", &c.to_string_lossy()]);
        let line = out.lines().find(|l| !l.starts_with("diversion"))?;
        let pkg = line.split(':').next()?.split(',').next()?.trim();
        Some(pkg.to_string())
    })
}

#[test]
fn the_lexer_finds_programs_in_every_command_position() {
    let script = r#"
set -eu
f() { helper "$@"; }
die() { echo "$*" >&2; exit 1; }
logged() { local log=$1; shift; "$@" >"$log"; }
X=1 apt-get install -y a b  # a comment naming notacommand
if ! grep -q x y; then mmdebstrap a; fi
v=$(dpkg-query -W "$(uname -r)") || die 'sed quoted'
for p in $pkgs one two; do lintian "$p" | tail -n 2 && tar -x; done
case $t in domain_xml | other) dict=(-d) ;; *) gzip -9 ;; esac
timeout -k 10 30 qemu-system-x86_64 -m 1 </dev/null 2>/dev/null
logged log.txt make -C x
cat > out <<'EOF'
inheredoc --not-run
EOF
exec 9>"$OUT/.lock"
flock 9
"$STAGE/vgpuctl" man
packaging/build.sh
"#;
    let (programs, _) = shell::uses(script, &[]);
    let names: Vec<&str> = programs.iter().map(|u| u.what.as_str()).collect();
    assert_eq!(
        names,
        [
            "helper",
            "apt-get",
            "grep",
            "mmdebstrap",
            "lintian",
            "tail",
            "tar",
            "gzip",
            "timeout",
            "qemu-system-x86_64",
            "make",
            "cat",
            "flock",
            "uname",
            "dpkg-query",
        ]
    );
}

#[test]
fn the_lexer_finds_absolute_paths_outside_single_quotes() {
    let script = r#"
cp /usr/bin/busybox bin/
tar -xJf "/usr/src/linux-source-$K.tar.xz" -C x
A=/etc/os-release; sed 's|/usr/bin/vgpuctl|x|' f
"#;
    let (_, paths) = shell::uses(script, &[]);
    let names: Vec<&str> = paths.iter().map(|u| u.what.as_str()).collect();
    assert_eq!(
        names,
        [
            "/usr/bin/busybox",
            "/usr/src/linux-source-*.tar.xz",
            "/etc/os-release"
        ]
    );
}
