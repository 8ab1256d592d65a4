# vgpuctl attach --live on a running domain: the hook's allocation creates the mdev now, libvirt
# hot-plugs it and QEMU realizes it; the persistent definition gains it too; when the domain
# stops, the hook's release frees it like any other.
require_installed
# Hot-plug into the i440fx root bus goes through ACPI: the domain needs <acpi/>.
domain_xml vm7 | sed 's|</os>|</os><features><acpi/></features>|' > /tmp/vm7.xml
out=$(vsh define /tmp/vm7.xml 2>&1) || fail "virsh define vm7: $(oneline "$out")"
start_paused vm7
A0=$(avail mtty-2)
out=$(vgpuctl attach vm7 --type mtty-2 --live 2>&1) || fail "vgpuctl attach vm7 --type mtty-2 --live failed: $(oneline "$out")"
U=$(mdev_uuids vm7)
check "one mdev hostdev in the persistent definition" [ "$(echo "$U" | grep -c .)" = 1 ]
check "the mdev $U exists while vm7 runs" mdev_exists "$U"
check "its type is mtty-2" [ "$(mdev_type_of "$U")" = mtty-2 ]
check "mtty-2 available_instances dropped by one ($A0 -> $(avail mtty-2))" [ "$(avail mtty-2)" = $((A0 - 1)) ]
check "QEMU has the hot-plugged mtty device (4348:3253)" has_pci_device vm7 4348:3253
check "the running definition names it too" eval 'vsh dumpxml vm7 | grep -q "$U"'
destroy vm7
check "the mdev is gone after destroy" wait_for 20 mdev_gone "$U"
check "available_instances restored to $A0" [ "$(avail mtty-2)" = "$A0" ]
