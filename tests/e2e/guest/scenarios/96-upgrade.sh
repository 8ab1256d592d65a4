# Upgrades: the package installed again while a domain holds an mdev (the hook is replaced by a
# rename and the new hook frees what the old one recorded); then over an install by hand
# (vgpuctl install from a source build, with its boot unit): the package takes the hook over,
# keeps the config and drops the hand-made unit that would shadow its own.
require_installed
define_domain up1
out=$(vgpuctl attach up1 --type mtty-2 2>&1) || fail "vgpuctl attach up1 failed: $(oneline "$out")"
U=$(mdev_uuids up1)
A0=$(avail mtty-2)
start_paused up1
check "mdev $U exists while up1 runs" mdev_exists "$U"
ino0=$(stat -c %i "$HOOK_FILE")
touch /usr/lib/vgpu-hook/vgpu-hook    # same bytes: vgpuctl install keeps the file as it is
out=$(dpkg -i /e2e/pkg/vgpu-hook.deb 2>&1) || fail "dpkg -i while up1 runs failed: $(oneline "$out")"
check "the hook is still the packaged one" cmp -s "$HOOK_FILE" /usr/lib/vgpu-hook/vgpu-hook
say "hook inode $ino0 -> $(stat -c %i "$HOOK_FILE")"
check "up1 still runs after the upgrade" is_active up1
destroy up1
check "the upgraded hook removed the mdev the old one made" wait_for 10 mdev_gone "$U"
check "mtty-2 available_instances restored ($A0)" [ "$(avail mtty-2)" = "$A0" ]

# over an install by hand: remove the package (config kept), install from the build by hand
cp "$CONFIG" /tmp/config.upgrade
out=$(dpkg -r vgpu-hook 2>&1) || fail "dpkg -r failed: $(oneline "$out")"
check "removal took the hook out of qemu.d" test ! -e "$HOOK_FILE"
check "removal kept the config" cmp -s "$CONFIG" /tmp/config.upgrade
install -m 755 /e2e/bin/vgpu-hook /e2e/bin/vgpuctl /usr/local/bin/
out=$(/usr/local/bin/vgpuctl install 2>&1) || fail "vgpuctl install by hand failed: $(oneline "$out")"
printf '%s\n' "$out" | sed 's/^/  > /'
check "the hand install placed the hook" cmp -s "$HOOK_FILE" /usr/local/bin/vgpu-hook
check "the hand install wrote its boot unit" test -f /etc/systemd/system/vgpu-hook-boot.service
check "the hand unit runs the hand vgpuctl" grep -q '^ExecStart=-/usr/local/bin/vgpuctl boot$' /etc/systemd/system/vgpu-hook-boot.service
out=$(dpkg -i --force-confold /e2e/pkg/vgpu-hook.deb 2>&1) || fail "dpkg -i over the hand install failed: $(oneline "$out")"
printf '%s\n' "$out" | sed 's/^/  > /'
check "the package took the hook over" cmp -s "$HOOK_FILE" /usr/lib/vgpu-hook/vgpu-hook
check "the config written by hand is kept" cmp -s "$CONFIG" /tmp/config.upgrade
check "the hand-made unit that would shadow the package's is gone" test ! -e /etc/systemd/system/vgpu-hook-boot.service
check "the package's boot unit is enabled" test -L /etc/systemd/system/multi-user.target.wants/vgpu-hook-boot.service
rm -f /usr/local/bin/vgpu-hook /usr/local/bin/vgpuctl
define_domain up2
vgpuctl attach up2 --type mtty-2 >/dev/null 2>&1 || fail "vgpuctl attach up2 failed"
U=$(mdev_uuids up2)
start_paused up2
check "a domain starts with its mdev after the upgrade" mdev_exists "$U"
destroy up2
check "and frees it at stop" wait_for 10 mdev_gone "$U"
