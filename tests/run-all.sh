#!/usr/bin/env bash
# The whole test suite: installs what it needs (Debian packages as root, crates via cargo), checks
# formatting and lints, runs unit, integration (simulated host over FUSE, real libvirtd) and
# end-to-end (TCG guests on two stacks, with the kernel's mdev core and SR-IOV) tiers, then the
# benchmarks.
# Usage: sudo tests/run-all.sh            (from the repository root)
#        SKIP_E2E=1 tests/run-all.sh      only outside CI; in CI every tier runs.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
phase() { echo; echo "=== [$(( $(date +%s) - t0 ))s] $*"; }

if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then exec sudo --preserve-env=PATH,CI,HOME,CARGO_HOME,RUSTUP_HOME "$0" "$@"; fi
  echo "tests/run-all.sh: needs root (FUSE mounts, libvirtd, apt-get)" >&2
  exit 2
fi

# What each tier installs is listed in tests/deps/packages.txt; the "suite dependencies" phase
# checks that every program and host file the suite uses is on a new machine or on those lists.
source tests/deps/lib.sh
phase "Debian packages"
# shellcheck disable=SC2046
apt_install $(deps suite)
[ -e /dev/fuse ] || { echo "/dev/fuse is missing: the simulated-host tests cannot run" >&2; [ "${CI:-}" = true ] && exit 1; }

phase "suite dependencies (tests/deps: every program the suite uses is installed by it)"
cargo test --test suite_deps

phase "format and lints"
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

phase "build"
cargo build --workspace --all-targets

phase "unit and integration tests (simulated hosts, real libvirtd)"
cargo test --workspace -- --test-threads=2

phase "hook links no libvirt"
if ldd target/debug/vgpu-hook | grep -q libvirt; then echo "vgpu-hook links libvirt" >&2; exit 1; fi
echo "ok: $(ldd target/debug/vgpu-hook | wc -l) shared objects, none of them libvirt"

# The packages as an operator installs them (the e2e tier installs this .deb in its guest):
# built with the static hook, checked by lintian (no error), their systemd units by
# systemd-analyze, and vgpuctl's metrics by promtool (from Debian's prometheus package,
# unpacked only: nothing of it is installed or started).
phase "packages (.deb, .rpm), lintian, systemd units, promtool"
# shellcheck disable=SC2046
apt_install $(deps packages)
# shellcheck disable=SC2046
cargo_install $(deps cargo-packages)
packaging/build.sh
lintian --fail-on error --suppress-tags initial-upload-closes-no-bugs target/pkg/*.deb
echo "ok: lintian reports no error"
pkg_tmp=$(mktemp -d)
for u in packaging/systemd/*; do
  sed "s|/usr/bin/vgpuctl|$PWD/target/pkg/vgpuctl|" "$u" > "$pkg_tmp/$(basename "$u")"
done
systemd-analyze verify --man=no "$pkg_tmp"/*.service "$pkg_tmp"/*.timer
echo "ok: systemd-analyze verify: $(ls packaging/systemd | tr '\n' ' ')"
(cd "$pkg_tmp" && apt-get download -q prometheus >/dev/null && dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool)
printf 'mdev_parents = ["none"]\nsriov_pfs = ["0000:ff:1f.7"]\n' > "$pkg_tmp/config.toml"
VGPU_HOOK_CONFIG="$pkg_tmp/config.toml" VGPU_HOOK_STATE_DIR="$pkg_tmp/state" target/pkg/vgpuctl metrics > "$pkg_tmp/host.prom"
for f in tests/golden/metrics.prom "$pkg_tmp/host.prom"; do
  "$pkg_tmp/usr/bin/promtool" check metrics < "$f" || { echo "promtool rejects $f" >&2; exit 1; }
done
echo "ok: promtool accepts vgpuctl metrics (golden and this host)"
rm -rf "$pkg_tmp"
# The SELinux module the packages ship, built the way the README tells RHEL and Fedora operators
# to (the policy headers' devel Makefile: m4, checkmodule, semodule_package), with Debian's
# refpolicy headers; the package must require Fedora's names and label the hook as its .fc says.
# (Debian's own policy has none of libvirt's hook types, so it is compiled here, not loaded.)
phase "SELinux module (packaging/selinux, compiled with the devel Makefile)"
# shellcheck disable=SC2046
apt_install $(deps selinux)
sel_tmp=$(mktemp -d)
cp packaging/selinux/vgpu_hook.te packaging/selinux/vgpu_hook.fc "$sel_tmp"
make -s -C "$sel_tmp" -f /usr/share/selinux/devel/Makefile vgpu_hook.pp
semodule_unpackage "$sel_tmp/vgpu_hook.pp" "$sel_tmp/vgpu_hook.mod" "$sel_tmp/packaged.fc"
for name in virtqemud_t virt_hook_t virt_hook_unconfined_t virt_hooks_unconfined; do
  grep -aq "$name" "$sel_tmp/vgpu_hook.mod" || { echo "vgpu_hook.pp does not refer to $name" >&2; exit 1; }
done
grep -q '^/etc/libvirt/hooks/qemu\\.d/50-vgpu-hook[[:space:]]*--[[:space:]]*system_u:object_r:virt_hook_t:s0$' "$sel_tmp/packaged.fc" ||
  { echo "vgpu_hook.pp does not label the hook virt_hook_t" >&2; cat "$sel_tmp/packaged.fc" >&2; exit 1; }
echo "ok: vgpu_hook.pp ($(stat -c %s "$sel_tmp/vgpu_hook.pp") bytes) requires virtqemud_t, virt_hook_t, virt_hook_unconfined_t and virt_hooks_unconfined, labels the hook virt_hook_t"
rm -rf "$sel_tmp"

# the benchmark measures this very executable, the one the packages ship
export VGPU_HOOK_STATIC_BIN="$PWD/target/pkg/vgpu-hook"

# Each target runs FUZZ_SECONDS (default 60) from its committed seeds (fuzz/corpus/<target>, read
# only; what the fuzzer adds goes to fuzz/target/corpus). Any crash, panic, failed assertion,
# leak, timeout or out-of-memory stops the run: libFuzzer exits non-zero and names the input it
# saved under fuzz/artifacts/<target>/ (replay it with `cargo +nightly fuzz run <target> FILE`).
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
phase "fuzzing (cargo-fuzz, ${FUZZ_SECONDS}s per target)"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
# shellcheck disable=SC2046
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo_install $(deps cargo-fuzz)
(
  cd fuzz
  unset CARGO_TARGET_DIR
  # no separate `cargo fuzz build`: its flags differ from `fuzz run`'s, so it would build twice
  for t in $(cargo +nightly fuzz list); do
    dict=()
    case "$t" in domain_xml | xmledit_roundtrip) dict=(-dict=dict/xml.dict) ;; esac
    mkdir -p "target/corpus/$t"
    cargo +nightly fuzz run "$t" "target/corpus/$t" "corpus/$t" -- \
      -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 "${dict[@]}" \
      >"target/fuzz-$t.log" 2>&1 || { tail -n 60 "target/fuzz-$t.log" >&2; echo "fuzz target $t: finding (see above)" >&2; exit 1; }
    echo "ok: $t: $(sed -n 's/^stat::number_of_executed_units: *//p' "target/fuzz-$t.log") executions, no finding"
  done
)

if [ "${SKIP_E2E:-}" = 1 ] && [ "${CI:-}" != true ]; then
  phase "end-to-end: skipped (SKIP_E2E=1)"
else
  phase "end-to-end (TCG guests on two stacks and a two-host pair: real mdev core, SR-IOV, libvirt daemons, QEMU, AppArmor, live migration)"
  tests/e2e/run.sh
  # Needs the e2e tier's rootfs (kernel, modules): a tiny TCG guest on this host's libvirtd with
  # the real qemu-guest-agent and stand-in nvidia-smi/systemctl (tests/guest-agent/).
  phase "guest agent: vgpuctl guest against a booted guest"
  cargo test --test guest_agent_libvirtd -- --ignored
fi

phase "benchmarks"
cargo build --release -p vgpu-sim
BENCH_RUNS=${BENCH_RUNS:-200} cargo bench --bench hook
cargo bench --bench stop
cargo bench --bench placement
cargo bench --bench scale

phase "all passed in $(( $(date +%s) - t0 ))s"
