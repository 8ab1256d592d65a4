//! Storms: on one simulated host with mdevs, AMD VFs and kernel-6.8+ NVIDIA VFs, for a bounded
//! time, domains start and stop over and over (prepare; on success QEMU runs, libvirt may
//! reconnect, QEMU stops, release; on refusal release, as after a failed start), several of them
//! asking for the same device, while `vgpuctl reconcile` runs again and again and a running
//! domain gets devices attached and detached live. Afterwards, once everything is released and
//! reconciled, nothing leaked and no record is stale; at every moment nothing was allocated twice
//! (a running domain never lost its device to another, and the simulator's event log never shows
//! a UUID created, or a VF typed, while it already was); a bystander running throughout is
//! untouched.
//!
//! `attach --live` and `detach --live` need a libvirt daemon for the hot-plug itself; here the
//! storm drives the library calls those commands make around it (`hook::prepare` of the attached
//! devices alone, as `attach --live` does before hot-plugging, and `hook::release_selected` of
//! them, as `detach --live` does after the unplug), in the test process, on the same host.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::hook::*;
use common::invariants::{assert_settled, readable_state, Bystander};
use common::sim::Sim;
use vgpu_hook::host::procfs::Procfs;
use vgpu_hook::host::state::{Device, StateDir};
use vgpu_hook::host::sysfs::Sysfs;
use vgpu_hook::host::Host;
use vgpu_hook::model::config::Config;
use vgpu_hook::model::domain::Domain;

/// How long the storm blows.
const STORM: Duration = Duration::from_secs(3);

const HOST: &str = "[[gpu]]\nkind = \"mdev\"\nname = \"mtty\"\n\n\
[[gpu]]\naddress = \"0000:64:00.0\"\nkind = \"amd-gim\"\ngim = \"old\"\nnumvfs = 4\n\n\
[[gpu]]\naddress = \"0000:61:00.0\"\nkind = \"nvidia-vfio\"\nboard = \"L40S\"\nframebuffer_mb = 49152\nnumvfs = 4\n";

fn config() -> String {
    format!(
        "mdev_parents = [\"mtty\"]\namd_vgpu_pfs = [\"64:00.0\"]\nnvidia_vgpu_pfs = [\"61:00.0\"]\n{FAST_TIMING}"
    )
}

/// The domains that start and stop: some alone on their device, some sharing one.
fn cycling_domains() -> Vec<DomainXml> {
    let l40s = |vf| (vf, "profile=\"L40S-4Q\"", false);
    vec![
        mdev_domain("m0", &[(0x100, "type=\"mtty-2\"")]),
        mdev_domain("m1", &[(0x101, "type=\"mtty-2\"")]),
        mdev_domain(
            "m2",
            &[(0x102, "type=\"mtty-1\""), (0x103, "type=\"mtty-1\"")],
        ),
        // Two domains with the same mdev UUID in their definitions: one at a time gets it.
        mdev_domain("m3", &[(0x104, "type=\"mtty-2\"")]),
        mdev_domain("m4", &[(0x104, "type=\"mtty-2\"")]),
        vf_domain("a0", &[("64:00.5", "", true)]),
        vf_domain("a1", &[("64:00.5", "", true)]),
        vf_domain("a2", &[("64:00.6", "", true), ("64:00.7", "", true)]),
        vf_domain("n0", &[l40s("61:00.5")]),
        vf_domain("n1", &[l40s("61:00.5")]),
        vf_domain("n2", &[l40s("61:00.6")]),
    ]
}

/// The running domain that gets devices attached and detached live.
fn hot_domain() -> DomainXml {
    domain("hot", Some(""), "")
}

/// What `attach --live` adds to `hot` (an mdev and an NVIDIA VF), as the domain it prepares:
/// name and UUID of `hot`, only the added requests and hostdevs.
fn hot_devices() -> Domain {
    let (m, d) = mdev_request(0x1f0, "type=\"mtty-1\"");
    let vf = vf_domain("hot", &[("61:00.7", "profile=\"L40S-4Q\"", false)]);
    let xml = domain(
        "hot",
        Some(&format!(
            "{m}      <vgpu:vf address=\"61:00.7\" profile=\"L40S-4Q\"/>\n"
        )),
        &format!("{d}{}", hostdevs_of(&vf.text)),
    );
    Domain::parse(&xml.text).expect("the attached devices parse")
}

fn hostdevs_of(xml: &str) -> String {
    xml.lines()
        .filter(|l| l.contains("<hostdev "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Operation counts.
struct Counts {
    ops: BTreeMap<&'static str, AtomicUsize>,
}

impl Counts {
    fn new(names: &[&'static str]) -> Counts {
        Counts {
            ops: names.iter().map(|n| (*n, AtomicUsize::new(0))).collect(),
        }
    }

    fn bump(&self, name: &'static str) {
        self.ops[name].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, name: &str) -> usize {
        self.ops[name].load(Ordering::Relaxed)
    }
}

/// A small deterministic pseudo-random source per thread (xorshift).
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The pid of the fake QEMU started for `name`, whose pid file then says whether it runs.
struct Qemu {
    pid_file: std::path::PathBuf,
    pid: String,
}

impl Qemu {
    fn started(h: &mut TestHost, name: &str) -> Qemu {
        h.start_qemu(name);
        let pid_file = h.run_dir().join(format!("{name}.pid"));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        std::fs::remove_file(&pid_file).unwrap();
        Qemu { pid_file, pid }
    }

    fn run(&self) {
        std::fs::write(&self.pid_file, &self.pid).unwrap();
    }

    fn stop(&self) {
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// The devices the state records for a domain.
fn recorded_for(h: &TestHost, uuid: &str) -> Vec<Device> {
    readable_state(h)
        .records
        .into_iter()
        .filter(|r| r.domain_uuid == uuid)
        .map(|r| r.device)
        .collect()
}

/// One domain starting and stopping until `stop`.
fn cycle(h: &TestHost, vm: &DomainXml, qemu: &Qemu, counts: &Counts, stop: &AtomicBool, seed: u64) {
    let mut dice = Dice(seed);
    while !stop.load(Ordering::Relaxed) {
        let o = h.prepare(vm);
        counts.bump("prepare");
        if o.status.success() {
            let mine = recorded_for(h, &vm.uuid);
            assert!(
                !mine.is_empty(),
                "{}: prepared but nothing recorded",
                vm.name
            );
            qemu.run();
            if dice.below(3) == 0 {
                assert_ok(&h.call(&vm.name, "reconnect", "begin", "-", &vm.text));
                counts.bump("reconnect");
            }
            std::thread::sleep(Duration::from_millis(dice.below(30)));
            let still = recorded_for(h, &vm.uuid);
            for d in &mine {
                assert!(
                    still.contains(d),
                    "{d} of running domain '{}' was handed to another domain",
                    vm.name
                );
            }
            qemu.stop();
        } else {
            assert_refused(&o, &[]);
            counts.bump("refused");
        }
        assert_ok(&h.release(vm));
        counts.bump("release");
    }
}

/// `attach --live` / `detach --live` on the running domain `hot` until `stop`, through the
/// library calls those commands make.
fn attach_detach(host: &Host, config: &Config, counts: &Counts, stop: &AtomicBool) {
    let dom = hot_devices();
    let whose = Domain {
        uuid: dom.uuid.clone(),
        ..Default::default()
    };
    while !stop.load(Ordering::Relaxed) {
        counts.bump("attach --live");
        match vgpu_hook::hook::prepare(host, config, &dom) {
            Ok(()) => {
                let left =
                    vgpu_hook::hook::release_selected(host, &config.timing, &whose, "", |_| true);
                assert!(left.is_empty(), "detach --live left {left:?}");
                counts.bump("detach --live");
            }
            Err(e) => {
                assert!(!e.to_string().contains('\n'), "{e}");
                counts.bump("attach refused");
            }
        }
    }
}

/// `vgpuctl reconcile` over and over until `stop`.
fn reconcile(h: &TestHost, counts: &Counts, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let o = h.vgpuctl(&["reconcile"]);
        assert!(o.status.success(), "reconcile: {}", stderr(&o));
        counts.bump("reconcile");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_storm_of_starts_stops_reconnects_reconciles_and_live_attaches_loses_nothing() {
    let Some(sim) = Sim::start(HOST) else { return };
    let t0 = Instant::now();
    let mut h = TestHost::on_tmpfs(sim.root(), &config());
    let bystander = Bystander::start(
        &sim,
        &mut h,
        mdev_domain("bystander", &[(0xb0, "type=\"mtty-2\"")]),
        &mdev_uuid(0xb0),
    );
    let vms = cycling_domains();
    let qemus: Vec<Qemu> = vms
        .iter()
        .map(|vm| Qemu::started(&mut h, &vm.name))
        .collect();
    let hot = hot_domain();
    h.start_qemu(&hot.name);
    let host = Host {
        sysfs: Sysfs::new(sim.root()),
        procfs: Procfs::system(),
        state: StateDir::new(&h.state_dir()),
        libvirt_run_dir: h.run_dir(),
        config_path: h.config.clone(),
    };
    let config = Config::load(&h.config).unwrap();
    let counts = Counts::new(&[
        "prepare",
        "refused",
        "release",
        "reconnect",
        "reconcile",
        "attach --live",
        "attach refused",
        "detach --live",
    ]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for (i, (vm, qemu)) in vms.iter().zip(&qemus).enumerate() {
            let (h, counts, stop) = (&h, &counts, &stop);
            s.spawn(move || cycle(h, vm, qemu, counts, stop, 0x9e37_79b9 + i as u64));
        }
        s.spawn(|| attach_detach(&host, &config, &counts, &stop));
        s.spawn(|| reconcile(&h, &counts, &stop));
        std::thread::sleep(STORM);
        stop.store(true, Ordering::Relaxed);
    });
    let stormed = t0.elapsed();

    h.stop_qemu(&hot.name);
    for vm in vms.iter().chain([&hot]) {
        assert_ok(&h.release(vm));
    }
    let o = h.vgpuctl(&["reconcile"]);
    assert!(o.status.success(), "reconcile: {}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "nothing to do: every device on the configured GPUs is accounted for",
        "after every release, reconcile finds nothing left behind"
    );
    assert_settled(&sim, &h, &bystander, &["bystander"]);

    let summary: Vec<String> = counts
        .ops
        .keys()
        .map(|k| format!("{k} {}", counts.get(k)))
        .collect();
    println!(
        "storm of {:.1} s: {} operations ({}); settled in {:.1} s",
        stormed.as_secs_f64(),
        counts
            .ops
            .keys()
            .filter(|k| !k.ends_with("refused"))
            .map(|k| counts.get(k))
            .sum::<usize>(),
        summary.join(", "),
        t0.elapsed().as_secs_f64()
    );
    assert!(counts.get("prepare") > vms.len() && counts.get("reconcile") > 1);
    assert!(
        counts.get("detach --live") > 0,
        "the live attach got its devices at least once"
    );
}
