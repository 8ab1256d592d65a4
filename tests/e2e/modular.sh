#!/usr/bin/env bash
# Builds libvirt's modular daemons virtqemud and virtnodedevd for a guest root file system whose
# libvirt has none: Debian ships only the monolithic libvirtd (bookworm-backports, trixie and sid
# alike). A libvirt daemon is libvirt's remote_daemon*.c compiled with DAEMON_NAME and
# MODULE_NAME: it links the shared libvirt.so.0 (its private symbols are versioned per release)
# and loads the connection-driver module named MODULE_NAME, so the daemons are built from the
# upstream source of exactly the rootfs's libvirt (Debian's orig tarball, checked against the
# suite's Sources index), linked against the rootfs's own libvirt.so.0, and load Debian's
# driver modules (libvirt_driver_qemu.so, libvirt_driver_nodedev.so) as Debian's libvirtd does.
# Also writes libvirt's own AppArmor profile for virtqemud (usr.sbin.virtqemud, which Debian does
# not ship either), with Debian's paths.
#
# usage: tests/e2e/modular.sh ROOTFS MIRROR SUITE OUTDIR
#   writes OUTDIR/virtqemud, OUTDIR/virtnodedevd, OUTDIR/usr.sbin.virtqemud (build log: OUTDIR/build.log)
set -eu -o pipefail
ROOTFS=$1 MIRROR=$2 SUITE=$3 OUT=$4
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SRC=$OUT/src
die() { echo "modular.sh: $*" >&2; exit 1; }

# the upstream version of the rootfs's libvirt0 (11.3.0 of 11.3.0-2~bpo12+1)
full=$(awk '/^Package: libvirt0$/ {p = 1} p && /^Version:/ {print $2; exit}' "$ROOTFS/var/lib/dpkg/status")
[ -n "$full" ] || die "the rootfs at $ROOTFS has no libvirt0"
UPV=$(echo "$full" | sed 's/^[0-9]*://; s/-[^-]*$//')
TARBALL=libvirt_$UPV.orig.tar.xz

# the tarball, as the suite's Sources index lists it
sum=$(curl -fsS "$MIRROR/dists/$SUITE/main/source/Sources.xz" | xz -dc |
    sed -n "s/^ \([0-9a-f]\{64\}\) [0-9]* $TARBALL\$/\1/p" | head -n 1)
[ -n "$sum" ] || die "$TARBALL is not in $MIRROR/dists/$SUITE/main/source/Sources.xz"
rm -rf "$SRC"; mkdir -p "$SRC"
curl -fsS -o "$SRC/$TARBALL" "$MIRROR/pool/main/libv/libvirt/$TARBALL" || die "cannot download $TARBALL"
echo "$sum  $SRC/$TARBALL" | sha256sum -c --quiet - || die "$TARBALL does not match its checksum in the Sources index"
tar -xJf "$SRC/$TARBALL" -C "$SRC"
TREE=$SRC/libvirt-$UPV
BUILD=$SRC/build

# configured as Debian configures its libvirtd for what the daemon itself compiles in (the
# remote driver, the admin server, the QEMU driver's protocol); nothing else is built
meson setup "$BUILD" "$TREE" -Dsystem=true -Ddocs=disabled -Dtests=disabled -Dnls=disabled \
    -Ddriver_libvirtd=enabled -Ddriver_remote=enabled -Ddriver_qemu=enabled \
    -Ddriver_network=disabled -Ddriver_lxc=disabled -Ddriver_vbox=disabled -Ddriver_esx=disabled \
    -Ddriver_test=disabled -Ddriver_ch=disabled -Dstorage_dir=disabled >"$OUT/build.log" 2>&1 ||
    { tail -n 30 "$OUT/build.log" >&2; die "meson setup failed"; }
objects=$(cd "$BUILD" && ninja -t targets all | sed -n 's/^\(src\/virtqemud\.p\/[^:]*\.o\):.*/\1/p')
[ -n "$objects" ] || die "meson defines no virtqemud target"
# shellcheck disable=SC2086
(cd "$BUILD" && ninja $objects src/admin/libvirt_admin_driver.a) >>"$OUT/build.log" 2>&1 ||
    { tail -n 30 "$OUT/build.log" >&2; die "compiling virtqemud failed"; }

# virtnodedevd: the daemon's own sources again, with its names (the protocol objects are shared)
mkdir -p "$BUILD/src/virtnodedevd.p"
for o in $objects; do
    case $o in
        */remote_remote_daemon*.o)
            cmd=$(cd "$BUILD" && ninja -t commands "$o" | tail -n 1 |
                sed 's/virtqemud/virtnodedevd/g; s/MODULE_NAME="qemu"/MODULE_NAME="nodedev"/')
            (cd "$BUILD" && sh -c "$cmd") >>"$OUT/build.log" 2>&1 || die "compiling virtnodedevd failed"
            ;;
        *) cp "$BUILD/$o" "$BUILD/${o/virtqemud.p/virtnodedevd.p}" ;;
    esac
done

# linked as meson links the daemons, but against the rootfs's libraries
LIB=$ROOTFS/usr/lib/x86_64-linux-gnu
for d in virtqemud virtnodedevd; do
    # shellcheck disable=SC2046
    cc -o "$OUT/$d" -s -pie -Wl,--as-needed -Wl,--no-undefined -Wl,-z,relro -Wl,-z,now -Wl,-export-dynamic \
        -Wl,--start-group "$BUILD"/src/$d.p/*.o "$BUILD/src/admin/libvirt_admin_driver.a" \
        "$LIB/libvirt.so.0" "$LIB/libvirt-lxc.so.0" "$LIB/libvirt-qemu.so.0" \
        $(pkg-config --libs gnutls glib-2.0 gobject-2.0 gio-2.0 libxml-2.0 libtirpc) -Wl,--end-group \
        >>"$OUT/build.log" 2>&1 || { tail -n 30 "$OUT/build.log" >&2; die "linking $d failed"; }
done

# libvirt's profile for virtqemud, with the paths Debian's libvirt uses
sed 's|@sbindir@|/usr/sbin|g; s|@libexecdir@|/usr/lib/libvirt|g; s|@sysconfdir@|/etc|g; s|@runstatedir@|/run|g' \
    "$TREE/src/security/apparmor/usr.sbin.virtqemud.in" > "$OUT/usr.sbin.virtqemud"
rm -rf "$SRC"
echo "virtqemud and virtnodedevd $UPV (for libvirt0 $full)"
