#!/usr/bin/env bash
# The soak: `tests/soak.sh [SECONDS] [RSS_GROWTH_LIMIT_MIB]` (default 180 s,
# 32 MiB). Builds a release bauta and runs every kind of traffic at once
# (TCP tunnels on HTTP/1.1, HTTP/2 and HTTP/3, CONNECT-UDP flows, reverse
# requests, http:// forwarding) with faults and policy reloads mixed in, then
# checks: corrupted = 0, leaked = 0, fds back to the start's, RSS growth under
# the limit, no ERROR/WARN log line. tests/run.sh runs a 20-second version
# (tests/tests/soak.rs) on debug builds.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-180}"
limit="${2:-32}"
cargo build --release --locked -p bauta --bin bauta
cargo build --release --locked -p bauta-tests --bin soak
BAUTA_BIN="$PWD/target/release/bauta" exec target/release/soak "$seconds" "$limit"
