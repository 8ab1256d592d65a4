#!/bin/bash
# Runs as PID 1 of the e2e guest (exec'ed by the image's /sbin/vgpu-e2e-init once /e2e is mounted).
# Sets up a host like a libvirt host without systemd: syslog, vfio/mdev modules, virtlogd and
# libvirtd; then runs the scenarios listed in
# /e2e/scenarios and powers off. Results go to the writable share mounted at /e2e-out.
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
hostname vgpu-e2e
mkdir -p /e2e-out
mount -t 9p -o trans=virtio,version=9p2000.L e2eout /e2e-out || { echo "E2E-GUEST: cannot mount the output share"; busybox poweroff -f; }
OUT=/e2e-out

finish() {
    cp /var/log/messages "$OUT/syslog" 2>/dev/null
    cp /var/log/libvirt/libvirtd.log "$OUT/libvirtd.log" 2>/dev/null
    echo "E2E-GUEST-DONE $1" > "$OUT/status"
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
PF=$(nvme_pf) || { echo "FAIL setup: no SR-IOV capable NVMe controller" >> "$OUT/results"; finish "setup failed"; }
provision_vfs "$PF" 2 || { echo "FAIL setup: could not enable and provision VFs on $PF" >> "$OUT/results"; finish "setup failed"; }
gsay "SR-IOV: $PF has VFs $(vfs_of "$PF" | while read -r v; do printf '%s(%s) ' "$v" "$(pci_driver "$v")"; done)"

# Without udev /dev/kvm stays 0600 root; with QEMU running as libvirt-qemu, libvirt re-probes the
# QEMU capabilities on every lookup (about 40 s per define). Running QEMU as root avoids that.
printf 'user = "root"\ngroup = "root"\n' >> /etc/libvirt/qemu.conf
printf 'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n' >> /etc/libvirt/libvirtd.conf
mkdir -p /var/log/libvirt
virtlogd -d
libvirtd -d
for _ in $(seq 1 60); do virsh -q version >/dev/null 2>&1 && break; sleep 1; done
virsh -q version >/dev/null 2>&1 || { echo "FAIL setup: libvirtd did not answer" >> "$OUT/results"; finish "setup failed"; }
# Probe QEMU's capabilities once now, so the first scenario does not pay for it.
virsh domcapabilities --virttype qemu >/dev/null 2>&1
gsay "libvirtd up: $(virsh -q version --daemon | tr -s ' \n' ' ')"

# The project is installed by the install scenario, with dpkg from /e2e/pkg/vgpu-hook.deb.

while read -r name; do
    [ -n "$name" ] || continue
    file=$(ls /e2e/guest/scenarios/[0-9]*-"$name".sh 2>/dev/null | head -n 1)
    gsay "scenario $name"
    run_scenario "$name" "$file"
done < /e2e/scenarios
finish "all scenarios ran"
