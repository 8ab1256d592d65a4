# QEMU killed from outside (kill -9): libvirt's stop path calls the hook's release and the mdev
# goes away.
require_installed
define_domain vm3
out=$(vgpuctl attach vm3 --type mtty-2 2>&1) || fail "vgpuctl attach vm3 failed: $(oneline "$out")"
U=$(mdev_uuids vm3)
A0=$(avail mtty-2)
start_paused vm3
check "mdev $U exists" mdev_exists "$U"
QPID=$(qemu_pid vm3)
[ -n "$QPID" ] || fail "no pid file for vm3's QEMU"
kill -9 "$QPID"
check "libvirt noticed: vm3 shut off" wait_for 30 is_shut_off vm3
check "mdev $U removed after QEMU was killed" wait_for 15 mdev_gone "$U"
check "mtty-2 available_instances restored" [ "$(avail mtty-2)" = "$A0" ]
