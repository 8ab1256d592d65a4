# Two domains, each asking for one mtty-2, started at the same moment while exactly one instance
# is free: exactly one runs, the other is refused with the hook's reason, nothing leaks.
require_installed
for d in race1 race2; do
    define_domain $d
    out=$(vgpuctl attach $d --type mtty-2 2>&1) || fail "vgpuctl attach $d failed: $(oneline "$out")"
done
A0=$(avail mtty-2)
fill mtty-2 $((A0 - 1))
check "exactly one mtty-2 instance free" [ "$(avail mtty-2)" = 1 ]

rm -f /tmp/race.go
for d in race1 race2; do
    ( while [ ! -e /tmp/race.go ]; do sleep 0.01; done
      vsh start --paused $d > /tmp/$d.out 2>&1; echo $? > /tmp/$d.rc ) &
done
sleep 0.5; touch /tmp/race.go; wait
for d in race1 race2; do say "$d: rc=$(cat /tmp/$d.rc) $(hook_line "$(cat /tmp/$d.out)")"; done
if [ "$(cat /tmp/race1.rc)" = 0 ]; then win=race1 lose=race2; else win=race2 lose=race1; fi
check "$win started" [ "$(cat /tmp/$win.rc)" = 0 ]
check "$lose was refused" [ "$(cat /tmp/$lose.rc)" != 0 ]
check "$lose's virsh start shows the hook's reason (vgpu-hook: ...)" grep -q 'vgpu-hook: ' /tmp/$lose.out
check "$win is running" is_active $win
check "$lose is shut off" is_shut_off $lose
check "$win's mdev exists" mdev_exists "$(mdev_uuids $win)"
check "$lose's mdev does not exist" mdev_gone "$(mdev_uuids $lose)"
check "no mtty-2 instance free" [ "$(avail mtty-2)" = 0 ]
fillers_intact() { local u; for u in $FILLERS; do mdev_exists "$u" || return 1; done; }
check "mdevs the hook does not own are untouched" fillers_intact

destroy $win
check "$win's mdev removed" wait_for 10 mdev_gone "$(mdev_uuids $win)"
remove_fillers
check "nothing left: no mdevs" [ -z "$(all_mdevs)" ]
check "mtty-2 available_instances restored ($A0)" [ "$(avail mtty-2)" = "$A0" ]
