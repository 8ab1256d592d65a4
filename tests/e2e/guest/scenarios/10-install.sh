# The package installed with dpkg: the static hook lands in /usr/lib/vgpu-hook and is placed in
# libvirt's qemu.d (as `vgpuctl install` does), the running libvirt daemon is reloaded in place,
# the config skeleton is a conffile, man pages, completions and units are where they belong; then
# the test host's configuration is written, and installing the same package again keeps it.
[ ! -e "$HOOK_FILE" ] || fail "$HOOK_FILE exists before the package is installed"
[ ! -e "$CONFIG" ] || fail "$CONFIG exists before the package is installed"
pid0=$(daemon_pid)

out=$(dpkg -i /e2e/pkg/vgpu-hook.deb 2>&1) || fail "dpkg -i failed: $(oneline "$out")"
printf '%s\n' "$out" | sed 's/^/  > /'
check "hook file $HOOK_FILE exists" test -f "$HOOK_FILE"
check "hook file is executable" test -x "$HOOK_FILE"
check "hook file is the packaged hook" cmp -s "$HOOK_FILE" /usr/lib/vgpu-hook/vgpu-hook
static_hook() { LC_ALL=C ldd "$HOOK_FILE" 2>&1 | grep -Eq 'statically linked|not a dynamic executable'; }
check "the hook is one static executable ($(LC_ALL=C ldd "$HOOK_FILE" 2>&1 | head -n 1))" static_hook
check "vgpuctl is /usr/bin/vgpuctl" test "$(command -v vgpuctl)" = /usr/bin/vgpuctl
check "config skeleton $CONFIG installed" test -s "$CONFIG"
check "the config is a conffile" eval 'dpkg-query -W -f="\${Conffiles}" vgpu-hook | grep -q "$CONFIG"'
# the guest image excludes /usr/share/man from every package (dpkg path-exclude): ask dpkg
check "man page vgpuctl-boot(1) in the package" eval 'dpkg -L vgpu-hook | grep -qx /usr/share/man/man1/vgpuctl-boot.1.gz'
check "bash completion" test -s /usr/share/bash-completion/completions/vgpuctl
check "boot unit" test -s /lib/systemd/system/vgpu-hook-boot.service
check "boot unit enabled (multi-user.target.wants)" test -L /etc/systemd/system/multi-user.target.wants/vgpu-hook-boot.service
daemon_same() { [ -n "$pid0" ] && [ "$(daemon_pid)" = "$pid0" ] && kill -0 "$pid0"; }
check "$DAEMON reloaded in place (same pid $pid0, still running)" daemon_same
check "dpkg said it reloaded $DAEMON" eval 'printf "%s\n" "$out" | grep -q "reloaded $DAEMON"'
check "$DAEMON answers after the reload" wait_for 20 daemon_answers

PF=$(nvme_pf) || fail "no SR-IOV capable NVMe controller in the guest"
say "NVMe PF: $PF (sriov_totalvfs=$(cat /sys/bus/pci/devices/$PF/sriov_totalvfs))"
cat > "$CONFIG" <<CONF
# vgpu-hook e2e test host: the kernel's mtty sample driver and QEMU's emulated NVMe SR-IOV PF
mdev_parents = ["mtty"]
sriov_pfs = ["$PF"]
CONF
cp "$CONFIG" /tmp/config.toml.mine
# the same package again (an upgrade to the same version): the edited conffile stays
out=$(dpkg -i /e2e/pkg/vgpu-hook.deb 2>&1) || fail "a second dpkg -i failed: $(oneline "$out")"
check "installing the package again keeps the edited config" cmp -s "$CONFIG" /tmp/config.toml.mine
check "hook still in place after installing the package again" cmp -s "$HOOK_FILE" /usr/lib/vgpu-hook/vgpu-hook
out=$(vgpuctl install 2>&1) || fail "vgpuctl install on the packaged host failed: $(oneline "$out")"
check "vgpuctl install keeps the existing config" cmp -s "$CONFIG" /tmp/config.toml.mine
check "vgpuctl install finds the packaged hook (nothing to change)" eval 'printf "%s\n" "$out" | grep -q "already installed and up to date"'

# a domain without our metadata: the hook must do nothing, say nothing, succeed
hook_quiet() {
    local o
    o=$(printf "<domain type='qemu'><name>x</name><uuid>6a0e1f6c-3f4c-4c1b-9a55-2c0f3c1d0001</uuid></domain>" |
        "$HOOK_FILE" x prepare begin - 2>&1) && [ -z "$o" ]
}
check "installed hook exits 0 silently for a domain without vgpu metadata" hook_quiet
