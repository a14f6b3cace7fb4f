#!/usr/bin/env bash
# Userland instructions per proxied request, L4 and L7, counted by callgrind. Unlike req/s on
# this noisy VM (20-30% round-to-round spread), the count is nearly exact, so a change to the
# per-request path can be judged in one run: compare two builds with SWITCHYARD_BIN.
#
# The gateway (bench/proxy-candidate.sh: one worker, Wasm round-robin) runs under valgrind
# with instrumentation off; it is switched on only while wrk (-c16) sends GETs of a 100-byte
# body, then Ir / requests is printed per layer. Kernel work is not counted (see
# bench/proxy.sh for the whole cost). Loopback only: backend nginx 127.0.0.1:24480, L4
# 127.0.0.1:24490, L7 127.0.0.1:24491. Needs valgrind, nginx, wrk.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${SWITCHYARD_BIN:-$root/target/release/switchyard}"
secs="${DURATION:-8}"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  sleep 1
  rm -rf "$work"
}
trap cleanup EXIT

printf '%0100d' 0 >"$work/body"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:24480;
    location / { root $work; try_files /body =404; }
  }
}
EOF
setsid nginx -c "$work/nginx.conf" >/dev/null 2>&1 &
pids+=($!)

cat >"$work/gateway" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$work/cg.%p "$bin" "\$@"
EOF
chmod +x "$work/gateway"
SWITCHYARD_BIN="$work/gateway" SY_API_PORT=24590 SY_ADMIN_PORT=24591 SY_DNS_PORT=24592 \
  PROXY_THREADS=1 BENCH_LISTEN_ADDR=127.0.0.1:24490 BENCH_L7_ADDR=127.0.0.1:24491 \
  BENCH_BACKEND_ADDR=127.0.0.1:24480 setsid "$root/bench/proxy-candidate.sh" >/dev/null 2>&1 &
pids+=($!)

ready() { curl -fs -m 5 -o /dev/null "http://$1/x"; }
for _ in $(seq 120); do
  ready 127.0.0.1:24490 && ready 127.0.0.1:24491 && break
  sleep 1
done
ready 127.0.0.1:24490 && ready 127.0.0.1:24491 || { echo "gateway did not come up" >&2; exit 1; }
vg=$(pgrep -f "callgrind-out-file=$work/cg" | head -1)

printf '%-6s %10s %14s %10s\n' layer requests Ir Ir/request
for layer in l4:24490 l7:24491; do
  callgrind_control -z "$vg" >/dev/null
  callgrind_control -i on "$vg" >/dev/null
  n=$(wrk -t1 -c16 -d"${secs}s" "http://127.0.0.1:${layer#*:}/x" | awk '/requests in/ {print $1}')
  callgrind_control -i off "$vg" >/dev/null
  callgrind_control -d "$vg" >/dev/null
  sleep 1
  out=$(ls -t "$work"/cg."$vg".* | head -1)
  ir=$(awk '/^totals:/ {print $2}' "$out")
  printf '%-6s %10d %14d %10d\n' "${layer%%:*}" "$n" "$ir" $((ir / n))
  [ -n "${KEEP_PROFILE:-}" ] && cp "$out" "${KEEP_PROFILE}.${layer%%:*}"
done
