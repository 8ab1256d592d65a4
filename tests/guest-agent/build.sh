#!/usr/bin/env bash
# Builds the guest-agent test's tiny guest: the kernel of the e2e tier's Debian rootfs and an
# initramfs holding busybox, Debian's real qemu-guest-agent (apt-get download, with the shared
# libraries ldd names), the virtio modules, the stand-ins (nvidia-smi, systemctl) and init.
#
# usage: tests/guest-agent/build.sh OUTDIR      (writes OUTDIR/vmlinuz and OUTDIR/initramfs.gz)
# environment: VGPU_E2E_WORK (default tests/e2e/work): where the e2e rootfs of the bookworm stack is
# Needs root only for apt-get; the host must be the guest's Debian release (as for tests/e2e).
set -eu -o pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${VGPU_E2E_WORK:-$HERE/../e2e/work}
OUT=${1:?usage: build.sh OUTDIR}
ROOTFS=$WORK/bookworm/rootfs
[ -d "$ROOTFS/lib/modules" ] || { echo "build.sh: no e2e rootfs at $ROOTFS (run VGPU_E2E_STACKS=bookworm tests/e2e/run.sh --prepare)" >&2; exit 1; }
KV=$(ls "$ROOTFS/lib/modules" | head -n 1)
mkdir -p "$OUT"
# Tests that need the guest run in parallel: one builds, the others wait and find it cached.
exec 9>"$OUT/.lock"
flock 9
KEY=$( { echo "$KV v1"; cat "$HERE/build.sh" "$HERE/init" "$HERE/nvidia-smi" "$HERE/systemctl"; } | sha256sum | cut -c1-16)
if [ "$(cat "$OUT/key" 2>/dev/null)" = "$KEY" ] && [ -s "$OUT/initramfs.gz" ]; then
    echo "cached: $OUT"; exit 0
fi
DEB=$OUT/deb
if ! ls "$DEB"/qemu-guest-agent_*.deb >/dev/null 2>&1; then
    mkdir -p "$DEB"
    (cd "$DEB" && apt-get download qemu-guest-agent >/dev/null 2>&1) || {
        apt-get update -q >/dev/null && (cd "$DEB" && apt-get download qemu-guest-agent >/dev/null); }
fi
R=$(mktemp -d)
trap 'rm -rf "$R"' EXIT
dpkg-deb -x "$DEB"/qemu-guest-agent_*.deb "$R/pkg"
mkdir -p "$R/root"/{bin,sbin,usr/bin,usr/sbin,lib/modules,proc,sys,dev,run,tmp,etc/nvidia}
cd "$R/root"
cp "$R/pkg/usr/sbin/qemu-ga" usr/sbin/
BUSYBOX=/usr/bin/busybox
[ -x "$BUSYBOX" ] || { echo "build.sh: $BUSYBOX is missing: install busybox-static (tests/run-all.sh installs it, from tests/deps/packages.txt)" >&2; exit 1; }
cp "$BUSYBOX" bin/
for a in $(bin/busybox --list); do [ -e "bin/$a" ] || ln -s busybox "bin/$a"; done
for b in usr/sbin/qemu-ga bin/busybox; do
    if ldd "$b" | grep -q 'not found'; then echo "build.sh: $b needs libraries the host lacks:" >&2; ldd "$b" >&2; exit 1; fi
    for lib in $(ldd "$b" | grep -o '/[^ ]*'); do
        mkdir -p ".$(dirname "$lib")"; cp -L "$lib" ".$lib"
    done
done
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci; do
    cp "$ROOTFS/lib/modules/$KV/kernel/drivers/virtio/$m.ko" lib/modules/
done
cp "$ROOTFS/lib/modules/$KV/kernel/drivers/char/virtio_console.ko" lib/modules/
install -m 0755 "$HERE/init" init
install -m 0755 "$HERE/nvidia-smi" usr/bin/nvidia-smi
install -m 0755 "$HERE/systemctl" usr/bin/systemctl
printf 'PRETTY_NAME="vgpu-hook guest-agent test (Debian %s kernel)"\nNAME="Debian GNU/Linux"\nID=debian\n' "$KV" > etc/os-release
find . | bin/busybox cpio -o -H newc 2>/dev/null | gzip -1 > "$OUT/initramfs.gz.tmp"
mv "$OUT/initramfs.gz.tmp" "$OUT/initramfs.gz"
cp "$ROOTFS/boot/vmlinuz-$KV" "$OUT/vmlinuz"
echo "$KEY" > "$OUT/key"
echo "built: $OUT (kernel $KV, $(du -h "$OUT/initramfs.gz" | cut -f1) initramfs)"
