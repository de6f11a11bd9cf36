#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 30), with libFuzzer
# through cargo-fuzz on the nightly toolchain, starting from the seeds in fuzz/seeds and
# keeping what it finds in a corpus outside the checkout.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 600 session
#
# cargo-fuzz is installed when missing, into FERROFTP_TOOLS (default /var/cache/ferroftp-tools),
# which outlives the checkout so CI builds it once per machine. A crash fails the run and
# leaves its input in fuzz/artifacts/TARGET/ (reproduce: cargo +nightly fuzz run TARGET FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
shift || true
tools=${FERROFTP_TOOLS:-/var/cache/ferroftp-tools}
corpora=${FERROFTP_FUZZ_CORPUS:-$tools/fuzz-corpus}
export PATH="$tools/bin:$PATH"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== fuzz: installing cargo-fuzz into $tools"
    cargo install cargo-fuzz --locked --root "$tools"
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
for target in "${targets[@]}"; do
    mkdir -p "$corpora/$target"
    echo "== fuzz: $target for ${seconds}s"
    log=$(mktemp)
    status=0
    (cd fuzz && cargo +nightly fuzz run "$target" "$corpora/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1) \
        >"$log" 2>&1 || status=$?
    # The run's summary: executions, coverage, corpus size.
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss|Done [0-9]+ runs)' "$log" \
        || true
    if [ "$status" != 0 ]; then
        tail -40 "$log" >&2
        rm -f "$log"
        echo "fuzz: $target failed (exit $status); crash inputs in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    rm -f "$log"
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
