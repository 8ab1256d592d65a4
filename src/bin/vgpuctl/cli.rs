//! The command line, as clap sees it: every subcommand, option and help text. Completions and
//! the man page are generated from this same definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit status:
  0  success (also when the reader closes the output early, as `| head` does)
  1  the request cannot be met, or an operation failed (doctor: a check failed)
  2  usage error
  3  libvirt unreachable, or libvirt refused the operation
  4  not found: domain, device, type/profile, parent or PF
  5  config or state file missing or invalid
  6  permission denied (most commands that change the host need root)

Environment: VGPU_HOOK_CONFIG, VGPU_HOOK_SYSFS_ROOT, VGPU_HOOK_STATE_DIR and
VGPU_HOOK_LIBVIRT_RUN_DIR move the config, sysfs, state and libvirt runtime paths
(as for the hook). RUST_LOG or -v turn on diagnostics on stderr.";

/// vgpuctl: give libvirt domains NVIDIA vGPUs, SR-IOV VFs and other mediated devices, through
/// the vgpu-hook libvirt hook.
#[derive(Debug, Parser)]
#[command(
    name = "vgpuctl",
    version,
    about = "Give libvirt domains vGPUs and SR-IOV VFs through the vgpu-hook libvirt hook",
    long_about = "vgpuctl edits domain definitions so that vgpu-hook creates a vGPU (NVIDIA mdev, \
                  kernel-6.8+ NVIDIA VF, any mdev type) or claims an SR-IOV VF when the domain \
                  starts; shows what the host offers and who holds what; installs the hook; and \
                  diagnoses the host.",
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// libvirt connection URI.
    #[arg(
        short = 'c',
        long = "connect",
        value_name = "URI",
        global = true,
        env = "LIBVIRT_DEFAULT_URI",
        default_value = "qemu:///system"
    )]
    pub connect: String,

    /// More diagnostics on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a vGPU or VF to a domain's definition.
    #[command(after_help = "\
Examples:
  vgpuctl attach win11 --profile 'GRID P40-2Q'        one vGPU of that profile, any GPU
  vgpuctl attach win11 --profile P40-2Q --count 2     two, short profile name
  vgpuctl attach win11 --type nvidia-47 --parent 83:00.0 --params frame_rate_limiter=0
  vgpuctl attach win11 --vf                           a VF no other domain uses
  vgpuctl attach win11 --vf --pf 04:00.0              ... of that PF
  vgpuctl attach win11 --vf --address 0000:04:02.1    that VF
  vgpuctl attach l40 --vf --profile L40S-4Q           kernel-6.8+ NVIDIA VF (managed='no')
  vgpuctl attach win11 --profile P40-2Q --live        create it now and hot-plug it
  vgpuctl attach --xml win11.xml --type mtty-2        offline: print the rewritten file

The device is made by the hook when the domain starts; attach checks that some configured
GPU offers the type, not that one has room now.")]
    Attach(AttachArgs),

    /// Remove vgpu-hook devices from a domain's definition.
    #[command(after_help = "\
Examples:
  vgpuctl detach win11                       the domain's only vgpu-hook device
  vgpuctl detach win11 --uuid 6f2e9a4c-8d1b-4c1e-9a41-0c2d3e4f5a6b
  vgpuctl detach win11 --address 04:02.1
  vgpuctl detach win11 --all
  vgpuctl detach win11 --all --live          also unplug from the running domain
  vgpuctl detach --xml win11.xml --all       offline: print the rewritten file

Only devices listed in the vgpu-hook metadata are touched, with their <hostdev>;
everything else in the definition stays as it is.")]
    Detach(DetachArgs),

    /// Show the configured GPUs, what they are and which types they offer.
    #[command(after_help = "\
Examples:
  vgpuctl types
  vgpuctl types --fit L40S-16Q         where one more 16 GB vGPU can go now (exit 1: nowhere)
  vgpuctl types --json | jq '.gpus[].types[] | select(.available_instances > 0)'")]
    Types(TypesArgs),

    /// Show the devices that exist on configured GPUs and who holds them.
    #[command(after_help = "\
Examples:
  vgpuctl list
  vgpuctl list --json | jq '.devices[] | select(.state == \"stale\")'")]
    List(JsonArg),

    /// Before `virsh migrate`: whether a domain's vGPUs can come to another host.
    #[command(
        name = "migrate-check",
        after_help = "\
Examples:
  vgpuctl migrate-check win11 qemu+ssh://host2/system
  vgpuctl migrate-check win11 qemu+tcp://10.0.0.2/system --json

Reads the destination through libvirt (its versions and node devices): the same vGPU type
there, with room for every vGPU of the domain; plain VFs (AMD GIM) do not move; post-copy is
not supported. Exit status 0 when it can move, 1 when not. The destination's hook decides
again at migrate begin, with its own config."
    )]
    MigrateCheck(MigrateCheckArgs),

    /// Show what a domain asks for and what it holds.
    #[command(after_help = "\
Examples:
  vgpuctl status win11
  vgpuctl status --xml win11.xml --json")]
    Status(StatusArgs),

    /// Show (or fix) NVIDIA's driver and licence inside guests, through the QEMU guest agent.
    #[command(after_help = "\
Examples:
  vgpuctl guest win11                          driver, vGPU, licence, licensing service
  vgpuctl guest --all --json                   every running domain holding a vGPU
  vgpuctl guest vm1 --license-token client_configuration_token_05-01-2025.tok
  vgpuctl guest vm1 --license-server lic.example.com:7070 --feature-type 2 --dry-run

A domain without a guest agent, driver or licence is a row saying which, with the fix.
A token or server is checked on the host before anything is written; replaced files are
kept as NAME.bak-STAMP; the licensing service is restarted and the new status shown.")]
    Guest(GuestArgs),

    /// Make a domain's definition fit this host again (after `virsh migrate --persistent`).
    #[command(after_help = "\
Examples:
  vgpuctl resync win11 --dry-run     show what would change
  vgpuctl resync win11

A definition copied from another host (virsh migrate --persistent) keeps that host's mdev
UUIDs and VF addresses. Where one is taken or absent here, it gets a free one of the same type
or model, as the hook's migrate filter does; everything else stays byte for byte.")]
    Resync(ResyncArgs),

    /// Remove devices that no running domain holds and drop stale ownership records.
    #[command(after_help = "\
Examples:
  vgpuctl reconcile --dry-run     show what would be done
  vgpuctl reconcile

A device that a QEMU process still names on its command line is never removed.")]
    Reconcile(ReconcileArgs),

    /// Install the hook into libvirt's hooks directory and reload the libvirt daemon.
    #[command(after_help = "\
Examples:
  vgpuctl install                        /etc/libvirt/hooks/qemu.d/50-vgpu-hook
  vgpuctl install --as-qemu              /etc/libvirt/hooks/qemu (libvirt < 6.5)
  vgpuctl install --hook-binary ./target/release/vgpu-hook

Also writes a commented config skeleton listing this host's GPUs when none exists.")]
    Install(InstallArgs),

    /// Remove the hook (only files that are vgpu-hook) and reload the libvirt daemon.
    #[command(after_help = "\
Examples:
  vgpuctl uninstall
  vgpuctl uninstall --purge     also remove the config")]
    Uninstall(UninstallArgs),

    /// Check the host: IOMMU, vfio modules, vendor service, GPUs, config, hook, daemon, its
    /// confinement (AppArmor, SELinux), libvirt.
    #[command(after_help = "\
Examples:
  vgpuctl doctor
  vgpuctl doctor --json

Each problem comes with the command that fixes it; the exit status is 1 when a check failed.")]
    Doctor(DoctorArgs),

    /// Ready the configured GPUs at boot (run by vgpu-hook-boot.service before libvirt).
    #[command(after_help = "\
Examples:
  vgpuctl boot                    what the boot unit runs
  vgpuctl boot --wait-secs 0      report only what is ready now
  vgpuctl boot --check            what a boot would do, doing nothing (exit 1: not all ready)

For each configured GPU: NVIDIA GPUs whose SR-IOV VFs are off get them from sriov-manage;
GPUs not yet registered by NVIDIA's vGPU manager are waited for (when it is installed) within
the bound; missing GPUs are reported. One line per GPU. Always exits 0: a boot goes on
without its GPUs rather than stopping for them.")]
    Boot(BootArgs),

    /// Give a GPU no new vGPUs (before a driver upgrade or maintenance); VMs on it run on.
    #[command(after_help = "\
Examples:
  vgpuctl drain 0000:82:00.0 --reason 'driver 570 -> 580'
  vgpuctl drain 82:00.0 --wait --timeout 3600     return once no VM holds a vGPU there
  vgpuctl drain --all

Starts that would put a vGPU (an mdev, a VF) on a drained GPU are refused with a line naming
the drain; other GPUs still take them. Lists the VMs that still hold a vGPU there. The drain
is kept beside the config (drained.toml), so it survives reboots until `vgpuctl undrain`.
Exit status 1 when --timeout passes with VMs still on the GPU.")]
    Drain(DrainArgs),

    /// End a drain: the GPU takes new vGPUs again.
    #[command(after_help = "\
Examples:
  vgpuctl undrain 0000:82:00.0
  vgpuctl undrain --all")]
    Undrain(UndrainArgs),

    /// Print the host's vGPU capacity and the hook's counters in Prometheus text format.
    #[command(after_help = "\
Examples:
  vgpuctl metrics
  vgpuctl metrics --output /var/lib/prometheus/node-exporter/vgpu_hook.prom

Metrics: vgpu_hook_gpu_info{gpu,numa_node,kind}, vgpu_hook_type_max_instances and
vgpu_hook_type_available_instances{gpu,numa_node,kind,type,type_name},
vgpu_hook_devices{gpu,type,device_kind,domain,state}, vgpu_hook_refusals_total{reason},
vgpu_hook_gpu_drained{gpu}, vgpu_hook_release_failures_total,
vgpu_hook_last_reconcile_timestamp_seconds.
The vgpu-hook-metrics.timer unit writes the file every minute.")]
    Metrics(MetricsArgs),

    /// Print a shell completion script.
    #[command(
        hide = true,
        after_help = "\
Examples:
  vgpuctl completions bash > /etc/bash_completion.d/vgpuctl
  vgpuctl completions zsh > \"${fpath[1]}/_vgpuctl\""
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },

    /// Print the man page (or write one page per command into a directory).
    #[command(hide = true)]
    Man {
        /// Write vgpuctl.1 and vgpuctl-COMMAND.1 files here instead of printing vgpuctl.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `--json`.
#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON (shape: docs/json.md) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `vgpuctl types`.
#[derive(Debug, Args)]
pub struct TypesArgs {
    /// Print JSON (shape: docs/json.md) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only this profile (as a domain asks for it, e.g. L40S-16Q): how many more fit on each
    /// GPU now, placed as the hook would place them.
    #[arg(long, value_name = "PROFILE")]
    pub fit: Option<String>,
}

/// Where the definition comes from.
#[derive(Debug, Args)]
pub struct Target {
    /// The domain (name or UUID); not needed with --xml.
    #[arg(value_name = "DOMAIN", required_unless_present = "xml")]
    pub domain: Option<String>,

    /// Work offline on a domain XML file ('-' for stdin) and print the result; libvirt is not
    /// contacted.
    #[arg(long, value_name = "FILE")]
    pub xml: Option<PathBuf>,
}

/// `attach`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["profile", "type_id", "vf"])))]
pub struct AttachArgs {
    #[command(flatten)]
    pub target: Target,

    /// vGPU profile name, full or short ('GRID P40-2Q', 'P40-2Q').
    #[arg(long, value_name = "P", conflicts_with = "type_id")]
    pub profile: Option<String>,

    /// Exact type id ('nvidia-47', 'mtty-2'; numeric for kernel-6.8+ NVIDIA VFs).
    #[arg(long = "type", value_name = "T")]
    pub type_id: Option<String>,

    /// A whole SR-IOV VF of a configured PF (with --profile/--type: a kernel-6.8+ NVIDIA VF).
    #[arg(long, conflicts_with_all = ["parent", "params"])]
    pub vf: bool,

    /// With --vf: take the VF from this PF.
    #[arg(long, value_name = "ADDR", requires = "vf")]
    pub pf: Option<String>,

    /// With --vf: this exact VF.
    #[arg(long, value_name = "A", requires = "vf", conflicts_with = "pf")]
    pub address: Option<String>,

    /// How many devices.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub count: u32,

    /// Only create the mdev on these parents (GPU address or parent name; repeat or comma
    /// separate).
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    pub parent: Vec<String>,

    /// NVIDIA vgpu_params written after creation ('frame_rate_limiter=0').
    #[arg(long, value_name = "S")]
    pub params: Option<String>,

    /// Also create the device now and hot-plug it into the running domain.
    #[arg(long, conflicts_with = "xml")]
    pub live: bool,

    /// Skip the checks against this host's config and GPUs (preparing a definition for
    /// another host, or before the vendor driver is up).
    #[arg(long)]
    pub force: bool,

    /// Do not add the QEMU guest agent channel (added when missing, so `vgpuctl guest` can
    /// reach the guest; detach leaves it).
    #[arg(long)]
    pub no_agent_channel: bool,

    /// Show the vGPU as the domain's display (display='on', ramfb='on' on the first mdev) in
    /// virt-manager's console from boot on; mdev vGPUs only.
    #[arg(long)]
    pub display: bool,
}

/// `detach`.
#[derive(Debug, Args)]
pub struct DetachArgs {
    #[command(flatten)]
    pub target: Target,

    /// The mdev with this UUID.
    #[arg(long, value_name = "U", conflicts_with_all = ["address", "all"])]
    pub uuid: Option<String>,

    /// The VF at this address.
    #[arg(long, value_name = "A", conflicts_with = "all")]
    pub address: Option<String>,

    /// Every vgpu-hook device of the domain.
    #[arg(long)]
    pub all: bool,

    /// Also unplug from the running domain and free the device now.
    #[arg(long, conflicts_with = "xml")]
    pub live: bool,

    /// Keep the QEMU guest agent channel that attach added (by default it goes with the last
    /// device, like everything else attach added).
    #[arg(long)]
    pub keep_agent_channel: bool,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,

    /// Print JSON (shape: docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// `migrate-check`.
#[derive(Debug, Args)]
pub struct MigrateCheckArgs {
    /// The domain to move (on --connect's host).
    pub domain: String,

    /// The destination's libvirt URI (what `virsh migrate` is given).
    pub dest_uri: String,

    /// Print JSON (shape: docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// `resync`.
#[derive(Debug, Args)]
pub struct ResyncArgs {
    /// The domain.
    pub domain: String,

    /// Only show what would change.
    #[arg(long)]
    pub dry_run: bool,
}

/// `reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Only show what would be done.
    #[arg(long)]
    pub dry_run: bool,
}

/// `install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// libvirt's hooks directory.
    #[arg(long, value_name = "DIR", default_value = vgpu_hook::ctl::install::DEFAULT_HOOKS_DIR)]
    pub hooks_dir: PathBuf,

    /// Install as DIR/qemu instead of DIR/qemu.d/50-vgpu-hook (never replaces another program).
    #[arg(long)]
    pub as_qemu: bool,

    /// The vgpu-hook executable to install (default: the one next to vgpuctl).
    #[arg(long, value_name = "PATH")]
    pub hook_binary: Option<PathBuf>,

    /// Where the boot unit goes (vgpu-hook-boot.service, enabled for multi-user.target),
    /// unless the package installed it.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    pub units_dir: PathBuf,

    /// Do not install the boot unit.
    #[arg(long)]
    pub no_units: bool,

    /// Do not signal the libvirt daemon; print how to.
    #[arg(long)]
    pub no_reload: bool,
}

/// `uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// libvirt's hooks directory.
    #[arg(long, value_name = "DIR", default_value = vgpu_hook::ctl::install::DEFAULT_HOOKS_DIR)]
    pub hooks_dir: PathBuf,

    /// Also remove the config file.
    #[arg(long)]
    pub purge: bool,

    /// Where `install` put the boot unit.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    pub units_dir: PathBuf,

    /// Do not signal the libvirt daemon; print how to.
    #[arg(long)]
    pub no_reload: bool,
}

/// `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// libvirt's hooks directory.
    #[arg(long, value_name = "DIR", default_value = vgpu_hook::ctl::install::DEFAULT_HOOKS_DIR)]
    pub hooks_dir: PathBuf,

    /// Print JSON (shape: docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// `boot`.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// Bound on waiting for GPUs to register (default: the config's parent_wait_secs).
    #[arg(long, value_name = "S")]
    pub wait_secs: Option<u64>,
    /// Say what a boot would run or wait for, and do neither (exit 1 when a GPU is not ready).
    #[arg(long)]
    pub check: bool,
}

/// Which configured GPUs: by name, or `--all`.
#[derive(Debug, Args)]
pub struct GpuSelection {
    /// GPUs as the config names them (PCI address, with or without the domain; or an mdev
    /// parent's name).
    #[arg(
        value_name = "GPU",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub gpus: Vec<String>,
    /// Every configured GPU.
    #[arg(long)]
    pub all: bool,
}

/// `drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Which GPUs.
    #[command(flatten)]
    pub which: GpuSelection,
    /// Why (shown in refusals and by `vgpuctl types`).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Return only once no VM holds a vGPU on the drained GPUs.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (exit status 1); default: wait as long as it takes.
    #[arg(long, value_name = "S", requires = "wait")]
    pub timeout: Option<u64>,
}

/// `undrain`.
#[derive(Debug, Args)]
pub struct UndrainArgs {
    /// Which GPUs.
    #[command(flatten)]
    pub which: GpuSelection,
}

/// `metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write to this file atomically (temp file and rename) instead of stdout, creating its
    /// directory (node_exporter's textfile collector reads only whole files).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `guest`.
#[derive(Debug, Args)]
pub struct GuestArgs {
    /// The domain (name or UUID).
    #[arg(
        value_name = "DOMAIN",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub domain: Option<String>,

    /// Every running domain that holds a vGPU (per vgpu-hook's state or its metadata).
    #[arg(long)]
    pub all: bool,

    /// Print JSON (shape: docs/json.md).
    #[arg(long)]
    pub json: bool,

    /// Install this NLS client configuration token (.tok) in the guest.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["license_server", "all"])]
    pub license_token: Option<PathBuf>,

    /// Point the guest at a legacy licence server (gridd.conf / registry; port 7070 unless
    /// given).
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "all")]
    pub license_server: Option<String>,

    /// FeatureType with --license-server: 1 NVIDIA vGPU, 2 RTX Virtual Workstation, 4 Virtual
    /// Compute Server, 0 unlicensed.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        requires = "license_server"
    )]
    pub feature_type: u32,

    /// With --license-token/--license-server: show what would be written, write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// How long to wait for the guest to report a licence after the service restart.
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub wait_secs: u64,
}
