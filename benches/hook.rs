//! Hook cost against the exec floor, printed side by side.
//!
//! The floor is a do-nothing C program, built here with the system C compiler and fed the same
//! stdin. Runs are interleaved (floor, hook, floor, hook ...) so that machine noise hits both
//! alike; figures are medians and 90th percentiles of wall time per process, from spawn to exit.
//!
//! Scenarios:
//! - `no-metadata`: the real libvirt 9.0 `prepare begin` stdin of a domain without our metadata,
//!   for the hook as the packages ship it (one static executable: `RUSTFLAGS="-C
//!   target-feature=+crt-static"`, `$VGPU_HOOK_STATIC_BIN` or built here on demand) and, for
//!   comparison, the dynamically linked build cargo made for this bench (budget: the static
//!   hook's median within 1.1x of the floor).
//! - `prepare+release`: one mdev on a simulated host of 8 identical parents x 20 types (budget:
//!   the two calls within 3x of two execs of the floor, the simulated kernel's own time excluded).
//!   Every sysfs access on the simulator is a FUSE round trip answered in user space, where the
//!   real kernel answers in-kernel; the simulator counts the requests it serves (`sim/requests`),
//!   their cost is calibrated from this process, and wall time minus that share is the figure the
//!   budget applies to. Wall time is printed too. Needs FUSE; not run, with the reason, without.
//!
//! Run: `cargo bench --bench hook` (set `BENCH_RUNS` to change the sample count).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The hook as the packages ship it: `$VGPU_HOOK_STATIC_BIN`, else built here with glibc's
/// static libs into `target/static-hook` (its own directory: the cargo running this bench holds
/// the lock of the main one). Checked to have no program interpreter.
fn static_hook() -> PathBuf {
    if let Some(p) = std::env::var_os("VGPU_HOOK_STATIC_BIN") {
        return PathBuf::from(p);
    }
    let hook = PathBuf::from(env!("CARGO_BIN_EXE_vgpu-hook"));
    let target = hook
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("target"))
        .join("static-hook");
    let triple = "x86_64-unknown-linux-gnu";
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--no-default-features"])
        .args(["--bin", "vgpu-hook", "--target", triple, "--target-dir"])
        .arg(&target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo");
    assert!(st.success(), "building the static hook failed");
    let bin = target.join(triple).join("release/vgpu-hook");
    let elf = std::fs::read(&bin).unwrap();
    assert!(
        !elf.windows(b"/ld-linux".len()).any(|w| w == b"/ld-linux"),
        "{} names a dynamic loader: not static",
        bin.display()
    );
    bin
}

fn floor_binary(dir: &Path) -> PathBuf {
    let src = dir.join("noop.c");
    let bin = dir.join("noop");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let st = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success(), "cc failed");
    bin
}

/// Wall time from spawn to exit.
fn time_one(cmd: &mut Command, stdin: &[u8]) -> Duration {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin);
    drop(input);
    let status = child.wait().unwrap();
    let wall = t.elapsed();
    assert!(status.success(), "benchmarked command failed: {cmd:?}");
    wall
}

struct Stats {
    median: Duration,
    p90: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        median: v[v.len() / 2],
        p90: v[v.len() * 9 / 10],
    }
}

fn row(name: &str, s: &Stats, floor: &Stats) {
    println!(
        "{name:<34} {:>9.3} ms {:>9.3} ms {:>7.2}x",
        s.median.as_secs_f64() * 1e3,
        s.p90.as_secs_f64() * 1e3,
        s.median.as_secs_f64() / floor.median.as_secs_f64()
    );
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let tmp = tempfile::tempdir().unwrap();
    let noop = floor_binary(tmp.path());
    let hook = PathBuf::from(env!("CARGO_BIN_EXE_vgpu-hook"));
    let fixture = common::hook::FIXTURE.as_bytes();
    let host = common::hook::TestHost::on_tmpfs(Path::new("/nonexistent"), "");

    println!("{runs} runs each, interleaved; wall time per process");
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "command", "median", "p90", "vs floor"
    );

    let static_hook = static_hook();
    let (mut f, mut h, mut d) = (Vec::new(), Vec::new(), Vec::new());
    let args = ["tiny", "prepare", "begin", "-"];
    for _ in 0..runs {
        f.push(time_one(&mut Command::new(&noop), fixture));
        h.push(time_one(&mut host.command(&static_hook, &args), fixture));
        d.push(time_one(&mut host.command(&hook, &args), fixture));
    }
    let floor = stats(f);
    let fast = stats(h);
    row("exec floor (C, no-op)", &floor, &floor);
    row("vgpu-hook static, w/o metadata", &fast, &floor);
    row("vgpu-hook dynamic (not shipped)", &stats(d), &floor);
    let ratio = fast.median.as_secs_f64() / floor.median.as_secs_f64();
    println!(
        "budget: static hook, no-metadata median <= 1.10x floor: {}",
        if ratio <= 1.1 { "met" } else { "NOT MET" }
    );

    sim_scenario(runs.min(100), &noop, &hook);
}

fn sim_scenario(runs: usize, noop: &Path, hook: &Path) {
    let mut host_toml = String::new();
    for i in 0..8 {
        host_toml.push_str(&format!(
            "[[gpu]]\nkind = \"mdev\"\nname = \"par{i}\"\ntypes = [{}]\n",
            (0..20)
                .map(|t| format!("{{ id = \"vgpu-{t}\", name = \"Type {t}\", max_instances = 8 }}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let Some(sim) = common::sim::Sim::start(&host_toml) else {
        println!(
            "prepare+release on simulated 8x20 host: not run (simulator unavailable, reason above)"
        );
        return;
    };
    let parents: Vec<String> = (0..8).map(|i| format!("\"par{i}\"")).collect();
    let host = common::hook::TestHost::on_tmpfs(
        sim.root(),
        &format!("mdev_parents = [{}]\n", parents.join(", ")),
    );
    let xml = common::hook::mdev_domain("bench", &[(1, "profile=\"Type 19\"")]);
    // What one simulated sysfs request costs a client, and what reading the counter costs.
    let counter = sim.root().join("sim/requests");
    let requests = || -> u64 {
        std::fs::read_to_string(&counter)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let probe = sim
        .root()
        .join("sys/class/mdev_bus/par0/mdev_supported_types/vgpu-0/available_instances");
    let (a, b) = (requests(), requests());
    let read_cost = b - a;
    let t = Instant::now();
    for _ in 0..200 {
        std::fs::read_to_string(&probe).unwrap();
    }
    let per_request = t.elapsed() / (requests() - b - read_cost) as u32;

    let (mut fw, mut hw, mut hx, mut reqs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        fw.push(time_one(&mut Command::new(noop), xml.text.as_bytes()) * 2);
        let before = requests();
        let a = time_one(
            &mut host.command(hook, &["bench", "prepare", "begin", "-"]),
            xml.text.as_bytes(),
        );
        let b = time_one(
            &mut host.command(hook, &["bench", "release", "end", "-"]),
            xml.text.as_bytes(),
        );
        let served = requests() - before - read_cost;
        let wall = a + b;
        hw.push(wall);
        hx.push(wall.saturating_sub(per_request * served as u32));
        reqs.push(Duration::from_micros(served));
    }
    let floor = stats(fw);
    let (wall, own, served) = (stats(hw), stats(hx), stats(reqs));
    println!("one mdev, profile match over 8 parents x 20 types, prepare then release:");
    row("2 x exec floor", &floor, &floor);
    row("prepare+release, wall", &wall, &floor);
    row("prepare+release, minus simulator", &own, &floor);
    println!(
        "(simulator: {} requests per prepare+release, {:.1} us each as measured from a client; real sysfs answers in-kernel)",
        served.median.as_micros(),
        per_request.as_secs_f64() * 1e6
    );
    let ratio = own.median.as_secs_f64() / floor.median.as_secs_f64();
    println!(
        "budget: prepare+release median <= 3.00x floor, simulated kernel's time excluded: {}",
        if ratio <= 3.0 { "met" } else { "NOT MET" }
    );
}
