#!/usr/bin/env bash
# The switchyard candidate for ../shared/bench/dns-bench.sh (see bench/dns.sh). The first
# time for a data set, it starts the gateway on a scratch data dir and loads services.json
# through the embedded API (bench/dns-load.py), then stops it; the store is kept under
# $SY_DNS_CACHE keyed by the data set's hash. Every round then runs the gateway on a copy of
# that store, with one data-plane worker and one DNS worker, cluster DNS on DNS_ADDR, no
# forwarding. The gateway answers once its first snapshot holds every Service.
# `--prepare`: only make the cached store (bench/dns.sh does, before the timed rounds).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${SWITCHYARD_BIN:-$root/target/release/switchyard}"
: "${DNS_DATA:?}" "${DNS_ADDR:?}"
api=127.0.0.1:${SY_API_PORT:-24390}
admin=127.0.0.1:${SY_ADMIN_PORT:-24391}
hash=$(sha256sum "$DNS_DATA/services.json" | cut -c1-16)
cache="${SY_DNS_CACHE:-/tmp/switchyard-dns-bench}/$hash"
common=(--api-listen "$api" --admin-listen "$admin" --workers 1 --dns-workers 1
  --dns-upstream none --plugin-cache "${SY_PLUGIN_CACHE:-$root/target/test-plugin-cache}")
if [ ! -f "$cache/store.redb" ]; then
  mkdir -p "$cache.tmp"
  "$bin" serve --data-dir "$cache.tmp" --dns-listen 127.0.0.1:24392 "${common[@]}" \
    >"$cache.tmp/load.log" 2>&1 &
  gw=$!
  for _ in $(seq 200); do
    curl -fs "http://$admin/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  python3 "$root/bench/dns-load.py" "$DNS_DATA/services.json" "$api"
  kill "$gw"; wait "$gw" || true
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
[ "${1:-}" = "--prepare" ] && exit 0
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
cp "$cache/store.redb" "$data/"
"$bin" serve --data-dir "$data" --dns-listen "$DNS_ADDR" "${common[@]}" ${SY_ARGS:-} \
  >"${SY_LOG:-/dev/null}" 2>&1 &
gw=$!
trap 'kill $gw 2>/dev/null; rm -rf "$data"' EXIT
wait "$gw"
