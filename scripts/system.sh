#!/usr/bin/env bash
# System suite: ferroftp in network-namespace topologies (server behind NAT, client behind
# MASQUERADE with and without the kernel FTP helper, HAProxy with the PROXY protocol, port
# translation, the firewall examples of docs/nat-and-firewalls.md).
#
#   scripts/system.sh [extra pytest args...]     e.g. scripts/system.sh -k haproxy -x
#
# Needs root: it creates namespaces named ffsys-*, veth pairs and netfilter rules inside them
# (never on the host's own interfaces, routes or firewall) and deletes them afterwards.
# Installs what it needs when missing (iproute2, iptables, nftables, curl, haproxy, procps,
# kmod, pytest), builds the binary with `cargo build -p ferroftp` (unless FERROFTP_BIN points at
# one), runs the suite sequentially and exits with pytest's status.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }

if [ "$(id -u)" != 0 ]; then
    echo "system: needs root (network namespaces, netfilter inside them)" >&2
    exit 1
fi

apt_updated=0
apt_install() {
    if ! have apt-get; then
        echo "system: missing $*, and no apt-get to install it" >&2
        return 1
    fi
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

missing=()
have ip || missing+=(iproute2)
have ss || missing+=(iproute2)
have iptables || missing+=(iptables)
have iptables-restore || missing+=(iptables)
have nft || missing+=(nftables)
have curl || missing+=(curl)
have haproxy || missing+=(haproxy)
have sysctl || missing+=(procps)
have modprobe || missing+=(kmod)
have python3 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    # shellcheck disable=SC2207
    missing=($(printf '%s\n' "${missing[@]}" | sort -u))
    echo "== system: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

if ! python3 -c 'import pytest' >/dev/null 2>&1; then
    echo "== system: installing pytest"
    python3 -m pip install -q pytest >/dev/null 2>&1 \
        || python3 -m pip install -q --break-system-packages pytest >/dev/null 2>&1 \
        || apt_install python3-pytest
    python3 -c 'import pytest' || { echo "system: cannot import pytest" >&2; exit 1; }
fi

if [ -z "${FERROFTP_BIN:-}" ]; then
    echo "== system: cargo build -p ferroftp"
    cargo build -p ferroftp
    target_dir="${CARGO_TARGET_DIR:-target}"
    export FERROFTP_BIN="$target_dir/debug/ferroftp"
fi
export FERROFTP_SKIP_BUILD=1

echo "== system: python3 -m pytest tests/system (binary: $FERROFTP_BIN)"
status=0
python3 -m pytest -q -p no:cacheprovider -rfEs tests/system "$@" || status=$?
exit "$status"
