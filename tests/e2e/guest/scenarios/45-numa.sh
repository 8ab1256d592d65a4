# A domain with NUMA placement on the guest's real two-node layout (<numatune> preferring node 1,
# its vCPU pinned to node 1's CPU) still starts and gets its mdev; the hook read the wishes.
require_installed
nodes=$(ls -d /sys/devices/system/node/node* 2>/dev/null | wc -l)
check "the guest has two NUMA nodes" [ "$nodes" = 2 ]
check "CPU 1 is on node 1" grep -qx 1 /sys/devices/system/node/node1/cpulist
define_domain numa1 "" "" "<vcpu placement='static' cpuset='1'>1</vcpu>
  <numatune><memory mode='preferred' nodeset='1'/></numatune>"
out=$(vgpuctl attach numa1 --type mtty-2 2>&1) || fail "vgpuctl attach numa1 failed: $(oneline "$out")"
U=$(mdev_uuids numa1)
check "numa1 has one mdev hostdev" [ "$(echo "$U" | grep -c .)" = 1 ]
A0=$(avail mtty-2)
start_paused numa1
check "mdev $U exists after start" mdev_exists "$U"
check "mtty-2 available_instances dropped by one" [ "$(avail mtty-2)" = $((A0 - 1)) ]
check "QEMU was given the mdev" grep -qaF "$MDEV_DEVICES/$U" "/proc/$(qemu_pid numa1)/cmdline"
check "no NUMA complaint from the hook" eval '! hook_log | grep -q "NUMA placement ignored"'
destroy numa1
check "mdev $U removed after destroy" wait_for 10 mdev_gone "$U"
