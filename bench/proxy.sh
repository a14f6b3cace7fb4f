#!/usr/bin/env bash
# switchyard next to haproxy and nginx in ../shared/bench/proxy-bench.sh: L4 (TCP) and L7
# (HTTP) listeners of one gateway process, one worker like the anchors, the Wasm round-robin
# balancer in the path. Settings pass through (ROUNDS, DURATION, SIZES, TARGETS, ...); SY_L7=0
# leaves the L7 listener out. Results are appended to $1 (default
# bench/results/proxy-<utc>.jsonl) and the table is printed. The harness's raw runs (every
# target, round and size, with the proxy's CPU of that round) are appended to the file beside
# it, $1 with `.runs.jsonl` for `.jsonl`, each tagged with the run's `run_id`, so
# bench/proxy-paired.py can pair req/s per core round by round.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
harness="${PROXY_BENCH:-$root/../shared/bench/proxy-bench.sh}"
mkdir -p "$root/bench/results"
out="${1:-$root/bench/results/proxy-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
. "$root/bench/build-switchyard.sh"
export LOCK_FILE="${LOCK_FILE:-/tmp/cpu.lock}" ROUNDS="${ROUNDS:-5}" KEEP_TMP=1
export CANDIDATE_NAME=switchyard-l4 CANDIDATE_ADDR=127.0.0.1:24190 CANDIDATE_LAYER=l4
export CANDIDATE_CMD="$root/bench/proxy-candidate.sh"
if [ "${SY_L7:-1}" != 0 ]; then
  export BENCH_L7_ADDR=127.0.0.1:24191
  export CANDIDATE2_NAME=switchyard-l7 CANDIDATE2_ADDR=127.0.0.1:24191 CANDIDATE2_LAYER=l7
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The harness names the work dir it kept on stderr; stderr is still shown as it runs.
"$harness" "$out" 2> >(tee "$log" >&2)
sleep 0.2
work=$(sed -n 's/.*work dir kept: //p' "$log" | tail -1)
if [ -n "$work" ] && [ -f "$work/runs.jsonl" ]; then
  run_id=$(tail -1 "$out" | python3 -c 'import json, sys; print(json.load(sys.stdin)["run_id"])')
  python3 -c 'import json, sys
for line in open(sys.argv[1]):
    if line.strip():
        print(json.dumps({"run_id": sys.argv[2], **json.loads(line)}))' \
    "$work/runs.jsonl" "$run_id" >>"${out%.jsonl}.runs.jsonl"
  rm -rf "$work"
else
  echo "proxy.sh: the harness kept no runs.jsonl; per-round CPU not saved" >&2
fi
