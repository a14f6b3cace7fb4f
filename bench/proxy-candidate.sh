#!/usr/bin/env bash
# The switchyard candidate for ../shared/bench/proxy-bench.sh (see bench/proxy.sh): runs the
# gateway on its embedded API with PROXY_THREADS workers, and creates one Service whose
# externalIP:port is BENCH_LISTEN_ADDR (L4, TCP) and, when BENCH_L7_ADDR is set, a second
# Service there in HTTP mode; both send to BENCH_BACKEND_ADDR and pick through the Wasm
# `round-robin` built-in. Stays in the foreground (the harness measures this process group).
# SY_MODE (tcp, http) sets the mode of the first Service (bench/proxy-ab.sh uses it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${SWITCHYARD_BIN:-$root/target/release/switchyard}"
kubectl="${KUBECTL:-$root/.tools/bin/kubectl}"
: "${BENCH_LISTEN_ADDR:?}" "${BENCH_BACKEND_ADDR:?}"
api=127.0.0.1:${SY_API_PORT:-24290}
admin=127.0.0.1:${SY_ADMIN_PORT:-24291}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

"$bin" serve --data-dir "$data" --api-listen "$api" --admin-listen "$admin" \
  --dns-listen 127.0.0.1:${SY_DNS_PORT:-24292} --workers "${PROXY_THREADS:-1}" \
  --plugin-cache "${SY_PLUGIN_CACHE:-$root/target/test-plugin-cache}" \
  --service-cidr 127.240.0.0/16 --lb-pool 127.241.0.0/24 --node-ip 127.242.0.1 \
  ${SY_ARGS:-} >"${SY_LOG:-/dev/null}" 2>&1 &
gw=$!
for _ in $(seq 100); do
  curl -fs "http://$admin/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

service() { # name listen-addr mode
  local name=$1 ip=${2%:*} port=${2##*:} mode=$3
  local bip=${BENCH_BACKEND_ADDR%:*} bport=${BENCH_BACKEND_ADDR##*:}
  "$kubectl" --server "http://$api" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata:
  name: $name
  annotations: {switchyard.io/balancer: ${SY_BALANCER:-round-robin}, switchyard.io/mode: $mode}
spec:
  externalIPs: [$ip]
  ports: [{port: $port, targetPort: $bport}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: $name}
subsets: [{addresses: [{ip: $bip}], ports: [{port: $bport}]}]
YAML
}
service bench-l4 "$BENCH_LISTEN_ADDR" ${SY_MODE:-tcp}
if [ -n "${BENCH_L7_ADDR:-}" ]; then
  service bench-l7 "$BENCH_L7_ADDR" http
fi
wait "$gw"
