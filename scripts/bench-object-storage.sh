#!/usr/bin/env bash
# Object storage benchmark: ferroftp (release build) with its root in a bucket of a Garage
# on loopback, measured in the same run, round by round, against Garage's own throughput for
# the same object through plain S3 clients (curl --aws-sigv4: one PUT/GET stream; boto3:
# multipart with the same part size and concurrency as ferroftp).
#
#   scripts/bench-object-storage.sh            SIZE_MIB=1024 ROUNDS=3 LIST_OBJECTS=10000
#
# Lines: 1 GiB STOR and RETR (MB/s), the server's peak RSS during the upload (VmHWM, reset
# before each transfer), LIST of LIST_OBJECTS objects (seconds, and ListObjectsV2 directly).
# Garage's data and the test file live in OUT (default: a fresh tmpfs mounted here and
# removed at the end), so the disk's state is not measured. Network: loopback only.
# Prints a Markdown table (docs/BENCHMARKS.md, "P9") and writes OUT/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bench-object-storage
# shellcheck source=scripts/lib/pytest-suite.sh
. scripts/lib/pytest-suite.sh
require curl curl python3 python3
require_python boto3 boto3 python3-boto3

if [ -z "${FERROFTP_BIN:-}" ]; then
    cargo build --release -p ferroftp
    FERROFTP_BIN="${CARGO_TARGET_DIR:-target}/release/ferroftp"
fi
export FERROFTP_BIN

mounted=""
if [ -z "${OUT:-}" ]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/ferroftp-bench-s3.XXXXXX")
    # 2 × the object (Garage's copy, the source file) and some room.
    mount -t tmpfs -o size=$(( ${SIZE_MIB:-1024} * 4 + 1024 ))M tmpfs "$OUT"
    mounted=$OUT
fi
garage_dir="$OUT/garage"
mkdir -p "$garage_dir"
cleanup() {
    scripts/garage.sh stop "$garage_dir" || true
    if [ -n "$mounted" ]; then
        umount "$mounted" && rmdir "$mounted"
    fi
}
trap cleanup EXIT
env_file=$(scripts/garage.sh start "$garage_dir")
# shellcheck disable=SC1090
. "$env_file"
OUT=$OUT python3 scripts/bench_object_storage.py
