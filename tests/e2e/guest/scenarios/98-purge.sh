# dpkg --purge: the hook leaves qemu.d (no entry pointing at a missing file), the config and its
# directory go, the libvirt daemon is reloaded and still starts domains; an operator's own qemu
# hook is left alone throughout.
require_installed
mkdir -p /etc/libvirt/hooks
printf '#!/bin/sh\necho "$@" >> /tmp/user-hook.log\nexit 0\n' > /etc/libvirt/hooks/qemu
chmod 755 /etc/libvirt/hooks/qemu
cp /etc/libvirt/hooks/qemu /tmp/user-hook
out=$(dpkg -i /e2e/pkg/vgpu-hook.deb 2>&1) || fail "dpkg -i with a user hook failed: $(oneline "$out")"
check "the user's qemu hook is untouched by an install" cmp -s /etc/libvirt/hooks/qemu /tmp/user-hook
out=$(dpkg --purge vgpu-hook 2>&1) || fail "dpkg --purge failed: $(oneline "$out")"
printf '%s\n' "$out" | sed 's/^/  > /'
check "no qemu.d entry is left" test ! -e "$HOOK_FILE"
dangling() { find /etc/libvirt/hooks -xtype l | grep -q .; }
check "no dangling link under /etc/libvirt/hooks" eval '! dangling'
check "the config is gone" test ! -e "$CONFIG"
check "/etc/vgpu-hook is gone" test ! -e /etc/vgpu-hook
check "the packaged hook is gone" test ! -e /usr/lib/vgpu-hook/vgpu-hook
check "the user's qemu hook is untouched by the purge" cmp -s /etc/libvirt/hooks/qemu /tmp/user-hook
check "$DAEMON answers after the purge" wait_for 20 daemon_answers
define_domain plain1
start_paused plain1
check "a plain domain starts after the purge" is_active plain1
check "the user's hook ran for it" grep -q "plain1 prepare begin" /tmp/user-hook.log
destroy plain1
rm -f /etc/libvirt/hooks/qemu
kill -HUP "$(daemon_pid)"    # libvirt forgets a removed hook only when it rescans
