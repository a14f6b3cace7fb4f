#!/usr/bin/env bash
# What a proxy makes the *other* core pay: wrk and an nginx backend on cpu0 (SCHED_BATCH), each
# proxy alone on cpu1 with one worker, as in ../shared/bench/proxy-bench.sh. For every target
# and round it prints wrk's req/s, p50 and p99, wrk's own user and system µs per request and its
# context switches, the TCP segments sent on the machine per request, and for every thread of
# the proxy and of the backend its on-CPU µs per request, its wait on the run queue per time
# slice and its time slices (sleeps and wake-ups) per 1,000 requests, from
# /proc/<pid>/task/<tid>/schedstat and status. A proxy that sleeps after every few events
# makes its writers (the backend, wrk) wake it across cores; on a VM whose idle vCPUs halt,
# each of those costs the writer an interrupt to a halted vCPU (see bench/README.md, "The
# relay thread's pause").
#
# Targets (TARGETS, default "sy sy0 haproxy nginx"): sy = switchyard's L4 listener as built
# (--relay-pause-us PAUSE, default 10), sy0 = the same binary with --relay-pause-us 0,
# haproxy = haproxy mode tcp, nginx = nginx stream. ROUNDS (3), DURATION (6 s), CONNS (64),
# SENDFILE (on: the backend writes a response's head and body apart, as in the harness; off:
# in one piece), BASE_PORT (24580). Loopback only; every process runs in its own process group
# and is killed on exit. Needs wrk, haproxy, nginx and its stream module, python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/build-switchyard.sh"
rounds=${ROUNDS:-3} secs=${DURATION:-6} conns=${CONNS:-64} base=${BASE_PORT:-24580}
work=$(mktemp -d)
groups=()
cleanup() {
  for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  sleep 0.3
  for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
. "$root/bench/anchor-configs.sh"
anchor_configs "$work" "$base"

# start NAME CPU SCHED CMD...: runs CMD in its own process group; sets $group.
start() {
  local name=$1 cpu=$2 sched=$3
  shift 3
  setsid taskset -c "$cpu" chrt "$sched" 0 "$@" >"$work/$name.log" 2>&1 &
  group=$!
  groups+=("$group")
}
# gateway NAME PORT OFFSET PAUSE: switchyard's L4 listener on PORT (bench/proxy-candidate.sh).
gateway() {
  SY_ARGS="--relay-pause-us $4" BENCH_LISTEN_ADDR=127.0.0.1:$2 \
    BENCH_BACKEND_ADDR=127.0.0.1:$base PROXY_THREADS=1 SY_API_PORT=$((base + $3)) \
    SY_ADMIN_PORT=$((base + $3 + 1)) SY_DNS_PORT=$((base + $3 + 2)) \
    start "$1" 1 -o "$root/bench/proxy-candidate.sh"
}
start backend 0 -b nginx -c "$work/backend.conf"
backend=$group
declare -A port=([sy]=$((base + 10)) [sy0]=$((base + 30)) [haproxy]=$((base + 1))
  [nginx]=$((base + 3)))
declare -A grp
read -ra targets <<<"${TARGETS:-sy sy0 haproxy nginx}"
for t in "${targets[@]}"; do
  case $t in
    sy) gateway sy "${port[sy]}" 20 "${PAUSE:-10}" ;;
    sy0) gateway sy0 "${port[sy0]}" 40 0 ;;
    haproxy) start haproxy 1 -o haproxy -f "$work/haproxy.cfg" ;;
    nginx) start nginx 1 -o nginx -c "$work/nginx.conf" ;;
    *) echo "wake-probe: unknown target $t" >&2; exit 1 ;;
  esac
  grp[$t]=$group
done
for t in "${targets[@]}"; do
  ok=0
  for _ in $(seq 150); do
    if curl -fs -m 1 "http://127.0.0.1:${port[$t]}/100b" >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
  done
  [ "$ok" = 1 ] || { echo "wake-probe: $t did not answer on ${port[$t]}" >&2; exit 1; }
done

# threads GROUP: "comm tid run_ns wait_ns slices" of every thread of every process in GROUP.
threads() {
  local p th
  for p in $(pgrep -g "$1"); do
    for th in /proc/"$p"/task/*; do
      echo "$(tr ' ' _ <"$th/comm") ${th##*/} $(cat "$th/schedstat")"
    done
  done 2>/dev/null
}
outsegs() { awk '/^Tcp:/ { n++; if (n == 1) for (i = 1; i <= NF; i++) if ($i == "OutSegs") c = i; if (n == 2) print $c }' /proc/net/snmp; }
for r in $(seq "$rounds"); do
  for t in "${targets[@]}"; do
    url=http://127.0.0.1:${port[$t]}/100b
    timeout 30 taskset -c 0 chrt -b 0 wrk -t1 -c"$conns" -d2s "$url" >/dev/null
    threads "${grp[$t]}" >"$work/proxy.a"
    threads "$backend" >"$work/backend.a"
    s0=$(outsegs)
    timeout $((secs + 30)) taskset -c 0 chrt -b 0 /usr/bin/time -f "WRK %U %S %w %c" \
      wrk -t1 -c"$conns" -d"${secs}s" --latency "$url" >"$work/wrk.out" 2>&1
    s1=$(outsegs)
    threads "${grp[$t]}" >"$work/proxy.b"
    threads "$backend" >"$work/backend.b"
    python3 - "$t" "$r" "$secs" "$((s1 - s0))" "$work" <<'EOF'
import re, sys
t, r, secs, segs, work = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
out = open(f"{work}/wrk.out").read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
u, s, vol, invol = map(float, re.search(r"^WRK (\S+) (\S+) (\S+) (\S+)", out, re.M).groups())
n = rps * secs
print(f"{t:8} round {r}: {rps:8.0f} req/s  p50 {lat['50']:>8}  p99 {lat['99']:>8}  "
      f"wrk {u / n * 1e6:.2f} user + {s / n * 1e6:.2f} sys us/req, {vol / n * 1000:.1f} "
      f"sleeps/kreq  segments {segs / n:.2f}/req")
def load(f):
    return {l.split()[1]: l.split() for l in open(f) if l.strip()}
for who in ("proxy", "backend"):
    a, b = load(f"{work}/{who}.a"), load(f"{work}/{who}.b")
    for tid, v in b.items():
        if tid not in a or int(v[4]) == int(a[tid][4]):
            continue
        run, wait, slices = (int(v[i]) - int(a[tid][i]) for i in (2, 3, 4))
        print(f"    {who:7} {v[0]:16} {run / 1e3 / n:6.2f} us/req on CPU, "
              f"{wait / 1e3 / slices:6.1f} us run-queue wait per slice, "
              f"{slices / n * 1000:7.1f} slices/kreq")
EOF
  done
done
