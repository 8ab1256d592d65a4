#!/bin/bash
# Runs as PID 1 of the e2e guest (exec'ed by the image's /sbin/vgpu-e2e-init once /e2e is mounted).
# Sets up a host like a libvirt host without systemd: syslog, vfio/mdev modules, AppArmor where the
# stack has it, virtlogd and the libvirt daemons (libvirtd, or the modular virtqemud and
# virtnodedevd); then runs the scenarios listed in /e2e/scenarios and powers off. Results go to
# the writable share mounted at /e2e-out.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C HOME=/root

T0=$(cut -d' ' -f1 /proc/uptime)
gsay() { echo "E2E-GUEST [$(awk -v t0="$T0" '{printf "%.1f", $1 - t0}' /proc/uptime)s] $*"; }

mount -o remount,rw /
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /e2e-out
mount -t 9p -o trans=virtio,version=9p2000.L e2eout /e2e-out || { echo "E2E-GUEST: cannot mount the output share"; busybox poweroff -f; }
OUT=/e2e-out

finish() {
    cp /var/log/messages "$OUT/syslog" 2>/dev/null
    cp "/var/log/libvirt/$DAEMON.log" "$OUT/libvirtd.log" 2>/dev/null
    dmesg > "$OUT/dmesg" 2>/dev/null
    echo "E2E-GUEST-DONE $1" > "$OUT/status"
    # the first host of a pair tells the second that it is done (whatever happened)
    [ "$ROLE" = hosta ] && touch "$PAIR/done"
    gsay "done: $1"
    sync
    busybox poweroff -f
}

# The hook logs through syslog: busybox syslogd writes everything to one file.
mkdir -p /var/log
busybox syslogd -O /var/log/messages

for m in vfio vfio_iommu_type1 vfio-pci mdev mtty; do
    modprobe "$m" || { echo "FAIL setup: modprobe $m failed" >> "$OUT/results"; finish "setup failed"; }
done
[ -d /sys/class/mdev_bus/mtty ] || { echo "FAIL setup: mtty registered no mdev parent" >> "$OUT/results"; finish "setup failed"; }

# SR-IOV as an operator sets it up at boot: two VFs on the emulated NVMe PF, each given queue and
# interrupt resources and brought online, so the nvme driver binds them (their host driver).
. /e2e/guest/lib.sh
hostname "${ROLE:-vgpu-e2e}"
PF=$(nvme_pf) || { echo "FAIL setup: no SR-IOV capable NVMe controller" >> "$OUT/results"; finish "setup failed"; }
provision_vfs "$PF" 2 || { echo "FAIL setup: could not enable and provision VFs on $PF" >> "$OUT/results"; finish "setup failed"; }
gsay "SR-IOV: $PF has VFs $(vfs_of "$PF" | while read -r v; do printf '%s(%s) ' "$v" "$(pci_driver "$v")"; done)"

# A confined host (APPARMOR=1): Debian's profiles loaded the way its apparmor unit loads them at
# boot, and libvirt told to confine QEMU with them (not merely allowed to), so a profile that does
# not load fails the setup instead of leaving everything unconfined.
if [ "$APPARMOR" = 1 ]; then
    mount -t securityfs securityfs /sys/kernel/security
    # libvirt compiles a profile for every QEMU it starts (virt-aa-helper, apparmor_parser);
    # under TCG that is most of a start. Skipping one compile-time simplification pass makes the
    # same rules compile faster (what a profile allows does not change).
    echo 'Optimize=no-expr-simplify' >> /etc/apparmor/parser.conf
    [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ] ||
        { echo "FAIL setup: the guest kernel has AppArmor off" >> "$OUT/results"; finish "setup failed"; }
    /lib/apparmor/apparmor.systemd reload >/tmp/apparmor-load.log 2>&1 ||
        { echo "FAIL setup: loading the AppArmor profiles failed: $(tail -n 2 /tmp/apparmor-load.log | tr '\n' ' ')" >> "$OUT/results"; finish "setup failed"; }
    grep -q "^$DAEMON (enforce)" /sys/kernel/security/apparmor/profiles ||
        { echo "FAIL setup: no $DAEMON profile in enforce mode after loading" >> "$OUT/results"; finish "setup failed"; }
    printf 'security_driver = "apparmor"\n' >> /etc/libvirt/qemu.conf
    gsay "AppArmor: $(wc -l < /sys/kernel/security/apparmor/profiles) profiles loaded"
fi

# Without udev /dev/kvm stays 0600 root; with QEMU running as libvirt-qemu, libvirt re-probes the
# QEMU capabilities on every lookup (about 40 s per define). Running QEMU as root avoids that.
printf 'user = "root"\ngroup = "root"\n' >> /etc/libvirt/qemu.conf
printf 'log_outputs = "3:file:/var/log/libvirt/%s.log"\n' "$DAEMON" >> "/etc/libvirt/$DAEMON.conf"
mkdir -p /var/log/libvirt
virtlogd -d
# modular: the node device daemon beside the QEMU one (virtqemud hands it the nodedev calls).
# A client names qemu:///system and finds virtqemud's socket itself (libvirt's "auto" mode); only
# a URI-less client (virsh with no -c) needs the default URI, since Debian's client library is
# built to fall back to libvirtd's socket, not to probe for the modular ones as RHEL's does.
if [ "$DAEMON" = virtqemud ]; then
    printf 'uri_default = "qemu:///system"\n' >> /etc/libvirt/libvirt.conf
    virtnodedevd -d
fi
# one host of a pair: its private link to the other, libvirt listening on it, the shared dir
[ -n "$ROLE" ] && { pair_setup || { echo "FAIL setup: two-host setup failed: $(tail -n 1 /tmp/pair-setup.log 2>/dev/null)" >> "$OUT/results"; finish "setup failed"; }; }
start_daemon || { echo "FAIL setup: $DAEMON did not answer: $(virsh -q version 2>&1 | tr -s '\n' ' ' | cut -c1-200)" >> "$OUT/results"; finish "setup failed"; }
# Probe QEMU's capabilities once now, so the first scenario does not pay for it.
virsh domcapabilities --virttype qemu >/dev/null 2>&1
gsay "$DAEMON up: $(virsh -q version --daemon | tr -s ' \n' ' ')(AppArmor: $(aa_label "$(daemon_pid)"))"

# The project is installed by the install scenario, with dpkg from /e2e/pkg/vgpu-hook.deb; a pair's
# hosts install it here, the second then serves the first until it is done.
if [ -n "$ROLE" ]; then
    install_project >/tmp/install.log 2>&1 || { echo "FAIL setup: installing the project failed: $(tail -n 1 /tmp/install.log)" >> "$OUT/results"; finish "setup failed"; }
    gsay "$ROLE: $(hostname), $(busybox ip -4 addr show "$(pair_iface)" | sed -n 's/.*inet \([^ ]*\).*/\1/p'), project installed"
fi
if [ "$ROLE" = hostb ]; then
    serve_peer
    finish "served $PEER"
fi

while read -r name; do
    [ -n "$name" ] || continue
    file=$(ls /e2e/guest/scenarios/[0-9]*-"$name".sh 2>/dev/null | head -n 1)
    gsay "scenario $name"
    run_scenario "$name" "$file"
done < /e2e/scenarios
finish "all scenarios ran"
