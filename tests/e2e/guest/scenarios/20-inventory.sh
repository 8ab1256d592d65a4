# vgpuctl types / list read the real mdev parent: mtty with mtty-1 (24 instances) and mtty-2 (12).
require_installed
out=$(vgpuctl types 2>&1) || fail "vgpuctl types failed: $(oneline "$out")"
printf '%s\n' "$out" | sed 's/^/  > /'
shows() { printf '%s\n' "$out" | grep -q -- "$1"; }
check "vgpuctl types shows parent mtty" shows mtty
check "vgpuctl types shows type mtty-1" shows mtty-1
check "vgpuctl types shows type mtty-2" shows mtty-2
PF=$(nvme_pf) || fail "no NVMe PF"
check "vgpuctl types shows the SR-IOV PF $PF" shows "$PF"
out=$(vgpuctl list 2>&1) || fail "vgpuctl list failed: $(oneline "$out")"
printf '%s\n' "$out" | sed 's/^/  > /'
