# Requests no parent can meet are refused at start with the hook's one line, the domain stays
# shut off and no mdev is left behind (all or nothing).
require_installed
refused_cleanly() {   # DOM: virsh start fails with the hook's line and leaves nothing
    local out rc
    out=$(vsh start --paused "$1" 2>&1); rc=$?
    say "virsh start $1: rc=$rc $(hook_line "$out")"
    [ $rc != 0 ] || fail "virsh start $1 succeeded, expected a refusal"
    printf '%s' "$out" | grep -q 'vgpu-hook: ' || fail "virsh start $1 did not show the hook's reason: $(oneline "$out")"
    is_shut_off "$1" || fail "$1 is '$(domstate "$1")' after a refused start"
}
A0=$(avail mtty-2)

# more mtty-2 than the parent has at all
define_domain big
out=$(vgpuctl attach big --type mtty-2 --count 13 2>&1) || fail "vgpuctl attach big --type mtty-2 --count 13 failed: $(oneline "$out")"
check "big has 13 mdev hostdevs" [ "$(mdev_uuids big | grep -c .)" = 13 ]
refused_cleanly big
check "no mdev left after the refused start of big" [ -z "$(all_mdevs)" ]
check "mtty-2 available_instances back to $A0" [ "$(avail mtty-2)" = "$A0" ]

# two asked, one free: the one the hook could create must be undone
define_domain two
out=$(vgpuctl attach two --type mtty-2 --count 2 2>&1) || fail "vgpuctl attach two --count 2 failed: $(oneline "$out")"
fill mtty-2 $((A0 - 1))
refused_cleanly two
for u in $(mdev_uuids two); do check "mdev $u of 'two' not left behind" mdev_gone "$u"; done
check "the one free instance is free again" [ "$(avail mtty-2)" = 1 ]
remove_fillers
check "mtty-2 available_instances back to $A0" [ "$(avail mtty-2)" = "$A0" ]
