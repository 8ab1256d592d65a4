# vgpuctl attach --profile takes the type's human name from sysfs (mtty-2's name is
# "Dual port serial"); the hook finds the type by that name on the real parent.
require_installed
P=$(cat "$MTTY_TYPES/mtty-2/name")
define_domain vm5
out=$(vgpuctl attach vm5 --profile "$P" 2>&1) || fail "vgpuctl attach vm5 --profile '$P' failed: $(oneline "$out")"
U=$(mdev_uuids vm5)
[ "$(echo "$U" | grep -c .)" = 1 ] || fail "expected one <hostdev type='mdev'> in vm5, found: $(oneline "$U")"
A0=$(avail mtty-2)
start_paused vm5
check "mdev $U exists after start" mdev_exists "$U"
check "profile '$P' became an mdev of type mtty-2" [ "$(mdev_type_of "$U")" = mtty-2 ]
check "mtty-2 available_instances dropped by one" [ "$(avail mtty-2)" = $((A0 - 1)) ]
destroy vm5
check "mdev $U removed after destroy" wait_for 10 mdev_gone "$U"
