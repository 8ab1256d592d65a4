# vgpuctl attach --type mtty-2 on a defined domain; start creates the mdev and QEMU gets it;
# destroy removes it and the capacity comes back; the hook logs why the domain stopped as libvirt
# said it (10.5 and later pass the reason, `destroyed`; older ones pass none).
require_installed
define_domain vm1
has_vgpu_metadata vm1 && fail "vm1 has vgpu metadata before attach"
out=$(vgpuctl attach vm1 --type mtty-2 2>&1) || fail "vgpuctl attach vm1 --type mtty-2 failed: $(oneline "$out")"
check "vm1 has vgpu metadata after attach" has_vgpu_metadata vm1
U=$(mdev_uuids vm1)
[ "$(echo "$U" | grep -c .)" = 1 ] || fail "expected one <hostdev type='mdev'> in vm1, found: $(oneline "$U")"
say "mdev uuid: $U"
check "mdev $U does not exist before start" mdev_gone "$U"
A0=$(avail mtty-2)

start_paused vm1
check "mdev $U exists after start" mdev_exists "$U"
check "mdev $U is of type mtty-2" [ "$(mdev_type_of "$U")" = mtty-2 ]
check "mtty-2 available_instances dropped by one ($A0 -> $((A0 - 1)))" [ "$(avail mtty-2)" = $((A0 - 1)) ]
check "QEMU was given the mdev (sysfsdev on its command line)" \
    grep -qaF "$MDEV_DEVICES/$U" "/proc/$(qemu_pid vm1)/cmdline"
check "QEMU realized the mtty device (info pci: 4348:3253)" has_pci_device vm1 4348:3253
out=$(vgpuctl list 2>&1) || fail "vgpuctl list failed: $(oneline "$out")"
printf '%s\n' "$out" | sed 's/^/  > /'
check "vgpuctl list shows vm1 holding $U" eval 'printf "%s\n" "$out" | grep "$U" | grep -q vm1'

destroy vm1
check "vm1 is shut off" is_shut_off vm1
check "mdev $U removed after destroy" wait_for 10 mdev_gone "$U"
check "mtty-2 available_instances restored ($A0)" [ "$(avail mtty-2)" = "$A0" ]
if [ "$(libvirt_version)" -ge 10005000 ]; then reason=destroyed; else reason="reason not given"; fi
check "the hook logged the stop as '$reason' (libvirt $(libvirt_version))" \
    eval 'hook_log | grep -qF "domain '"'vm1'"' stopped ($reason): releasing"'

# a second cycle on the same definition works the same way
start_paused vm1
check "mdev $U exists after a second start" mdev_exists "$U"
destroy vm1
check "mdev $U removed after the second destroy" wait_for 10 mdev_gone "$U"
