# needs: modular
# libvirt's modular daemons, as RHEL and Fedora run them: virtqemud runs the QEMU domains and their
# hooks, virtnodedevd the node devices, virtlogd QEMU's logs; no libvirtd runs and no libvirtd
# socket exists, so the package's reload (install scenario), every hook call, vgpuctl through
# qemu:///system and doctor went to virtqemud.
require_installed
check "no libvirtd runs" eval '! pidof libvirtd >/dev/null'
check "no libvirtd socket (/run/libvirt/libvirt-sock)" [ ! -e /run/libvirt/libvirt-sock ]
for d in virtqemud virtnodedevd virtlogd; do
    check "$d runs" eval "pidof $d >/dev/null"
done
check "virtqemud listens on /run/libvirt/virtqemud-sock" [ -S /run/libvirt/virtqemud-sock ]

out=$(vgpuctl doctor 2>&1); rc=$?
printf '%s\n' "$out" | grep -E ' (daemon|libvirt|confinement) ' | sed 's/^/  > /'
check "doctor passes (exit $rc)" [ $rc = 0 ]
check "doctor names virtqemud as the daemon that has seen the hook" \
    eval 'printf "%s\n" "$out" | grep -q "virtqemud (pid $(daemon_pid)) has seen the installed hook"'

define_domain vm1
out=$(vgpuctl attach vm1 --type mtty-2 2>&1) || fail "vgpuctl attach vm1 (through qemu:///system) failed: $(oneline "$out")"
U=$(mdev_uuids vm1)
start_paused vm1
check "virtqemud's hook call made mdev $U" mdev_exists "$U"
check "QEMU under virtqemud realized the mtty device" has_pci_device vm1 4348:3253
# vgpuctl names qemu:///system itself: it needs no client configuration (virsh here reads
# uri_default from /etc/libvirt/libvirt.conf, see init.sh)
mv /etc/libvirt/libvirt.conf /tmp/libvirt.conf.aside
out=$(vgpuctl list 2>&1); rc=$?
mv /tmp/libvirt.conf.aside /etc/libvirt/libvirt.conf
[ $rc = 0 ] || fail "vgpuctl list without client configuration failed: $(oneline "$out")"
check "vgpuctl list (qemu:///system, virtqemud) shows vm1 holding $U" eval 'printf "%s\n" "$out" | grep "$U" | grep -q vm1'
destroy vm1
check "virtqemud's release call removed mdev $U" wait_for 10 mdev_gone "$U"

# node device calls on qemu:///system are virtqemud's to hand to virtnodedevd
PF=$(nvme_pf) || fail "no NVMe PF"
PFDEV=pci_$(echo "$PF" | tr ':.' '__')
check "virsh nodedev-list (virtqemud -> virtnodedevd) lists the PF $PFDEV" \
    eval 'vsh nodedev-list --cap pci | grep -qx "$PFDEV"'
