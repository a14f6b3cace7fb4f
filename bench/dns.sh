#!/usr/bin/env bash
# switchyard's cluster DNS next to knot, nsd and gdnsd in ../shared/bench/dns-bench.sh, on
# the same generated 10,000 Services (loaded through the embedded API, see
# bench/dns-candidate.sh), one server core and one worker each. Settings pass through
# (ROUNDS, DURATION, LAT_QPS, ...); results are appended to $1 (default
# bench/results/dns-<utc>.jsonl) and the table is printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
harness="${DNS_BENCH:-$root/../shared/bench/dns-bench.sh}"
mkdir -p "$root/bench/results"
export OUT="${1:-$root/bench/results/dns-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
. "$root/bench/build-switchyard.sh"
# WARMUP 6 s (the harness's default is 2): the gateway also starts its data plane for the
# same 10,000 Services (about 18,600 listeners, ~2 s of CPU once, on the server core), and
# the figures are for serving, not for starting. Every server gets the same warmup.
export ROUNDS="${ROUNDS:-5}" DATA="${DATA:-/tmp/dns-bench-data}" WARMUP="${WARMUP:-6}"
[ -f "$DATA/services.json" ] || python3 "$root/../shared/bench/dns-gen.py" --out "$DATA"
DNS_DATA="$DATA" DNS_ADDR=127.0.0.1:15399 "$root/bench/dns-candidate.sh" --prepare
export CANDIDATE_NAME="${CANDIDATE_NAME:-switchyard}" CANDIDATE_ADDR=127.0.0.1:15399
export CANDIDATE_CMD="$root/bench/dns-candidate.sh"
exec "$harness"
