"""Timed batches of calls and the figures they make.

Invariants:
- A count-based workload stops issuing calls after its cap (`cap_s`) and its rate is taken
  over the calls that ran, with a note saying so: one slow system cannot blow the run's time
  budget, and a cut figure is never shown as a whole one.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from scripts.bench.harness.cleanup import check


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


@dataclass
class Figure:
    """A measured figure with a remark for the table (e.g. that a time cap cut it short).

    `count`: the items (files, reads) it is the rate of, for per-item figures (row 10);
    `extra`: more cells measured by the same run (e.g. its CPU seconds per GiB)."""

    value: float
    note: str = ""
    count: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Batch:
    """What `run_batch` returns: elapsed seconds and the results of the calls that ran."""

    secs: float
    done: list[tuple[Any, Any]]  # (item, result) in item order
    total: int

    def rate(self, what: str) -> Figure:
        check(bool(self.done), f"no {what} finished")
        n = len(self.done)
        rate = n / self.secs
        if n < self.total:
            return Figure(rate, f"time cap reached after {n} of {self.total} {what}", count=n)
        return Figure(rate, count=n)


def run_batch(fn: Callable[[Any], Any], items: list[Any], in_flight: int, cap_s: float) -> Batch:
    """Call `fn` on every item with `in_flight` threads, stopping new calls after `cap_s`."""
    skipped = object()
    t0 = time.perf_counter()
    deadline = t0 + cap_s

    def call(item: Any) -> Any:
        return skipped if time.perf_counter() > deadline else fn(item)

    if in_flight == 1:
        results = [call(item) for item in items]
    else:
        with ThreadPoolExecutor(in_flight) as pool:
            results = list(pool.map(call, items))
    secs = time.perf_counter() - t0
    done = [(i, r) for i, r in zip(items, results, strict=True) if r is not skipped]
    return Batch(secs, done, len(items))


async def run_batch_async(
    fn: Callable[[Any], Any], items: list[Any], in_flight: int, cap_s: float
) -> Batch:
    """`run_batch` for coroutine functions: a semaphore bounds the requests in flight."""
    skipped = object()
    sem = asyncio.Semaphore(in_flight)
    t0 = time.perf_counter()
    deadline = t0 + cap_s

    async def call(item: Any) -> Any:
        async with sem:
            return skipped if time.perf_counter() > deadline else await fn(item)

    results = await asyncio.gather(*(call(item) for item in items))
    secs = time.perf_counter() - t0
    done = [(i, r) for i, r in zip(items, results, strict=True) if r is not skipped]
    return Batch(secs, done, len(items))


def window_map(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: list[Any], n: int
) -> Iterator[Any]:
    """Like pool.map, but at most `n` calls in flight (bounded memory for large reads)."""
    pending: collections.deque[Future[Any]] = collections.deque()
    for item in items:
        if len(pending) >= n:
            yield pending.popleft().result()
        pending.append(pool.submit(fn, item))
    while pending:
        yield pending.popleft().result()
