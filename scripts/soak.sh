#!/usr/bin/env bash
# Soak: SESSIONS sessions (default 10000) held for DURATION seconds (default 600) against one
# ferroftp server on loopback, doing a bounded mix of listings, small and large transfers,
# aborts and, from three other loopback addresses, wrong passwords that get banned; the
# server's RSS, open descriptors and passive ports are sampled every 10 s (scripts/soak.py).
#
#   scripts/soak.sh [SESSIONS] [DURATION]          e.g. scripts/soak.sh 1000 120
#
# ROUNDS (default 2) repeats ramp-up, hold, quit and settle: memory that grows round after
# round is a leak; the same plateau each round is the allocator keeping freed memory.
#
# Output in ${OUT:-target/soak}: samples.csv, summary.json, soak.png (gnuplot). Exits non-zero
# when a transfer failed or descriptors / passive ports did not return to the baseline.
# Builds the release binary unless FERROFTP_BIN points at one. Needs root only to raise the
# open-files limit for 10000 sessions (each holds a descriptor on both sides).
set -euo pipefail
cd "$(dirname "$0")/.."

sessions=${1:-10000}
duration=${2:-600}
out=${OUT:-target/soak}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if ! command -v gnuplot >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
fi
if [ -z "${FERROFTP_BIN:-}" ]; then
    cargo build --release -p ferroftp
    FERROFTP_BIN=${CARGO_TARGET_DIR:-target}/release/ferroftp
fi
bin=$(cd "$(dirname "$FERROFTP_BIN")" && pwd)/$(basename "$FERROFTP_BIN")

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The server keeps 6 descriptors per session in reserve (control, data, file, and for an
# upload the file's directory, the control probe, the grace timer) plus 32 and answers 421
# past that (DESCRIPTORS_PER_SESSION, crates/server/src/descriptors.rs): ask for no more
# sessions than the limit holds, rather than measure the refusals. Raising the hard limit
# needs CAP_SYS_RESOURCE, which a container may not have.
fits=$(( ($(ulimit -n) - 64) / 6 ))
if [ "$sessions" -gt "$fits" ]; then
    echo "soak: the open-files limit ($(ulimit -n)) holds $fits sessions, not $sessions; running $fits" >&2
    sessions=$fits
fi

work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/files"
head -c 4096 /dev/urandom >"$work/files/small.bin"
head -c 1048576 /dev/urandom >"$work/files/large.bin"
password=soak-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$password" | "$bin" user add soak --users "$work/users.toml" >/dev/null
cat >"$work/ferroftp.toml" <<EOF
[server]
max_sessions = $((sessions + 2000))
max_sessions_per_ip = $((sessions + 2000))
idle_timeout = "10m"
[[server.listeners]]
listen = "127.0.0.1:0"
[passive]
ports = "30000-30999"
[storage]
root = "files"
fsync_uploads = false
[auth]
path = "users.toml"
[defender]
allow = ["127.0.0.1/32"]
ban_time = "60s"
[admin]
listen = "127.0.0.1:0"
EOF

FERROFTP_LOG=warn "$bin" serve --config "$work/ferroftp.toml" >"$work/stdout" 2>"$out/server.log" &
server_pid=$!
for _ in $(seq 100); do
    grep -q '^firewall:' "$work/stdout" 2>/dev/null && break
    sleep 0.1
done
port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/stdout" | head -1)
admin=$(sed -n 's/^admin: listening on \([^ ]*\).*/\1/p' "$work/stdout" | head -1)
[ -n "$port" ] && [ -n "$admin" ] || { cat "$work/stdout" "$out/server.log" >&2; exit 1; }
echo "soak: server pid $server_pid on port $port, admin $admin; $sessions sessions for ${duration}s"

status=0
python3 scripts/soak.py --port "$port" --admin "$admin" --pid "$server_pid" \
    --user soak --password "$password" --sessions "$sessions" --duration "$duration" --rounds "${ROUNDS:-2}" \
    --small-sha "$(sha256sum "$work/files/small.bin" | cut -d' ' -f1)" \
    --large-sha "$(sha256sum "$work/files/large.bin" | cut -d' ' -f1)" \
    --csv "$out/samples.csv" --summary "$out/summary.json" || status=$?
kill -0 "$server_pid" 2>/dev/null || { echo "soak: the server died" >&2; status=1; }

gnuplot <<EOF
set datafile separator ","
set terminal pngcairo size 1000,600 noenhanced
set output "$out/soak.png"
set title "ferroftp soak: $sessions sessions, ${duration}s hold (loopback)"
set xlabel "seconds"
set ylabel "RSS (MiB)"
set y2label "open descriptors / passive ports"
set ytics nomirror
set y2tics
set key top left
plot "$out/samples.csv" using 1:4 skip 1 with lines lw 2 title "RSS (MiB)", \
     "" using 1:5 skip 1 axes x1y2 with lines lw 2 title "open descriptors", \
     "" using 1:6 skip 1 axes x1y2 with lines lw 2 title "passive ports in use"
EOF
echo "soak: $out/samples.csv, $out/summary.json, $out/soak.png"
exit "$status"
