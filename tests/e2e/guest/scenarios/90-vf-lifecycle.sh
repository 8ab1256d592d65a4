# vgpuctl attach --vf --pf on a defined domain; start: libvirt (managed='yes') moves the VF from
# its host driver to vfio-pci and QEMU realizes it; destroy: the VF is back on its host driver.
require_installed
PF=$(nvme_pf) || fail "no NVMe PF"
define_domain vf1
out=$(vgpuctl attach vf1 --vf --pf "$PF" 2>&1) || fail "vgpuctl attach vf1 --vf --pf $PF failed: $(oneline "$out")"
check "vf1 has vgpu metadata after attach" has_vgpu_metadata vf1
A=$(pci_hostdevs vf1)
[ "$(echo "$A" | grep -c .)" = 1 ] || fail "expected one <hostdev type='pci'> in vf1, found: $(oneline "$A")"
say "VF: $A"
check "$A is a VF of $PF" eval 'vfs_of "$PF" | grep -qx "$A"'
check "the hostdev is managed='yes'" eval "vsh dumpxml --inactive vf1 | grep -q \"<hostdev mode='subsystem' type='pci' managed='yes'>\""
check "$A is on its host driver (nvme) before start" driver_is "$A" nvme

start_paused vf1
check "$A bound to vfio-pci while vf1 runs" driver_is "$A" vfio-pci
check "QEMU was given the VF" grep -qF "$A" "/proc/$(qemu_pid vf1)/cmdline"
check "QEMU realized the VF (info pci: 1b36:0010)" has_pci_device vf1 1b36:0010

destroy vf1
check "vf1 is shut off" is_shut_off vf1
check "$A back on its host driver (nvme) after destroy" wait_for 20 driver_is "$A" nvme
check "the PF still has its VFs" [ "$(cat /sys/bus/pci/devices/$PF/sriov_numvfs)" = 2 ]
