# vgpuctl install puts the hook where libvirt runs it, writes a config skeleton and makes the
# running libvirtd notice the hook (SIGHUP); then the test host's configuration is written.
[ ! -e "$HOOK_FILE" ] || fail "$HOOK_FILE exists before vgpuctl install"
[ ! -e "$CONFIG" ] || fail "$CONFIG exists before vgpuctl install"
pid0=$(libvirtd_pid)

out=$(vgpuctl install 2>&1) || fail "vgpuctl install failed: $(oneline "$out")"
printf '%s\n' "$out" | sed 's/^/  > /'
check "hook file $HOOK_FILE exists" test -f "$HOOK_FILE"
check "hook file is executable" test -x "$HOOK_FILE"
check "hook file is the project's vgpu-hook" cmp -s "$HOOK_FILE" /usr/local/bin/vgpu-hook
check "config skeleton $CONFIG written" test -s "$CONFIG"
libvirtd_same() { [ -n "$pid0" ] && [ "$(libvirtd_pid)" = "$pid0" ] && kill -0 "$pid0"; }
check "libvirtd reloaded in place (same pid $pid0, still running)" libvirtd_same
check "libvirtd answers after the reload" wait_for 20 libvirtd_answers

PF=$(nvme_pf) || fail "no SR-IOV capable NVMe controller in the guest"
say "NVMe PF: $PF (sriov_totalvfs=$(cat /sys/bus/pci/devices/$PF/sriov_totalvfs))"
cat > "$CONFIG" <<CONF
# vgpu-hook e2e test host: the kernel's mtty sample driver and QEMU's emulated NVMe SR-IOV PF
mdev_parents = ["mtty"]
sriov_pfs = ["$PF"]
CONF
# installing again changes nothing and keeps the operator's config
cp "$CONFIG" /tmp/config.toml.mine
out=$(vgpuctl install 2>&1) || fail "a second vgpuctl install failed: $(oneline "$out")"
check "a second install keeps the existing config" cmp -s "$CONFIG" /tmp/config.toml.mine
check "hook file still in place and executable after a second install" test -x "$HOOK_FILE"

# a domain without our metadata: the hook must do nothing, say nothing, succeed
hook_quiet() {
    local o
    o=$(printf "<domain type='qemu'><name>x</name><uuid>6a0e1f6c-3f4c-4c1b-9a55-2c0f3c1d0001</uuid></domain>" |
        "$HOOK_FILE" x prepare begin - 2>&1) && [ -z "$o" ]
}
check "installed hook exits 0 silently for a domain without vgpu metadata" hook_quiet
