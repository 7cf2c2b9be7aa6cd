"""Which cached extent to evict next: the block cache's eviction order. Pure: no I/O, no trio
(the caller passes the time).

Two queues of cached extents. *Pending*: no read has reached the extent's end yet - read-ahead
nobody has read, the unread rest of a block being streamed, bytes a read is about to copy -
least recently touched first. *Read*: a read reached its end, least recently used first.

Why two: with one LRU, many streams through a budget smaller than their read-ahead windows
evicted each other's next blocks (and the unread rest of the blocks they were in), fetching
them again (measured: 8 readers of 96 MiB blobs through 256 MiB fetched 1.79x the bytes
read). Read-ahead now gives way to bytes a reader is coming for.

Invariants:
- An extent is in at most one queue; `read_bytes` is the size of the read queue's extents.
- Eviction order: pending extents untouched for `stale_after` seconds (their reader is
  gone: a stream closed early must not pin the budget), then read extents, then - only for
  a demand read or a write buffer, never for read-ahead - pending ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Resident(Protocol):
    start: int
    end: int
    touched: float  # when it landed, or a read last took bytes of it


X = TypeVar("X", bound=Resident)
K = TypeVar("K")


class Residency(Generic[X, K]):
    """The two eviction queues of cached extents (each with the key of its object)."""

    __slots__ = ("_pending", "_read", "read_bytes", "stale_after")

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self._pending: OrderedDict[X, K] = OrderedDict()
        self._read: OrderedDict[X, K] = OrderedDict()
        self.read_bytes = 0

    def __len__(self) -> int:
        return len(self._pending) + len(self._read)

    def landed(self, extent: X, key: K, now: float) -> None:
        """A fetched extent is cached: pending until a read reaches its end."""
        extent.touched = now
        self._pending[extent] = key

    def hold(self, extent: X, now: float) -> None:
        """A read is about to copy bytes of `extent`: pending again, most recently touched."""
        key = self._read.pop(extent, None)
        if key is not None:
            self.read_bytes -= extent.end - extent.start
            self._pending[extent] = key
        elif extent in self._pending:
            self._pending.move_to_end(extent)
        extent.touched = now

    def used(self, extent: X, upto: int, now: float) -> None:
        """A read took bytes of `extent` up to offset `upto`: it is the most recently used,
        and no longer pending once `upto` is its end."""
        if extent in self._pending:
            if upto < extent.end:
                extent.touched = now
                self._pending.move_to_end(extent)
            else:
                self._read[extent] = self._pending.pop(extent)
                self.read_bytes += extent.end - extent.start
        elif extent in self._read:
            self._read.move_to_end(extent)

    def demote(self, extent: X) -> None:
        """Nobody is coming for a pending `extent` any more (a prefetch guess was abandoned):
        it becomes the first read extent to evict."""
        key = self._pending.pop(extent, None)
        if key is not None:
            self._read[extent] = key
            self._read.move_to_end(extent, last=False)
            self.read_bytes += extent.end - extent.start

    def stale(self, now: float) -> tuple[X, K] | None:
        """Take out the least recently touched pending extent if it is stale."""
        if self._pending and next(iter(self._pending)).touched < now - self.stale_after:
            return self._pending.popitem(last=False)
        return None

    def victim(self, *, readahead: bool) -> tuple[X, K] | None:
        """Take out the next extent to evict (see the module docstring), or None."""
        if self._read:
            extent, key = self._read.popitem(last=False)
            self.read_bytes -= extent.end - extent.start
            return extent, key
        if self._pending and not readahead:
            return self._pending.popitem(last=False)
        return None

    def remove_all(self, doomed: Callable[[K], bool]) -> list[tuple[X, K]]:
        """Take out every extent whose key `doomed` accepts."""
        out: list[tuple[X, K]] = []
        for queue in (self._read, self._pending):
            gone = [(x, k) for x, k in queue.items() if doomed(k)]
            for x, _ in gone:
                del queue[x]
                if queue is self._read:
                    self.read_bytes -= x.end - x.start
            out += gone
        return out
