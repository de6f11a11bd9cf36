# Shared by scripts/interop.sh and scripts/system.sh: install missing tools, build the binary,
# run one pytest suite. Source it, set SUITE (a name for messages), then call
#   require TOOL PACKAGE ...   (pairs: install PACKAGE when TOOL is missing)
#   run_suite DIR [pytest args...]

have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=0
apt_install() {
    if ! have apt-get; then
        echo "$SUITE: missing $*, and no apt-get to install it" >&2
        return 1
    fi
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# require TOOL PACKAGE [TOOL PACKAGE ...]
require() {
    local missing=()
    while [ $# -ge 2 ]; do
        have "$1" || missing+=("$2")
        shift 2
    done
    if [ ${#missing[@]} -gt 0 ]; then
        # shellcheck disable=SC2207
        missing=($(printf '%s\n' "${missing[@]}" | sort -u))
        echo "== $SUITE: installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

# require_python MODULE PIP_PACKAGE APT_PACKAGE: install a Python module when it cannot be
# imported (pip, then pip past Debian's externally-managed marker, then the Debian package).
require_python() {
    local module=$1 pip_package=$2 apt_package=$3
    if ! python3 -c "import $module" >/dev/null 2>&1; then
        echo "== $SUITE: installing $pip_package"
        python3 -m pip install -q "$pip_package" >/dev/null 2>&1 \
            || python3 -m pip install -q --break-system-packages "$pip_package" >/dev/null 2>&1 \
            || apt_install "$apt_package"
        python3 -c "import $module" || { echo "$SUITE: cannot import $module" >&2; exit 1; }
    fi
}

# run_suite DIR [pytest args...]: pytest, the binary built unless FERROFTP_BIN is set; returns
# pytest's status (under `set -e` a failure ends the calling script).
run_suite() {
    local directory=$1
    shift
    require_python pytest pytest python3-pytest
    # The Prometheus text parser that reads the admin listener's /metrics.
    require_python prometheus_client prometheus-client python3-prometheus-client
    if [ -z "${FERROFTP_BIN:-}" ]; then
        echo "== $SUITE: cargo build -p ferroftp"
        cargo build -p ferroftp
        export FERROFTP_BIN="${CARGO_TARGET_DIR:-target}/debug/ferroftp"
    fi
    export FERROFTP_SKIP_BUILD=1
    echo "== $SUITE: python3 -m pytest $directory $* (binary: $FERROFTP_BIN)"
    local status=0
    python3 -m pytest -q -p no:cacheprovider -rfEs "$directory" "$@" || status=$?
    return "$status"
}
