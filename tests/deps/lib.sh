# Installs what the suite needs, from the lists in this directory (sourced by tests/run-all.sh and
# tests/e2e/run.sh; tests/suite_deps checks the lists against what the suite uses).

DEPS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export DEBIAN_FRONTEND=noninteractive

# deps TIER: the packages (or cargo tools) of one tier of packages.txt, on one line
deps() {
    sed -n "s/^$1: *//p" "$DEPS_DIR/packages.txt" | tr '\n' ' '
}

# apt_install PACKAGE...: installs those not installed yet (apt-get update once, first); the
# output goes to $APT_LOG (default: a temporary file), whose tail is shown when apt-get fails
apt_install() {
    local missing=() p log=${APT_LOG:-$(mktemp)}
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return 0
    echo "   installing: ${missing[*]}"
    if [ "${DEPS_APT_UPDATED:-0}" = 0 ]; then
        apt-get update >"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "apt-get update failed" >&2; return 1; }
        DEPS_APT_UPDATED=1
    fi
    apt-get install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1 || {
        tail -n 40 "$log" >&2
        echo "apt-get install ${missing[*]} failed (log: $log)" >&2
        return 1
    }
}

# cargo_install TOOL...: cargo-installs (--locked) those not on PATH
cargo_install() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || cargo install --locked "$t"
    done
}
