#!/usr/bin/env bash
# Resident memory of the gateway at rest (VmRSS once its open sockets stop changing): empty,
# then restarted on SERVICES Services (default 10,000, the DNS bench data set: about 18,600
# listeners) with 1 and 2 data-plane workers. The store is the one bench/dns.sh loads through
# the embedded API (bench/dns-candidate.sh --prepare, run here if missing); another SERVICES
# gets its own data set from the same generator. Every wait is bounded; each gateway is
# stopped (and waited for) before the next one starts.
#
# Every listener takes one socket per worker. Where the hard open-file limit cannot hold two
# workers' worth (on a 20,000 limit: 10,000 Services need ~37,000), SERVICES=4000 still
# fits and shows what a second worker costs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/build-switchyard.sh"
bin=$SWITCHYARD_BIN
services=${SERVICES:-10000}
data="${DATA:-/tmp/dns-bench-data$([ "$services" = 10000 ] || echo "-$services")}"
cache="${SY_DNS_CACHE:-/tmp/switchyard-dns-bench}"
plugins="${SY_PLUGIN_CACHE:-$root/target/test-plugin-cache}"
[ -f "$data/services.json" ] || python3 "$root/../shared/bench/dns-gen.py" --services "$services" --out "$data" >/dev/null
DNS_DATA="$data" DNS_ADDR=127.0.0.1:15399 "$root/bench/dns-candidate.sh" --prepare
store="$cache/$(sha256sum "$data/services.json" | cut -c1-16)/store.redb"

# Raised when allowed; the bind-error count below shows when it was not enough.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

pid=""
dir=""
stop() {
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
  rm -rf "$dir"
}
trap stop EXIT

# measure LABEL WORKERS STORE|"" PORT: one gateway, one line of figures.
measure() {
  local label=$1 workers=$2 from=$3 port=$4
  dir=$(mktemp -d)
  [ -z "$from" ] || cp "$from" "$dir/"
  "$bin" serve --data-dir "$dir" --api-listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$((port + 1))" --dns-listen "127.0.0.1:$((port + 2))" \
    --workers "$workers" --dns-workers 1 --dns-upstream none --plugin-cache "$plugins" \
    >"$dir/log" 2>&1 &
  pid=$!
  local ready=0
  for _ in $(seq 600); do
    if curl -fs -m 1 "http://127.0.0.1:$((port + 1))/readyz" >/dev/null 2>&1; then
      ready=1
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$ready" != 1 ]; then
    echo "$label: the gateway did not become ready; its log:" >&2
    tail -20 "$dir/log" >&2
    exit 1
  fi
  # Settled: the count of open descriptors unchanged over three samples 0.5 s apart.
  local fds=0 last=-1 same=0
  for _ in $(seq 120); do
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
    if [ "$fds" = "$last" ]; then same=$((same + 1)); else same=0; fi
    [ "$same" -ge 3 ] && break
    last=$fds
    sleep 0.5
  done
  local rss errors
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  errors=$(curl -fs -m 5 "http://127.0.0.1:$((port + 1))/metrics" |
    awk '/^switchyard_proxy_listener_bind_errors_total/ {print $2}' || true)
  printf '%-16s workers=%s open_fds=%-6s bind_errors=%-4s rss=%s MiB\n' "$label" "$workers" \
    "$fds" "${errors:-?}" "$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')"
  stop
}

measure "empty" 1 "" 24590
label="$(sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$services") Services"
measure "$label" 1 "$store" 24594
measure "$label" 2 "$store" 24598
