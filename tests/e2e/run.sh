#!/usr/bin/env bash
# End-to-end tests of vgpu-hook and vgpuctl against a real kernel mdev parent (the kernel's mtty
# sample driver), a real SR-IOV physical function (QEMU's emulated NVMe controller) and a real
# libvirt daemon + QEMU, all inside a Debian guest run under TCG, on each of the host stacks below.
#
# usage: tests/e2e/run.sh [--prepare] [SCENARIO...]
#   --prepare     install host packages and build the guest images, then stop
#   SCENARIO...   run only these scenarios (names as in tests/e2e/guest/scenarios/NN-NAME.sh),
#                 on every stack they apply to
# environment:
#   VGPU_BIN_DIR        directory holding vgpu-hook and vgpuctl (default: cargo build --release --bins)
#   VGPU_DEB            the .deb the guest installs (default: built with packaging/build.sh)
#   VGPU_E2E_WORK       work and cache directory (default: tests/e2e/work)
#   VGPU_E2E_TIMEOUT    seconds each guest may run before it is killed (default: 1500)
#   VGPU_E2E_STACKS     the stacks to run, in order (default: "bookworm backports")
#
# Stacks (the guest's Debian packages; both from the host's own Debian mirror):
#   bookworm    Debian 12 as released: kernel 6.1, QEMU 7.2, libvirt 9.0; libvirtd, no LSM
#   backports   Debian 12's current stack: kernel 6.12 (linux-6.12 from bookworm-security),
#               QEMU 10.0 and libvirt 11.3 from bookworm-backports; libvirt's modular daemons
#               (virtqemud, virtnodedevd, virtlogd; no libvirtd), confined by AppArmor, enforcing
#
# Prints one line per scenario and stack, `PASS STACK/NAME` or `FAIL STACK/NAME: <why>`, and exits
# non-zero on any failure, on a guest that did not finish, or when anything cannot be built or run.
set -eu -o pipefail

E2E_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$E2E_DIR/../.." && pwd)
WORK=${VGPU_E2E_WORK:-$E2E_DIR/work}
GUEST_TIMEOUT=${VGPU_E2E_TIMEOUT:-1500}
STACKS=${VGPU_E2E_STACKS:-bookworm backports}

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

# ---------------------------------------------------------------- stacks
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    APT_SOURCES=/etc/apt/sources.list.d/debian.sources
elif [ -s /etc/apt/sources.list ]; then
    APT_SOURCES=/etc/apt/sources.list
else
    die "no Debian apt sources found on the host"
fi
# the host's Debian mirror (the first one its sources name), for the backports line
MIRROR=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p; s/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' "$APT_SOURCES" | head -n 1)
BASE_PKGS="kmod procps busybox nvme-cli libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86"

# stack_define NAME: what the guest of that stack is made of. Sets SUITE, GUEST_PKGS, EXTRA_MIRRORS
# (more apt lines for mmdebstrap), APT_OPTS (apt options, e.g. a default release), MODULAR (the
# suite to build libvirt's modular daemons from, see modular.sh; empty: none), FEATURES (what the
# stack offers; a scenario's `# needs:` line names the features it requires) and STACK_ENV (the
# guest's /e2e/stack.env).
stack_define() {
    EXTRA_MIRRORS=() APT_OPTS=() MODULAR=""
    case $1 in
        bookworm)
            SUITE=bookworm
            GUEST_PKGS="linux-image-amd64 $BASE_PKGS"
            FEATURES="libvirtd"
            STACK_ENV="STACK=bookworm APPARMOR=0 DAEMON=libvirtd" ;;
        backports)
            # what `apt-get -t bookworm-backports install libvirt-daemon-system qemu-system-x86`
            # gives an operator, with Debian 12's 6.12 kernel (its headers and source are in the
            # host's bookworm-security, for mtty), run by libvirt's modular daemons as RHEL and
            # Fedora run them (built for it: Debian ships none), confined by AppArmor
            SUITE=bookworm
            EXTRA_MIRRORS=("deb $MIRROR bookworm-backports main")
            APT_OPTS=('APT::Default-Release "bookworm-backports";')
            GUEST_PKGS="linux-image-6.12-amd64 apparmor libvirt-daemon-driver-nodedev $BASE_PKGS"
            MODULAR=bookworm-backports
            FEATURES="modular apparmor vfio-migration"
            STACK_ENV="STACK=backports APPARMOR=1 DAEMON=virtqemud" ;;
        *) die "unknown stack '$1' (known: bookworm backports)" ;;
    esac
    [ "$HOST_CODENAME" = bookworm ] ||
        die "stack $1 is Debian 12's: it needs a Debian 12 (bookworm) host, whose apt has the guest kernel's headers (found '$HOST_CODENAME')"
}

# scenarios_for [FEATURE]: the scenarios (names, in order) the stack defined last runs: every
# scenario whose `# needs:` features it has (with FEATURE: only those that need FEATURE), or of
# those, only the ones given on the command line
scenarios_for() {
    local f name need ok
    for f in "$E2E_DIR"/guest/scenarios/[0-9]*.sh; do
        name=$(basename "$f" .sh); name=${name#*-}
        if [ ${#SELECTED[@]} -gt 0 ] && ! printf '%s\n' "${SELECTED[@]}" | grep -qx -- "$name"; then
            continue
        fi
        ok=1
        for need in $(sed -n 's/^# needs: *//p' "$f"); do
            case " $FEATURES " in *" $need "*) ;; *) ok=0 ;; esac
        done
        if [ -n "${1:-}" ] && ! sed -n 's/^# needs: *//p' "$f" | grep -qw -- "$1"; then
            ok=0
        fi
        [ $ok = 1 ] && echo "$name"
    done
    return 0
}

# ---------------------------------------------------------------- guest root filesystem (cached)
build_rootfs() {
    ROOTFS=$SW/rootfs
    ROOTFS_KEY=$( { echo "$SUITE $GUEST_PKGS ${EXTRA_MIRRORS[*]} ${APT_OPTS[*]} v2"; cat "$APT_SOURCES"; } | sha)
    phase "$STACK: guest rootfs"
    if [ "$(cat "$SW/rootfs.key" 2>/dev/null)" = "$ROOTFS_KEY" ] && [ -d "$ROOTFS/lib/modules" ]; then
        echo "   cached ($ROOTFS)"
        return
    fi
    rm -rf "$ROOTFS" "$ROOTFS.tmp" "$SW/rootfs.key" "$SW/mtty" "$SW/img"
    local opts=() o
    for o in "${APT_OPTS[@]}"; do opts+=("--aptopt=$o"); done
    # the host's own apt sources are the mirror argument, so the guest uses the same mirror
    logged "$LOGS/$STACK-mmdebstrap.log" mmdebstrap --variant=apt "${opts[@]}" \
        --include="${GUEST_PKGS// /,}" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" "$ROOTFS.tmp" "$APT_SOURCES" "${EXTRA_MIRRORS[@]}"
    # a file system mmdebstrap could not unmount (something had it open) must not end up
    # copied into the image
    awk -v r="$ROOTFS.tmp/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m"
    done
    mv "$ROOTFS.tmp" "$ROOTFS"
    echo "$ROOTFS_KEY" > "$SW/rootfs.key"
}

# ---------------------------------------------------------------- mtty.ko for the guest kernel (cached)
build_mtty() {
    # shellcheck disable=SC2012
    KV=$(ls "$ROOTFS/lib/modules" | head -n 1)
    [ -f "$ROOTFS/boot/vmlinuz-$KV" ] || die "$STACK: guest rootfs has no kernel for $KV"
    local kseries
    kseries=$(echo "$KV" | cut -d. -f1,2)
    phase "$STACK: mtty module"
    MTTY=$SW/mtty
    if [ -f "$MTTY/mtty.ko" ] && [ "$(cat "$MTTY/kv" 2>/dev/null)" = "$KV" ]; then
        echo "   cached ($MTTY/mtty.ko)"
        return
    fi
    apt_install "linux-headers-$KV" "linux-source-$kseries" || die "could not install the guest kernel's headers and source"
    rm -rf "$MTTY"; mkdir -p "$MTTY"
    tar -xJf "/usr/src/linux-source-$kseries.tar.xz" -C "$MTTY" --strip-components=3 \
        "linux-source-$kseries/samples/vfio-mdev/mtty.c" || die "mtty.c not found in linux-source-$kseries"
    echo 'obj-m := mtty.o' > "$MTTY/Kbuild"
    logged "$LOGS/$STACK-mtty-build.log" make -C "/usr/src/linux-headers-$KV" M="$MTTY" modules
    echo "$KV" > "$MTTY/kv"
}

# ---------------------------------------------------------------- modular daemons (cached)
# virtqemud and virtnodedevd for a stack whose libvirt has none (modular.sh says how and why)
build_modular() {
    MODULAR_KEY=none
    [ -n "$MODULAR" ] || return 0
    phase "$STACK: modular daemons"
    local out=$SW/modular
    MODULAR_KEY=$( { echo "$ROOTFS_KEY"; cat "$E2E_DIR/modular.sh"; } | sha)
    if [ "$(cat "$out/key" 2>/dev/null)" = "$MODULAR_KEY" ] && [ -x "$out/virtqemud" ]; then
        echo "   cached ($out)"
        return
    fi
    # shellcheck disable=SC2046
    apt_install $(deps e2e-modular) || die "could not install what building the modular daemons needs"
    rm -rf "$out"
    logged "$LOGS/$STACK-modular.log" "$E2E_DIR/modular.sh" "$ROOTFS" "$MIRROR" "$MODULAR" "$out"
    tail -n 1 "$LOGS/$STACK-modular.log"
    echo "$MODULAR_KEY" > "$out/key"
}

# ---------------------------------------------------------------- guest disk image (cached)
# The image holds the rootfs, mtty.ko and a tiny init that hands over to guest/init.sh on the
# share, so editing the scenarios never rebuilds the image. The guest runs on a throw-away
# snapshot of it: every run starts from the same clean disk.
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
build_image() {
    phase "$STACK: guest image"
    IMG=$SW/img
    local key
    key=$( { echo "$ROOTFS_KEY $MODULAR_KEY"; sha256sum "$MTTY/mtty.ko"; echo "$STUB"; } | sha)
    if [ "$(cat "$IMG/key" 2>/dev/null)" = "$key" ] && [ -f "$IMG/root.img" ]; then
        echo "   cached ($IMG/root.img)"
        return
    fi
    rm -rf "$IMG"; mkdir -p "$IMG"
    install -D -m644 "$MTTY/mtty.ko" "$ROOTFS/lib/modules/$KV/extra/mtty.ko"
    depmod -b "$ROOTFS" "$KV"
    if [ -n "$MODULAR" ]; then
        install -m755 "$SW/modular/virtqemud" "$SW/modular/virtnodedevd" "$ROOTFS/usr/sbin/"
        install -m644 "$SW/modular/usr.sbin.virtqemud" "$ROOTFS/etc/apparmor.d/"
    fi
    printf '%s\n' "$STUB" > "$ROOTFS/sbin/vgpu-e2e-init"; chmod 755 "$ROOTFS/sbin/vgpu-e2e-init"
    cp "$ROOTFS/boot/vmlinuz-$KV" "$IMG/vmlinuz"
    cp "$ROOTFS/boot/initrd.img-$KV" "$IMG/initrd.img"
    logged "$LOGS/$STACK-mkfs.log" mkfs.ext4 -q -F -L vgpue2e -d "$ROOTFS" "$IMG/root.img.tmp" 3G
    truncate -s 64M "$IMG/nvme.img"
    mv "$IMG/root.img.tmp" "$IMG/root.img"
    echo "$key" > "$IMG/key"
}

# a selected scenario must exist, and run on at least one stack
if [ ${#SELECTED[@]} -gt 0 ]; then
    ALL=$(cd "$E2E_DIR/guest/scenarios" && ls -- *.sh | sed 's/^[0-9]*-//; s/\.sh$//')
    for s in "${SELECTED[@]}"; do
        echo "$ALL" | grep -qx -- "$s" || die "unknown scenario '$s' (known: $(echo $ALL))"
    done
fi
for STACK in $STACKS; do
    stack_define "$STACK"
    SW=$WORK/$STACK
    mkdir -p "$SW"
    build_rootfs
    build_mtty
    build_modular
    build_image
done
[ $PREPARE_ONLY = 1 ] && { echo "== prepared: $(for s in $STACKS; do printf '%s ' "$WORK/$s/img"; done)"; print_timings; exit 0; }

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
# run_guest DIR SCENARIOS [QEMU_ARG...]: boots a guest of the image $IMG (the stack defined last,
# its /e2e/stack.env from $STACK_ENV) on the scenarios named in SCENARIOS (one per line), with
# more QEMU arguments if given; its results are in DIR/out, QEMU's exit status in DIR/qemu.rc, its
# start and end times in DIR/times
run_guest() {
    RUN=$1
    local scenarios=$2
    shift 2
    rm -rf "$RUN"; mkdir -p "$RUN/share/bin" "$RUN/out"
    cp -r "$E2E_DIR/guest" "$RUN/share/guest"
    cp -r "$E2E_DIR/diff" "$RUN/share/diff"    # the differential script and its recorded transcript
    cp "$BIN_DIR/vgpu-hook" "$BIN_DIR/vgpuctl" "$RUN/share/bin/"   # for the install by hand
    mkdir -p "$RUN/share/pkg" && cp "$DEB" "$RUN/share/pkg/vgpu-hook.deb"
    printf '%s\n' $STACK_ENV > "$RUN/share/stack.env"
    if [ -n "$scenarios" ]; then printf '%s\n' "$scenarios"; fi > "$RUN/share/scenarios"
    local t0
    t0=$(date +%s)
    set +e
    timeout -k 10 "$GUEST_TIMEOUT" qemu-system-x86_64 \
        -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
        -object memory-backend-ram,id=mem0,size=1024M -object memory-backend-ram,id=mem1,size=1024M \
        -numa node,nodeid=0,cpus=0,memdev=mem0 -numa node,nodeid=1,cpus=1,memdev=mem1 \
        -machine q35 -device intel-iommu,caching-mode=on \
        -nographic -no-reboot -vga none -nic none -serial stdio -monitor none \
        -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
        -append "console=ttyS0 root=/dev/vda rw init=/sbin/vgpu-e2e-init panic=-1 quiet intel_iommu=on log_buf_len=4M mitigations=off kfence.sample_interval=0" \
        -drive file="$IMG/root.img",if=virtio,format=raw,snapshot=on \
        -virtfs local,path="$RUN/share",mount_tag=e2e,security_model=none,readonly=on,multidevs=remap \
        -virtfs local,path="$RUN/out",mount_tag=e2eout,security_model=none,multidevs=remap \
        -device pcie-root-port,id=rp1,chassis=1,slot=1 \
        -drive file="$IMG/nvme.img",if=none,id=nvm0,format=raw,snapshot=on \
        -device nvme-subsys,id=subsys0 \
        -device nvme,bus=rp1,serial=vgpue2e,subsys=subsys0,sriov_max_vfs=4,sriov_vq_flexible=8,sriov_vi_flexible=4,max_ioqpairs=12,msix_qsize=8 \
        -device nvme-ns,drive=nvm0,nsid=1 \
        "$@" </dev/null 2>&1 | tr -d '\r\033' > "$RUN/console.log"
    echo "${PIPESTATUS[0]}" > "$RUN/qemu.rc"
    set -e
    echo "$t0 $(date +%s)" > "$RUN/times"
}

# ---------------------------------------------------------------- results
# stack_results: the result line of every scenario the stack's guest was to run (STACK/NAME), a
# line for a guest that did not finish, and on failure the guest's logs
stack_results() {
    local out=$RUN/out line s rc
    rc=$(cat "$RUN/qemu.rc" 2>/dev/null || echo none)
    STACK_FAILED=0
    while read -r s; do
        line=$(grep -E "^(PASS|FAIL) $s(:|\$)" "$out/results" 2>/dev/null | tail -n 1 || true)
        [ -n "$line" ] || line="FAIL $s: no result (the guest did not get to run it)"
        case $line in PASS*) ;; *) STACK_FAILED=1 ;; esac
        echo "${line%% *} $STACK/${line#* }"
    done < "$RUN/share/scenarios"
    if ! grep -q '^E2E-GUEST-DONE' "$out/status" 2>/dev/null; then
        STACK_FAILED=1
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            echo "FAIL $STACK/guest: killed after ${GUEST_TIMEOUT}s without finishing"
        else
            echo "FAIL $STACK/guest: did not finish (qemu exit status $rc)"
        fi
    fi
}
stack_logs() {
    local out=$RUN/out
    echo "---- $STACK: guest console (last 60 lines of $RUN/console.log)"
    tail -n 60 "$RUN/console.log"
    echo "---- $STACK: vgpu-hook log (syslog identifier vgpu-hook)"
    if [ -f "$out/syslog" ]; then
        grep -a 'vgpu-hook' "$out/syslog" || echo "(no vgpu-hook lines in the guest's syslog)"
    else
        echo "(the guest's syslog was not saved)"
    fi
    if [ -s "$out/libvirtd.log" ]; then
        echo "---- $STACK: libvirt daemon log (last 30 lines)"
        tail -n 30 "$out/libvirtd.log"
    fi
    echo "(full logs: $out)"
}

# The stacks' guests run at the same time: under TCG each waits on its own emulated devices and
# timers much of the time, so together they take little longer than the slower one alone.
# shellcheck disable=SC2086
phase "guest runs ($(echo $STACKS | tr ' ' '+'), at once)"
GUESTS=()
for STACK in $STACKS; do
    stack_define "$STACK"
    SW=$WORK/$STACK IMG=$WORK/$STACK/img
    run_guest "$SW/run" "$(scenarios_for)" &
    GUESTS+=($!)
done
wait "${GUESTS[@]}" || true
phase_end

# ---------------------------------------------------------------- two hosts
# The scenarios that need a second host (`# needs: peer`: migration) run on a pair of guests of the
# backports image, hosta and hostb, booted at once after the stacks' guests. They are linked by a
# private network (virtio-net over a QEMU UDP socket on the host's loopback, nothing else
# reachable) and a shared directory (hostb's command channel and the hook-order logs), and differ
# in SMBIOS UUID, name and address, as two hosts must for libvirt to migrate between them. Both
# run Debian's own libvirtd (Debian ships no virtproxyd for the modular daemons' remote access)
# listening on TCP without auth, as on a private migration network, under AppArmor, enforcing.
PAIR_FEATURES="apparmor vfio-migration peer"
PAIR_RAN=0
# pair_guest ROLE N PEER M SCENARIOS: one host of the pair, 10.99.0.N, whose peer is 10.99.0.M
pair_guest() {
    STACK_ENV="STACK=pair APPARMOR=1 DAEMON=libvirtd ROLE=$1 ADDR=10.99.0.$2 PEER=$3 PEER_ADDR=10.99.0.$4"
    run_guest "$WORK/pair/$1" "$5" \
        -uuid "5eed0000-0000-4000-8000-00000000000$2" \
        -netdev "socket,id=pair,udp=127.0.0.1:$((40100 + $4)),localaddr=127.0.0.1:$((40100 + $2))" \
        -device virtio-net-pci,netdev=pair,mac=52:54:00:99:00:0$2,romfile= \
        -virtfs local,path="$WORK/pair/shared",mount_tag=e2epair,security_model=none,multidevs=remap
}
run_pair() {
    local scenarios
    stack_define backports
    FEATURES=$PAIR_FEATURES
    scenarios=$(scenarios_for peer)
    [ -n "$scenarios" ] || return 0
    phase "two hosts (hosta+hostb, backports image)"
    PAIR_RAN=1
    SW=$WORK/backports IMG=$WORK/backports/img
    rm -rf "$WORK/pair"; mkdir -p "$WORK/pair/shared/cmd"
    pair_guest hosta 1 hostb 2 "$scenarios" &
    local a=$!
    pair_guest hostb 2 hosta 1 "" &
    wait $a $! || true
    phase_end
}
case " $STACKS " in *" backports "*) run_pair ;; esac

FAILED=0
TABLE=()
# collect LABEL DIR: the results of the guest that ran in DIR into TABLE (its logs on failure)
collect() {
    STACK=$1 RUN=$2
    read -r g0 g1 < "$RUN/times" 2>/dev/null || { g0=0; g1=0; }
    TIMINGS+=("$(printf '%-22s %4ds' "$STACK guest" $((g1 - g0)))")
    mapfile -t lines < <(stack_results)
    TABLE+=("${lines[@]}")
    if printf '%s\n' "${lines[@]}" | grep -q '^FAIL'; then
        FAILED=1
        stack_logs
    fi
}
for s in $STACKS; do collect "$s" "$WORK/$s/run"; done
if [ $PAIR_RAN = 1 ]; then
    for h in hosta hostb; do collect "pair/$h" "$WORK/pair/$h"; done
fi
echo "== results"
printf '%s\n' "${TABLE[@]}"
print_timings
if [ $FAILED != 0 ]; then
    echo "E2E: FAILED"
    exit 1
fi
echo "E2E: all ${#TABLE[@]} scenario runs passed ($(echo $STACKS | tr ' ' '+')$([ $PAIR_RAN = 1 ] && echo ', two-host pair'))"
