#!/usr/bin/env bash
# What may enter the dependency graph (deny.toml): licences, one version of each crate,
# registries. The advisory database is not reachable from the build machines, so advisories
# are left to `cargo deny check advisories` where it is.
#
# cargo-deny is installed when missing into FERROFTP_TOOLS (default /var/cache/ferroftp-tools),
# outside the checkout, so a machine builds it once.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=${FERROFTP_TOOLS:-/var/cache/ferroftp-tools}
export PATH="$tools/bin:$PATH"
if ! cargo deny --version >/dev/null 2>&1; then
    echo "== deny: installing cargo-deny into $tools"
    cargo install cargo-deny --locked --root "$tools"
fi
# Every crate of every feature (deny.toml: all-features), gcs and azblob included.
cargo fetch --locked
cargo deny --offline check bans licenses sources
