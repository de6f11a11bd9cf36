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

SUITE=system
# shellcheck source=scripts/lib/pytest-suite.sh
. scripts/lib/pytest-suite.sh

if [ "$(id -u)" != 0 ]; then
    echo "system: needs root (network namespaces, netfilter inside them)" >&2
    exit 1
fi

require ip iproute2 ss iproute2 iptables iptables iptables-restore iptables nft nftables \
    curl curl haproxy haproxy sysctl procps modprobe kmod python3 python3 \
    systemd-socket-activate systemd systemd-analyze systemd
# The doctor's peers (tests/system/doctor_peers.py) are unpacked from their .deb, never
# installed, so the shared libraries they load must be: vsftpd links libwrap.
if ! dpkg-query -W -f '${Status}' libwrap0 2>/dev/null | grep -q "install ok installed"; then
    echo "== $SUITE: installing libwrap0 (for the unpacked vsftpd)"
    apt_install libwrap0
fi
run_suite tests/system "$@"
