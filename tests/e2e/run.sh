#!/usr/bin/env bash
# End-to-end tests of vgpu-hook and vgpuctl against a real kernel mdev parent (the kernel's mtty
# sample driver), a real SR-IOV physical function (QEMU's emulated NVMe controller) and a real
# libvirtd + QEMU, all inside a Debian guest run under TCG.
#
# usage: tests/e2e/run.sh [--prepare] [SCENARIO...]
#   --prepare     install host packages and build the guest image, then stop
#   SCENARIO...   run only these scenarios (names as in tests/e2e/guest/scenarios/NN-NAME.sh)
# environment:
#   VGPU_BIN_DIR        directory holding vgpu-hook and vgpuctl (default: cargo build --release --bins)
#   VGPU_DEB            the .deb the guest installs (default: built with packaging/build.sh)
#   VGPU_E2E_WORK       work and cache directory (default: tests/e2e/work)
#   VGPU_E2E_TIMEOUT    seconds the guest may run before it is killed (default: 600)
#   VGPU_E2E_SUITE      Debian suite of the guest (default: the host's own, from /etc/os-release)
#
# Prints one line per scenario, `PASS <name>` or `FAIL <name>: <why>`, and exits non-zero on any
# failure, on a guest that did not finish, or when anything cannot be built or run.
set -eu -o pipefail

E2E_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$E2E_DIR/../.." && pwd)
WORK=${VGPU_E2E_WORK:-$E2E_DIR/work}
GUEST_TIMEOUT=${VGPU_E2E_TIMEOUT:-600}

PREPARE_ONLY=0
SELECTED=()
for a in "$@"; do
    case $a in
        --prepare) PREPARE_ONLY=1 ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option $a" >&2; exit 2 ;;
        *) SELECTED+=("$a") ;;
    esac
done

T_START=$(date +%s)
PHASE=""
PHASE_T0=0
TIMINGS=()
phase_end() {
    if [ -n "$PHASE" ]; then
        local d=$(( $(date +%s) - PHASE_T0 ))
        TIMINGS+=("$(printf '%-22s %4ds' "$PHASE" "$d")")
        echo "== $PHASE: ${d}s"
    fi
    PHASE=""
}
phase() {
    phase_end
    PHASE=$1
    PHASE_T0=$(date +%s)
    echo "== $PHASE ..."
}
print_timings() {
    phase_end
    echo "== elapsed per phase:"
    for t in "${TIMINGS[@]}"; do echo "   $t"; done
    echo "   $(printf '%-22s %4ds' total $(( $(date +%s) - T_START )))"
}
die() {
    echo "E2E ERROR: $*" >&2
    print_timings >&2
    exit 1
}
# run a step with its output going to a log file; show the log tail if it fails
logged() {
    local log=$1; shift
    if ! "$@" >"$log" 2>&1; then
        echo "---- last lines of $log" >&2
        tail -n 40 "$log" >&2
        die "step failed: $*"
    fi
}
sha() { sha256sum | cut -c1-16; }

[ "$(id -u)" = 0 ] || { echo "run.sh: must run as root (mmdebstrap, mkfs, qemu)" >&2; exit 1; }
[ -r /etc/os-release ] || die "no /etc/os-release: a Debian host is required"
# shellcheck disable=SC1091
HOST_ID=$(. /etc/os-release && echo "${ID:-}")
HOST_CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ "$HOST_ID" = debian ] || die "a Debian host is required (found '$HOST_ID'): the guest kernel's headers come from the host's apt"
SUITE=${VGPU_E2E_SUITE:-$HOST_CODENAME}
mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs

# ---------------------------------------------------------------- host packages
phase "host packages"
# the host's packages for this tier are the e2e lines of tests/deps/packages.txt
# shellcheck source=../deps/lib.sh
source "$REPO/tests/deps/lib.sh"
APT_LOG=$LOGS/apt.log
HOST_PKGS=$(deps e2e)
[ -n "${VGPU_BIN_DIR:-}" ] || HOST_PKGS="$HOST_PKGS $(deps e2e-build)"
# shellcheck disable=SC2086
apt_install $HOST_PKGS || die "could not install the host packages: $HOST_PKGS"

# ---------------------------------------------------------------- guest root filesystem (cached)
GUEST_PKGS="linux-image-amd64 kmod procps busybox nvme-cli libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    APT_SOURCES=/etc/apt/sources.list.d/debian.sources
elif [ -s /etc/apt/sources.list ]; then
    APT_SOURCES=/etc/apt/sources.list
else
    die "no Debian apt sources found on the host"
fi
ROOTFS=$WORK/rootfs
ROOTFS_KEY=$( { echo "$SUITE $GUEST_PKGS v1"; cat "$APT_SOURCES"; } | sha)
phase "guest rootfs"
if [ "$(cat "$WORK/rootfs.key" 2>/dev/null)" = "$ROOTFS_KEY" ] && [ -d "$ROOTFS/lib/modules" ]; then
    echo "   cached ($ROOTFS)"
else
    rm -rf "$ROOTFS" "$ROOTFS.tmp" "$WORK/rootfs.key" "$WORK/mtty" "$WORK/img"
    # the host's own apt sources are the mirror argument, so the guest uses the same mirror
    logged "$LOGS/mmdebstrap.log" mmdebstrap --variant=apt \
        --include="${GUEST_PKGS// /,}" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" "$ROOTFS.tmp" "$APT_SOURCES"
    # a file system mmdebstrap could not unmount (something had it open) must not end up
    # copied into the image
    awk -v r="$ROOTFS.tmp/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m"
    done
    mv "$ROOTFS.tmp" "$ROOTFS"
    echo "$ROOTFS_KEY" > "$WORK/rootfs.key"
fi
# shellcheck disable=SC2012
KV=$(ls "$ROOTFS/lib/modules" | head -n 1)
[ -f "$ROOTFS/boot/vmlinuz-$KV" ] || die "guest rootfs has no kernel for $KV"
KSERIES=$(echo "$KV" | cut -d. -f1,2)

# ---------------------------------------------------------------- mtty.ko for the guest kernel (cached)
phase "mtty module"
MTTY=$WORK/mtty
if [ -f "$MTTY/mtty.ko" ] && [ "$(cat "$MTTY/kv" 2>/dev/null)" = "$KV" ]; then
    echo "   cached ($MTTY/mtty.ko)"
else
    apt_install "linux-headers-$KV" "linux-source-$KSERIES" || die "could not install the guest kernel's headers and source"
    rm -rf "$MTTY"; mkdir -p "$MTTY"
    tar -xJf "/usr/src/linux-source-$KSERIES.tar.xz" -C "$MTTY" --strip-components=3 \
        "linux-source-$KSERIES/samples/vfio-mdev/mtty.c" || die "mtty.c not found in linux-source-$KSERIES"
    echo 'obj-m := mtty.o' > "$MTTY/Kbuild"
    logged "$LOGS/mtty-build.log" make -C "/usr/src/linux-headers-$KV" M="$MTTY" modules
    echo "$KV" > "$MTTY/kv"
fi

# ---------------------------------------------------------------- guest disk image (cached)
# The image holds the rootfs, mtty.ko and a tiny init that hands over to guest/init.sh on the
# share, so editing the scenarios never rebuilds the image. The guest runs on a throw-away
# snapshot of it: every run starts from the same clean disk.
phase "guest image"
IMG=$WORK/img
STUB='#!/bin/sh
# init of the vgpu-hook e2e guest: mount the test share and hand over to its init.sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
modprobe 9pnet_virtio; modprobe 9p
mkdir -p /e2e && mount -t 9p -o trans=virtio,version=9p2000.L,ro e2e /e2e
[ -f /e2e/guest/init.sh ] && exec /bin/bash /e2e/guest/init.sh
echo "E2E-GUEST: no /e2e/guest/init.sh"; exec busybox poweroff -f'
IMG_KEY=$( { echo "$ROOTFS_KEY"; sha256sum "$MTTY/mtty.ko"; echo "$STUB"; } | sha)
if [ "$(cat "$IMG/key" 2>/dev/null)" = "$IMG_KEY" ] && [ -f "$IMG/root.img" ]; then
    echo "   cached ($IMG/root.img)"
else
    rm -rf "$IMG"; mkdir -p "$IMG"
    install -D -m644 "$MTTY/mtty.ko" "$ROOTFS/lib/modules/$KV/extra/mtty.ko"
    depmod -b "$ROOTFS" "$KV"
    printf '%s\n' "$STUB" > "$ROOTFS/sbin/vgpu-e2e-init"; chmod 755 "$ROOTFS/sbin/vgpu-e2e-init"
    cp "$ROOTFS/boot/vmlinuz-$KV" "$IMG/vmlinuz"
    cp "$ROOTFS/boot/initrd.img-$KV" "$IMG/initrd.img"
    logged "$LOGS/mkfs.log" mkfs.ext4 -q -F -L vgpue2e -d "$ROOTFS" "$IMG/root.img.tmp" 3G
    truncate -s 64M "$IMG/nvme.img"
    mv "$IMG/root.img.tmp" "$IMG/root.img"
    echo "$IMG_KEY" > "$IMG/key"
fi

[ $PREPARE_ONLY = 1 ] && { echo "== prepared: $IMG"; print_timings; exit 0; }

# ---------------------------------------------------------------- project binaries
phase "project binaries"
if [ -n "${VGPU_BIN_DIR:-}" ]; then
    BIN_DIR=$(cd "$VGPU_BIN_DIR" && pwd) || die "VGPU_BIN_DIR=$VGPU_BIN_DIR is not a directory"
    echo "   using $BIN_DIR"
else
    command -v cargo >/dev/null || die "cargo not found (or set VGPU_BIN_DIR to prebuilt binaries)"
    (cd "$REPO" && cargo build --release --bins) >"$LOGS/cargo.log" 2>&1 || {
        tail -n 40 "$LOGS/cargo.log" >&2; die "cargo build --release --bins failed"; }
    BIN_DIR=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release
fi
for b in vgpu-hook vgpuctl; do
    [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing or not executable"
done
# The .deb the guest installs with dpkg (the real install path): VGPU_DEB, else built here.
if [ -n "${VGPU_DEB:-}" ]; then
    DEB=$(cd "$(dirname "$VGPU_DEB")" && pwd)/$(basename "$VGPU_DEB")
else
    # shellcheck disable=SC2046
    logged "$LOGS/cargo-install.log" cargo_install $(deps cargo-packages)
    logged "$LOGS/packages.log" "$REPO/packaging/build.sh"
    DEB=$(ls "$REPO"/target/pkg/vgpu-hook_*.deb | head -n 1)
fi
[ -f "$DEB" ] || die "no .deb package ($DEB)"

# ---------------------------------------------------------------- share and guest run
phase "guest run"
RUN=$WORK/run
rm -rf "$RUN"; mkdir -p "$RUN/share/bin" "$RUN/out"
cp -r "$E2E_DIR/guest" "$RUN/share/guest"
cp -r "$E2E_DIR/diff" "$RUN/share/diff"    # the differential script and its recorded transcript
cp "$BIN_DIR/vgpu-hook" "$BIN_DIR/vgpuctl" "$RUN/share/bin/"   # for the install by hand
mkdir -p "$RUN/share/pkg" && cp "$DEB" "$RUN/share/pkg/vgpu-hook.deb"
# the scenarios to run, in order; the guest runs exactly the ones listed here
ALL=$(cd "$E2E_DIR/guest/scenarios" && ls -- *.sh | sed 's/^[0-9]*-//; s/\.sh$//')
if [ ${#SELECTED[@]} -gt 0 ]; then
    for s in "${SELECTED[@]}"; do
        echo "$ALL" | grep -qx -- "$s" || die "unknown scenario '$s' (known: $(echo $ALL))"
    done
    printf '%s\n' "${SELECTED[@]}" > "$RUN/share/scenarios"
else
    echo "$ALL" > "$RUN/share/scenarios"
fi

CONSOLE=$RUN/console.log
set +e
timeout -k 10 "$GUEST_TIMEOUT" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
    -object memory-backend-ram,id=mem0,size=1024M -object memory-backend-ram,id=mem1,size=1024M \
    -numa node,nodeid=0,cpus=0,memdev=mem0 -numa node,nodeid=1,cpus=1,memdev=mem1 \
    -machine q35 -device intel-iommu,caching-mode=on \
    -nographic -no-reboot -vga none -nic none -serial stdio -monitor none \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw init=/sbin/vgpu-e2e-init panic=-1 quiet intel_iommu=on" \
    -drive file="$IMG/root.img",if=virtio,format=raw,snapshot=on \
    -virtfs local,path="$RUN/share",mount_tag=e2e,security_model=none,readonly=on,multidevs=remap \
    -virtfs local,path="$RUN/out",mount_tag=e2eout,security_model=none,multidevs=remap \
    -device pcie-root-port,id=rp1,chassis=1,slot=1 \
    -drive file="$IMG/nvme.img",if=none,id=nvm0,format=raw,snapshot=on \
    -device nvme-subsys,id=subsys0 \
    -device nvme,bus=rp1,serial=vgpue2e,subsys=subsys0,sriov_max_vfs=4,sriov_vq_flexible=8,sriov_vi_flexible=4,max_ioqpairs=12,msix_qsize=8 \
    -device nvme-ns,drive=nvm0,nsid=1 \
    </dev/null 2>&1 | tr -d '\r\033' > "$CONSOLE"
QEMU_RC=${PIPESTATUS[0]}
set -e
phase_end

# ---------------------------------------------------------------- results
OUT=$RUN/out
RESULTS=$OUT/results
FAILED=0
echo "== results"
while read -r s; do
    line=$(grep -E "^(PASS|FAIL) $s(:|\$)" "$RESULTS" 2>/dev/null | tail -n 1 || true)
    if [ -z "$line" ]; then
        line="FAIL $s: no result (the guest did not get to run it)"
    fi
    case $line in PASS*) ;; *) FAILED=1 ;; esac
    echo "$line"
done < "$RUN/share/scenarios"
if ! grep -q '^E2E-GUEST-DONE' "$OUT/status" 2>/dev/null; then
    FAILED=1
    if [ "$QEMU_RC" = 124 ] || [ "$QEMU_RC" = 137 ]; then
        echo "FAIL guest: killed after ${GUEST_TIMEOUT}s without finishing"
    else
        echo "FAIL guest: did not finish (qemu exit status $QEMU_RC)"
    fi
fi

if [ $FAILED != 0 ]; then
    echo "---- guest console (last 60 lines of $CONSOLE)"
    tail -n 60 "$CONSOLE"
    echo "---- vgpu-hook log (syslog identifier vgpu-hook)"
    if [ -f "$OUT/syslog" ]; then
        grep -a 'vgpu-hook' "$OUT/syslog" || echo "(no vgpu-hook lines in the guest's syslog)"
    else
        echo "(the guest's syslog was not saved)"
    fi
    if [ -s "$OUT/libvirtd.log" ]; then
        echo "---- libvirtd log (last 30 lines)"
        tail -n 30 "$OUT/libvirtd.log"
    fi
    echo "(full logs: $OUT)"
fi
print_timings
if [ $FAILED != 0 ]; then
    echo "E2E: FAILED"
    exit 1
fi
echo "E2E: all $(wc -l < "$RUN/share/scenarios") scenarios passed"
