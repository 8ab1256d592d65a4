# A domain without vgpu metadata starts and stops as if there were no hook, even when the hook's
# configuration is broken.
require_installed
state_snapshot() { ls -lR /run/vgpu-hook 2>/dev/null; }
define_domain plain
S0=$(state_snapshot)
start_paused plain
check "no mdev created for a domain without metadata" [ -z "$(all_mdevs)" ]
check "QEMU has no mtty device" eval '! has_pci_device plain 4348:3253'
destroy plain
check "plain is shut off" is_shut_off plain
check "hook state unchanged by a domain without metadata" [ "$(state_snapshot)" = "$S0" ]

cp "$CONFIG" /tmp/config.toml.saved
printf 'mdev_parents = [ "mtty"\nthis is not toml\n' > "$CONFIG"
out=$(vsh start --paused plain 2>&1); rc=$?
cp /tmp/config.toml.saved "$CONFIG"
[ $rc = 0 ] || fail "with a broken config, virsh start of a domain without metadata failed: $(oneline "$out")"
destroy plain
check "plain is shut off" is_shut_off plain
