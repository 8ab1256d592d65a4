# needs: peer
# vgpuctl migrate-check before a migration: yes when the destination has the type with room, no
# (naming the host and the room) when it is full. Then `virsh migrate --persistent
# --undefinesource`: the definition moves with the source's mdev UUID, and the domain starts cold
# on the destination as on any host; when that UUID is taken there, `vgpuctl resync` gives the
# definition a free one.
require_installed
wait_peer
DEST=qemu+tcp://$PEER/system
define_domain pm1
out=$(vgpuctl attach pm1 --type mtty-2 2>&1) || fail "vgpuctl attach pm1 --type mtty-2: $(oneline "$out")"
container_dirty_tracking pm1
U=$(mdev_uuids pm1)
out=$(vsh start pm1 2>&1) || fail "virsh start pm1: $(oneline "$out")"

out=$(vgpuctl migrate-check pm1 "$DEST" 2>&1); rc=$?
printf '%s\n' "$out" | sed 's/^/  > /'
check "migrate-check says yes (exit 0, got $rc)" [ $rc = 0 ]
check "it found room for mtty-2 on $PEER" eval 'printf "%s\n" "$out" | grep -q "mdev $U (mtty-2 .Dual port serial.): $PEER has room"'
fillers=$(on_peer 'fill mtty-2 "$(avail mtty-2)"; echo $FILLERS') || fail "filling mtty-2 on $PEER: $(oneline "$fillers")"
out=$(vgpuctl migrate-check pm1 "$DEST" --json 2>&1); rc=$?
on_peer "for u in $fillers; do echo 1 > $MDEV_DEVICES/\$u/remove; done" >/dev/null || fail "removing the fillers on $PEER"
check "migrate-check says no when $PEER is full (exit 1, got $rc)" [ $rc = 1 ]
check "its JSON names the mdev without room on $PEER" \
    eval 'printf "%s\n" "$out" | grep -q "\"message\": *\"mdev $U [^\"]*: no room on $PEER"'

out=$(vsh migrate --live --persistent --undefinesource pm1 "$DEST" --migrateuri "tcp://$PEER_ADDR" 2>&1) ||
    fail "virsh migrate --persistent --undefinesource pm1: $(oneline "$out")"
check "pm1 is no longer defined on $ROLE" eval '! vsh dominfo pm1 >/dev/null 2>&1'
check "pm1 runs on $PEER" [ "$(peer_virsh domstate pm1 2>/dev/null | head -n 1)" = running ]
check "its persistent definition there names the source's UUID" eval 'peer_virsh dumpxml --inactive pm1 | grep -q "$U"'
out=$(peer_virsh destroy pm1 2>&1) || fail "destroy pm1 on $PEER: $(oneline "$out")"
check "$PEER removed the mdev at destroy" wait_for 20 on_peer mdev_gone "$U"
out=$(peer_virsh start pm1 2>&1) || fail "a cold start of pm1 on $PEER: $(oneline "$out")"
check "the cold start on $PEER made the mdev" on_peer mdev_exists "$U"
out=$(peer_virsh destroy pm1 2>&1) || fail "destroy pm1 on $PEER: $(oneline "$out")"
check "and destroy removed it" wait_for 20 on_peer mdev_gone "$U"

# the UUID taken on the destination by something else: resync gives the definition a free one
on_peer "echo $U > $MTTY_TYPES/mtty-1/create" >/dev/null || fail "making $U by hand on $PEER"
out=$(on_peer "vgpuctl resync pm1" 2>&1) || fail "vgpuctl resync pm1 on $PEER: $(oneline "$out")"
say "resync: $(oneline "$out")"
NEW=$(peer_virsh dumpxml --inactive pm1 | sed -n "s/.*<address uuid=.\([0-9a-f-]*\).*/\1/p" | head -n 1)
check "resync gave pm1 another UUID ($NEW)" eval '[ -n "$NEW" ] && [ "$NEW" != "$U" ]'
check "the metadata names the new UUID too" eval 'peer_virsh dumpxml --inactive pm1 | grep -q "vgpu:mdev uuid=.$NEW"'
out=$(peer_virsh start pm1 2>&1) || fail "start pm1 on $PEER after resync: $(oneline "$out")"
check "it starts with an mdev of its own" on_peer mdev_exists "$NEW"
check "the hand-made mdev is untouched" on_peer mdev_exists "$U"
peer_virsh destroy pm1 >/dev/null 2>&1
check "destroy removed pm1's mdev" wait_for 20 on_peer mdev_gone "$NEW"
on_peer "echo 1 > $MDEV_DEVICES/$U/remove" >/dev/null
peer_virsh undefine pm1 >/dev/null 2>&1 || fail "undefine pm1 on $PEER"
