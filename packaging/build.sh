#!/usr/bin/env bash
# Builds the .deb and .rpm packages into target/pkg:
#   the hook as one static executable (glibc's static libs; no shared library at all, so a libc
#   upgrade under running VMs cannot break it), vgpuctl (links libvirt), the man pages and shell
#   completions generated from vgpuctl's own command line, and the commented config skeleton;
#   then cargo-deb and cargo-generate-rpm on the lists in Cargo.toml.
# Needs: cargo-deb and cargo-generate-rpm (cargo install --locked cargo-deb cargo-generate-rpm),
# libvirt-dev, pkg-config, dpkg-dev. Usage: packaging/build.sh  (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
STAGE=target/pkg

# --target keeps RUSTFLAGS off build scripts and proc-macros (they must stay dynamic).
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --no-default-features \
    --bin vgpu-hook --target "$TRIPLE"
cargo build --release --locked --bin vgpuctl

rm -rf "$STAGE"
mkdir -p "$STAGE/man" "$STAGE/completions"
install -m 755 "$TARGET_DIR/$TRIPLE/release/vgpu-hook" "$STAGE/vgpu-hook"
install -m 755 "$TARGET_DIR/release/vgpuctl" "$STAGE/vgpuctl"
strip "$STAGE/vgpu-hook" "$STAGE/vgpuctl"
# Static: no program interpreter, no shared library (glibc's ldd says "statically linked" for
# this static-PIE, which keeps address randomisation; "not a dynamic executable" for non-PIE).
if LC_ALL=C readelf -lW "$STAGE/vgpu-hook" | grep -q 'INTERP' ||
    LC_ALL=C readelf -dW "$STAGE/vgpu-hook" | grep -q '(NEEDED)' ||
    ! LC_ALL=C ldd "$STAGE/vgpu-hook" 2>&1 | grep -Eq 'statically linked|not a dynamic executable'; then
    echo "packaging/build.sh: $STAGE/vgpu-hook is not static:" >&2
    ldd "$STAGE/vgpu-hook" >&2
    exit 1
fi

"$STAGE/vgpuctl" man --dir "$STAGE/man" >/dev/null
gzip -9n "$STAGE"/man/*.1
"$STAGE/vgpuctl" completions bash > "$STAGE/completions/vgpuctl"
"$STAGE/vgpuctl" completions zsh > "$STAGE/completions/_vgpuctl"
"$STAGE/vgpuctl" completions fish > "$STAGE/completions/vgpuctl.fish"

# The config skeleton as vgpuctl install writes it on a host that offers nothing yet (the
# package cannot know the host's GPUs): every key commented out at its default.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/sys"
VGPU_HOOK_SYSFS_ROOT="$work/sys" VGPU_HOOK_CONFIG="$work/config.toml" VGPU_HOOK_STATE_DIR="$work/state" \
    "$STAGE/vgpuctl" install --no-reload --no-units --hooks-dir "$work/hooks" \
    --hook-binary "$STAGE/vgpu-hook" >/dev/null
sed -e 's/^# Written by `vgpuctl install` from what this host offered then; uncomment what applies\.$/# Installed by the vgpu-hook package; uncomment and fill in what applies (this file is kept on upgrade)./' \
    -e 's/^#   (none found)$/#   (`lspci -nn` and `ls \/sys\/class\/mdev_bus` show this host'"'"'s devices)/' \
    "$work/config.toml" > "$STAGE/config.toml"

cargo deb --no-build --no-strip --output "$STAGE/"
cargo generate-rpm --output "$STAGE/"
ls -l "$STAGE"/*.deb "$STAGE"/*.rpm
