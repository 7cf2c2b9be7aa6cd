"""The byte-range index of one object version: which extents of it are cached or in flight.

The block cache keys what it holds by object version and byte range, not by (block size,
index): a range fetched for a random read and the block a sequential stream wants are then
the same bytes in the same index, so the stream fetches only what is not there yet (no byte
twice). Pure data structure: no I/O, no trio, no clock.

Invariants:
- Extents of one index never overlap; they are kept sorted by start, so finding the extent
  that holds an offset is one bisect.
- `cover` and `gaps` describe a range exactly: the extents overlapping it and the holes between
  them, in order, together spanning the range with no byte twice.
- `split` cuts a range at multiples of a unit (the block size), so no GET is larger than a
  block and every extent lies inside one block.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Generic, Protocol, TypeVar


class HasRange(Protocol):
    start: int
    end: int


E = TypeVar("E", bound=HasRange)

Gap = tuple[int, int]


class ExtentIndex(Generic[E]):
    """Non-overlapping [start, end) extents of one object, sorted by start."""

    __slots__ = ("_extents", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._extents: list[E] = []

    def __len__(self) -> int:
        return len(self._extents)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._extents))

    def find(self, offset: int) -> E | None:
        """The extent holding byte `offset`, or None."""
        i = bisect_right(self._starts, offset) - 1
        if i < 0:
            return None
        extent = self._extents[i]
        return extent if offset < extent.end else None

    def cover(self, start: int, end: int) -> list[E | Gap]:
        """The extents overlapping [start, end) and the gaps (as (start, end) tuples, clipped to
        the range) between them, in offset order."""
        out: list[E | Gap] = []
        i = max(0, bisect_right(self._starts, start) - 1)
        pos = start
        extents = self._extents
        while pos < end and i < len(extents):
            extent = extents[i]
            if extent.end <= pos:
                i += 1
                continue
            if extent.start >= end:
                break
            if extent.start > pos:
                out.append((pos, extent.start))
            out.append(extent)
            pos = extent.end
            i += 1
        if pos < end:
            out.append((pos, end))
        return out

    def gaps(self, start: int, end: int) -> list[Gap]:
        """The parts of [start, end) no extent holds."""
        return [p for p in self.cover(start, end) if isinstance(p, tuple)]

    def add(self, extent: E) -> None:
        i = bisect_right(self._starts, extent.start)
        if (i > 0 and self._extents[i - 1].end > extent.start) or (
            i < len(self._starts) and self._starts[i] < extent.end
        ):
            raise ValueError(f"extent {extent.start}-{extent.end} overlaps one already indexed")
        self._starts.insert(i, extent.start)
        self._extents.insert(i, extent)

    def remove(self, extent: E) -> bool:
        """Remove this very extent; False if it is not (or no longer) in the index."""
        i = bisect_right(self._starts, extent.start) - 1
        if i < 0 or self._extents[i] is not extent:
            return False
        del self._starts[i]
        del self._extents[i]
        return True


def split(start: int, end: int, unit: int) -> list[Gap]:
    """[start, end) cut at every multiple of `unit` inside it."""
    out: list[Gap] = []
    pos = start
    while pos < end:
        stop = min(end, (pos // unit + 1) * unit)
        out.append((pos, stop))
        pos = stop
    return out
