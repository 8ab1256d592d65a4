# needs: apparmor
# Confined by AppArmor, enforcing: the daemon runs in its own profile (`virtqemud (enforce)`), each
# QEMU in the per-VM profile virt-aa-helper wrote for it (which must let it open the mdev), and
# libvirt runs its hooks in the daemon's profile. That profile lets the hook do everything it does
# here (the runner fails any scenario in which the kernel denied the hook or vgpuctl anything);
# what it refuses is running NVIDIA's sriov-manage, which the abstraction the package ships
# allows once included, as the README says. Shown with a stand-in sriov-manage at NVIDIA's path
# (it only records that it ran), run by a probe hook beside ours, in the same profile as ours.
require_installed
PROFILE=/etc/apparmor.d/usr.sbin.$DAEMON
LOCAL=/etc/apparmor.d/local/usr.sbin.$DAEMON
MANAGE=/usr/lib/nvidia/sriov-manage
PROBE=/etc/libvirt/hooks/qemu.d/40-confinement-probe

check "$DAEMON is confined, enforcing" [ "$(aa_label "$(daemon_pid)")" = "$DAEMON (enforce)" ]
check "the package installed the abstraction" [ -f /etc/apparmor.d/abstractions/vgpu-hook ]
out=$(vgpuctl doctor 2>&1)
printf '%s\n' "$out" | grep -i apparmor | sed 's/^/  > /'
check "doctor names the daemon's AppArmor profile and its mode" \
    eval 'printf "%s\n" "$out" | grep -i apparmor | grep -q "$DAEMON (enforce)"'

mkdir -p "$(dirname "$MANAGE")"
cat > "$MANAGE" <<'SH'
#!/bin/sh
# stand-in for NVIDIA's sriov-manage: records how it was run, changes nothing
echo "$*" > /run/sriov-manage.ran
SH
chmod 755 "$MANAGE"
cat > "$PROBE" <<'SH'
#!/bin/sh
# records the profile libvirt runs its hooks in, and whether that profile may run sriov-manage
[ "$2 $3" = "prepare begin" ] || exit 0
read -r label < /proc/$$/attr/current; echo "$label" > /run/probe.label
/usr/lib/nvidia/sriov-manage -e 0000:00:00.0 > /run/probe.out 2>&1
echo $? > /run/probe.rc
exit 0
SH
chmod 755 "$PROBE"
kill -HUP "$(daemon_pid)"    # libvirt reads qemu.d when it (re)starts
check "$DAEMON answers after the reload" wait_for 20 daemon_answers
sleep 1

# probe_start: starts vm1 (probe and hook run), then destroys it; the probe's findings stay in /run
probe_start() {
    rm -f /run/probe.* /run/sriov-manage.ran
    start_paused vm1
    check "QEMU of vm1 is confined by its own profile ($(aa_label "$(qemu_pid vm1)"))" \
        eval 'aa_label "$(qemu_pid vm1)" | grep -q "^libvirt-[0-9a-f-]* (enforce)$"'
    check "the confined QEMU realized the mtty device" has_pci_device vm1 4348:3253
    destroy vm1
    check "vm1's mdev removed by the confined hook" wait_for 10 mdev_gone "$U"
}
define_domain vm1
out=$(vgpuctl attach vm1 --type mtty-2 2>&1) || fail "vgpuctl attach vm1 failed: $(oneline "$out")"
U=$(mdev_uuids vm1)

rm -f "$LOCAL"; apparmor_parser -r "$PROFILE" || fail "could not reload $PROFILE"
probe_start
check "hooks run in the daemon's profile ($(cat /run/probe.label 2>/dev/null))" [ "$(cat /run/probe.label 2>/dev/null)" = "$DAEMON (enforce)" ]
check "without the abstraction sriov-manage is refused (exit $(cat /run/probe.rc 2>/dev/null): $(oneline "$(cat /run/probe.out 2>/dev/null)"))" \
    [ "$(cat /run/probe.rc 2>/dev/null)" = 126 ]
check "the stand-in did not run" [ ! -e /run/sriov-manage.ran ]
check "the kernel logged the denial of $MANAGE" eval 'aa_denials | grep -q "name=\"$MANAGE\""'

# the README's two steps
echo '#include <abstractions/vgpu-hook>' >> "$LOCAL"
apparmor_parser -r "$PROFILE" || fail "apparmor_parser -r with the abstraction failed"
probe_start
check "with the abstraction sriov-manage runs (exit $(cat /run/probe.rc 2>/dev/null))" [ "$(cat /run/probe.rc 2>/dev/null)" = 0 ]
check "the stand-in ran as the hook ran it" [ "$(cat /run/sriov-manage.ran 2>/dev/null)" = "-e 0000:00:00.0" ]
out=$(vgpuctl doctor 2>&1)
check "doctor sees the abstraction included" \
    eval 'printf "%s\n" "$out" | grep -i apparmor | grep -q "abstractions/vgpu-hook"'

rm -f "$PROBE" "$MANAGE" "$LOCAL" /run/probe.* /run/sriov-manage.ran
apparmor_parser -r "$PROFILE"
kill -HUP "$(daemon_pid)"
check "$DAEMON answers after the clean-up" wait_for 20 daemon_answers
