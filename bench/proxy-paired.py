#!/usr/bin/env python3
"""Round-by-round comparison over ../shared/bench/proxy-bench.sh results (bench/proxy.sh,
bench/floor.sh): `proxy-paired.py FILE...` pools every run of the files.

The harness keeps, per target and run, the req/s and p99 of every round (`rps_rounds`,
`p99_ms_rounds`; CPU only as a median, so req/s per core cannot be paired here: see
bench/cpu-split-summary.py for that). For each non-anchor target (switchyard's listeners, the
floor relays), the better anchor of its layer is the one with the best median over the pooled
rounds (see paired.better; for req/s and for p99 apart), and each round is paired with it:
  - req/s: target / that anchor (>1: the target served more that round);
  - p99: that anchor / target (>1: the target's p99 was lower that round).
Targets of one round run one after another, not at once, so this pairing is looser than
cpu-split's; medians, rounds at or above 1.0, and a seeded bootstrap 95% interval of the median.
"""
import json
import statistics as st
import sys

from paired import ANCHORS, better, interval, is_anchor


def main():
    rows = [json.loads(line) for f in sys.argv[1:] for line in open(f) if line.strip()]
    if not rows:
        sys.exit("usage: proxy-paired.py RESULTS.jsonl...")
    by = {(r["run_id"], r["size"], r["target"]): r for r in rows}
    # (size, target) -> every round it shared with both anchors of its layer:
    # (its req/s, its p99, {anchor: (req/s, p99)})
    pooled = {}
    for (run, size, t), r in by.items():
        if t == "direct" or is_anchor(t):
            continue
        anchors = {a: by.get((run, size, a)) for a in ANCHORS[r["layer"]]}
        if None in anchors.values():
            continue
        for i, (rps, p99) in enumerate(zip(r["rps_rounds"], r["p99_ms_rounds"])):
            pooled.setdefault((size, t), []).append(
                (rps, p99, {a: (x["rps_rounds"][i], x["p99_ms_rounds"][i])
                            for a, x in anchors.items()}))
    print(f"{'size':5} {'target':14} {'rounds':>6}  {'req/s vs':13} {'median':>6} {'>=1.0':>6}"
          f" {'95%':>11}  {'p99 vs':13} {'median':>6} {'>=1.0':>6} {'95%':>11}")
    for (size, t), rounds in sorted(pooled.items()):
        names = list(rounds[0][2])
        a_rps = better({a: [x[2][a][0] for x in rounds] for a in names}, lower=False)
        a_p99 = better({a: [x[2][a][1] for x in rounds] for a in names})
        rps = [x[0] / x[2][a_rps][0] for x in rounds]
        p99 = [x[2][a_p99][1] / x[1] for x in rounds]
        (rl, rh), (pl, ph) = interval(rps), interval(p99)
        print(f"{size:5} {t:14} {len(rps):6}  {a_rps:13} {st.median(rps):6.3f}"
              f" {sum(x >= 1 for x in rps):6} {rl:5.3f}-{rh:.3f}  {a_p99:13}"
              f" {st.median(p99):6.3f} {sum(x >= 1 for x in p99):6} {pl:5.3f}-{ph:.3f}")


if __name__ == "__main__":
    main()
