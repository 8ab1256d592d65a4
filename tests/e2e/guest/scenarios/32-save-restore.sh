# needs: vfio-migration
# virsh save / restore and managed save of a running domain with an mtty vGPU, on one host: the
# save stops the domain and the hook frees its mdev (the capacity comes back while it is saved),
# the device's state is in the file, and the restore (or the start that finds a managed save)
# makes the mdev again under the same UUID before QEMU loads that state.
require_installed
define_domain sr1
out=$(vgpuctl attach sr1 --type mtty-2 2>&1) || fail "vgpuctl attach sr1 --type mtty-2: $(oneline "$out")"
container_dirty_tracking sr1
U=$(mdev_uuids sr1)
A0=$(avail mtty-2)
out=$(vsh start sr1 2>&1) || fail "virsh start sr1: $(oneline "$out")"
check "mdev $U made at start" mdev_exists "$U"
saved_and_freed() {
    check "sr1 is shut off" is_shut_off sr1
    check "its mdev was removed" wait_for 20 mdev_gone "$U"
    check "mtty-2 available back to $A0" [ "$(avail mtty-2)" = "$A0" ]
}
back_with_its_mdev() {
    check "sr1 runs" [ "$(domstate sr1)" = running ]
    check "mdev $U made again, type mtty-2" eval 'mdev_exists "$U" && [ "$(mdev_type_of "$U")" = mtty-2 ]'
    check "mtty-2 available $((A0 - 1))" [ "$(avail mtty-2)" = $((A0 - 1)) ]
    check "QEMU has the mtty device" has_pci_device sr1 4348:3253
}

out=$(vsh save sr1 /tmp/sr1.save 2>&1) || fail "virsh save sr1: $(oneline "$out")"
saved_and_freed
check "the hook logged the stop as 'saved'" eval 'hook_log | grep -qF "domain '"'sr1'"' stopped (saved): releasing"'
check "the save file holds the VFIO device's state" vfio_section /tmp/sr1.save
out=$(vsh restore /tmp/sr1.save 2>&1) || fail "virsh restore: $(oneline "$out")"
back_with_its_mdev

out=$(vsh managedsave sr1 2>&1) || fail "virsh managedsave sr1: $(oneline "$out")"
saved_and_freed
check "libvirt holds a managed save of sr1" eval 'vsh dominfo sr1 | grep -q "^Managed save: *yes"'
out=$(vsh start sr1 2>&1) || fail "virsh start sr1 (from its managed save): $(oneline "$out")"
back_with_its_mdev
check "the managed save was used and dropped" eval 'vsh dominfo sr1 | grep -q "^Managed save: *no"'
destroy sr1
check "mdev removed at destroy" wait_for 20 mdev_gone "$U"
