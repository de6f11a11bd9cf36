#!/usr/bin/env bash
# Interop suite: real clients (curl, lftp, Python ftplib) against the real ferroftp binary.
#
#   scripts/interop.sh [extra pytest args...]     e.g. scripts/interop.sh -k curl -x
#
# Installs what it needs when missing (curl, lftp, iproute2 for `ss -K`, pytest), builds the
# binary with `cargo build -p ferroftp` (unless FERROFTP_BIN points at one), runs the suite
# sequentially and exits with pytest's status. Network: loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=0
apt_install() {
    if ! have apt-get; then
        echo "interop: missing $*, and no apt-get to install it" >&2
        return 1
    fi
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

missing=()
have curl || missing+=(curl)
have lftp || missing+=(lftp)
have ss || missing+=(iproute2)
have python3 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== interop: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

if ! python3 -c 'import pytest' >/dev/null 2>&1; then
    echo "== interop: installing pytest"
    python3 -m pip install -q pytest >/dev/null 2>&1 \
        || python3 -m pip install -q --break-system-packages pytest >/dev/null 2>&1 \
        || apt_install python3-pytest
    python3 -c 'import pytest' || { echo "interop: cannot import pytest" >&2; exit 1; }
fi

if [ -z "${FERROFTP_BIN:-}" ]; then
    echo "== interop: cargo build -p ferroftp"
    cargo build -p ferroftp
    target_dir="${CARGO_TARGET_DIR:-target}"
    export FERROFTP_BIN="$target_dir/debug/ferroftp"
fi
export FERROFTP_SKIP_BUILD=1

echo "== interop: python3 -m pytest tests/interop (binary: $FERROFTP_BIN)"
status=0
python3 -m pytest -q -p no:cacheprovider -rfE tests/interop "$@" || status=$?
exit "$status"
