# The differential script (tests/e2e/diff/ops.sh) against the real mdev core with mtty and the real
# SR-IOV core with QEMU's NVMe PF: its transcript must equal the recorded one (diff/real.txt),
# which the simulator's transcript is compared with on the host (tests/sim_differential.rs).
# The script disables and re-enables the PF's VFs; they come back unbound (autoprobe off while it
# runs) and are provisioned and bound to nvme again afterwards, as at boot.
PF=$(nvme_pf) || fail "no NVMe PF"
DEV=/sys/bus/pci/devices/$PF
GOLDEN=/e2e/diff/real.txt
TRANSCRIPT=$OUT/differential.txt
check "no mdev exists before the script" [ -z "$(all_mdevs)" ]
NUMVFS=$(cat "$DEV/sriov_numvfs")
check "$PF has VFs enabled ($NUMVFS)" [ "$NUMVFS" -gt 0 ]

# a re-enabled VF of QEMU's NVMe PF is an offline secondary controller: nvme's probe of it would
# wait for its timeout, so the VFs stay unbound until provision_vfs brings them online
echo 0 > "$DEV/sriov_drivers_autoprobe" || fail "cannot turn off sriov_drivers_autoprobe"
t0=$SECONDS
body=$(sh /e2e/diff/ops.sh / mtty "$PF" 2>&1); rc=$?
say "ops.sh took $((SECONDS - t0)) s"
{
    echo "# real kernel: the e2e guest (Linux $(uname -r)), mtty sample driver, QEMU's NVMe PF $PF (sriov_totalvfs $(cat "$DEV/sriov_totalvfs"))"
    printf '%s\n' "$body"
} > "$TRANSCRIPT"
provision_vfs "$PF" "$NUMVFS" || fail "could not provision the VFs of $PF again"
vf_count() { vfs_of "$PF" | wc -l; }
check "$PF has its $NUMVFS VFs again, bound to nvme" [ "$(vf_count)" = "$NUMVFS" ]
[ $rc = 0 ] || fail "ops.sh failed ($rc): $(oneline "$(printf '%s\n' "$body" | tail -n 3)")"
check "no mdev left after the script" [ -z "$(all_mdevs)" ]

[ -f "$GOLDEN" ] || fail "no $GOLDEN: record it from this run's transcript (out/differential.txt)"
if ! grep -v '^#' "$GOLDEN" | diff -u - <(grep -v '^#' "$TRANSCRIPT") > /tmp/differential.diff; then
    sed 's/^/  > /' /tmp/differential.diff | cut -c1-300
    fail "the real kernel's transcript differs from diff/real.txt: $(grep -m 3 '^[-+][0-9]' /tmp/differential.diff | tr '\n' ' ' | cut -c1-250)"
fi
say "the transcript equals diff/real.txt ($(grep -vc '^#' "$GOLDEN") lines; $(head -n 1 "$GOLDEN"))"
