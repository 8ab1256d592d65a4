#!/usr/bin/env bash
# The hook doing its job on a simulated host, no GPU needed: two NVIDIA Tesla P40s (classic vGPU)
# and an AMD MxGPU card (4 VFs), served by vgpu-sim over FUSE. Domains start and stop through the
# real vgpu-hook binary, called exactly as libvirt calls it; after each step the allocation is shown.
# Usage: tests/demo.sh        (root, or access to /dev/fuse; unmounts on exit and on Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."
# Only the hook and the simulator: neither needs libvirt installed.
cargo build -q --release -p vgpu-hook --no-default-features --bin vgpu-hook
cargo build -q --release -p vgpu-sim
bin=$PWD/target/release

work=$(mktemp -d /tmp/vgpu-demo.XXXXXX)
mnt=$work/host
mkdir -p "$mnt" "$work/run"
sim_pid=
cleanup() {
  trap - EXIT INT TERM
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
  mountpoint -q "$mnt" 2>/dev/null && umount -l "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "interrupted; cleaning up"; exit 130' INT TERM

cat > "$work/host.toml" <<'TOML'
modules = ["vfio", "vfio_pci", "vfio_iommu_type1", "mdev"]

[[gpu]]
address = "0000:82:00.0"
kind = "nvidia-classic"
board = "P40"
framebuffer_mb = 24576

[[gpu]]
address = "0000:83:00.0"
kind = "nvidia-classic"
board = "P40"
framebuffer_mb = 24576

[[gpu]]
address = "0000:04:00.0"
kind = "amd-gim"
gim = "old"
numvfs = 4
TOML

"$bin/vgpu-sim" mount "$work/host.toml" "$mnt" > "$work/sim.out" 2> "$work/sim.err" &
sim_pid=$!
for _ in $(seq 1 100); do grep -q ready "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
if ! grep -q ready "$work/sim.out" 2>/dev/null; then
  echo "demo: the simulated host did not mount: $(cat "$work/sim.err")" >&2
  exit 1
fi

cat > "$work/config.toml" <<'TOML'
nvidia_vgpu_pfs = ["82:00.0", "83:00.0"]
amd_vgpu_pfs    = ["04:00.0"]
placement       = "pack"
cleanup_wait_secs = 1
TOML

export VGPU_HOOK_SYSFS_ROOT=$mnt VGPU_HOOK_STATE_DIR=$work/state \
       VGPU_HOOK_LIBVIRT_RUN_DIR=$work/run VGPU_HOOK_CONFIG=$work/config.toml

n=0
domain_xml() { # name, metadata lines, device lines
  n=$((n + 1))
  cat <<XML
<domain type='kvm'>
  <name>$1</name>
  <uuid>$(printf '0b1d2a3c-0000-4000-8000-%012d' "$n")</uuid>
  <metadata>
    <vgpu:vgpu xmlns:vgpu="urn:vgpu-hook:domain:1">
$2
    </vgpu:vgpu>
  </metadata>
  <devices>
$3
  </devices>
</domain>
XML
}
mdev_vm() { # name, uuid, profile
  domain_xml "$1" "      <vgpu:mdev uuid=\"$2\" profile=\"$3\"/>" \
    "    <hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='$2'/></source></hostdev>" > "$work/$1.xml"
}
vf_vm() { # name, vf address (bus:slot.fn on domain 0)
  local bus=${2%%:*} rest=${2#*:}
  domain_xml "$1" "      <vgpu:vf address=\"$2\"/>" \
    "    <hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x$bus' slot='0x${rest%%.*}' function='0x${rest#*.}'/></source></hostdev>" > "$work/$1.xml"
}
hook() { # domain, op, sub
  "$bin/vgpu-hook" "$1" "$2" "$3" - < "$work/$1.xml"
}
start() {
  printf '\n$ virsh start %s     # libvirt runs: qemu %s prepare begin -\n' "$1" "$1"
  if hook "$1" prepare begin; then echo "  started"; else echo "  (start refused; libvirt shows the line above)"; fi
}
stop() {
  printf '\n$ virsh destroy %s   # libvirt runs: qemu %s release end -\n' "$1" "$1"
  hook "$1" release end && echo "  stopped, device torn down"
}
show() {
  echo "  live vGPUs:"
  local any=
  for d in "$mnt"/sys/bus/mdev/devices/*; do
    [ -e "$d" ] || continue; any=1
    local parent type
    parent=$(basename "$(dirname "$(readlink -f "$d")")")
    type=$(basename "$(readlink "$d/mdev_type")")
    printf '    %-38s on %s  %-9s %s\n' "$(basename "$d")" "$parent" "$type" "$(cat "$d/mdev_type/name")"
  done
  [ -n "$any" ] || echo "    (none)"
  echo "  free instances per GPU:"
  for g in 0000:82:00.0 0000:83:00.0; do
    printf '    %s:' "$g"
    for p in 2Q 4Q 8Q 24Q; do
      local t
      t=$(grep -lx "GRID P40-$p" "$mnt"/sys/class/mdev_bus/$g/mdev_supported_types/*/name)
      printf '  P40-%s=%s' "$p" "$(cat "$(dirname "$t")/available_instances")"
    done
    echo
  done
  echo "  owners (state):"
  sed -n 's/.*"domain_name":"\([^"]*\)".*/    \1/p' "$work/state/owners.json" 2>/dev/null || true
}

mdev_vm win11 6f2e9a4c-8d1b-4c1e-9a41-000000000001 "GRID P40-2Q"
mdev_vm win10 6f2e9a4c-8d1b-4c1e-9a41-000000000002 "P40-2Q"
mdev_vm cad   6f2e9a4c-8d1b-4c1e-9a41-000000000003 "P40-8Q"
mdev_vm render 6f2e9a4c-8d1b-4c1e-9a41-000000000004 "P40-4Q"
vf_vm   mxgpu 04:00.4
vf_vm   mxgpu2 04:00.4

echo "Simulated host: 2 x Tesla P40 (0000:82:00.0, 0000:83:00.0), AMD MxGPU PF 0000:04:00.0 with 4 VFs"
show
start win11; start win10; show
start cad; show
start render
start mxgpu; echo "  VF 0000:04:00.4 owner: $(sed -n 's/.*"domain_name":"\(mxgpu\)".*/\1/p' "$work/state/owners.json")"
start mxgpu2
stop win11; stop win10; show
start render; show
stop cad; stop render; stop mxgpu; show
echo
echo "demo done; unmounting the simulated host"
