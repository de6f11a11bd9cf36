#!/usr/bin/env bash
# Object storage: ferroftp with its root in an S3 bucket, against a real S3 server (Garage
# 2.5.0, single node on loopback, started and stopped here; scripts/garage.sh).
#
#   scripts/object-storage.sh [extra pytest args...]     e.g. scripts/object-storage.sh -k lftp -x
#
# 1. Garage: built into FERROFTP_TOOLS when missing (once per machine, ~11-20 min), started
#    with a fresh data directory, a key and the bucket; stopped and removed on exit.
# 2. cargo test -p ferroftp-storage-object: the backend's own tests and the storage battery
#    against the bucket (FERROFTP_REQUIRE_S3=1: they fail rather than skip without it).
# 3. The Python tests with the real clients (curl, lftp, ftplib) through the binary:
#    tests/interop/test_object_storage*.py, which also fail rather than skip.
# Network: loopback only. Exits with the first failing step's status.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=object-storage
# shellcheck source=scripts/lib/pytest-suite.sh
. scripts/lib/pytest-suite.sh

require curl curl lftp lftp ss iproute2 python3 python3 openssl openssl flock util-linux
require_python boto3 boto3 python3-boto3

garage_dir=$(mktemp -d "${TMPDIR:-/tmp}/ferroftp-garage.XXXXXX")
trap 'scripts/garage.sh stop "$garage_dir"' EXIT
echo "== $SUITE: starting Garage"
env_file=$(scripts/garage.sh start "$garage_dir")
# shellcheck disable=SC1090
. "$env_file"
export FERROFTP_REQUIRE_S3=1
echo "== $SUITE: Garage S3 API at $FERROFTP_S3_ENDPOINT, bucket $FERROFTP_S3_BUCKET"

if [ -d crates/storage-object ]; then
    echo "== $SUITE: cargo test -p ferroftp-storage-object"
    cargo test -p ferroftp-storage-object --locked
else
    echo "== $SUITE: crates/storage-object is not there yet: no cargo step"
fi

# run_suite passes its first argument, then the rest, to pytest.
run_suite tests/interop/test_object_storage.py tests/interop/test_object_storage_faults.py "$@"
