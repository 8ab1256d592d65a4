# vgpuctl doctor on a correctly set up host (IOMMU on, vfio and mdev loaded, parents present,
# valid config, hook installed, the libvirt daemon running) finds nothing; a hook that lost its
# execute bit is reported with exit status 1.
require_installed
out=$(vgpuctl doctor 2>&1); rc=$?
printf '%s\n' "$out" | sed 's/^/  > /'
[ $rc = 0 ] || fail "vgpuctl doctor exited $rc on a correctly set up host: $(printf '%s\n' "$out" | grep -m1 '^FAIL' | tr -s ' ')"
chmod -x "$HOOK_FILE"
out=$(vgpuctl doctor 2>&1); rc=$?
chmod +x "$HOOK_FILE"
printf '%s\n' "$out" | grep '^FAIL' | sed 's/^/  > /'
check "doctor exits 1 when the hook is not executable (got $rc)" [ $rc = 1 ]
check "doctor names the hook problem" eval 'printf "%s\n" "$out" | grep "^FAIL" | grep -q hook'
