# The domain's mdev already exists before start (pre-created by the operator, or left over):
# with the right type the hook reuses it, and removes it at stop; with the wrong type the start
# is refused with the hook's line and that mdev is left alone; and when a running domain without
# our metadata uses it (a <hostdev type='mdev'> written by hand), the start is refused naming
# that domain, which keeps its device.
require_installed
define_domain vm6
out=$(vgpuctl attach vm6 --type mtty-2 2>&1) || fail "vgpuctl attach vm6 --type mtty-2 failed: $(oneline "$out")"
U=$(mdev_uuids vm6)
[ "$(echo "$U" | grep -c .)" = 1 ] || fail "expected one <hostdev type='mdev'> in vm6, found: $(oneline "$U")"
A0=$(avail mtty-2)

echo "$U" > "$MTTY_TYPES/mtty-2/create" || fail "could not pre-create mdev $U"
start_paused vm6
check "the existing mdev $U is used (no second instance taken)" [ "$(avail mtty-2)" = $((A0 - 1)) ]
check "QEMU realized the mtty device" has_pci_device vm6 4348:3253
destroy vm6
check "mdev $U removed at stop" wait_for 10 mdev_gone "$U"
check "mtty-2 available_instances restored ($A0)" [ "$(avail mtty-2)" = "$A0" ]

echo "$U" > "$MTTY_TYPES/mtty-1/create" || fail "could not pre-create mdev $U as mtty-1"
out=$(vsh start --paused vm6 2>&1); rc=$?
say "virsh start vm6: rc=$rc $(hook_line "$out")"
[ $rc != 0 ] || fail "vm6 started on an mdev of the wrong type (mtty-1)"
printf '%s' "$out" | grep -q 'vgpu-hook: ' || fail "the refusal is not the hook's line: $(oneline "$out")"
check "vm6 is shut off" is_shut_off vm6
check "the mtty-1 mdev $U is left alone" [ "$(mdev_type_of "$U")" = mtty-1 ]
echo 1 > "$MDEV_DEVICES/$U/remove"

# made by hand and given to a plain domain, as set up without vgpu-hook: never taken over
echo "$U" > "$MTTY_TYPES/mtty-2/create" || fail "could not pre-create mdev $U"
define_domain plain6 "" "<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='$U'/></source></hostdev>"
start_paused plain6
out=$(vsh start --paused vm6 2>&1) && fail "vm6 started on the mdev plain6 uses"
say "virsh start vm6: $(hook_line "$out")"
check "the hook's line names plain6 as the user" eval 'printf "%s" "$out" | grep -q "in use by running domain .plain6."'
check "plain6 keeps running with its mdev" eval 'is_active plain6 && mdev_exists "$U"'
destroy plain6
check "plain6's mdev is left as it was (not the hook's)" mdev_exists "$U"
echo 1 > "$MDEV_DEVICES/$U/remove"
