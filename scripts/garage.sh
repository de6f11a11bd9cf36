#!/usr/bin/env bash
# A throwaway single-node Garage (S3-compatible object storage) on loopback, for the object
# storage tests.
#
#   scripts/garage.sh start DIR    fresh data in DIR, free loopback ports, a key and the bucket
#                                  ftp-test; writes DIR/env (sourceable, the FERROFTP_S3_*
#                                  variables) and DIR/garage.pid; prints the env file's path
#   scripts/garage.sh stop DIR     stops that Garage by its PID and removes what start made
#   scripts/garage.sh install      only makes sure the binary is there
#
# The binary (Garage 2.5.0, AGPL-3.0, run as a separate process only, never linked) is built
# from crates.io into FERROFTP_TOOLS (default /var/cache/ferroftp-tools), outside the checkout,
# when missing or of another version: ~11-20 min on 2 cores, once per machine. GARAGE_BIN
# points at another binary of the same version instead.
set -euo pipefail

GARAGE_VERSION=2.5.0
tools=${FERROFTP_TOOLS:-/var/cache/ferroftp-tools}
garage_root="$tools/garage-$GARAGE_VERSION"
garage_bin=${GARAGE_BIN:-$garage_root/bin/garage}
bucket=ftp-test
region=garage

usage() {
    echo "usage: $0 start DIR | stop DIR | install" >&2
    exit 2
}

right_version() {
    "$garage_bin" --version 2>/dev/null | grep -q "$GARAGE_VERSION"
}

install() {
    if right_version; then
        return
    fi
    if [ -n "${GARAGE_BIN:-}" ]; then
        echo "garage: GARAGE_BIN=$GARAGE_BIN is not Garage $GARAGE_VERSION" >&2
        exit 1
    fi
    mkdir -p "$tools"
    # One build at a time on this machine: a second caller waits for the first one's.
    exec 9>"$tools/garage-$GARAGE_VERSION.lock"
    flock 9
    if ! right_version; then
        echo "== garage: building Garage $GARAGE_VERSION into $garage_root (once per machine)" >&2
        env -u CARGO_TARGET_DIR cargo install garage --version "$GARAGE_VERSION" --locked \
            --root "$garage_root" >&2
    fi
    flock -u 9
    exec 9>&-
    right_version || { echo "garage: $garage_bin is not Garage $GARAGE_VERSION" >&2; exit 1; }
}

# Three free loopback TCP ports (bound to port 0 together, then released).
free_ports() {
    python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

random_hex() {
    python3 -c "import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))" "$1"
}

stop() {
    local dir=$1 pid
    if [ -f "$dir/garage.pid" ]; then
        pid=$(cat "$dir/garage.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            # Bounded: 10 s for a clean stop, then SIGKILL.
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null || true
                for _ in $(seq 1 50); do
                    kill -0 "$pid" 2>/dev/null || break
                    sleep 0.1
                done
            fi
        fi
    fi
    rm -rf "$dir/meta" "$dir/data"
    rm -f "$dir/garage.toml" "$dir/garage.pid" "$dir/env" "$dir/garage.log"
    rmdir "$dir" 2>/dev/null || true
}

# One attempt on fresh ports: 0 when Garage answers /health, 1 when it exited or did not.
try_start() {
    local dir=$1 rpc s3 admin pid
    read -r rpc s3 admin < <(free_ports)
    rm -rf "$dir/meta" "$dir/data"
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "$region"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
    # The key ID: "GK" and 12 bytes in hex, as Garage makes them; the secret: 32 bytes in hex.
    local key_id secret
    key_id="GK$(random_hex 12)"
    secret=$(random_hex 32)
    # --single-node makes the layout, --default-bucket the key (from the environment) and the
    # bucket, all before the S3 API opens.
    GARAGE_DEFAULT_ACCESS_KEY=$key_id GARAGE_DEFAULT_SECRET_KEY=$secret \
        GARAGE_DEFAULT_BUCKET=$bucket \
        "$garage_bin" -c "$dir/garage.toml" server --single-node --default-bucket \
        >"$dir/garage.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/garage.pid"
    # Bounded: 30 s for /health (0.2 s is usual).
    for _ in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if curl -fs --noproxy '*' -o /dev/null "http://127.0.0.1:$admin/health"; then
            umask 077
            cat >"$dir/env" <<EOF
export FERROFTP_S3_ENDPOINT=http://127.0.0.1:$s3
export FERROFTP_S3_REGION=$region
export FERROFTP_S3_BUCKET=$bucket
export FERROFTP_S3_ACCESS_KEY_ID=$key_id
export FERROFTP_S3_SECRET_ACCESS_KEY=$secret
EOF
            return 0
        fi
        sleep 0.1
    done
    return 1
}

start() {
    local dir=$1 attempt
    install
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # A port taken between free_ports and Garage's bind makes it exit: try again, 3 times.
    for attempt in 1 2 3; do
        if try_start "$dir"; then
            echo "$dir/env"
            return 0
        fi
        echo "garage: start attempt $attempt failed; its log:" >&2
        tail -20 "$dir/garage.log" >&2 || true
        local pid
        pid=$(cat "$dir/garage.pid")
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    stop "$dir"
    echo "garage: could not start" >&2
    return 1
}

[ $# -ge 1 ] || usage
case "$1" in
    start) [ $# -eq 2 ] || usage; start "$2" ;;
    stop) [ $# -eq 2 ] || usage; stop "$2" ;;
    install) [ $# -eq 1 ] || usage; install ;;
    *) usage ;;
esac
