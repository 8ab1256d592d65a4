# needs: peer
# Live migration between two real libvirt hosts of a running domain with an mtty vGPU, there and
# back: the destination's hook keeps the source's UUID (free there) and makes the mdev at prepare,
# QEMU moves the device's state, the source's release frees its mdev; the hook calls come in
# libvirt's order on both hosts. Then what must not move: a destination with no room refuses at
# migrate begin (the domain keeps running where it was), a cancelled migration leaves nothing on
# the destination, and a domain with a plain VFIO VF is stopped by QEMU's blocker before any hook
# on the destination runs.
require_installed
wait_peer
# hook_seq HOST DOM: the calls HOST logged for DOM, as "op sub extra" without the peer count
hook_seq() { hook_calls "$1" "$2" | sed 's/ peer=.*//'; }
peer_has_domain() { peer_virsh domstate "$1" >/dev/null 2>&1; }
qmp() { vsh qemu-monitor-command tiny "$1" 2>/dev/null; }
# watch_migration PID [until-active]: while the migration job PID runs, the largest amount of
# VFIO device state QEMU reports sent goes to /tmp/vfio.sent; returns when the job ends, or with
# until-active as soon as QEMU is transferring
watch_migration() {
    local pid=$1 q t
    echo 0 > /tmp/vfio.sent
    while kill -0 "$pid" 2>/dev/null; do
        q=$(qmp '{"execute":"query-migrate"}')
        t=$(printf '%s' "$q" | sed -n 's/.*"vfio":{"transferred":\([0-9]*\)}.*/\1/p')
        [ -n "$t" ] && [ "$t" -gt "$(cat /tmp/vfio.sent)" ] && echo "$t" > /tmp/vfio.sent
        case $q in *'"status":"active"'*) [ "${2:-}" = until-active ] && return 0 ;; esac
        sleep 0.1
    done
    return 0
}
trap unthrottle_link EXIT

define_domain tiny
out=$(vgpuctl attach tiny --type mtty-2 2>&1) || fail "vgpuctl attach tiny --type mtty-2: $(oneline "$out")"
container_dirty_tracking tiny
U=$(mdev_uuids tiny)
out=$(vsh start tiny 2>&1) || fail "virsh start tiny: $(oneline "$out")"
check "mdev $U made on $ROLE at start" mdev_exists "$U"
A_HERE=$(avail mtty-2)
A_PEER=$(on_peer avail mtty-2)
say "before: mtty-2 available $A_HERE here, $A_PEER on $PEER"

# ---- there (the link slowed to 1 Mbit/s, so QEMU can be watched sending the device's state)
throttle_link 1mbit
vsh migrate --live tiny "qemu+tcp://$PEER/system" --migrateuri "tcp://$PEER_ADDR" > /tmp/there.out 2>&1 &
mig=$!
watch_migration $mig
unthrottle_link
wait $mig || fail "virsh migrate tiny to $PEER: $(oneline "$(cat /tmp/there.out)")"
check "QEMU sent the mtty device's state ($(cat /tmp/vfio.sent) bytes of VFIO data)" [ "$(cat /tmp/vfio.sent)" -gt 0 ]
check "tiny runs on $PEER" [ "$(peer_virsh domstate tiny 2>/dev/null | head -n 1)" = running ]
check "tiny is gone from $ROLE" eval '! is_active tiny'
check "$PEER made the mdev with the source's UUID $U" on_peer mdev_exists "$U"
check "of type mtty-2" [ "$(on_peer mdev_type_of "$U")" = mtty-2 ]
check "$PEER's QEMU realized the mtty device" eval 'peer_virsh qemu-monitor-command tiny --hmp "info pci" | grep -qi "PCI device 4348:3253"'
check "$ROLE's mdev was removed at release" wait_for 20 mdev_gone "$U"
check "mtty-2 available restored on $ROLE ($((A_HERE + 1)))" [ "$(avail mtty-2)" = $((A_HERE + 1)) ]
check "one mtty-2 taken on $PEER ($((A_PEER - 1)))" [ "$(on_peer avail mtty-2)" = $((A_PEER - 1)) ]
jobinfo=$(peer_virsh domjobinfo tiny --completed 2>&1)
printf '%s\n' "$jobinfo" | sed 's/^/  job> /'
want="migrate begin -
prepare begin -
start begin -
started begin -"
check "$PEER's hook calls: migrate, prepare, start, started ($(oneline "$(hook_seq "$PEER" tiny)"))" \
    [ "$(hook_seq "$PEER" tiny)" = "$want" ]
check "$ROLE's last calls: stopped end, release end migrated" \
    [ "$(hook_seq "$ROLE" tiny | tail -n 2 | tr '\n' '|')" = "stopped end -|release end migrated|" ]
# clock-free order: when hostb's hook ran at `started`, hosta had not yet logged the stop
seen=$(hook_calls "$PEER" tiny | sed -n 's/^started begin - peer=//p')
check "$PEER was started before $ROLE stopped ($ROLE had logged $seen calls)" \
    eval '! head -n "$seen" "$PAIR/$ROLE.hooks" | grep -q "^tiny stopped"'
check "$PEER's hook logged the allocation" eval 'on_peer hook_log | grep -q "domain .tiny.: mdev $U on mtty (mtty-2)"'

# ---- and back
out=$(on_peer "virsh migrate --live tiny qemu+tcp://$ROLE/system --migrateuri tcp://$ADDR" 2>&1) ||
    fail "virsh migrate tiny back from $PEER: $(oneline "$out")"
check "tiny runs on $ROLE again" [ "$(domstate tiny)" = running ]
check "the mdev is back on $ROLE, same UUID" mdev_exists "$U"
check "$PEER removed its mdev" wait_for 20 on_peer mdev_gone "$U"
check "$PEER's mtty-2 count restored ($A_PEER)" [ "$(on_peer avail mtty-2)" = "$A_PEER" ]
check "$PEER's last call for tiny: release end migrated" [ "$(hook_seq "$PEER" tiny | tail -n 1)" = "release end migrated" ]

# ---- a destination with no room
fillers=$(on_peer 'fill mtty-2 "$(avail mtty-2)"; echo $FILLERS') || fail "filling mtty-2 on $PEER: $(oneline "$fillers")"
before=$(hook_seq "$PEER" tiny | wc -l)
out=$(vsh migrate --live tiny "qemu+tcp://$PEER/system" --migrateuri "tcp://$PEER_ADDR" 2>&1) &&
    fail "migrating to a full $PEER succeeded"
say "refused: $(oneline "$out")"
check "virsh shows the hook's line naming $PEER and mtty-2" \
    eval 'printf "%s" "$out" | grep -q "vgpu-hook: domain .tiny.: cannot come to host .$PEER.: no free .mtty-2."'
check "tiny still runs on $ROLE with its mdev" eval '[ "$(domstate tiny)" = running ] && mdev_exists "$U"'
check "$PEER got only the migrate begin call" [ "$(hook_seq "$PEER" tiny | tail -n +$((before + 1)))" = "migrate begin -" ]
check "no tiny on $PEER" eval '! peer_has_domain tiny'
on_peer "for u in $fillers; do echo 1 > $MDEV_DEVICES/\$u/remove; done" >/dev/null || fail "removing the fillers on $PEER"

# ---- cancelled mid-transfer: over a link slowed to 64 kbit/s the transfer would take minutes
before=$(hook_seq "$PEER" tiny | wc -l)
throttle_link 64kbit
vsh migrate --live tiny "qemu+tcp://$PEER/system" --migrateuri "tcp://$PEER_ADDR" > /tmp/cancel.out 2>&1 &
mig=$!
watch_migration $mig until-active
kill -0 $mig 2>/dev/null || fail "the migration to be cancelled ended by itself: $(oneline "$(cat /tmp/cancel.out)")"
peer_started() { hook_seq "$PEER" tiny | tail -n +$((before + 1)) | grep -q '^started begin'; }
check "the destination QEMU was started for the incoming domain" wait_for 120 peer_started
out=$(vsh domjobabort tiny 2>&1) || fail "virsh domjobabort tiny: $(oneline "$out")"
wait $mig && fail "the cancelled migration succeeded: $(oneline "$(cat /tmp/cancel.out)")"
unthrottle_link
say "cancelled: $(oneline "$(cat /tmp/cancel.out)")"
check "tiny runs on $ROLE with its mdev" eval '[ "$(domstate tiny)" = running ] && mdev_exists "$U"'
check "$PEER released with 'failed'" wait_for 30 eval '[ "$(hook_seq "$PEER" tiny | tail -n 1)" = "release end failed" ]'
check "no mdev left on $PEER" eval '[ -z "$(on_peer all_mdevs)" ]'
check "$PEER's mtty-2 count restored ($A_PEER)" [ "$(on_peer avail mtty-2)" = "$A_PEER" ]
destroy tiny
check "tiny's mdev removed at destroy" wait_for 20 mdev_gone "$U"

# ---- a plain VFIO VF (as AMD's GIM VFs are): QEMU's migration blocker, no destination hook call
PF=$(nvme_pf)
define_domain vfvm
out=$(vgpuctl attach vfvm --vf --pf "$PF" 2>&1) || fail "vgpuctl attach vfvm --vf: $(oneline "$out")"
start_paused vfvm
out=$(vsh migrate --live vfvm "qemu+tcp://$PEER/system" --migrateuri "tcp://$PEER_ADDR" 2>&1) &&
    fail "migrating a domain with a plain VF succeeded"
say "blocked: $(oneline "$out")"
check "refused as not migratable" eval 'printf "%s" "$out" | grep -qi "migrat"'
check "$PEER's hook was never called for vfvm" [ -z "$(hook_calls "$PEER" vfvm)" ]
check "vfvm still runs on $ROLE" is_active vfvm
destroy vfvm
