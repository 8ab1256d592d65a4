# libvirtd (virtqemud on a modular host) restarted while a domain runs: the domain keeps running
# (the hook's reconnect call must not fail) and a later destroy still removes its mdev.
require_installed
define_domain vm2
out=$(vgpuctl attach vm2 --type mtty-2 2>&1) || fail "vgpuctl attach vm2 failed: $(oneline "$out")"
U=$(mdev_uuids vm2)
A0=$(avail mtty-2)
start_paused vm2
check "mdev $U exists" mdev_exists "$U"
QPID=$(qemu_pid vm2)

LPID=$(daemon_pid)
kill "$LPID"
check "$DAEMON stopped" wait_for 30 eval '! kill -0 '"$LPID"' 2>/dev/null'
check "$DAEMON started again" start_daemon
check "QEMU of vm2 still alive (pid $QPID)" kill -0 "$QPID"
check "vm2 still active after the restart" is_active vm2
check "mdev $U still exists after the restart" mdev_exists "$U"
check "QEMU of vm2 still has the mtty device" has_pci_device vm2 4348:3253

destroy vm2
check "mdev $U removed by destroy after the restart" wait_for 10 mdev_gone "$U"
check "mtty-2 available_instances restored ($A0)" [ "$(avail mtty-2)" = "$A0" ]
