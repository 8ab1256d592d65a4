# The hook made the mdev at prepare, then the start fails later (QEMU refuses its command line):
# libvirt's clean-up calls release and the mdev is gone again.
require_installed
domain_xml vm7 |
    sed "s|<domain type='qemu'>|<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>|
         s|</devices>|</devices><qemu:commandline><qemu:arg value='-no-such-option'/></qemu:commandline>|" > /tmp/vm7.xml
out=$(vsh define /tmp/vm7.xml 2>&1) || fail "virsh define vm7: $(oneline "$out")"
out=$(vgpuctl attach vm7 --type mtty-2 2>&1) || fail "vgpuctl attach vm7 --type mtty-2 failed: $(oneline "$out")"
U=$(mdev_uuids vm7)
A0=$(avail mtty-2)
out=$(vsh start --paused vm7 2>&1); rc=$?
say "virsh start vm7: rc=$rc $(oneline "$out" | cut -c1-160)"
[ $rc != 0 ] || fail "vm7 started although QEMU was given -no-such-option"
printf '%s' "$out" | grep -q 'vgpu-hook: ' && fail "the start failed in the hook, not in QEMU: $(hook_line "$out")"
# QEMU's own complaint proves QEMU was launched, so the hook's prepare had run and succeeded
printf '%s' "$out" | grep -q 'no-such-option' || fail "the start did not fail in QEMU: $(oneline "$out")"
check "vm7 is shut off" is_shut_off vm7
check "mdev $U removed after the failed start" wait_for 10 mdev_gone "$U"
check "mtty-2 available_instances restored ($A0)" [ "$(avail mtty-2)" = "$A0" ]
