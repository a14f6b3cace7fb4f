#!/usr/bin/env bash
# Where a proxy's CPU goes per request: user and system microseconds per request for
# switchyard (L4 and L7 listeners, Wasm round-robin in the path) and the four anchors of
# ../shared/bench/proxy-bench.sh (haproxy tcp/http, nginx stream/http), laid out the same way:
# wrk and an nginx backend on cpu0 (SCHED_BATCH), every proxy alone on cpu1 with one worker
# (switchyard's worker and that worker's L4 relay thread both on cpu1).
# Rounds are interleaved and the target order rotates each round. CPU is read from
# /proc/<pid>/stat of every process in the proxy's process group before and after each run,
# context switches from /proc/<pid>/task/*/status (every thread: a worker that finds no event
# and sleeps in epoll_wait is one voluntary switch).
#
# TARGETS may add the bare relays of bench/floor-relay (tokio-relay, uring-relay, splice-relay,
# sockmap-relay: nothing in the path; tokio-relay-mt: tokio-relay with one parked spare thread,
# so multi-threaded like the gateway), to compare at the same offered load. Each run also
# records how the proxy's core (cpu1) spent the time: idle (with iowait, which is how a task
# asleep in io_uring_enter leaves it), and softirq (the loopback receive work, charged to the
# proxy's system time); and the whole machine's busy CPU per request (both cores: wrk, the
# backend, every proxy, kernel threads), the fair measure for sockmap-relay, whose bytes move
# in softirq and kernel workers on the sender's core instead of in its own process; and the TCP
# segments sent on the machine per request, all of them and those that carried data (the rest
# are pure ACKs), which tell a proxy that forwards a response in two pieces from one that
# forwards it in one.
#
# The gateway is built with SY_PROFILE (release; `dist` for the production build) unless
# SWITCHYARD_BIN names a binary (bench/build-switchyard.sh). Its rows record the build (SY_BUILD,
# else the profile); the summary shows a build other than release as a target of its own
# (switchyard-l4@dist). SY_BIN_B=/path/to/another/switchyard adds target switchyard-l4-b: that
# build's L4 listener, started the same way, so two builds are paired round by round (an A/B of
# a build change); SY_BUILD_B names it (its rows then count as switchyard-l4@NAME, or as
# switchyard-l4 for `release`; it must differ from the first build's name).
#
# Settings: ROUNDS (5), DURATION (6 s), SIZES ("100b 16k"), CONNS (64), BASE_PORT (24480),
# TARGETS (the six above), LOCK_FILE (flocked around each round when set), CLOSE (1: every
# request on a new connection, wrk sending `Connection: close`, so the cost of a connection's
# set-up and close is in each request; rows then say "close": true; keep them in a file of
# their own). Results: one JSON
# line per run appended to $1 (default bench/results/cpu-split-<utc>.jsonl), then the tables of
# bench/cpu-split-summary.py: medians, and each target against the better anchor paired by round.
# Needs wrk, haproxy, nginx and its stream module (bench/proxy.sh's harness installs them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="${1:-$root/bench/results/cpu-split-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
rounds=${ROUNDS:-5} secs=${DURATION:-6} sizes=${SIZES:-"100b 16k"} conns=${CONNS:-64}
close=False wrk_args=()
if [ "${CLOSE:-0}" = 1 ]; then close=True wrk_args=(-H "Connection: close"); fi
base=${BASE_PORT:-24480}
stream_module=/usr/lib/nginx/modules/ngx_stream_module.so
for tool in wrk haproxy nginx taskset chrt; do
  command -v "$tool" >/dev/null || { echo "cpu-split: $tool is missing" >&2; exit 1; }
done
[ -f "$stream_module" ] || { echo "cpu-split: $stream_module is missing" >&2; exit 1; }
. "$root/bench/build-switchyard.sh"
all=(switchyard-l4 haproxy-tcp nginx-stream switchyard-l7 haproxy-http nginx-http)
read -ra targets <<<"${TARGETS:-${all[*]}}"
relay="$root/target/floor-relay/release"
if [[ " ${targets[*]} " == *-relay* ]]; then
  cargo build --release --manifest-path "$root/bench/floor-relay/Cargo.toml" \
    --target-dir "$root/target/floor-relay"
fi
mkdir -p "$root/bench/results"
work=$(mktemp -d)
groups=()
cleanup() {
  for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  sleep 0.5
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
start backend 0 -b nginx -c "$work/backend.conf"
start haproxy 1 -o haproxy -f "$work/haproxy.cfg"
hap=$group
start nginx 1 -o nginx -c "$work/nginx.conf"
ngx=$group
BENCH_LISTEN_ADDR=127.0.0.1:$((base + 10)) BENCH_L7_ADDR=127.0.0.1:$((base + 11)) \
  BENCH_BACKEND_ADDR=127.0.0.1:$base PROXY_THREADS=1 SY_API_PORT=$((base + 20)) \
  SY_ADMIN_PORT=$((base + 21)) SY_DNS_PORT=$((base + 22)) \
  start switchyard 1 -o "$root/bench/proxy-candidate.sh"
sy=$group
if [ -n "${SY_BIN_B:-}" ]; then
  SWITCHYARD_BIN=$SY_BIN_B BENCH_LISTEN_ADDR=127.0.0.1:$((base + 17)) \
    BENCH_BACKEND_ADDR=127.0.0.1:$base PROXY_THREADS=1 SY_API_PORT=$((base + 23)) \
    SY_ADMIN_PORT=$((base + 24)) SY_DNS_PORT=$((base + 25)) \
    start switchyard-b 1 -o "$root/bench/proxy-candidate.sh"
  sy_b=$group
fi
declare -A port=([switchyard-l4]=$((base + 10)) [haproxy-tcp]=$((base + 1))
  [nginx-stream]=$((base + 3)) [switchyard-l7]=$((base + 11)) [haproxy-http]=$((base + 2))
  [nginx-http]=$((base + 4)) [tokio-relay]=$((base + 12)) [uring-relay]=$((base + 13))
  [tokio-relay-mt]=$((base + 14)) [splice-relay]=$((base + 15)) [sockmap-relay]=$((base + 16))
  [switchyard-l4-b]=$((base + 17)))
declare -A owner=([switchyard-l4]=$sy [switchyard-l7]=$sy [haproxy-tcp]=$hap
  [haproxy-http]=$hap [nginx-stream]=$ngx [nginx-http]=$ngx [switchyard-l4-b]=${sy_b:-})
for r in tokio-relay uring-relay tokio-relay-mt splice-relay sockmap-relay; do
  if [[ " ${targets[*]} " == *" $r "* ]]; then
    spare=()
    [ "$r" != tokio-relay-mt ] || spare=(1)
    start "$r" 1 -o "$relay/${r%-mt}" "127.0.0.1:${port[$r]}" "127.0.0.1:$base" "${spare[@]}"
    owner[$r]=$group
  fi
done
for t in "${targets[@]}"; do
  [ -n "${owner[$t]:-}" ] || { echo "cpu-split: unknown target $t" >&2; exit 1; }
done
for t in "${targets[@]}"; do
  ok=0
  for _ in $(seq 150); do
    if [ "$(curl -fs -m 1 "http://127.0.0.1:${port[$t]}/16k" 2>/dev/null | wc -c)" = 16384 ]; then
      ok=1
      break
    fi
    sleep 0.2
  done
  [ "$ok" = 1 ] || { echo "cpu-split: $t did not answer on ${port[$t]}" >&2; exit 1; }
done

# ticks GROUP: user and system clock ticks of every process in the group.
ticks() {
  local u=0 s=0 p pu psys
  for p in $(pgrep -g "$1"); do
    read -r pu psys < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
    u=$((u + pu)) s=$((s + psys))
  done
  echo "$u $s"
}
# switches GROUP: context switches (voluntary and not) of every thread in the group.
switches() {
  local p
  for p in $(pgrep -g "$1"); do cat /proc/"$p"/task/*/status 2>/dev/null; done |
    awk '/ctxt_switches/ {n += $2} END {print n + 0}'
}
# core: the proxy core's line of /proc/stat (user nice system idle iowait irq softirq steal).
core() { grep '^cpu1 ' /proc/stat | cut -d' ' -f2-; }
# machine: busy ticks of all cores together (everything but idle and iowait).
machine() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# counter FILE SECTION NAME: one counter of /proc/net/snmp or /proc/net/netstat, where each
# section is a line of names followed by a line of values.
counter() {
  awk -v s="$2:" -v n="$3" '$1 == s { if (!c) { for (i = 2; i <= NF; i++) if ($i == n) c = i }
    else print $c }' "$1"
}
# segments: TCP segments sent on the machine (all loopback here), and those of them that
# carried new data (the rest are pure ACKs and retransmissions).
segments() {
  echo "$(counter /proc/net/snmp Tcp OutSegs) $(counter /proc/net/netstat TcpExt TCPOrigDataSent)"
}
hz=$(getconf CLK_TCK)
run_id=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for r in $(seq "$rounds"); do
  [ -z "${LOCK_FILE:-}" ] || exec 9>"$LOCK_FILE"
  [ -z "${LOCK_FILE:-}" ] || flock 9
  for size in $sizes; do
    n=${#targets[@]}
    for i in $(seq 0 $((n - 1))); do
      t=${targets[$(((i + r) % n))]}
      url="http://127.0.0.1:${port[$t]}/$size"
      timeout 10 taskset -c 0 chrt -b 0 wrk -t1 -c"$conns" -d1s "${wrk_args[@]}" "$url" >/dev/null
      read -r u0 s0 < <(ticks "${owner[$t]}")
      w0=$(switches "${owner[$t]}")
      c0=$(core) m0=$(machine)
      read -r g0 a0 < <(segments)
      res=$(timeout $((secs + 10)) taskset -c 0 chrt -b 0 wrk -t1 -c"$conns" -d"${secs}s" "${wrk_args[@]}" "$url")
      c1=$(core) m1=$(machine)
      read -r g1 a1 < <(segments)
      w1=$(switches "${owner[$t]}")
      read -r u1 s1 < <(ticks "${owner[$t]}")
      reqs=$(awk '/requests in/ {print $1}' <<<"$res")
      [ -n "$reqs" ] || { echo "cpu-split: wrk failed on $t: $res" >&2; exit 1; }
      case $t in
        switchyard-l4-b) b=${SY_BUILD_B:-} ;;
        switchyard-*) b=$build ;;
        *) b= ;;
      esac
      errors=$(awk '/Non-2xx|Socket errors/ {print "yes"}' <<<"$res" | head -1)
      python3 -c "import json; print(json.dumps({'run_id': '$run_id', 'round': $r,
        'target': '$t', 'build': '$b' or None, 'size': '$size', 'seconds': $secs,
        'requests': $reqs, 'close': $close,
        'user_us_per_req': ($u1 - $u0) * 1e6 / $hz / $reqs,
        'sys_us_per_req': ($s1 - $s0) * 1e6 / $hz / $reqs, 'errors': '$errors' == 'yes',
        'switches_per_req': ($w1 - $w0) / $reqs,
        'machine_us_per_req': ($m1 - $m0) * 1e6 / $hz / $reqs,
        'segments_per_req': ($g1 - $g0) / $reqs, 'data_segments_per_req': ($a1 - $a0) / $reqs,
        **(lambda d: {'core_idle_pct': 100 * (d[3] + d[4]) / sum(d),
          'core_softirq_pct': 100 * d[6] / sum(d)})([b - a for a, b in
          zip(map(int, '$c0'.split()), map(int, '$c1'.split()))])}))" \
        >>"$out"
    done
  done
  [ -z "${LOCK_FILE:-}" ] || exec 9>&-
done

python3 "$root/bench/cpu-split-summary.py" "$out" "$run_id"
