#!/usr/bin/env bash
# Interop suite: real clients (curl, lftp, rclone, Python ftplib) against the real ferroftp binary.
#
#   scripts/interop.sh [extra pytest args...]     e.g. scripts/interop.sh -k curl -x
#
# Installs what it needs when missing (curl, lftp, rclone, iproute2 for `ss -K`, fail2ban for
# `fail2ban-regex`, chromium for the admin status page, pytest, prometheus-client), builds the
# binary with `cargo build -p ferroftp` (unless FERROFTP_BIN points at one), runs the suite
# sequentially and exits with pytest's status. Without arguments it then runs the transfer
# suites (curl, lftp, FTPS, ftplib) again with every root on a tmpfs. Network: loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=interop
# shellcheck source=scripts/lib/pytest-suite.sh
. scripts/lib/pytest-suite.sh

require curl curl lftp lftp ss iproute2 python3 python3 fail2ban-regex fail2ban rclone rclone \
    chromium chromium
run_suite tests/interop "$@"
if [ $# -eq 0 ]; then
    # The transfer suites again with every root on a tmpfs (/dev/shm), where the server creates
    # and publishes uploads in place instead of on its blocking pool: the same promises.
    echo "== $SUITE: the transfer suites again, roots in memory (FERROFTP_INTEROP_MEMORY_ROOTS=1)"
    export FERROFTP_INTEROP_MEMORY_ROOTS=1
    run_suite tests/interop/test_curl.py tests/interop/test_lftp.py tests/interop/test_ftps.py \
        tests/interop/test_ftplib.py
fi
