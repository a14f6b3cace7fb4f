#!/usr/bin/env python3
"""The tables of bench/cpu-split.sh, from its JSON lines: `cpu-split-summary.py FILE [RUN_ID]`
(default: the file's last run), or the paired table alone over every run of several files:
`cpu-split-summary.py --pool FILE...`. `--anchor TARGET` (either form) pairs every other
target that is not an anchor with TARGET instead of the better anchor, on the total and also
on user and on system time: one anchor alone (`--anchor nginx-stream`), or one build with
another (`--anchor switchyard-l4` next to `switchyard-l4@relay`).

1. Medians per target: req/s, user and system microseconds per request, their total,
   req/s per proxy core (1e6 / total), the proxy core's idle and softirq shares, context
   switches per request (all the proxy's threads), the whole machine's busy microseconds per
   request (both cores), TCP segments sent on the machine per request (`segs`; everything here
   is loopback, so it counts the proxy's both sides, wrk's and the backend's) and those of them
   that carried data (`data`; the rest are pure ACKs), errors.
2. Paired per round: for every target that is not an anchor (switchyard's listeners, the floor
   relays but sockmap-relay, whose own CPU leaves out its work), the better anchor of its layer
   (the one with the lower median over the same rounds, see paired.better; of the layer's
   anchors that ran, and only rounds where all of those did) is taken, and in each round its
   total us/req is divided by the target's. Above 1 the target did more requests per core than
   that anchor *in that round*, under the same offered load, which takes out most of the
   round-to-round swing of the machine. With the anchor, the median, the spread and a 95%
   interval of the median (bootstrap, seeded).
3. The same pairing on the whole machine's busy microseconds per request, for runs that
   recorded it: fair to a relay whose work runs outside its own process (sockmap-relay).

A switchyard build other than release is a target of its own (`switchyard-l4@dist`, from the
rows' `build`, see `label`).
"""
import json
import statistics as st
import sys

from paired import ANCHORS, better, interval, is_anchor


def total(r):
    return r["user_us_per_req"] + r["sys_us_per_req"]


def machine(r):
    """None for runs from before it was recorded."""
    return r.get("machine_us_per_req")


# Targets whose bytes move outside their own process (in kernel workers on the sender's core):
# their own CPU per request compares with nothing, so only the whole machine's is paired.
OFF_PROCESS = {"sockmap-relay"}


def label(r):
    """The target a row counts for. switchyard's listeners run by a build other than release
    (cpu-split.sh's SY_BUILD, SY_BUILD_B) are targets of their own, `switchyard-l4@dist`; the
    second build's rows, when named `release`, count as switchyard-l4."""
    t, b = r["target"], r.get("build")
    if not b:
        return t
    if t == "switchyard-l4-b":
        t = "switchyard-l4"
    return t if b == "release" else f"{t}@{b}"


def medians(rows, sizes, targets):
    print(f"{'size':5} {'target':25} {'req/s':>7} {'user us':>8} {'sys us':>7} {'total us':>9}"
          f" {'req/s/core':>10} {'idle%':>6} {'softirq%':>8} {'cs/req':>6} {'mach us':>7}"
          f" {'segs':>5} {'data':>5} {'errors':>6}")
    for size in sizes:
        for t in targets:
            v = [r for r in rows if r["size"] == size and r["target"] == t]
            if not v:
                continue
            user = st.median(r["user_us_per_req"] for r in v)
            sys_ = st.median(r["sys_us_per_req"] for r in v)
            tot = st.median(total(r) for r in v)
            rps = st.median(r["requests"] / r["seconds"] for r in v)
            # runs from before a field was recorded lack it
            idle, soft, cs, mach, segs, data = (
                f"{st.median(r[k] for r in v):.{d}f}" if k in v[0] else "-"
                for k, d in (("core_idle_pct", 1), ("core_softirq_pct", 1),
                             ("switches_per_req", 2), ("machine_us_per_req", 2),
                             ("segments_per_req", 2), ("data_segments_per_req", 2)))
            print(f"{size:5} {t:25} {rps:7.0f} {user:8.2f} {sys_:7.2f} {tot:9.2f}"
                  f" {1e6 / tot:10.0f} {idle:>6} {soft:>8} {cs:>6} {mach:>7}"
                  f" {segs:>5} {data:>5} {sum(r['errors'] for r in v):6}")


def paired(rows, sizes, targets, measure=total, what="us/req", skip=OFF_PROCESS, anchor=None):
    cost = {(r["run_id"], r["size"], r["round"], r["target"]): measure(r) for r in rows
            if measure(r) is not None}
    rounds = sorted({(r["run_id"], r["round"]) for r in rows})
    ran = {(size, t) for _, size, _, t in cost}
    lines = []
    for size in sizes:
        for t in targets:
            if is_anchor(t) or t in skip or t == anchor:
                continue
            # the layer's anchors that ran at this size (a run may have only one)
            anchors = [anchor] if anchor else [
                a for a in ANCHORS["l7" if t.split("@")[0].endswith("-l7") else "l4"]
                if (size, a) in ran]
            shared = [(run, rd) for run, rd in rounds
                      if all((run, size, rd, x) in cost for x in (t, *anchors))]
            if not shared or not anchors:
                continue
            best = better({a: [cost[(run, size, rd, a)] for run, rd in shared] for a in anchors})
            ratios = [cost[(run, size, rd, best)] / cost[(run, size, rd, t)]
                      for run, rd in shared]
            low, high = interval(ratios)
            lines.append(f"{size:5} {t:25} {best:13} {len(ratios):6} {st.median(ratios):7.3f}"
                         f" {min(ratios):6.3f} {max(ratios):6.3f}"
                         f" {sum(x >= 1 for x in ratios):>5}/{len(ratios)}"
                         f" {low:6.3f}-{high:.3f}")
    if lines:
        whose = f"{anchor}'s" if anchor else "the better anchor's"
        print(f"\npaired per round: {whose} {what} over the target's (>1: cheaper)")
        print(f"{'size':5} {'target':25} {'anchor':13} {'rounds':>6} {'median':>7} {'min':>6}"
              f" {'max':>6} {'>=1.0':>7} {'95% of median':>13}")
        print("\n".join(lines))


def order(rows):
    """Targets in the order the script was given (its round 1 starts at the second one)."""
    seen = list(dict.fromkeys(r["target"] for r in sorted(rows, key=lambda r: r["round"])))
    return seen[-1:] + seen[:-1]


def main():
    args = sys.argv[1:]
    anchor = None
    if "--anchor" in args:
        i = args.index("--anchor")
        anchor = args[i + 1]
        del args[i:i + 2]
    pool = args[:1] == ["--pool"]
    if pool:
        rows = [json.loads(line) for f in args[1:] for line in open(f) if line.strip()]
    else:
        rows = [json.loads(line) for line in open(args[0]) if line.strip()]
        run = args[1] if len(args) > 1 else rows[-1]["run_id"]
        rows = [r for r in rows if r["run_id"] == run]
        if not rows:
            sys.exit(f"cpu-split-summary: no run {run} in {args[0]}")
    for r in rows:
        r["target"] = label(r)
        if r.get("close"):
            # A new connection per request (CLOSE=1) is a load of its own: never pooled or
            # paired with keep-alive rounds.
            r["size"] += "-close"
    # each run's targets in its script's order, runs in the order they come
    targets = list(dict.fromkeys(t for run in dict.fromkeys(r["run_id"] for r in rows)
                                 for t in order([r for r in rows if r["run_id"] == run])))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    if not pool:
        medians(rows, sizes, targets)
    paired(rows, sizes, targets, anchor=anchor)
    if anchor:
        paired(rows, sizes, targets, lambda r: r["user_us_per_req"], "user us/req", anchor=anchor)
        paired(rows, sizes, targets, lambda r: r["sys_us_per_req"], "system us/req", anchor=anchor)
    paired(rows, sizes, targets, machine, "whole-machine us/req", set(), anchor)


if __name__ == "__main__":
    main()
