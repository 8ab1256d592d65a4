//! Reading one guest: the agent, the OS, `nvidia-smi -q` and the licensing service, into a
//! [`GuestRow`]. Whatever cannot be read becomes a problem on the row with its fix; only the
//! agent disappearing midway ends the reading early.

use std::time::Duration;

use super::agent::{self, Agent, Os, Output};
use super::report::GuestRow;
use super::smi::{self, License};
use super::GuestError;

/// Bound on one `nvidia-smi -q` (it can take seconds on a busy driver).
pub const SMI_BUDGET: Duration = Duration::from_secs(30);
/// Bound on the small helper programs (service state, moves).
pub const HELPER_BUDGET: Duration = Duration::from_secs(15);

/// The Linux licensing service.
pub const LINUX_SERVICE: &str = "nvidia-gridd";
/// The Windows service that runs licensing (NVIDIA Display Container LS).
pub const WINDOWS_SERVICE: &str = "NVDisplay.ContainerLocalSystem";
const POWERSHELL: &str = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe";

/// Fix for a guest the agent cannot reach.
pub const AGENT_FIX: &str = "install and start the QEMU guest agent in the guest: Debian/Ubuntu `apt-get install qemu-guest-agent`, RHEL/Fedora/SUSE `dnf|zypper install qemu-guest-agent`, then `systemctl enable --now qemu-guest-agent`; Windows: qemu-ga from the virtio-win guest tools";

/// Runs a shell script in the guest (`/bin/sh -c` on Linux, PowerShell on Windows); `args` are
/// `$1...` on Linux and must already be embedded (quoted with [`ps_quote`]) on Windows.
pub fn script(
    agent: &dyn Agent,
    os: Os,
    text: &str,
    args: &[&str],
    budget: Duration,
) -> Result<Output, GuestError> {
    match os {
        Os::Linux => {
            let mut argv = vec!["-c", text, "vgpuctl"];
            argv.extend_from_slice(args);
            agent::exec(agent, "/bin/sh", &argv, budget)
        }
        Os::Windows => agent::exec(
            agent,
            POWERSHELL,
            &["-NoProfile", "-NonInteractive", "-Command", text],
            budget,
        ),
    }
}

/// A PowerShell single-quoted literal.
pub fn ps_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Where nvidia-smi is.
fn smi_paths(os: Os) -> &'static [&'static str] {
    match os {
        Os::Linux => &["/usr/bin/nvidia-smi"],
        Os::Windows => &[
            r"C:\Windows\System32\nvidia-smi.exe",
            r"C:\Program Files\NVIDIA Corporation\NVSMI\nvidia-smi.exe",
        ],
    }
}

/// Runs `nvidia-smi -q`: `Ok(None)` when it is not installed.
fn run_smi(agent: &dyn Agent, os: Os) -> Result<Option<Output>, GuestError> {
    for path in smi_paths(os) {
        match agent::exec(agent, path, &["-q"], SMI_BUDGET) {
            Ok(o) => return Ok(Some(o)),
            Err(GuestError::NoProgram(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// `running`, `stopped` or `unknown` for the licensing service.
pub fn service_state(agent: &dyn Agent, os: Os) -> Result<&'static str, GuestError> {
    let out = match os {
        Os::Linux => script(
            agent,
            os,
            "if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then systemctl is-active \"$1\"; elif pidof \"$1\" >/dev/null 2>&1; then echo active; else echo inactive; fi",
            &[LINUX_SERVICE],
            HELPER_BUDGET,
        )?,
        Os::Windows => script(
            agent,
            os,
            &format!("(Get-Service -Name {} -ErrorAction SilentlyContinue).Status", ps_quote(WINDOWS_SERVICE)),
            &[],
            HELPER_BUDGET,
        )?,
    };
    Ok(match out.stdout.trim().to_ascii_lowercase().as_str() {
        "active" | "running" => "running",
        "inactive" | "failed" | "stopped" | "" => "stopped",
        _ => "unknown",
    })
}

/// Reads the guest behind `agent` into `row` (whose domain runs). `now` (Unix seconds) judges
/// the licence's expiry.
pub fn probe(agent: &dyn Agent, row: &mut GuestRow, now: i64) {
    if let Err(e) = probe_inner(agent, row, now) {
        agent_problem(row, &e);
    }
}

/// Files an agent failure on the row as the problem it is.
pub fn agent_problem(row: &mut GuestRow, e: &GuestError) {
    let dom = row.domain.clone();
    match e {
        GuestError::NoChannel(_) => row.problem(
            "no_agent_channel",
            "the domain has no guest agent channel",
            format!("add <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel> to its <devices> (virsh edit {dom}; vgpuctl attach adds it), restart the domain, and install the agent in the guest"),
        ),
        GuestError::NotConnected(m) => row.problem(
            "agent_not_connected",
            format!("no guest agent answers ({m})"),
            AGENT_FIX,
        ),
        GuestError::Timeout(m) => row.problem(
            "agent_timeout",
            format!("the guest agent did not answer in time: {m}"),
            "check that the guest is not hung (virsh console); restart qemu-guest-agent in the guest",
        ),
        GuestError::NotRunning => row.problem("not_running", "the domain is not running", format!("virsh start {dom}")),
        other => row.problem("agent_error", other.to_string(), "see the guest agent's log in the guest"),
    }
}

fn probe_inner(agent: &dyn Agent, row: &mut GuestRow, now: i64) -> Result<(), GuestError> {
    let info = agent::info(agent)?;
    row.agent = Some(info.version);
    let (os, name) = agent::os(agent)?;
    row.os_family = Some(
        if os == Os::Windows {
            "windows"
        } else {
            "linux"
        }
        .into(),
    );
    row.os = name;
    if !info.exec_enabled {
        row.problem(
            "exec_disabled",
            "the guest agent does not allow guest-exec, so nvidia-smi cannot be run",
            "allow guest-exec in the agent's configuration (RHEL/Fedora: drop it from the block list in /etc/sysconfig/qemu-ga and restart qemu-guest-agent)",
        );
        return Ok(());
    }
    if read_smi(agent, os, row, now)? {
        let service = service_state(agent, os)?;
        row.service = Some(service.into());
        if service != "running" {
            let fix = match os {
                Os::Linux => "start it in the guest: systemctl enable --now nvidia-gridd",
                Os::Windows => {
                    "start the NVIDIA Display Container LS service in the guest (services.msc)"
                }
            };
            row.problem("service_stopped", "the licensing service does not run", fix);
        }
    }
    Ok(())
}

/// Runs and reads nvidia-smi into the row; whether it ran (the driver is there).
fn read_smi(agent: &dyn Agent, os: Os, row: &mut GuestRow, now: i64) -> Result<bool, GuestError> {
    let dom = row.domain.clone();
    let Some(out) = run_smi(agent, os)? else {
        row.problem(
            "no_driver",
            "NVIDIA's guest driver is not installed (no nvidia-smi)",
            "install NVIDIA's vGPU guest driver in the guest (Linux: NVIDIA-Linux-x86_64-<version>-grid.run; Windows: the vGPU guest driver), the branch matching the host's vGPU manager",
        );
        return Ok(false);
    };
    if !out.ok() {
        let first = out
            .stdout
            .lines()
            .chain(out.stderr.lines())
            .find(|l| !l.trim().is_empty());
        row.problem(
            "driver_not_working",
            format!("nvidia-smi failed (exit {}): {}", out.exit.map_or("signal".into(), |c| c.to_string()), crate::printable(first.unwrap_or("").trim(), 160)),
            "check the guest driver matches the host's vGPU manager branch and that the guest sees the vGPU (lspci / Device Manager)",
        );
        return Ok(false);
    }
    let r = smi::parse(&out.stdout);
    row.driver_version = r.driver_version;
    row.vgpus = r
        .gpus
        .iter()
        .filter_map(|g| g.product_name.clone())
        .collect();
    row.licensed_product = r.licensed_product;
    let license_fix = format!("vgpuctl guest {dom} --license-token FILE (NLS), or --license-server HOST[:PORT] (legacy server)");
    match r.license {
        None => {
            row.license = Some("unknown".into());
            row.problem(
                "no_license_section",
                "nvidia-smi shows no vGPU licence section (not a vGPU guest driver?)",
                "install NVIDIA's vGPU (GRID) guest driver rather than a plain GPU driver",
            );
        }
        Some(l) => {
            row.license_text = Some(match &l {
                License::Licensed { expiry: Some(e) } => format!("Licensed (Expiry: {})", e.text),
                License::Licensed { expiry: None } => "Licensed".into(),
                License::Unlicensed { detail: Some(d) } => format!("Unlicensed ({d})"),
                License::Unlicensed { detail: None } => "Unlicensed".into(),
                License::Other(t) => t.clone(),
            });
            if let License::Licensed { expiry: Some(e) } = &l {
                row.license_expiry = Some(e.text.clone());
                row.license_expiry_unix = e.unix;
            }
            let status = if l.valid_at(now) {
                "licensed"
            } else if l.expired_at(now) {
                row.problem("license_expired", "the licence has expired", license_fix);
                "expired"
            } else if matches!(l, License::Unlicensed { .. }) {
                row.problem(
                    "unlicensed",
                    "the guest holds no licence (throttled after the grace period)",
                    license_fix,
                );
                "unlicensed"
            } else {
                "unknown"
            };
            row.license = Some(status.into());
        }
    }
    Ok(true)
}
