#!/usr/bin/env python3
"""Round-by-round comparison over ../shared/bench/proxy-bench.sh results (bench/proxy.sh,
bench/floor.sh): `proxy-paired.py FILE...` pools every run of the files.

The harness keeps, per target and run, the req/s and p99 of every round (`rps_rounds`,
`p99_ms_rounds`), but the proxy's CPU only as a median. bench/harness.sh also saves the
harness's raw runs beside each results file (FILE with `.runs.jsonl`), which hold the proxy's
CPU of each round; for the runs found there, req/s per proxy core is paired round by round too. For each
non-anchor target (switchyard's listeners, the floor relays), the better anchor of its layer is
the one with the best median over the pooled rounds (see paired.better; for each measure
apart), and each round is paired with it:
  - req/s and req/s per core: target / that anchor (>1: the target did better that round);
  - p99: that anchor / target (>1: the target's p99 was lower that round).
Targets of one round run one after another, not at once, so this pairing is looser than
cpu-split's; medians, rounds at or above 1.0, and a seeded bootstrap 95% interval of the median.
"""
import json
import os
import statistics as st
import sys

from paired import ANCHORS, better, interval, is_anchor


def per_core(files):
    """(run_id, size, target) -> req/s per proxy core of each round, from the runs files."""
    out = {}
    hz = os.sysconf("SC_CLK_TCK")
    for f in files:
        if not f.endswith(".jsonl"):
            continue
        runs = f[: -len(".jsonl")] + ".runs.jsonl"
        if not os.path.exists(runs):
            continue
        for line in open(runs):
            if not line.strip():
                continue
            r = json.loads(line)
            a, w = r["acct"], r["wrk"]
            if not r["managed"] or not a["proxy_ticks"]:
                continue
            cores = a["proxy_ticks"] / hz / a["window_s"]
            rps = w["requests"] / (w["duration_us"] / 1e6)
            rounds = out.setdefault((r["run_id"], r["size"], r["target"]), {})
            rounds[r["round"]] = rps / cores
    return out


def row(size, t, rounds, measure, lower):
    """One line: `rounds` is a list of (target's value, {anchor: value}) per round."""
    names = list(rounds[0][1])
    a = better({n: [x[1][n] for x in rounds] for n in names}, lower=lower)
    ratios = [x[1][a] / x[0] if lower else x[0] / x[1][a] for x in rounds]
    lo, hi = interval(ratios)
    return (f"{size:5} {t:14} {measure:10} {len(ratios):6}  {a:13} {st.median(ratios):6.3f}"
            f" {sum(x >= 1 for x in ratios):6} {lo:5.3f}-{hi:.3f}")


def main():
    # A glob over bench/results takes in the raw runs files too; they are read beside theirs.
    files = [f for f in sys.argv[1:] if not f.endswith(".runs.jsonl")]
    rows = [json.loads(line) for f in files for line in open(f) if line.strip()]
    if not rows:
        sys.exit("usage: proxy-paired.py RESULTS.jsonl...")
    cores = per_core(files)
    by = {(r["run_id"], r["size"], r["target"]): r for r in rows}
    # (size, target, measure) -> every round it shared with both anchors of its layer:
    # (its value, {anchor: value})
    pooled = {}
    for (run, size, t), r in by.items():
        if t == "direct" or is_anchor(t):
            continue
        anchors = {a: by.get((run, size, a)) for a in ANCHORS[r["layer"]]}
        if None in anchors.values():
            continue
        for i, (rps, p99) in enumerate(zip(r["rps_rounds"], r["p99_ms_rounds"])):
            pooled.setdefault((size, t, "req/s"), []).append(
                (rps, {a: x["rps_rounds"][i] for a, x in anchors.items()}))
            pooled.setdefault((size, t, "p99"), []).append(
                (p99, {a: x["p99_ms_rounds"][i] for a, x in anchors.items()}))
        mine = cores.get((run, size, t), {})
        theirs = {a: cores.get((run, size, a), {}) for a in anchors}
        for n, v in sorted(mine.items()):
            if all(n in x for x in theirs.values()):
                pooled.setdefault((size, t, "req/s/core"), []).append(
                    (v, {a: x[n] for a, x in theirs.items()}))
    print(f"{'size':5} {'target':14} {'measure':10} {'rounds':>6}  {'vs':13} {'median':>6}"
          f" {'>=1.0':>6} {'95%':>11}")
    for (size, t, measure), rounds in sorted(pooled.items()):
        print(row(size, t, rounds, measure, lower=measure == "p99"))


if __name__ == "__main__":
    main()
