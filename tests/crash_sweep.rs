//! Crash points, swept: the hook killed with SIGKILL at every step of `prepare` and of `release`,
//! then what libvirt does next (a killed prepare is a failed start, so `release end` follows; a
//! killed release is run again), then `vgpuctl reconcile`. After each: the state reads, every
//! device has its one owner record and every record its device, nothing was allocated twice, and
//! a bystander domain running throughout is untouched. For mdevs, AMD VFs and kernel-6.8+ NVIDIA
//! VFs.
//!
//! How the steps are found and hit: a step is each syscall of the hook process that changes
//! something or starts to: `write` (the state's temp file, a sysfs attribute written in place),
//! `rename` (the state saved), the fork of a bounded sysfs write (its child does the write; a
//! kill at the fork is a kill after the previous write and before this one) and `exit_group` (a
//! kill after everything: libvirt still sees a failed call). A first run under `strace -ff`
//! without injection lists the steps in order and names each (which attribute a forked child
//! wrote). Then, for each step, the call runs again under `strace -e inject=<syscall>:signal=KILL:
//! when=<k>` (strace counts each syscall on its own: `k` is the step's place among the calls of
//! its syscall), which kills the hook on entering that syscall: it never runs. Only the hook
//! process is traced and killed; a writer child it forked before has finished its write, as it
//! would have on a real host. The killed syscall must be the step's.
//!
//! AMD's GIM VFs exist from module load and a claim writes nothing to sysfs: their steps are the
//! state's alone.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Instant;

use common::hook::*;
use common::invariants::{assert_settled, Bystander};
use common::sim::Sim;

/// The hook's syscalls that are steps (`?`: not an error where the architecture lacks one).
const STEPS: &str = "write,?rename,?renameat,?renameat2,?clone,?clone3,?fork,?vfork,exit_group";

/// One step of a hook call: the syscall and what it does.
#[derive(Debug, Clone)]
struct Step {
    syscall: String,
    what: String,
}

/// A host kind to sweep: the simulated host, the hook's config, a bystander (with the text that
/// names its device in sysfs) and the domain the hook is killed on.
struct Kind {
    name: &'static str,
    host: String,
    config: String,
    bystander: (DomainXml, &'static str),
    victim: DomainXml,
}

fn mdev_kind() -> Kind {
    Kind {
        name: "mdev (mtty)",
        host: "[[gpu]]\nkind = \"mdev\"\nname = \"mtty\"\n".into(),
        config: format!("mdev_parents = [\"mtty\"]\n{FAST_TIMING}"),
        bystander: (
            mdev_domain("bystander", &[(0xb0, "type=\"mtty-2\"")]),
            "6f2e9a4c-8d1b-4c1e-9a41-0000000000b0",
        ),
        victim: mdev_domain(
            "victim",
            &[(0xc1, "type=\"mtty-2\""), (0xc2, "type=\"mtty-1\"")],
        ),
    }
}

fn amd_kind() -> Kind {
    Kind {
        name: "AMD VF (amd-gim)",
        host:
            "[[gpu]]\naddress = \"0000:64:00.0\"\nkind = \"amd-gim\"\ngim = \"old\"\nnumvfs = 4\n"
                .into(),
        config: format!("amd_vgpu_pfs = [\"64:00.0\"]\n{FAST_TIMING}"),
        bystander: (
            vf_domain("bystander", &[("64:00.4", "", true)]),
            "0000:64:00.4",
        ),
        victim: vf_domain("victim", &[("64:00.5", "", true), ("64:00.6", "", true)]),
    }
}

fn nvidia_vfio_kind() -> Kind {
    Kind {
        name: "NVIDIA VF (nvidia-vfio, kernel 6.8+)",
        host: "[[gpu]]\naddress = \"0000:61:00.0\"\nkind = \"nvidia-vfio\"\nboard = \"L40S\"\nframebuffer_mb = 49152\nnumvfs = 4\n".into(),
        config: format!("nvidia_vgpu_pfs = [\"61:00.0\"]\n{FAST_TIMING}"),
        bystander: (
            vf_domain("bystander", &[("61:00.4", "profile=\"L40S-4Q\"", false)]),
            "0000:61:00.4",
        ),
        victim: vf_domain(
            "victim",
            &[
                ("61:00.5", "profile=\"L40S-4Q\"", false),
                ("61:00.6", "profile=\"L40S-4Q\"", false),
            ],
        ),
    }
}

/// Whether strace can run here; without it the sweep is skipped (on CI it fails instead).
fn strace_available() -> bool {
    let ok = std::process::Command::new("strace")
        .args(["-qq", "-e", "trace=none", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "strace (with ptrace allowed) is needed on CI for the crash-point sweep"
        );
        eprintln!("skipped: the crash-point sweep needs strace with ptrace allowed");
    }
    ok
}

/// The steps of one hook call, in order, from a run under `strace -ff` that lets it complete.
fn steps(h: &TestHost, sim: &Sim, op: &str, sub: &str, xml: &DomainXml) -> Vec<Step> {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("trace");
    let prefix_arg = prefix.to_string_lossy().into_owned();
    let wrapper = [
        "strace",
        "-ff",
        "-y",
        "-qq",
        "-s",
        "80",
        "-e",
        "signal=none",
        "-o",
        &prefix_arg,
        "-e",
    ];
    let trace = format!("trace={STEPS}");
    let mut argv: Vec<&str> = wrapper.to_vec();
    argv.push(&trace);
    let o = h
        .spawn_under(&argv, &xml.name, op, sub, "-", &xml.text)
        .wait_with_output()
        .unwrap();
    assert_ok(&o);
    let traces: Vec<(u32, String)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let pid = p.extension().unwrap().to_string_lossy().parse().unwrap();
            (pid, std::fs::read_to_string(p).unwrap())
        })
        .collect();
    let forked: Vec<u32> = traces
        .iter()
        .flat_map(|(_, t)| t.lines().filter_map(forked_pid))
        .collect();
    let hook = traces
        .iter()
        .find(|(pid, _)| !forked.contains(pid))
        .map(|(_, t)| t.as_str())
        .expect("the hook's own trace");
    let root = format!("{}/", sim.root().display());
    let state = format!("{}/", h.state_dir().display());
    hook.lines()
        .filter_map(|line| {
            let syscall = line.split('(').next()?.to_string();
            let what = match syscall.as_str() {
                "write" => write_target(line, &root, &state),
                "rename" | "renameat" | "renameat2" => "state: save (rename into place)".into(),
                "exit_group" => "exit (everything done)".into(),
                _ => {
                    let child = forked_pid(line)
                        .and_then(|pid| traces.iter().find(|(p, _)| *p == pid))
                        .and_then(|(_, t)| t.lines().find(|l| l.starts_with("write(")));
                    match child {
                        Some(w) => format!("fork to write {}", write_target(w, &root, &state)),
                        None => "fork of a helper".into(),
                    }
                }
            };
            Some(Step { syscall, what })
        })
        .collect()
}

/// The child pid a fork-like line returned.
fn forked_pid(line: &str) -> Option<u32> {
    let name = line.split('(').next()?;
    if !["clone", "clone3", "fork", "vfork"].contains(&name) {
        return None;
    }
    line.rsplit_once(") = ")?.1.trim().parse().ok()
}

/// What a traced `write(fd<path>, "value", n)` writes, relative to the mount or the state.
fn write_target(line: &str, root: &str, state: &str) -> String {
    let path = line
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map_or("?", |(p, _)| p);
    let value = line.split('"').nth(1).unwrap_or("");
    if let Some(rel) = path.strip_prefix(root) {
        format!("{rel} <- {value}")
    } else if path.starts_with(state) {
        "state: temp file".into()
    } else {
        path.to_string()
    }
}

/// Runs one hook call killed on entering `step`, the `nth` call of its syscall (strace counts
/// each syscall on its own). The syscall it died in, or `None` when it completed.
fn killed_at(
    h: &TestHost,
    op: &str,
    sub: &str,
    xml: &DomainXml,
    step: &str,
    nth: usize,
) -> Option<String> {
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_arg = log.path().to_string_lossy().into_owned();
    let trace = format!("trace={STEPS}");
    let inject = format!("inject={step}:signal=KILL:when={nth}");
    let wrapper = [
        "strace",
        "-qq",
        "-e",
        "signal=none",
        "-o",
        &log_arg,
        "-e",
        &trace,
        "-e",
        &inject,
    ];
    let o = h
        .spawn_under(&wrapper, &xml.name, op, sub, "-", &xml.text)
        .wait_with_output()
        .unwrap();
    if o.status.signal() != Some(libc::SIGKILL) {
        assert_ok(&o);
        return None;
    }
    let trace = std::fs::read_to_string(log.path()).unwrap();
    let last = trace
        .lines()
        .rev()
        .find(|l| !l.starts_with("+++"))
        .expect("the killed syscall is traced");
    Some(last.split('(').next().unwrap().to_string())
}

/// What libvirt does after a killed call, then the operator's `vgpuctl reconcile`. Whether
/// reconcile found something to do.
fn follow_up(h: &TestHost, victim: &DomainXml) -> bool {
    assert_ok(&h.release(victim));
    let o = h.vgpuctl(&["reconcile"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "reconcile: {out}{}", stderr(&o));
    !out.starts_with("nothing to do")
}

/// Counts of one call's sweep.
struct Swept {
    points: usize,
    reconciled: usize,
}

/// Kills `op` at each of its steps; `before` brings the victim to where `op` starts.
fn sweep_call(
    sim: &Sim,
    h: &mut TestHost,
    bystander: &Bystander,
    victim: &DomainXml,
    (op, sub): (&str, &str),
    before: impl Fn(&mut TestHost),
) -> Swept {
    before(h);
    let steps = steps(h, sim, op, sub, victim);
    follow_up(h, victim);
    assert_settled(sim, h, bystander, &["bystander"]);
    let mut reconciled = 0;
    for (n, step) in steps.iter().enumerate() {
        before(h);
        let nth = steps[..=n]
            .iter()
            .filter(|s| s.syscall == step.syscall)
            .count();
        let died = killed_at(h, op, sub, victim, &step.syscall, nth);
        assert_eq!(
            died.as_ref(),
            Some(&step.syscall),
            "{op} step {} ({}): killed there; steps: {steps:#?}",
            n + 1,
            step.what
        );
        reconciled += usize::from(follow_up(h, victim));
        assert_settled(sim, h, bystander, &["bystander"]);
    }
    println!("  {op}: {} crash points", steps.len());
    for (i, s) in steps.iter().enumerate() {
        println!("    {:>2}. {:<10} {}", i + 1, s.syscall, s.what);
    }
    Swept {
        points: steps.len(),
        reconciled,
    }
}

/// Sweeps `prepare` and `release` of one host kind.
fn sweep(kind: Kind) {
    if !strace_available() {
        return;
    }
    let Some(sim) = Sim::start(&kind.host) else {
        return;
    };
    let t0 = Instant::now();
    let mut h = TestHost::on_tmpfs(sim.root(), &kind.config);
    let (by_xml, by_key) = kind.bystander;
    let bystander = Bystander::start(&sim, &mut h, by_xml, by_key);
    let victim = kind.victim;
    println!("{}:", kind.name);
    let prepare = sweep_call(
        &sim,
        &mut h,
        &bystander,
        &victim,
        ("prepare", "begin"),
        |_| {},
    );
    let release = sweep_call(&sim, &mut h, &bystander, &victim, ("release", "end"), |h| {
        assert_ok(&h.prepare(&victim));
        h.start_qemu("victim");
        h.stop_qemu("victim");
    });
    assert!(prepare.points >= 2 && release.points >= 1);
    assert!(
        leftover_temp_files(&h).is_empty(),
        "a killed save leaves no temp file behind once the next one ran: {:?}",
        leftover_temp_files(&h)
    );
    println!(
        "{}: {} crash points swept ({} prepare, {} release; reconcile had work after {}) in {:.1} s",
        kind.name,
        prepare.points + release.points,
        prepare.points,
        release.points,
        prepare.reconciled + release.reconciled,
        t0.elapsed().as_secs_f64()
    );
}

fn leftover_temp_files(h: &TestHost) -> Vec<String> {
    std::fs::read_dir(h.state_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn mdevs_survive_a_kill_at_every_step_of_prepare_and_release() {
    sweep(mdev_kind());
}

#[test]
fn amd_vfs_survive_a_kill_at_every_step_of_prepare_and_release() {
    sweep(amd_kind());
}

#[test]
fn nvidia_kernel_6_8_vfs_survive_a_kill_at_every_step_of_prepare_and_release() {
    sweep(nvidia_vfio_kind());
}

#[test]
fn the_sweep_names_the_steps_it_hits() {
    let line = "write(3</m/sys/devices/virtual/mtty/mtty/mdev_supported_types/mtty-2/create>, \"6f2e\", 36) = 36";
    assert_eq!(
        write_target(line, "/m/", "/s/"),
        "sys/devices/virtual/mtty/mtty/mdev_supported_types/mtty-2/create <- 6f2e"
    );
    assert_eq!(
        forked_pid(
            "clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD, child_tidptr=0x7f) = 4242"
        ),
        Some(4242)
    );
}
