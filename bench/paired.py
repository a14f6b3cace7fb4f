"""What bench/cpu-split-summary.py and bench/proxy-paired.py share: which anchors a target is
paired with, and the interval they give for a median."""
import random
import statistics as st

# the anchors of each layer, as ../shared/bench/proxy-bench.sh and bench/cpu-split.sh name them
ANCHORS = {"l4": ("haproxy-tcp", "nginx-stream"), "l7": ("haproxy-http", "nginx-http")}


def is_anchor(target):
    return any(target in a for a in ANCHORS.values())


def interval(ratios, draws=4000):
    """95% interval of the median by bootstrap (seeded, so a table can be reproduced)."""
    rng = random.Random(1)
    meds = sorted(st.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return meds[draws // 40], meds[draws - 1 - draws // 40]
