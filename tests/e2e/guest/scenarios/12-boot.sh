# `vgpuctl boot` (what vgpu-hook-boot.service runs before libvirt) against the real mtty parent
# and the real SR-IOV PF: both ready, every line once, twice the same (idempotent); a configured
# PF that is not on the bus is reported and the command still exits 0; metrics show them.
require_installed
PF=$(nvme_pf) || fail "no SR-IOV capable NVMe controller in the guest"
out=$(vgpuctl boot 2>&1); rc=$?
printf '%s\n' "$out" | sed 's/^/  > /'
check "vgpuctl boot exits 0 (got $rc)" [ $rc = 0 ]
check "mtty reported ready with its 2 types" eval 'printf "%s\n" "$out" | grep -qx "mtty: ready: mdev parent, 2 types"'
check "the NVMe PF reported ready with its 2 VFs" eval 'printf "%s\n" "$out" | grep -qx "$PF: ready: 2 VFs"'
check "summary: 2 of 2 ready" eval 'printf "%s\n" "$out" | tail -n 1 | grep -qx "2 of 2 configured GPUs ready"'
again=$(vgpuctl boot 2>&1)
check "a second run says the same (idempotent)" [ "$again" = "$out" ]
check "the VFs are still on nvme after boot ran" eval 'for v in $(vfs_of "$PF"); do driver_is "$v" nvme || exit 1; done'

cp "$CONFIG" /tmp/config.boot
printf 'mdev_parents = ["mtty"]\nsriov_pfs = ["%s", "0000:3f:1f.7"]\n' "$PF" > "$CONFIG"
out=$(vgpuctl boot --wait-secs 2 2>&1); rc=$?
cp /tmp/config.boot "$CONFIG"
printf '%s\n' "$out" | sed 's/^/  > /'
check "with a GPU off the bus vgpuctl boot still exits 0 (got $rc)" [ $rc = 0 ]
check "the absent PF is reported missing" eval 'printf "%s\n" "$out" | grep -q "^0000:3f:1f.7: missing: not on the PCI bus"'

m=$(vgpuctl metrics 2>&1) || fail "vgpuctl metrics failed: $(oneline "$m")"
check "metrics: mtty-2 max instances" eval 'printf "%s\n" "$m" | grep -q "^vgpu_hook_type_max_instances{gpu=\"mtty\",.*type=\"mtty-2\".*} 12$"'
check "metrics: the PF's VFs" eval 'printf "%s\n" "$m" | grep -q "^vgpu_hook_type_available_instances{gpu=\"$PF\",.*type=\"vf\".*} 2$"'
