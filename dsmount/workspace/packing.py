"""The packing policy: which files of a new version go into which pack. Pure; no I/O.

Small files are the case that decides training throughput (one request per file costs the
store's per-request latency, 5-30 ms on Blob storage); packed into objects of tens of MiB in
path order, files of one directory share packs, so a reader of a directory or a shuffled epoch
over a cached version pays a few large reads instead of one request per file.

Invariants (tests/unit/test_packing.py): every file is placed exactly once, either loose or in
one pack; packs hold only files smaller than `threshold`, in path order, and never more than
`pack_size` bytes unless a pack holds one file; loose files are in path order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

#: Files below this are packed: a 1 MiB file already amortises a request's latency well.
PACK_THRESHOLD = 1024 * 1024
#: Target pack size: tens of MiB, so a pack is a handful of 8 MiB blocks and a directory of
#: small images spans few packs, yet one pack's loss (a failed upload) costs little to redo.
PACK_SIZE = 32 * 1024 * 1024


@dataclass
class PackPlan(Generic[T]):
    packs: list[list[T]] = field(default_factory=list)
    loose: list[T] = field(default_factory=list)


def plan_packs(
    files: Sequence[T],
    *,
    path: Callable[[T], str],
    size: Callable[[T], int],
    threshold: int = PACK_THRESHOLD,
    pack_size: int = PACK_SIZE,
) -> PackPlan[T]:
    """Split `files` into packs (of files smaller than `threshold`) and loose files."""
    if threshold <= 0 or pack_size <= 0:
        raise ValueError("threshold and pack_size must be positive")
    plan: PackPlan[T] = PackPlan()
    current: list[T] = []
    filled = 0
    for f in sorted(files, key=path):
        n = size(f)
        if n >= threshold:
            plan.loose.append(f)
            continue
        if current and filled + n > pack_size:
            plan.packs.append(current)
            current, filled = [], 0
        current.append(f)
        filled += n
    if current:
        plan.packs.append(current)
    return plan
