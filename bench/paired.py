"""What bench/cpu-split-summary.py and bench/proxy-paired.py share: which anchors a target is
paired with, and the interval they give for a median."""
import random
import statistics as st

# the anchors of each layer, as ../shared/bench/proxy-bench.sh and bench/cpu-split.sh name them
ANCHORS = {"l4": ("haproxy-tcp", "nginx-stream"), "l7": ("haproxy-http", "nginx-http")}


def is_anchor(target):
    return any(target in a for a in ANCHORS.values())


def better(series, lower=True):
    """The better anchor: the one whose median over all the rounds being compared is best
    (`series`: anchor -> its values in those rounds). Each round is then paired with this one
    anchor. Taking the better of the two in each round instead would be biased against the
    target: the smaller of two noisy values is below both anchors' typical round, so a target
    exactly as good as either would come out behind (over the first 148 pooled 100 B L4 rounds
    of 2026-11-29: 0.979 that way, against 1.000 and 1.022 for each anchor alone)."""
    pick = min if lower else max
    return pick(series, key=lambda a: st.median(series[a]))


def interval(ratios, draws=4000):
    """95% interval of the median by bootstrap (seeded, so a table can be reproduced)."""
    rng = random.Random(1)
    meds = sorted(st.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return meds[draws // 40], meds[draws - 1 - draws // 40]
