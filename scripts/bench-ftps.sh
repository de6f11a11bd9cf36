#!/usr/bin/env bash
# FTPS throughput, ferroftp vs vsftpd with TLS, in one run on loopback: RETR and STOR of one
# large file with curl --ssl-reqd (explicit FTPS, PROT P, EPSV), RUNS times each, one server
# at a time. Prints the median and range per server and test (MB = 10^6 bytes), and writes
# them to $OUT/results.md. The shared harness (../shared/bench) has no TLS mode, hence this.
#
#   scripts/bench-ftps.sh                  # 1 GiB, 5 runs
#   SIZE_MIB=256 RUNS=3 scripts/bench-ftps.sh
#
# Needs root (vsftpd logs in a temporary system user through PAM). Both servers use one
# ECDSA P-256 certificate made here; both negotiate TLS 1.3 with curl (AES-256-GCM).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$repo/target/bench-ftps}
runs=${RUNS:-5}
size_mib=${SIZE_MIB:-1024}
ours_port=${OURS_PORT:-2145}
vsftpd_port=${VSFTPD_PORT:-2146}
user=ftpsbench
password=ftpsbench-$$

command -v vsftpd >/dev/null || { echo "bench-ftps: vsftpd is not installed" >&2; exit 1; }
cargo build --release -p ferroftp --manifest-path "$repo/Cargo.toml"
binary=$repo/target/release/ferroftp

rm -rf "$out"
mkdir -p "$out/ours-root" "$out/vsftpd-root" "$out/vsftpd-empty" "$out/client"
chmod 755 "$out" "$out/vsftpd-empty"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$out/key.pem" -out "$out/cert.pem" -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
head -c $((size_mib * 1048576)) /dev/urandom >"$out/client/payload.bin"
cp "$out/client/payload.bin" "$out/ours-root/payload.bin"
cp "$out/client/payload.bin" "$out/vsftpd-root/payload.bin"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    userdel "$user" 2>/dev/null || true
}
trap cleanup EXIT

# ferroftp: explicit FTPS, TLS required for control and data, session reuse required.
echo "$password" | "$binary" user add "$user" --users "$out/users.toml" >/dev/null
cat >"$out/ferroftp.toml" <<EOF
[server]
max_sessions = 100
[[server.listeners]]
listen = "127.0.0.1:$ours_port"
tls = "explicit"
[passive]
ports = "31000-31099"
[tls]
cert = "$out/cert.pem"
key = "$out/key.pem"
require = "all"
require_data = "all"
[storage]
root = "$out/ours-root"
[auth]
path = "$out/users.toml"
EOF
"$binary" serve --config "$out/ferroftp.toml" >"$out/ferroftp.out" 2>"$out/ferroftp.log" &
pids+=($!)

# vsftpd: the same policy (forced TLS for logins and data, session reuse required).
useradd -M -d "$out/vsftpd-root" -s /bin/sh "$user"
echo "$user:$password" | chpasswd -c SHA512
chown "$user:" "$out/vsftpd-root" "$out/vsftpd-root/payload.bin"
cat >"$out/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$vsftpd_port
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
local_root=$out/vsftpd-root
chroot_local_user=YES
allow_writeable_chroot=YES
pam_service_name=ftpsbench
secure_chroot_dir=$out/vsftpd-empty
pasv_enable=YES
pasv_min_port=31100
pasv_max_port=31199
xferlog_enable=NO
ssl_enable=YES
rsa_cert_file=$out/cert.pem
rsa_private_key_file=$out/key.pem
force_local_logins_ssl=YES
force_local_data_ssl=YES
require_ssl_reuse=YES
ssl_ciphers=HIGH
EOF
( exec setsid vsftpd "$out/vsftpd.conf" ) >"$out/vsftpd.out" 2>&1 0<>"$out/vsftpd.fd0" &
pids+=($!)

for port in "$ours_port" "$vsftpd_port"; do
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
done

# One transfer; prints its wall time in seconds (curl's own measure).
transfer() {  # port retr|stor
    local url="ftp://$user:$password@127.0.0.1:$1"
    case $2 in
    retr) curl -sS --ssl-reqd -k --max-time 600 -o /dev/null -w '%{time_total}\n' "$url/payload.bin" ;;
    stor) curl -sS --ssl-reqd -k --max-time 600 -T "$out/client/payload.bin" \
              -w '%{time_total}\n' "$url/upload.bin" ;;
    esac
}

median_range() {  # seconds... -> "median (min-max)" in MB/s
    python3 - "$size_mib" "$@" <<'PY'
import statistics, sys
size = int(sys.argv[1]) * 1048576 / 1e6
speeds = sorted(size / float(t) for t in sys.argv[2:])
print(f"{statistics.median(speeds):.0f} ({speeds[0]:.0f}-{speeds[-1]:.0f})")
PY
}

declare -A result
for test in retr stor; do
    for server in ferroftp vsftpd; do
        port=$ours_port
        [ "$server" = vsftpd ] && port=$vsftpd_port
        transfer "$port" "$test" >/dev/null   # warm-up (page cache, session caches)
        times=()
        for _ in $(seq "$runs"); do times+=("$(transfer "$port" "$test")"); done
        result[$server-$test]=$(median_range "${times[@]}")
        echo "$server $test: ${times[*]} s -> ${result[$server-$test]} MB/s"
    done
done
cmp "$out/client/payload.bin" "$out/ours-root/upload.bin"
cmp "$out/client/payload.bin" "$out/vsftpd-root/upload.bin"

{
    echo "| FTPS, ${size_mib} MiB, curl --ssl-reqd, MB/s (median, range of $runs) | ferroftp | vsftpd |"
    echo "|---|---|---|"
    echo "| RETR | ${result[ferroftp-retr]} | ${result[vsftpd-retr]} |"
    echo "| STOR | ${result[ferroftp-stor]} | ${result[vsftpd-stor]} |"
} | tee "$out/results.md"
