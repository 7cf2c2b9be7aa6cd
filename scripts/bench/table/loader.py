"""Row 17: a DataLoader-style epoch. Worker PROCESSES (not threads: a PyTorch DataLoader's
workers are processes), each taking every Nth file of one shuffled order, opening one file at
a time, reading it whole and hashing what it read.

Invariants:
- The workers are spawned (not forked: the benchmark process has threads) and wait at a
  barrier, so their start-up is outside the clock; the clock stops when the last result is in.
- Every file's digest comes back, so the caller checks content, not only counts.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

WORKERS = 4
START_WAIT_S = 120.0
EPOCH_WAIT_S = 1800.0


def _worker(k: int, paths: list[str], start: Barrier, out: Any) -> None:
    start.wait(START_WAIT_S)
    digests = []
    for path in paths:
        with open(path, "rb") as f:
            digests.append(hashlib.sha256(f.read()).hexdigest())
    out.put((k, digests))


def loader_epoch(paths: list[Path], workers: int = WORKERS) -> tuple[float, list[str]]:
    """(seconds, sha256 hex of each path in `paths` order) of one epoch over `paths`."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(workers + 1)
    out = ctx.Queue()
    shards = [[str(p) for p in paths[k::workers]] for k in range(workers)]
    procs = [ctx.Process(target=_worker, args=(k, shard, start, out), daemon=True)
             for k, shard in enumerate(shards)]  # fmt: skip
    for p in procs:
        p.start()
    try:
        start.wait(START_WAIT_S)
        t0 = time.perf_counter()
        got = dict(out.get(timeout=EPOCH_WAIT_S) for _ in procs)
        secs = time.perf_counter() - t0
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    digests: list[str] = [""] * len(paths)
    for k, shard_digests in got.items():
        digests[k::workers] = shard_digests
    return secs, digests
