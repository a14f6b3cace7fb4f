#!/usr/bin/env bash
# Two builds of switchyard side by side in one ../shared/bench/proxy-bench.sh run, so a change
# is judged against its parent under the same noise: OLD=/path/to/old/switchyard (required),
# the new one as bench/build-switchyard.sh builds it (SY_PROFILE), or SWITCHYARD_BIN as it is.
# LAYER=l4|l7 (default l4); ROUNDS (default 3), SIZES (default 100b), TARGETS pass through.
# Results go to $1, the raw rounds beside it (bench/harness.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
: "${OLD:?set OLD to the switchyard binary to compare with}"
. "$root/bench/build-switchyard.sh"
export LOCK_FILE="${LOCK_FILE:-/tmp/cpu.lock}" ROUNDS="${ROUNDS:-3}" SIZES="${SIZES:-100b}"
layer=${LAYER:-l4}
mode=tcp
[ "$layer" = l7 ] && mode=http
export CANDIDATE_NAME=new-$layer CANDIDATE_ADDR=127.0.0.1:24190 CANDIDATE_LAYER=$layer
export CANDIDATE_CMD="env SY_MODE=$mode $root/bench/proxy-candidate.sh"
export CANDIDATE2_NAME=old-$layer CANDIDATE2_ADDR=127.0.0.1:24195 CANDIDATE2_LAYER=$layer
export CANDIDATE2_CMD="env SY_MODE=$mode SWITCHYARD_BIN=$OLD SY_API_PORT=24390 SY_ADMIN_PORT=24391 SY_DNS_PORT=24392 $root/bench/proxy-candidate.sh"
. "$root/bench/harness.sh"
run_harness "${1:-/tmp/proxy-ab-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
