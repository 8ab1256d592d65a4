# A VF held by a running domain is refused to a second domain that names the same VF, with a
# line naming the holder; vgpuctl attach picks a VF no other defined domain references.
require_installed
PF=$(nvme_pf) || fail "no NVMe PF"
define_domain vfa
out=$(vgpuctl attach vfa --vf --pf "$PF" 2>&1) || fail "vgpuctl attach vfa --vf --pf $PF failed: $(oneline "$out")"
A=$(pci_hostdevs vfa)
[ "$(echo "$A" | grep -c .)" = 1 ] || fail "expected one <hostdev type='pci'> in vfa, found: $(oneline "$A")"
# vfb names the same VF, written by hand the way the domain XML contract describes it
define_domain vfb "<vgpu:vgpu xmlns:vgpu='$VGPU_NS'><vgpu:vf address='$A'/></vgpu:vgpu>" "$(pci_hostdev_xml "$A")"
check "vfb names $A" [ "$(pci_hostdevs vfb)" = "$A" ]
define_domain vfc
out=$(vgpuctl attach vfc --vf --pf "$PF" 2>&1) || fail "vgpuctl attach vfc --vf --pf $PF failed: $(oneline "$out")"
B=$(pci_hostdevs vfc)
say "vfa/vfb: $A, vfc: $B"
check "vgpuctl attach picked a VF no other domain references for vfc ($B)" eval '[ -n "$B" ] && [ "$B" != "$A" ]'

start_paused vfa
check "$A bound to vfio-pci while vfa runs" driver_is "$A" vfio-pci
out=$(vsh start --paused vfb 2>&1); rc=$?
say "virsh start vfb: rc=$rc $(hook_line "$out")"
[ $rc != 0 ] || fail "vfb started although vfa holds $A"
printf '%s' "$out" | grep -q "vgpu-hook: .*vfa" || fail "vfb's refusal is not the hook's line naming vfa: $(oneline "$out")"
check "vfb is shut off" is_shut_off vfb
check "vfa still runs" is_active vfa
check "$A still on vfio-pci for vfa" driver_is "$A" vfio-pci
check "vfa's QEMU still has the VF" has_pci_device vfa 1b36:0010

start_paused vfc
check "vfc runs beside vfa with its own VF $B on vfio-pci" driver_is "$B" vfio-pci
destroy vfc
destroy vfa
check "$A back on nvme" wait_for 20 driver_is "$A" nvme
check "$B back on nvme" wait_for 20 driver_is "$B" nvme
