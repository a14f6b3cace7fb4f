# Sourced by the scripts that run ../shared/bench/proxy-bench.sh (proxy.sh, proxy-ab.sh,
# floor.sh) once they have set $root. `run_harness OUT` runs it (PROXY_BENCH names another
# copy) with the caller's settings: results are appended to OUT and the table is printed, and
# the harness's raw runs (every target, round and size, with the proxy's CPU of that round,
# each line tagged with the run's `run_id`) are appended to the file beside it, OUT with
# `.runs.jsonl` for `.jsonl`, from which bench/proxy-paired.py pairs req/s per core by round.
run_harness() {
  local out=$1 log work
  log=$(mktemp)
  # The harness names the work dir it kept on stderr, which is still shown as it runs: the
  # pipe carries stderr alone (stdout goes to fd 3) and ends only when tee has written it all.
  { KEEP_TMP=1 "${PROXY_BENCH:-$root/../shared/bench/proxy-bench.sh}" "$out" 2>&1 >&3 |
    tee "$log" >&2; } 3>&1
  work=$(sed -n 's/.*work dir kept: //p' "$log" | tail -1)
  rm -f "$log"
  if [ -z "$work" ] || [ ! -f "$work/runs.jsonl" ]; then
    echo "run_harness: the harness kept no runs.jsonl; per-round CPU not saved" >&2
    return 0
  fi
  python3 - "$out" "$work/runs.jsonl" >>"${out%.jsonl}.runs.jsonl" <<'PY'
import json, sys
run_id = json.loads(open(sys.argv[1]).read().splitlines()[-1])["run_id"]
for line in open(sys.argv[2]):
    if line.strip():
        print(json.dumps({"run_id": run_id, **json.loads(line)}))
PY
  rm -rf "$work"
}
