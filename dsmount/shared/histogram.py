"""A fixed-bucket histogram of durations, cheap enough to observe on a hot path.

Used for what `dsmount status --json` and the Prometheus endpoint both show (backend request
latency, FUSE read stalls): the daemon keeps plain numbers and the exporter translates them at
scrape time, so nothing on the read path knows about Prometheus.

Invariants:
- `observe` is one bisect and three additions; no allocation, no lock (one trio thread writes).
- `as_dict()["buckets"]` is cumulative, `[upper bound, count of observations <= bound]`, the
  last bound being "+Inf", which is the shape Prometheus histograms have.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# Seconds: from a cached disk block (~1 ms) to the request deadline (60 s).
DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


class Histogram:
    __slots__ = ("bounds", "counts", "count", "sum")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot: above every bound
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def as_dict(self) -> dict[str, Any]:
        running = 0
        buckets: list[list[Any]] = []
        for bound, n in zip((*self.bounds, "+Inf"), self.counts, strict=True):
            running += n
            buckets.append([bound, running])
        return {"count": self.count, "sum": round(self.sum, 6), "buckets": buckets}
