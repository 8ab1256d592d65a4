# vgpuctl detach takes back what attach added: by UUID, then everything; the definition ends as it
# was before attach and the domain starts without any mdev.
require_installed
define_domain vm4
vsh dumpxml --inactive vm4 > /tmp/vm4.before
# (--no-agent-channel: for the channel attach adds otherwise, libvirt adds a virtio-serial controller, which stays after the detach takes the channel out again)
out=$(vgpuctl attach vm4 --type mtty-2 --count 2 --no-agent-channel 2>&1) || fail "vgpuctl attach vm4 --type mtty-2 --count 2 failed: $(oneline "$out")"
U=$(mdev_uuids vm4)
[ "$(echo "$U" | grep -c .)" = 2 ] || fail "expected two <hostdev type='mdev'> in vm4, found: $(oneline "$U")"
U1=$(echo "$U" | head -n 1); U2=$(echo "$U" | tail -n 1)

out=$(vgpuctl detach vm4 --uuid "$U1" 2>&1) || fail "vgpuctl detach vm4 --uuid $U1 failed: $(oneline "$out")"
check "only $U2 is left after detach --uuid $U1" [ "$(mdev_uuids vm4)" = "$U2" ]
check "the metadata no longer names $U1" eval '! vsh dumpxml --inactive vm4 | grep -q "$U1"'
check "the metadata still names $U2" eval 'vsh dumpxml --inactive vm4 | grep -q "uuid=.$U2"'

out=$(vgpuctl detach vm4 --all 2>&1) || fail "vgpuctl detach vm4 --all failed: $(oneline "$out")"
check "no mdev hostdev left after detach --all" [ -z "$(mdev_uuids vm4)" ]
check "no UUID of the attached mdevs left in the definition" eval '! vsh dumpxml --inactive vm4 | grep -qe "$U1" -e "$U2"'
vsh dumpxml --inactive vm4 > /tmp/vm4.after
# apart from an emptied metadata element, the definition is what it was before attach
strip() { grep -v -e '<metadata' -e '</metadata>' -e 'vgpu' "$1"; }
check "the rest of the definition is unchanged ($(diff <(strip /tmp/vm4.before) <(strip /tmp/vm4.after) | grep -c '^[<>]') lines differ)" \
    diff -q <(strip /tmp/vm4.before) <(strip /tmp/vm4.after)
start_paused vm4
check "no mdev created for vm4 after detach --all" [ -z "$(all_mdevs)" ]
destroy vm4
