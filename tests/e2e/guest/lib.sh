# Helpers for the in-guest scenarios (bash). Sourced by init.sh and by every scenario.
# A scenario is a bash script run in its own process; it ends at its first failed check:
#   fail "why"               record why and end the scenario as failed
#   check "what" CMD ARGS... run CMD; when it fails, fail with "what"
# and passes when it reaches its end.

MTTY_TYPES=/sys/class/mdev_bus/mtty/mdev_supported_types
MDEV_DEVICES=/sys/bus/mdev/devices
HOOK_FILE=/etc/libvirt/hooks/qemu.d/50-vgpu-hook
CONFIG=/etc/vgpu-hook/config.toml
VGPU_NS=urn:vgpu-hook:domain:1
OUT=${OUT:-/e2e-out}
# the stack this guest is (run.sh's stack_define): STACK, APPARMOR, DAEMON; one host of a pair
# (run.sh's run_pair) also has ROLE (hosta, hostb), ADDR, PEER and PEER_ADDR
STACK=unknown APPARMOR=0 DAEMON=libvirtd ROLE="" ADDR="" PEER="" PEER_ADDR=""
PAIR=/e2e-pair
# shellcheck disable=SC1091
[ -f /e2e/stack.env ] && . /e2e/stack.env

say() { echo "  | $*"; }
# the hook's refusal line in a virsh message
hook_line() { printf '%s' "$1" | grep -o 'vgpu-hook: .*' | head -n 1; }
# a text on one line, for one-line failure reasons
oneline() { printf '%s' "$*" | tr -s '\n' ' ' | cut -c1-300; }

fail() {
    say "FAILED: $*"
    printf '%s\n' "$*" > "$E2E_REASON"
    exit 1
}
check() {
    local what=$1; shift
    if "$@"; then say "ok: $what"; else fail "$what"; fi
}
# wait_for SECONDS CMD ARGS...: poll CMD every 0.2 s until it succeeds; false if it never did
wait_for() {
    local limit=$1 i=0; shift
    while ! "$@"; do
        i=$((i + 1))
        [ $i -ge $((limit * 5)) ] && return 1
        sleep 0.2
    done
}
# run a command with a time limit so a hung hook cannot hang the whole run
vsh() { timeout 120 virsh "$@"; }

# ---------------------------------------------------------------- domains
# domain_xml NAME [METADATA_XML [DEVICES_XML [PLACEMENT_XML]]]: a small TCG domain; started
# --paused it never runs guest code, but QEMU opens and realizes every device it is given.
# PLACEMENT_XML replaces the plain <vcpu> (for <vcpu cpuset>, <numatune>).
domain_xml() {
    cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>64</memory>
  ${4:-<vcpu>1</vcpu>}
  ${2:+<metadata>$2</metadata>}
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    ${3:-}
  </devices>
</domain>
EOF
}
define_domain() {
    domain_xml "$@" > "/tmp/$1.xml"
    local out
    out=$(vsh define "/tmp/$1.xml" 2>&1) || fail "virsh define $1: $(oneline "$out")"
}
domstate() { vsh domstate "$1" 2>/dev/null | head -n 1; }
is_active() { case $(domstate "$1") in running|paused) return 0 ;; *) return 1 ;; esac; }
is_shut_off() { [ "$(domstate "$1")" = "shut off" ]; }
qemu_pid() { cat "/run/libvirt/qemu/$1.pid" 2>/dev/null; }
# start_paused DOM: start it, fail the scenario with virsh's message if that does not work
start_paused() {
    local out
    out=$(vsh start --paused "$1" 2>&1) || fail "virsh start --paused $1 failed: $(oneline "$out")"
    is_active "$1" || fail "$1 is '$(domstate "$1")' after virsh start"
}
destroy() {
    local out
    out=$(vsh destroy "$1" 2>&1) || fail "virsh destroy $1 failed: $(oneline "$out")"
}
info_pci() { vsh qemu-monitor-command "$1" --hmp 'info pci' 2>&1; }
# has_pci_device DOM VENDOR:DEVICE (hex, as HMP prints them): QEMU realized that device
has_pci_device() { info_pci "$1" | grep -qi "PCI device $2"; }
# values of an XPath attribute in the persistent definition, one per line
xpath_attr() { vsh dumpxml --inactive "$1" --xpath "$2" 2>/dev/null | sed -n 's/.*="\([^"]*\)".*/\1/p'; }
mdev_uuids() { xpath_attr "$1" "//devices/hostdev[@type='mdev']/source/address/@uuid"; }
# PCI addresses (0000:01:00.1 form) of the <hostdev type='pci'> entries
pci_hostdevs() {
    vsh dumpxml --inactive "$1" --xpath "//devices/hostdev[@type='pci']/source/address" 2>/dev/null |
        sed -n "s/.*domain=\"0x\([0-9a-f]*\)\" bus=\"0x\([0-9a-f]*\)\" slot=\"0x\([0-9a-f]*\)\" function=\"0x\([0-9a-f]*\)\".*/\1 \2 \3 \4/p" |
        while read -r d b s f; do printf '%04x:%02x:%02x.%x\n' "0x$d" "0x$b" "0x$s" "0x$f"; done
}
has_vgpu_metadata() { vsh dumpxml --inactive "$1" | grep -q "$VGPU_NS"; }
# PCI hostdev XML for an address like 0000:01:00.1
pci_hostdev_xml() {
    local a=$1
    printf "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x%s' bus='0x%s' slot='0x%s' function='0x%s'/></source></hostdev>" \
        "${a:0:4}" "${a:5:2}" "${a:8:2}" "${a:11:1}"
}

# ---------------------------------------------------------------- mdevs
avail() { cat "$MTTY_TYPES/$1/available_instances"; }
mdev_exists() { [ -e "$MDEV_DEVICES/$1" ]; }
mdev_gone() { [ ! -e "$MDEV_DEVICES/$1" ]; }
mdev_type_of() { basename "$(readlink "$MDEV_DEVICES/$1/mdev_type")"; }
all_mdevs() { ls "$MDEV_DEVICES" 2>/dev/null; }
# fill TYPE N: create N mdevs of TYPE ourselves (not through any domain); their UUIDs go to $FILLERS
FILLERS=""
fill() {
    local u n
    for n in $(seq 1 "$2"); do
        u=$(cat /proc/sys/kernel/random/uuid)
        echo "$u" > "$MTTY_TYPES/$1/create" || fail "could not create filler mdev $n of $2 ($1)"
        FILLERS="$FILLERS $u"
    done
}
remove_fillers() {
    local u
    for u in $FILLERS; do echo 1 > "$MDEV_DEVICES/$u/remove" || fail "could not remove filler mdev $u"; done
    FILLERS=""
}

# ---------------------------------------------------------------- PCI / SR-IOV
# the SR-IOV capable NVMe controller QEMU gave this guest
nvme_pf() {
    local d
    for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/vendor")" = 0x1b36 ] && [ "$(cat "$d/device")" = 0x0010 ] &&
            [ -f "$d/sriov_totalvfs" ] && [ "$(cat "$d/sriov_totalvfs")" -gt 0 ] && { basename "$d"; return 0; }
    done
    return 1
}
driver_is() { [ "$(pci_driver "$1")" = "$2" ]; }
pci_driver() {
    local l
    l=$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null) && basename "$l" || echo none
}
# provision_vfs PF N: enable N VFs on QEMU's NVMe PF, give each secondary controller its queue and
# interrupt resources, bring it online and let the nvme driver bind it. Without the resources a
# VF's controller never gets ready and nvme's probe waits for its timeout and fails.
provision_vfs() {
    local pf=$1 n=$2 dev ctrl c v
    dev=/sys/bus/pci/devices/$pf
    ctrl=/dev/$(ls "$dev/nvme" | head -n 1)
    echo 0 > "$dev/sriov_drivers_autoprobe" || return 1
    echo "$n" > "$dev/sriov_numvfs" || return 1
    for c in $(seq 1 "$n"); do    # secondary controller c is VF c
        nvme virt-mgmt "$ctrl" -c "$c" -r 1 -a 8 -n 1 >/dev/null &&
            nvme virt-mgmt "$ctrl" -c "$c" -r 0 -a 8 -n 2 >/dev/null &&
            nvme virt-mgmt "$ctrl" -c "$c" -r 0 -a 9 -n 0 >/dev/null || return 1
    done
    echo 1 > "$dev/sriov_drivers_autoprobe"
    for v in $(vfs_of "$pf"); do
        echo "$v" > /sys/bus/pci/drivers_probe
        [ "$(pci_driver "$v")" = nvme ] || return 1
    done
}
vfs_of() { local l; for l in /sys/bus/pci/devices/"$1"/virtfn*; do [ -e "$l" ] && basename "$(readlink "$l")"; done; }

# ---------------------------------------------------------------- hook evidence
# scenarios after 'install' need the hook in place and the test host's configuration
require_installed() {
    [ -x "$HOOK_FILE" ] || fail "the hook is not installed ($HOOK_FILE): the install scenario must run first"
    grep -q '^mdev_parents = \["mtty"\]' "$CONFIG" 2>/dev/null ||
        fail "$CONFIG is not the test host's configuration: the install scenario must run first"
}
hook_log() { grep -a 'vgpu-hook' /var/log/messages 2>/dev/null; }
# the libvirt daemon that runs QEMU domains and their hooks: libvirtd, or virtqemud (the stack's)
daemon_pid() { cat "/run/$DAEMON.pid" 2>/dev/null; }
start_daemon() {
    # shellcheck disable=SC2046
    "$DAEMON" -d $([ -n "$ROLE" ] && echo --listen)
    wait_for 60 daemon_answers
}
daemon_answers() { virsh -q version >/dev/null 2>&1; }
# the daemon's version as a number (11.3.0 -> 11003000), for behaviour that depends on it
libvirt_version() {
    virsh -q version --daemon 2>/dev/null |
        sed -n 's/^Running against daemon: *\([0-9]*\)\.\([0-9]*\)\.\([0-9]*\).*/\1 \2 \3/p' |
        awk '{printf "%d\n", $1 * 1000000 + $2 * 1000 + $3}'
}

# ---------------------------------------------------------------- AppArmor
# the kernel's AppArmor denials so far (no auditd: they are in the kernel log)
aa_denials() { dmesg 2>/dev/null | grep -a 'apparmor="DENIED"'; }
# denials of the project's own programs: the hook as libvirt runs it, vgpuctl
hook_denials() { aa_denials | grep -aE 'comm="(50-vgpu-hook|vgpu-hook|vgpuctl)"'; }
# the confinement of a process: its AppArmor label ("libvirtd (enforce)", "unconfined")
aa_label() { tr -d '\0' < "/proc/$1/attr/current" 2>/dev/null; }

# ---------------------------------------------------------------- runner (used by init.sh)
# run_scenario NAME FILE: run one scenario in its own process with a time limit, then check
# that it left no mdev behind and reset the guest for the next one.
run_scenario() {
    local name=$1 file=$2 rc reason left
    export E2E_REASON=/tmp/reason.$name
    rm -f "$E2E_REASON"
    if [ -z "$file" ]; then
        echo "FAIL $name: no scenario file" | tee -a "$OUT/results"
        return
    fi
    local t0=$SECONDS denied0
    denied0=$(hook_denials | wc -l)
    timeout -k 10 300 bash -c '. /e2e/guest/lib.sh; . "$1"' scenario "$file" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    reason=$(cat "$E2E_REASON" 2>/dev/null)
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        reason="timed out after 300 s${reason:+ ($reason)}"
    elif [ "$rc" != 0 ] && [ -z "$reason" ]; then
        reason="scenario exited with status $rc"
    fi
    # every scenario tears down what it started; anything still there is a leak
    left=$(all_mdevs | tr '\n' ' ')
    if [ -z "$reason" ] && [ -n "$left" ]; then
        reason="mdev(s) left behind: $left"
    fi
    # confined, the project's programs must never have been refused anything
    if [ -z "$reason" ] && [ "$(hook_denials | wc -l)" != "$denied0" ]; then
        reason="AppArmor denied the project's programs: $(hook_denials | tail -n 1 | cut -c1-240)"
    fi
    if [ -z "$reason" ]; then
        echo "PASS $name" | tee -a "$OUT/results"
    else
        echo "FAIL $name: $reason" | tee -a "$OUT/results"
    fi
    echo "  ($name took $((SECONDS - t0)) s)"
    reset_guest
}
reset_guest() {
    local d u
    for d in $(virsh list --name 2>/dev/null); do timeout 60 virsh destroy "$d" >/dev/null 2>&1; done
    for d in $(virsh list --all --name 2>/dev/null); do timeout 60 virsh undefine "$d" >/dev/null 2>&1; done
    for u in $(all_mdevs); do echo 1 > "$MDEV_DEVICES/$u/remove" 2>/dev/null; done
    pidof "$DAEMON" >/dev/null || start_daemon
}

# ---------------------------------------------------------------- the project, installed
# install_project: the package and the test host's config, as the install scenario leaves them
install_project() {
    dpkg -i /e2e/pkg/vgpu-hook.deb || return 1
    local pf
    pf=$(nvme_pf) || return 1
    printf 'mdev_parents = ["mtty"]\nsriov_pfs = ["%s"]\n' "$pf" > "$CONFIG"
}

# ---------------------------------------------------------------- two hosts
# A pair's hosts share $PAIR (a host directory both mount): hook-order logs (HOST.hooks) and the
# command channel by which hosta runs commands on hostb (cmd/ID.sh -> cmd/ID.out, cmd/ID.rc).
ORDER_PROBE=/etc/libvirt/hooks/qemu.d/00-order-probe
# pair_setup: the private link (virtio-net over QEMU's UDP socket), names, libvirt listening on
# TCP without auth (as on a private migration network), a distinct host UUID, the shared dir, and
# a probe hook beside ours that logs every call with how many the peer had logged by then
pair_setup() {
    {
        mkdir -p "$PAIR" && mount -t 9p -o trans=virtio,version=9p2000.L e2epair "$PAIR" &&
        modprobe virtio_net && wait_for 10 pair_iface >/dev/null && local nic && nic=$(pair_iface) &&
        busybox ip link set "$nic" up && busybox ip addr add "$ADDR/24" dev "$nic" &&
        printf '%s %s\n%s %s\n' "$ADDR" "$ROLE" "$PEER_ADDR" "$PEER" >> /etc/hosts &&
        printf 'listen_tls = 0\nlisten_tcp = 1\nauth_tcp = "none"\nhost_uuid = "%s"\n' \
            "$(cat /sys/class/dmi/id/product_uuid)" >> /etc/libvirt/libvirtd.conf &&
        printf 'migration_host = "%s"\n' "$ADDR" >> /etc/libvirt/qemu.conf &&
        mkdir -p "$(dirname "$ORDER_PROBE")" &&
        printf '%s\n' '#!/bin/sh' \
            '# e2e: every hook call on this host, with how many calls the peer had logged by then' \
            'cat >/dev/null' \
            "n=\$(cat '$PAIR/$PEER.hooks' 2>/dev/null | wc -l)" \
            "echo \"\$1 \$2 \$3 \$4 peer=\$n\" >> '$PAIR/$ROLE.hooks'" > "$ORDER_PROBE" &&
        chmod 755 "$ORDER_PROBE"
    } >/tmp/pair-setup.log 2>&1
}
# pair_iface: the private link's interface (the guest's only network device besides lo)
pair_iface() { ls /sys/class/net | grep -vx lo | grep -m 1 .; }
# throttle_link RATE: this host's migration streams (to QEMU's incoming ports 49152-49215) slowed
# to RATE (tc's units, e.g. 1mbit), so a migration lasts long enough to be watched or cancelled;
# libvirt's own connection (its keepalive) stays at full speed. unthrottle_link undoes it
throttle_link() {
    local nic
    nic=$(pair_iface)
    { tc qdisc replace dev "$nic" root handle 1: prio &&
        tc qdisc add dev "$nic" parent 1:3 handle 30: tbf rate "$1" burst 32kb latency 10s &&
        tc filter add dev "$nic" parent 1: protocol ip u32 match ip dport 49152 0xffc0 flowid 1:3
    } >/tmp/tc.log 2>&1 || fail "could not slow the migration streams on $nic to $1: $(oneline "$(cat /tmp/tc.log)")"
}
unthrottle_link() { tc qdisc del dev "$(pair_iface)" root 2>/dev/null; return 0; }
# serve_peer (hostb): runs each command hosta puts in the channel, until hosta is done
serve_peer() {
    touch "$PAIR/$ROLE.ready"
    local f id
    while [ ! -e "$PAIR/done" ]; do
        for f in "$PAIR"/cmd/*.sh; do
            [ -e "$f" ] || continue
            id=${f%.sh}
            bash -c '. /e2e/guest/lib.sh; . "$1"' peer-cmd "$f" > "$id.out" 2>&1
            echo $? > "$id.rc.tmp"
            rm -f "$f"; mv "$id.rc.tmp" "$id.rc"
        done
        sleep 0.2
    done
}
# on_peer CMD: runs CMD (bash, with these helpers) on the peer; its output, its exit status
on_peer() {
    local id n=0
    id=$PAIR/cmd/$(date +%s%N)
    mkdir -p "$PAIR/cmd"
    printf '%s\n' "$*" > "$id.tmp" && mv "$id.tmp" "$id.sh"
    while [ ! -e "$id.rc" ]; do
        n=$((n + 1)); [ $n -gt 1500 ] && { echo "on_peer: no answer from $PEER in 300 s"; return 124; }
        sleep 0.2
    done
    cat "$id.out"
    return "$(cat "$id.rc")"
}
# wait_peer: fails the scenario unless the peer has its libvirtd up and the project installed
wait_peer() {
    wait_for 300 test -e "$PAIR/$PEER.ready" || fail "$PEER never became ready"
    peer_virsh version >/dev/null 2>&1 || fail "libvirtd on $PEER does not answer over TCP"
}
peer_virsh() { timeout 300 virsh -c "qemu+tcp://$PEER/system" "$@"; }
# hook_calls HOST DOM: the hook calls HOST logged for DOM, one per line (OP SUB EXTRA peer=N)
hook_calls() { grep -a "^$2 " "$PAIR/$1.hooks" 2>/dev/null | cut -d' ' -f2-; }

# ---------------------------------------------------------------- device state that moves
# container_dirty_tracking DOM: the domain's first hostdev (alias hostdev0) told to let the VFIO
# container (type1) track the pages it dirties, and to migrate anyway (QEMU's enable-migration=on).
# Debian's 6.12 kernel is built without IOMMUFD (no CONFIG_IOMMUFD_DRIVER), so a device that tracks
# its own dirty pages, as mtty does, cannot report them: every save or migration fails at its start
# ("Failed to get DMA logging report ... Operation not supported"). This is the per-device QEMU
# setting an operator on such a kernel needs, written as libvirt's <qemu:override>.
container_dirty_tracking() {
    local f=/tmp/$1.dirty.xml out
    vsh dumpxml --inactive "$1" > "$f" || fail "virsh dumpxml $1"
    sed -i "0,/<domain /s|<domain |<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' |" "$f"
    sed -i "s|</devices>|</devices><qemu:override><qemu:device alias='hostdev0'><qemu:frontend><qemu:property name='x-device-dirty-page-tracking' type='string' value='off'/><qemu:property name='enable-migration' type='string' value='on'/></qemu:frontend></qemu:device></qemu:override>|" "$f"
    out=$(vsh define "$f" 2>&1) || fail "virsh define $1 with the dirty-tracking override: $(oneline "$out")"
}
# vfio_section FILE: the save file holds a VFIO device's state (its migration section, "/vfio")
vfio_section() { grep -aq '/vfio' "$1"; }
