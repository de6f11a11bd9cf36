#!/usr/bin/env bash
# Measures ferroftp and the peer servers with the shared harness (../shared/bench) in one run,
# on loopback, one target at a time. Results: $OUT/results.jsonl and $OUT/results.md.
#
#   scripts/bench.sh                      # ferroftp + vsftpd, 3 runs per test
#   PEERS="vsftpd pure-ftpd proftpd" RUNS=5 ONLY=retr_pasv,stor_pasv scripts/bench.sh
#   NAME=ferroftp-nofsync SERVE_FLAGS=--no-fsync-uploads ONLY=stor_pasv scripts/bench.sh
#   NAME=before VERSION=c48735b FERROFTP_BINARY=/path/to/old/ferroftp PEERS=" " scripts/bench.sh
#     (the ferroftp bench lines still use this checkout's release build as their client, or BENCH_CLIENT)
#   PROFILE=profiling PEERS=" " scripts/bench.sh    # symbols and line tables, for perf
#   ROOTS=tmpfs ROUNDS=2 PEERS="vsftpd pure-ftpd" scripts/bench.sh   # server cost, like for like
#   ROOTS=tmpfs PEERS="vsftpd pure-ftpd" ONLY=small_put,small_put_8 scripts/bench.sh
#
# Lines the shared harness does not have (small_put_8: 8 sessions each storing 500 × 4 KiB
# at once) are measured by `ferroftp bench` against the same target right after bench.py,
# and written into the same results.jsonl as bench.py's runs, so they appear in the same
# tables. ONLY selects among both kinds of lines; without ONLY every line runs.
#
# ROOTS=tmpfs gives every target (ferroftp and each peer) a fresh tmpfs as its root, mounted
# before it runs and removed after, so the figures measure the servers and not the state of a
# shared disk (which swings the small-file lines 20-40 % from run to run: docs/BENCHMARKS.md).
# ROUNDS=N runs the whole sequence (ferroftp, then each peer) N times, interleaved, so a drift
# of the machine touches every target alike; the report keeps every run. TMPFS_SIZE (6G) is
# each tmpfs's size.
#
# Needs root (peers.sh creates a system user for the peers). Ends with the machine's own
# bounds in $OUT/reference.txt: iperf3 -Z on loopback and a 1 GiB write+fsync (REFERENCE=0 skips).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_DIR:-$repo/../shared/bench}
out=${OUT:-$repo/target/bench}
peers=${PEERS:-vsftpd}
runs=${RUNS:-3}
heavy=${RUNS_HEAVY:-1}
port=${PORT:-2135}
name=${NAME:-ferroftp}
read -r -a serve_flags <<<"${SERVE_FLAGS:-}"

# The lines `ferroftp bench` measures because bench.py has none, as NAME=UNIT (the unit is
# for the report). ONLY's names are split between the two: run_harness (0 when ONLY names
# none of bench.py's lines), harness_only (bench.py's --only, empty for all of them) and
# bench_tests (ferroftp bench's --only, empty for none).
bench_only_lines="small_put_8=files/s"
bench_only_names=$(for line in $bench_only_lines; do printf ' %s' "${line%%=*}"; done)
run_harness=1
harness_only=""
bench_tests=""
if [ -n "${ONLY:-}" ]; then
    run_harness=0
    IFS=, read -r -a wanted <<<"$ONLY"
    for test in "${wanted[@]}"; do
        [ -n "$test" ] || continue
        case "$bench_only_names " in
        *" $test "*) bench_tests=${bench_tests:+$bench_tests,}$test ;;
        *) run_harness=1 harness_only=${harness_only:+$harness_only,}$test ;;
        esac
    done
else
    bench_tests=$(echo $bench_only_names | tr ' ' ,)
fi

# peers.sh unpacks the peers' packages without installing them, so their shared libraries
# must already be here.
peer_libraries="libwrap0 libhiredis0.14 libmemcached11 libmemcachedutil2 libpcre2-posix3 libsodium23"
if ! dpkg-query -W $peer_libraries >/dev/null 2>&1; then
    apt-get install -y --no-install-recommends $peer_libraries >/dev/null
fi

# FERROFTP_BINARY measures another build (say, an older commit's) under the same harness.
# PROFILE=profiling builds the release code with line tables and symbols (the release profile
# strips them), for `perf record` on the server during the runs.
profile=${PROFILE:-release}
binary=${FERROFTP_BINARY:-$repo/target/$profile/ferroftp}
# The client of the lines ferroftp bench measures: this checkout's build, also when
# FERROFTP_BINARY serves an older one (which may not know every line).
client=${BENCH_CLIENT:-$repo/target/$profile/ferroftp}
[ -n "${FERROFTP_BINARY:-}" ] || cargo build --profile "$profile" -p ferroftp --manifest-path "$repo/Cargo.toml"
mkdir -p "$out"
users=$out/users.toml
rm -f "$users"
echo bench | "$binary" user add bench --users "$users"
rounds=${ROUNDS:-1}
roots=${ROOTS:-disk}

# Every target starts from the same memory state. On this VM a page the guest has never
# touched costs a host page fault the first time: a 1 GiB upload into such pages ran at
# 350-415 MB/s with 2.5-3 s of server CPU in the page-cache copy, into pages a deleted file
# had just freed at 1500-2500 MB/s with 0.4 s (docs/BENCHMARKS.md). So before each target
# nothing is left dirty and 3 GiB of page cache are written and freed. WARM=0 skips it.
settle_memory() {
    sync
    if [ "${WARM:-1}" = 1 ]; then
        dd if=/dev/zero of="$out/warm.tmp" bs=1M count=3072 status=none
        rm -f "$out/warm.tmp"
        sync
    fi
}

# A fresh root for one target: a new directory, on a new tmpfs with ROOTS=tmpfs. Printed.
fresh_root() {
    local dir
    dir=$(mktemp -d "$out/root.XXXXXX")
    if [ "$roots" = tmpfs ]; then
        mount -t tmpfs -o "size=${TMPFS_SIZE:-6G},mode=755" tmpfs "$dir"
    fi
    chmod 755 "$dir"
    echo "$dir"
}

drop_root() {
    local dir=$1
    [ -n "$dir" ] || return 0
    if mountpoint -q "$dir"; then
        umount "$dir"
    else
        rm -rf "$dir"
    fi
    rmdir "$dir" 2>/dev/null || true
}

server=""
root=""
trap '[ -z "$server" ] || kill "$server" 2>/dev/null; drop_root "$root"' EXIT

# Measures one running target: bench.py's selected lines, then ferroftp bench's, both
# appending their runs to results.jsonl under the target's name. Also run inside peers.sh
# (run_peer), so it reads only exported variables.
measure_target() {
    local name=$1 host=$2 port=$3 user=$4 password=$5 root=$6 pid=$7 version=$8
    if [ "$run_harness" = 1 ]; then
        "$bench/bench.py" run --host "$host" --port "$port" --user "$user" --password "$password" \
            --root "$root" --name "$name" --version "$version" --server-pid "$pid" \
            --runs "$runs" --runs-heavy "$heavy" ${harness_only:+--only "$harness_only"} \
            --out "$out/results.jsonl"
    fi
    if [ -n "$bench_tests" ]; then
        # PASV like the harness's ftpload client. Exit status 1 means a run had errors: they
        # are in the report, and the next line or target still runs.
        "$client" bench "ftp://$host:$port/" --user "$user" --password "$password" \
            --only "$bench_tests" --runs "$runs" --heavy-runs "$heavy" --pasv \
            --server-pid "$pid" --harness-jsonl "$out/results.jsonl" --harness-name "$name" ||
            echo "ferroftp bench against $name failed or had errors (see above)" >&2
    fi
}

# Measures the peer named $PEER, inside peers.sh: the targets file it hands over in
# $PEERS_TARGETS gives the peer's host, port, user, password, root, PID and version.
measure_peer() {
    local target host port user password root pid version
    target=$(python3 -c '
import json, sys
peer = next(t for t in json.load(open(sys.argv[1])) if t["name"] == sys.argv[2])
keys = ("host", "port", "user", "password", "root", "pid", "version")
print(*(peer[key] for key in keys))' "$PEERS_TARGETS" "$PEER")
    read -r host port user password root pid version <<<"$target"
    measure_target "$PEER" "$host" "$port" "$user" "$password" "$root" "$pid" "$version"
}

# A fresh root for every run, as peers.sh gives each peer: ext4 without a journal passes over
# every inode freed in the last minutes when it allocates one, so a root whose earlier runs
# created and deleted thousands of files makes each new file slower (docs/BENCHMARKS.md).
run_ferroftp() {
    settle_memory
    root=$(fresh_root)
    # Passive ports stay below 30900: the harness's active-mode client uses 30900-30999.
    "$binary" serve --listen "127.0.0.1:$port" --root "$root" --passive-ports 30000-30899 \
        --users "$users" --max-sessions 5000 --max-sessions-per-ip 5000 "${serve_flags[@]}" \
        >"$out/ferroftp.out" 2>"$out/ferroftp.log" &
    server=$!
    for _ in $(seq 100); do
        grep -q "^listening on" "$out/ferroftp.out" 2>/dev/null && break
        kill -0 "$server" 2>/dev/null || { cat "$out/ferroftp.log"; exit 1; }
        sleep 0.1
    done
    version=${VERSION:-$(git -C "$repo" rev-parse --short HEAD)}
    measure_target "$name" 127.0.0.1 "$port" bench bench "$root" "$server" "$version"
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
    drop_root "$root"
    root=""
}

run_peer() {
    local peer=$1 peer_root=""
    settle_memory
    # A fresh root for the peer too, beside ferroftp's (under $OUT, on a tmpfs with ROOTS=tmpfs)
    # rather than the one peers.sh would make: every target on the same filesystem.
    peer_root=$(fresh_root)
    root=$peer_root
    # peers.sh runs its command with the peer up; the functions go with it as text.
    PEER=$peer BENCH_ROOT=$peer_root "$bench/peers.sh" --only "$peer" -- \
        bash -c "$(declare -f measure_target measure_peer); set -eu; measure_peer" ||
        echo "peer $peer failed" >&2
    drop_root "$peer_root"
    root=""
}

export bench out runs heavy binary client run_harness harness_only bench_tests
for round in $(seq "$rounds"); do
    [ "$rounds" = 1 ] || echo "== round $round of $rounds"
    run_ferroftp
    for peer in $peers; do
        run_peer "$peer"
    done
done
# bench.py's report, told about the lines only ferroftp bench measures: its tables are built
# from its own list of tests and units, which bench.py takes no option for.
python3 - "$bench/bench.py" "$bench_only_lines" "$out/results.jsonl" --md "$out/results.md" <<'EOF'
import importlib.util
import sys

spec = importlib.util.spec_from_file_location("bench", sys.argv[1])
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
for line in sys.argv[2].split():
    test, unit = line.split("=")
    bench.ALL_TESTS.append(test)
    bench.UNITS[test] = unit
sys.argv = ["bench.py", "report"] + sys.argv[3:]
bench.main()
EOF

# What the machine itself allows, measured right after the servers (REFERENCE=0 skips it):
# loopback TCP with zero-copy sends (iperf3 -Z, the bound for RETR) and the disk's durable
# write speed (1 GiB written and fsynced, the bound for an fsynced STOR).
if [ "${REFERENCE:-1}" = 1 ]; then
    command -v iperf3 >/dev/null || apt-get install -y --no-install-recommends iperf3 >/dev/null
    reference=$out/reference.txt
    : >"$reference"
    for run in 1 2 3; do
        iperf3 -s -1 -p 2199 >/dev/null 2>&1 &
        iperf=$!
        sleep 0.5
        iperf3 -c 127.0.0.1 -p 2199 -Z -n 1G -J |
            python3 -c 'import json,sys; print("iperf3 -Z MB/s %.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e6))' \
            >>"$reference"
        wait "$iperf" 2>/dev/null || true
        dd if=/dev/zero of="$out/reference.tmp" bs=1M count=1024 conv=fsync 2>&1 |
            awk '/copied/ { printf "disk write+fsync MB/s %.0f\n", $1 / $(NF-3) / 1e6 }' >>"$reference"
        rm -f "$out/reference.tmp"
    done
    cat "$reference"
fi
