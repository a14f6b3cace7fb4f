#!/usr/bin/env bash
# The L4 floor on this machine: switchyard's L4 listener next to two bare relays with nothing
# in the path (bench/floor-relay: one on tokio's epoll loop, one on io_uring) and the L4
# anchors (haproxy tcp, nginx stream), in one ../shared/bench/proxy-bench.sh run. It answers
# whether any one-core relay, with or without epoll, clears the anchors at 100-byte bodies.
# Settings pass through (ROUNDS, DURATION, SIZES, ...); results are appended to $1 (default
# bench/results/floor-<utc>.jsonl), the raw rounds beside it (bench/harness.sh), and the table
# is printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/bench/results"
out="${1:-$root/bench/results/floor-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
. "$root/bench/build-switchyard.sh"
cargo build --release --manifest-path "$root/bench/floor-relay/Cargo.toml" \
  --target-dir "$root/target/floor-relay"
relay="$root/target/floor-relay/release"
export LOCK_FILE="${LOCK_FILE:-/tmp/cpu.lock}" ROUNDS="${ROUNDS:-5}" SIZES="${SIZES:-100b}"
export TARGETS="${TARGETS:-haproxy-tcp nginx-stream}"
export CANDIDATE_NAME=switchyard-l4 CANDIDATE_ADDR=127.0.0.1:24190 CANDIDATE_LAYER=l4
export CANDIDATE_CMD="$root/bench/proxy-candidate.sh"
export CANDIDATE2_NAME=tokio-relay CANDIDATE2_ADDR=127.0.0.1:24192 CANDIDATE2_LAYER=l4
export CANDIDATE2_CMD="$relay/tokio-relay \$BENCH_LISTEN_ADDR \$BENCH_BACKEND_ADDR"
export CANDIDATE3_NAME=uring-relay CANDIDATE3_ADDR=127.0.0.1:24193 CANDIDATE3_LAYER=l4
export CANDIDATE3_CMD="$relay/uring-relay \$BENCH_LISTEN_ADDR \$BENCH_BACKEND_ADDR"
. "$root/bench/harness.sh"
run_harness "$out"
