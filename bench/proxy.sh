#!/usr/bin/env bash
# switchyard next to haproxy and nginx in ../shared/bench/proxy-bench.sh: L4 (TCP) and L7
# (HTTP) listeners of one gateway process, one worker like the anchors, the Wasm round-robin
# balancer in the path. Settings pass through (ROUNDS, DURATION, SIZES, TARGETS, ...); SY_L7=0
# leaves the L7 listener out. Results are appended to $1 (default
# bench/results/proxy-<utc>.jsonl), the raw rounds beside it (bench/harness.sh), and the table
# is printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/bench/results"
out="${1:-$root/bench/results/proxy-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
. "$root/bench/build-switchyard.sh"
export LOCK_FILE="${LOCK_FILE:-/tmp/cpu.lock}" ROUNDS="${ROUNDS:-5}"
export CANDIDATE_NAME=switchyard-l4 CANDIDATE_ADDR=127.0.0.1:24190 CANDIDATE_LAYER=l4
export CANDIDATE_CMD="$root/bench/proxy-candidate.sh"
if [ "${SY_L7:-1}" != 0 ]; then
  export BENCH_L7_ADDR=127.0.0.1:24191
  export CANDIDATE2_NAME=switchyard-l7 CANDIDATE2_ADDR=127.0.0.1:24191 CANDIDATE2_LAYER=l7
fi
. "$root/bench/harness.sh"
run_harness "$out"
