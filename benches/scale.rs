//! What a host's size costs: system calls and instructions of one `prepare`, one `release` and
//! one `vgpuctl types` on simulated hosts of 1, 8, 64 and 256 mdev parents, printed beside the
//! figures measured before the work that made them cheaper.
//!
//! Each parent offers 20 types of 8 instances; half of the parents already hold a vGPU of
//! another domain (made by the hook, so they are in its state as on a real host). 256 parents is
//! an 8-GPU board of 32 VFs each (NVIDIA's SR-IOV boards before kernel 6.8 make every VF an
//! mdev parent). The measured domain asks for one vGPU by profile name, the last type of each
//! parent, so the hook has to look at every parent. The fast path (a domain without our
//! metadata) is measured on the largest host.
//!
//! Both figures are independent of how loaded the machine is: system calls are counted by
//! `strace -f -c` (failing ones apart: three quarters of `types`' were lookups of files that are
//! not there), instructions by valgrind's callgrind. The simulator serves sysfs from another
//! process, so neither its work nor the kernel's is in the figures. Needs FUSE, strace and
//! valgrind; says which is missing and measures nothing without them.
//!
//! Budgets at 256 parents: prepare <= 2,000 system calls and <= 4M instructions; release the
//! same whether other domains hold 128 vGPUs or none (within 10%; what grows with the host's
//! size alone, the config listing 256 parents, is printed beside it); `vgpuctl types` <= 20,000
//! system calls; the fast path as before (within 10%).
//!
//! Run: `cargo bench --bench scale` (with `SCALE_PROFILE_DIR=DIR`, callgrind's profiles are kept
//! there for `callgrind_annotate`; with `SCALE_SIZES=256`, only that size is measured).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::hook::{domain, mdev_domain, TestHost, FAST_TIMING};
use common::sim::Sim;

/// Host sizes, in mdev parents.
const SIZES: [usize; 4] = [1, 8, 64, 256];
const TYPES: usize = 20;

/// Measured with this benchmark before sysfs reads were made cheaper (commit 5151252, the same
/// machine kind; instructions of the hook's own process, not of the child it forks to write): per size, prepare's system calls and instructions, release's instructions,
/// `types`' instructions and system calls.
struct Before {
    prepare_calls: u64,
    prepare_instr: u64,
    release_instr: u64,
    types_instr: u64,
    types_calls: u64,
}

const BEFORE: [Before; 4] = [
    Before {
        prepare_calls: 293,
        prepare_instr: 720_000,
        release_instr: 690_000,
        types_instr: 35_000_000,
        types_calls: 947,
    },
    Before {
        prepare_calls: 418,
        prepare_instr: 970_000,
        release_instr: 810_000,
        types_instr: 38_000_000,
        types_calls: 3_144,
    },
    Before {
        prepare_calls: 1_486,
        prepare_instr: 3_240_000,
        release_instr: 1_930_000,
        types_instr: 86_000_000,
        types_calls: 45_487,
    },
    Before {
        prepare_calls: 5_134,
        prepare_instr: 12_000_000,
        release_instr: 6_200_000,
        types_instr: 513_000_000,
        types_calls: 523_983,
    },
];
const BEFORE_FAST_PATH_INSTR: u64 = 370_000;

/// One run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    calls: u64,
    failing: u64,
    instr: u64,
}

fn main() {
    if let Some(missing) = missing_tools() {
        println!("scale benchmark not run: {missing} not installed");
        return;
    }
    let mut rows = Vec::new();
    for (i, &n) in SIZES.iter().enumerate().filter(|(_, n)| wanted(**n)) {
        let Some(sim) = Sim::start(&host_toml(n)) else {
            println!("scale benchmark not run: the FUSE simulator is unavailable (reason above)");
            return;
        };
        let host = TestHost::on_tmpfs(sim.root(), &config(n));
        let held = hold_half(&host, n);
        let mut row = measure(&host, n == 256);
        if n == 256 {
            free(&host, &held);
            row[4] = release_alone(&host);
        }
        rows.push((n, &BEFORE[i], row));
    }
    report(&rows);
}

/// Whether size `n` is measured: all of them, or those `SCALE_SIZES` lists (comma-separated,
/// for a quicker look at one size while working on it).
fn wanted(n: usize) -> bool {
    std::env::var("SCALE_SIZES").map_or(true, |list| {
        list.split(',').any(|s| s.trim().parse() == Ok(n))
    })
}

fn missing_tools() -> Option<&'static str> {
    ["strace", "valgrind"].into_iter().find(|t| {
        !Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn host_toml(parents: usize) -> String {
    let types: Vec<String> = (0..TYPES)
        .map(|t| format!("{{ id = \"vgpu-{t}\", name = \"Type {t}\", max_instances = 8 }}"))
        .collect();
    (0..parents)
        .map(|p| {
            format!(
                "[[gpu]]\nkind = \"mdev\"\nname = \"par{p}\"\ntypes = [{}]\n",
                types.join(", ")
            )
        })
        .collect()
}

fn config(parents: usize) -> String {
    let names: Vec<String> = (0..parents).map(|p| format!("\"par{p}\"")).collect();
    format!("mdev_parents = [{}]\n{FAST_TIMING}", names.join(", "))
}

/// Half of the parents (every other one) get a vGPU of another domain; returns those domains.
fn hold_half(host: &TestHost, parents: usize) -> Vec<common::hook::DomainXml> {
    let mut held = Vec::new();
    for p in (0..parents).step_by(2) {
        let attrs = format!("type=\"vgpu-0\" parent=\"par{p}\"");
        let xml = mdev_domain(&format!("held{p}"), &[(1000 + p as u32, &attrs)]);
        let out = host.prepare(&xml);
        assert!(out.status.success(), "{}", common::hook::stderr(&out));
        held.push(xml);
    }
    held
}

/// The other domains stop.
fn free(host: &TestHost, held: &[common::hook::DomainXml]) {
    for xml in held {
        let out = host.release(xml);
        assert!(out.status.success(), "{}", common::hook::stderr(&out));
    }
}

/// The measured domain's release on a host where no other domain holds anything (its prepare
/// run first, unmeasured).
fn release_alone(host: &TestHost) -> Cost {
    let xml = mdev_domain("measured", &[(1, "profile=\"Type 19\"")]);
    let hook = host.hook_as("50-vgpu-hook");
    both(|w| {
        assert!(host.prepare(&xml).status.success());
        run_under(
            host,
            w,
            &hook,
            &[&xml.name, "release", "end", "-"],
            &xml.text,
        )
    })
}

/// The figures of one host: prepare, release, `types`, and (on the largest) the fast path.
/// Each prepare is followed by its release, so every run starts from the same state.
fn measure(host: &TestHost, fast_path: bool) -> [Cost; 5] {
    let xml = mdev_domain("measured", &[(1, "profile=\"Type 19\"")]);
    let hook = host.hook_as("50-vgpu-hook");
    let call = |w, sub: &str, op: &str| {
        run_under(
            host,
            w,
            &hook,
            &[xml.name.as_str(), sub, op, "-"],
            &xml.text,
        )
    };
    let mut prepare = Cost::default();
    let mut release = Cost::default();
    for w in [Wrapper::Strace, Wrapper::Callgrind] {
        prepare.add(call(w, "prepare", "begin"));
        release.add(call(w, "release", "end"));
    }
    let vgpuctl = std::path::PathBuf::from(env!("CARGO_BIN_EXE_vgpuctl"));
    let types = both(|w| run_under(host, w, &vgpuctl, &["types"], ""));
    let plain = domain("plain", None, "");
    let fast = if fast_path {
        both(|w| {
            run_under(
                host,
                w,
                &hook,
                &["plain", "prepare", "begin", "-"],
                &plain.text,
            )
        })
    } else {
        Cost::default()
    };
    [prepare, release, types, fast, Cost::default()]
}

impl Cost {
    /// Takes in what another wrapper measured (each measures one kind of figure).
    fn add(&mut self, other: Cost) {
        self.calls += other.calls;
        self.failing += other.failing;
        self.instr += other.instr;
    }
}

/// One run under each wrapper, the figures together.
fn both(run: impl Fn(Wrapper) -> Cost) -> Cost {
    let mut c = run(Wrapper::Strace);
    c.add(run(Wrapper::Callgrind));
    c
}

#[derive(Clone, Copy)]
enum Wrapper {
    Strace,
    Callgrind,
}

impl Wrapper {
    fn argv(self, out: &str) -> Vec<String> {
        match self {
            Wrapper::Strace => {
                // -C: the trace too, before the same summary, when it is to be kept.
                let summary = if profile_dir().is_some() { "-C" } else { "-c" };
                ["strace", "-f", "-qq", summary, "-o", out]
                    .map(String::from)
                    .to_vec()
            }
            Wrapper::Callgrind => vec![
                "valgrind".into(),
                "--tool=callgrind".into(),
                format!("--callgrind-out-file={}", profile_file()),
                format!("--log-file={out}"),
            ],
        }
    }

    /// The figure from the wrapper's report.
    fn read(self, report: &str) -> Cost {
        match self {
            Wrapper::Strace => strace_total(report),
            Wrapper::Callgrind => Cost {
                instr: callgrind_total(report),
                ..Cost::default()
            },
        }
    }
}

/// Where profiles are kept (`SCALE_PROFILE_DIR`): callgrind's, and strace's traces.
fn profile_dir() -> Option<String> {
    std::env::var("SCALE_PROFILE_DIR").ok()
}

/// Where callgrind writes its profile: `$SCALE_PROFILE_DIR/callgrind.out.PID` when set (for
/// `callgrind_annotate`), else nowhere.
fn profile_file() -> String {
    profile_dir().map_or_else(
        || "/dev/null".to_string(),
        |d| format!("{d}/callgrind.out.%p"),
    )
}

/// Runs `program args` under `w` with the host's environment and `stdin`, to a successful end,
/// and reads the figure from the wrapper's report.
fn run_under(host: &TestHost, w: Wrapper, program: &Path, args: &[&str], stdin: &str) -> Cost {
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut argv = w.argv(&report.path().to_string_lossy());
    argv.push(program.to_string_lossy().into_owned());
    argv.extend(args.iter().map(|a| a.to_string()));
    let rest: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    let mut child = host.command(Path::new(&argv[0]), &rest).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(report.path()).unwrap();
    if let (Wrapper::Strace, Some(dir)) = (w, profile_dir()) {
        let name = format!("strace.{}.{}", std::process::id(), args.join("-"));
        std::fs::write(Path::new(&dir).join(name.replace('/', "_")), &text).unwrap();
    }
    w.read(&text)
}

/// `strace -c`'s total line: `100.00 SECONDS USECS/CALL CALLS [ERRORS] total`.
fn strace_total(report: &str) -> Cost {
    let line = report
        .lines()
        .find(|l| l.trim_end().ends_with(" total"))
        .unwrap_or_else(|| panic!("no total in strace's report:\n{report}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| -> u64 {
        f[i].parse()
            .unwrap_or_else(|_| panic!("unexpected strace total line: {line}"))
    };
    match f.len() {
        6 => Cost {
            calls: num(3),
            failing: num(4),
            instr: 0,
        },
        5 => Cost {
            calls: num(3),
            ..Cost::default()
        },
        _ => panic!("unexpected strace total line: {line}"),
    }
}

/// callgrind's `==PID== Collected : N` line of the measured process. The hook writes sysfs
/// attributes from a forked child, which reports too, with the counts it inherited at the fork:
/// the measured process is the one that speaks first.
fn callgrind_total(report: &str) -> u64 {
    let pid = report
        .lines()
        .find_map(|l| l.strip_prefix("==")?.split_once("==").map(|(p, _)| p))
        .unwrap_or_else(|| panic!("no process in callgrind's report:\n{report}"));
    let ours = format!("=={pid}== Collected :");
    report
        .lines()
        .find_map(|l| l.strip_prefix(&ours).map(|n| n.trim().to_string()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no instruction total in callgrind's report:\n{report}"))
}

fn m(instr: u64) -> String {
    if instr >= 10_000_000 {
        format!("{:.0}M", instr as f64 / 1e6)
    } else {
        format!("{:.2}M", instr as f64 / 1e6)
    }
}

fn report(rows: &[(usize, &Before, [Cost; 5])]) {
    println!(
        "host size cost (system calls by strace -c, instructions by callgrind), before -> now:"
    );
    println!(
        "{:>8} | {:>22} | {:>20} | {:>20} | {:>26}",
        "parents",
        "prepare: syscalls",
        "prepare: instr",
        "release: instr",
        "types: syscalls (failing)"
    );
    for (n, b, [p, r, t, _, _]) in rows {
        println!(
            "{n:>8} | {:>9} -> {:>9} | {:>8} -> {:>8} | {:>8} -> {:>8} | {:>8} -> {} ({})",
            b.prepare_calls,
            format!("{} ({})", p.calls, p.failing),
            m(b.prepare_instr),
            m(p.instr),
            m(b.release_instr),
            m(r.instr),
            b.types_calls,
            t.calls,
            t.failing
        );
    }
    println!(
        "{:>8} | types: instructions {}",
        "",
        rows.iter()
            .map(|(n, b, c)| format!("{n}: {} -> {}", m(b.types_instr), m(c[2].instr)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if rows.len() < SIZES.len() {
        println!("budgets are judged only when every size is measured (SCALE_SIZES unset)");
        return;
    }
    let (_, _, big) = rows.last().unwrap();
    let (_, _, small) = rows.first().unwrap();
    let fast = big[3];
    println!(
        "fast path (no metadata, 256 parents): {} -> {} instructions, {} system calls",
        m(BEFORE_FAST_PATH_INSTR),
        m(fast.instr),
        fast.calls
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT MET" };
    println!(
        "budget: prepare at 256 parents <= 2,000 system calls: {}",
        verdict(big[0].calls <= 2_000)
    );
    println!(
        "budget: prepare at 256 parents <= 4M instructions: {}",
        verdict(big[0].instr <= 4_000_000)
    );
    println!(
        "release at 256 parents: {} instructions with 128 vGPUs of other domains, {} with none (at 1 parent: {})",
        m(big[1].instr),
        m(big[4].instr),
        m(small[1].instr)
    );
    println!(
        "budget: release independent of the devices other domains hold (within 10%): {}",
        verdict(big[1].instr as f64 <= big[4].instr as f64 * 1.1)
    );
    println!(
        "budget: vgpuctl types at 256 parents <= 20,000 system calls: {}",
        verdict(big[2].calls <= 20_000)
    );
    println!(
        "budget: fast path within 10% of before: {}",
        verdict(fast.instr as f64 <= BEFORE_FAST_PATH_INSTR as f64 * 1.1)
    );
}
