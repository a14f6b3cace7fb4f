#!/usr/bin/env python3
"""Round-by-round comparison over ../shared/bench/proxy-bench.sh results (bench/proxy.sh,
bench/floor.sh): `proxy-paired.py FILE...` pools every run of the files.

The harness keeps, per target and run, the req/s and p99 of every round (`rps_rounds`,
`p99_ms_rounds`; CPU only as a median, so req/s per core cannot be paired here: see
bench/cpu-split-summary.py for that). For each non-anchor target (switchyard's listeners, the
floor relays) and each round, this prints the better anchor of its layer over the target:
  - req/s: target / better anchor (>1: the target served more that round);
  - p99: better anchor / target (>1: the target's p99 was lower that round).
Targets of one round run one after another, not at once, so this pairing is looser than
cpu-split's; medians, rounds at or above 1.0, and a seeded bootstrap 95% interval of the median.
"""
import json
import statistics as st
import sys

from paired import ANCHORS, interval, is_anchor


def main():
    rows = [json.loads(line) for f in sys.argv[1:] for line in open(f) if line.strip()]
    if not rows:
        sys.exit("usage: proxy-paired.py RESULTS.jsonl...")
    by = {(r["run_id"], r["size"], r["target"]): r for r in rows}
    pooled = {}
    for (run, size, t), r in by.items():
        if t == "direct" or is_anchor(t):
            continue
        anchors = [by.get((run, size, a)) for a in ANCHORS[r["layer"]]]
        if None in anchors:
            continue
        for i, (rps, p99) in enumerate(zip(r["rps_rounds"], r["p99_ms_rounds"])):
            best_rps = max(a["rps_rounds"][i] for a in anchors)
            best_p99 = min(a["p99_ms_rounds"][i] for a in anchors)
            cell = pooled.setdefault((size, t), ([], []))
            cell[0].append(rps / best_rps)
            cell[1].append(best_p99 / p99)
    print(f"{'size':5} {'target':14} {'rounds':>6}  {'req/s median':>12} {'>=1.0':>6}"
          f" {'95%':>11}  {'p99 median':>10} {'>=1.0':>6} {'95%':>11}")
    for (size, t), (rps, p99) in sorted(pooled.items()):
        (rl, rh), (pl, ph) = interval(rps), interval(p99)
        print(f"{size:5} {t:14} {len(rps):6}  {st.median(rps):12.3f}"
              f" {sum(x >= 1 for x in rps):6} {rl:5.3f}-{rh:.3f}  {st.median(p99):10.3f}"
              f" {sum(x >= 1 for x in p99):6} {pl:5.3f}-{ph:.3f}")


if __name__ == "__main__":
    main()
