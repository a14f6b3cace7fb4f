#!/usr/bin/env bash
# API/controller/watcher benchmark: 10,000 Services and 100,000 Pods through the embedded API,
# then readiness -> snapshot latency. Sizes: SERVICES, PODS, PROBES (environment).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/build-switchyard.sh
cargo bench -p switchyard-e2e --bench api
