"""The daemon-wide block cache: byte ranges of object versions under ONE byte budget.

What it holds is keyed by object version (datastore id, path, ETag) and byte range, in one
`ExtentIndex` per object: a range fetched for a random read and the block a sequential stream
wants are the same bytes in the same index, so whatever asks for bytes fetches only the holes
(no byte is fetched twice while it is cached). How big a fetch is, is the caller's policy
(node/cache/readahead.py); the cache cuts every fetch at multiples of the source's unit (the
block size), so no GET exceeds a block.

Invariants:
- `cached_bytes + reserved_bytes <= budget` at every await point. A fetch reserves its bytes
  *before* the GET starts, so read-ahead buffers count against the same budget as cached
  extents, and a burst of readers cannot overshoot it.
- Demand reads wait for room (evicting least-recently-used extents first); read-ahead never
  waits: under pressure it is skipped, so read-ahead shrinks before anything else.
- Read-ahead never evicts bytes a reader is coming for (node/cache/residency.py has the
  eviction order), and evicts nothing when that would not make room.
- Extents of one object never overlap, in flight or cached: a read overlapping an in-flight
  fetch waits for it instead of fetching those bytes again.
- An extent holds exactly the bytes of its range, or it is not stored (a wrong length fails the
  fetch with IntegrityError).
- Keys carry the object's ETag, so bytes of an old version can never be served for a new one.
- Fetch tasks run in the cache's own nursery, so a reader giving up does not cancel a GET
  another reader waits on.
- A failed fetch is remembered for `failure_ttl` seconds: readers of any range of that object
  version in that window get the same error at once. The kernel re-reads a page whose
  read-ahead failed with a synchronous read of its own, so without this one read() by a user
  would wait the whole request deadline twice on a dead backend; and read-ahead does not hammer
  it meanwhile.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from dsmount.errors import DsmountError, IntegrityError
from dsmount.node.cache.counters import ReadCounters
from dsmount.node.cache.extents import ExtentIndex, split
from dsmount.node.cache.residency import Residency
from dsmount.node.cache.source import ObjectKey, Source

log = logging.getLogger(__name__)

FAILURE_TTL = 0.5  # seconds; the kernel's re-read of a failed read-ahead comes within ms
# A pending extent untouched this long (seconds) is taken for abandoned: a reader streams a
# whole 128 MiB window in seconds, and a stream closed early must not pin the budget.
PENDING_STALE = 30.0
_FAILURES_MAX = 4096  # failed objects remembered at most (oldest forgotten first)


class _Extent:
    """A range of one object: in flight (`data` None, `done` not set) or cached."""

    __slots__ = ("counters", "data", "done", "end", "error", "index", "prefetch", "reserved",
                 "start", "touched")

    def __init__(self, start: int, end: int, index: ExtentIndex[_Extent], reserved: int,
                 counters: ReadCounters, prefetch: bool) -> None:
        self.start = start
        self.end = end
        self.index = index
        self.reserved = reserved
        self.counters = counters
        self.prefetch = prefetch  # fetched ahead and not read yet: its first reader counts it
        self.data: bytes | None = None
        self.error: BaseException | None = None
        self.done = trio.Event()
        self.touched = 0.0  # trio time its bytes arrived or a read last took some

    def used(self, counters: ReadCounters) -> None:
        if self.prefetch:
            self.prefetch = False
            counters.readahead_hits += 1


@dataclass
class _Failure:
    when: float
    error: BaseException


class BlockCache:
    def __init__(self, budget: int, *, max_concurrent_gets: int = 16,
                 failure_ttl: float = FAILURE_TTL) -> None:
        if budget <= 0:
            raise ValueError("budget must be positive")
        self.budget = budget
        self._objects: dict[ObjectKey, ExtentIndex[_Extent]] = {}
        # Cached extents, least recently used first: those a read has reached the end of, and
        # those pending (no read has yet: read-ahead, or the rest of a block being streamed).
        self._resident: Residency[_Extent, ObjectKey] = Residency(PENDING_STALE)
        self._cached = 0
        self._reserved = 0
        self._room = trio.Event()
        self._limiter = trio.CapacityLimiter(max_concurrent_gets)
        self.failure_ttl = failure_ttl
        self._failed: OrderedDict[ObjectKey, _Failure] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        self.peak_bytes = 0

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery fetches run in; returns only when cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run a background task (e.g. a disk-cache write) in the cache's nursery; False if
        the cache is not running (stopping), so the task was not started."""
        if self._nursery is None:
            return False
        self._nursery.start_soon(fn, *args)
        return True

    # -- accounting ----------------------------------------------------------------------------
    @property
    def cached_bytes(self) -> int:
        return self._cached

    @property
    def reserved_bytes(self) -> int:
        return self._reserved

    @property
    def used_bytes(self) -> int:
        return self._cached + self._reserved

    def _evict_for(self, size: int, *, readahead: bool = False) -> bool:
        """Evict until `size` more bytes fit (in node/cache/residency.py's order; for
        `readahead`, nothing a reader is coming for, and nothing at all if that would not make
        room); False if they cannot."""
        if size > self.budget:
            return False
        if self.used_bytes + size <= self.budget:
            return True
        resident, now = self._resident, trio.current_time()
        while self.used_bytes + size > self.budget and (gone := resident.stale(now)):
            self._evict(*gone)
        if readahead and self.used_bytes - resident.read_bytes + size > self.budget:
            return False
        while self.used_bytes + size > self.budget and (
                gone := resident.victim(readahead=readahead)):
            self._evict(*gone)
        return self.used_bytes + size <= self.budget

    def _evict(self, extent: _Extent, key: ObjectKey) -> None:
        if extent.prefetch and extent.data is not None:  # read ahead, never read: waste
            extent.counters.readahead_unread_bytes += len(extent.data)
        self._forget(extent, key, cached=True)

    def _use(self, extent: _Extent, upto: int, counters: ReadCounters) -> None:
        extent.used(counters)
        self._resident.used(extent, upto, trio.current_time())

    def _forget(self, extent: _Extent, key: ObjectKey, *, cached: bool) -> None:
        """Take an extent out of its index (and, if it was cached, out of the byte count)."""
        extent.index.remove(extent)
        if cached and extent.data is not None:
            self._cached -= len(extent.data)
        if not extent.index and self._objects.get(key) is extent.index:
            del self._objects[key]

    def _note_peak(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    def _release(self, size: int) -> None:
        self._reserved -= size
        self._room.set()
        self._room = trio.Event()

    # -- buffers outside the cache (write buffers) share the one budget ------------------------
    async def reserve(self, size: int) -> None:
        """Take `size` bytes of the budget for a buffer the cache does not hold (a write
        buffer): cached blocks are evicted for it; if in-flight buffers fill the budget, wait
        until some are released. Give it back with `release`."""
        size = min(size, self.budget)
        while not self._evict_for(size):
            await self._room.wait()
        self._reserved += size
        self._note_peak()

    def release(self, size: int) -> None:
        """Return what `reserve` took."""
        self._release(size)

    def _recent_failure(self, key: ObjectKey) -> BaseException | None:
        failed = self._failed.get(key)
        if failed is None:
            return None
        if trio.current_time() - failed.when < self.failure_ttl:
            return failed.error
        del self._failed[key]
        return None

    # -- reads ---------------------------------------------------------------------------------
    def cached(self, key: ObjectKey, offset: int, length: int, counters: ReadCounters
               ) -> memoryview | None:
        """[offset, offset+length) as a zero-copy view if ONE cached extent holds it all (a hit,
        counted); else None and nothing counted."""
        index = self._objects.get(key)
        if index is None:
            return None
        extent = index.find(offset)
        if extent is None or extent.data is None or extent.end < offset + length:
            return None
        counters.cache_hits += 1
        self._use(extent, offset + length, counters)
        start = offset - extent.start
        return memoryview(extent.data)[start : start + length]

    def assemble(self, key: ObjectKey, start: int, end: int) -> bytes | None:
        """The bytes [start, end) if cached extents hold them all (for a disk-cache write);
        touches no LRU position and counts nothing."""
        index = self._objects.get(key)
        if index is None:
            return None
        parts = index.cover(start, end)
        if any(isinstance(p, tuple) or p.data is None for p in parts):
            return None
        if len(parts) == 1:
            (extent,) = parts
            assert not isinstance(extent, tuple) and extent.data is not None
            if (extent.start, extent.end) == (start, end):
                return extent.data
        return b"".join(
            memoryview(p.data)[max(start, p.start) - p.start : min(end, p.end) - p.start]
            for p in parts
            if not isinstance(p, tuple) and p.data is not None
        )

    async def read(
        self,
        src: Source,
        offset: int,
        length: int,
        want: tuple[int, int],
        counters: ReadCounters,
        then: Callable[[], object] | None = None,
    ) -> bytes | memoryview:
        """The bytes [offset, offset+length) of `src` (clipped to its size).

        The holes of `want` (a range around the read, the caller's fetch policy) that overlap
        the read are fetched, cut at `src.unit`; everything else comes from cached or in-flight
        extents. `then` runs once the GETs are started and before waiting for them (the
        caller's read-ahead: it must queue behind the bytes a reader is waiting for).

        A read that had to wait for bytes (its own GETs, ones in flight, or room) is timed into
        `counters.stalls`, however it ends; one served from cached extents is not.
        """
        stalled: list[bool] = []
        started = trio.current_time()
        try:
            return await self._read(src, offset, length, want, counters, then, stalled)
        finally:
            if stalled:
                counters.stalls.observe(trio.current_time() - started)

    async def _read(
        self,
        src: Source,
        offset: int,
        length: int,
        want: tuple[int, int],
        counters: ReadCounters,
        then: Callable[[], object] | None,
        stalled: list[bool],
    ) -> bytes | memoryview:
        end = min(offset + length, src.size)
        if end <= offset:
            return b""
        wstart, wend = max(0, min(want[0], offset)), min(src.size, max(want[1], end))
        failed = self._recent_failure(src.key)
        if failed is not None:
            raise failed
        # Start every GET the read needs that fits now, so they overlap...
        index = self._objects.get(src.key)
        holes: list[tuple[int, int]] = []
        if index is None:
            holes.append((wstart, wend))
        else:
            for p in index.cover(wstart, wend):
                if isinstance(p, tuple):
                    if p[0] < end and p[1] > offset:
                        holes.append(p)
                elif p.data is not None and p.start < end and p.end > offset:
                    # Most recent now: the room our GETs (or the read-ahead `then` starts)
                    # need must not come from the bytes this read is made of.
                    self._resident.hold(p, trio.current_time())
        mine: list[_Extent] = []  # what this read started: its bytes even if not kept
        if holes:
            self._start_all(src, holes, counters, prefetch=False, started=mine)
        if then is not None:
            then()
        # ...then take the bytes in order, holding each part once had, so progress is monotone
        # even when pressure evicts what the read has not reached yet.
        waited = False
        parts: list[memoryview] = []
        pos = offset
        while pos < end:
            index = self._objects.get(src.key)
            p = index.find(pos) if index is not None else None
            if p is None:
                p = next((x for x in mine if x.start <= pos < x.end and x.error is None), None)
            if p is None:  # never started (no room), or evicted since: fetch it now
                failed = self._recent_failure(src.key)
                if failed is not None:
                    raise failed
                hole = (wstart, wend) if index is None else next(
                    g for g in index.gaps(wstart, wend) if g[0] <= pos < g[1]
                )
                # From the piece holding `pos` on: what lies before it is not needed.
                hole = (max(hole[0], pos - pos % src.unit), hole[1])
                n = len(mine)
                room = self._start_all(src, [hole], counters, prefetch=False, started=mine)
                if len(mine) == n and not room:
                    stalled.append(True)
                    await self._room.wait()
                continue
            if p.data is None:
                waited = True
                stalled.append(True)
                await p.done.wait()
                if p.error is not None:
                    raise p.error
                assert p.data is not None
            stop = min(end, p.end)
            self._use(p, stop, counters)
            parts.append(memoryview(p.data)[pos - p.start : stop - p.start])
            pos = stop
        if mine:
            counters.cache_misses += 1
        elif not waited:
            counters.cache_hits += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def prefetch(self, src: Source, start: int, end: int, counters: ReadCounters,
                 limiter: trio.CapacityLimiter | None = None) -> bool:
        """Start fetching the holes of [start, end) in the background if there is room now;
        never waits. False if the backend just failed or there was no room (read-ahead gives
        way first). `limiter`: the GETs in flight these count against, if not the cache's
        (ordered prefetch of small files is bound by latency, not bandwidth: it keeps more
        requests in flight than streams need)."""
        end = min(end, src.size)
        if end <= start:
            return True
        if self._recent_failure(src.key) is not None:
            return False  # the backend just failed this object: do not hammer it
        index = self._objects.get(src.key)
        holes = [(start, end)] if index is None else index.gaps(start, end)
        if not holes:
            return True
        if self._nursery is None or not self._start_all(src, holes, counters, prefetch=True,
                                                        limiter=limiter):
            counters.readahead_skipped += 1
            return False
        return True

    def _start_all(self, src: Source, holes: list[tuple[int, int]], counters: ReadCounters,
                   *, prefetch: bool, started: list[_Extent] | None = None,
                   limiter: trio.CapacityLimiter | None = None) -> bool:
        """Start a fetch per piece of `holes` (cut at `src.unit`) while there is room (adding
        each to `started`); False at the first piece there was no room for."""
        for hole_start, hole_end in holes:
            for start, end in split(hole_start, hole_end, src.unit):
                size = min(end - start, self.budget)
                if self._nursery is None:
                    raise RuntimeError("BlockCache.run() is not running")
                if not self._evict_for(size, readahead=prefetch):
                    return False
                extent = self._start(src, start, end, size, counters, prefetch, limiter)
                if started is not None:
                    started.append(extent)
                if prefetch:
                    counters.readahead_started += 1
                    counters.readahead_bytes += end - start
        return True

    def _start(self, src: Source, start: int, end: int, size: int, counters: ReadCounters,
               prefetch: bool, limiter: trio.CapacityLimiter | None = None) -> _Extent:
        assert self._nursery is not None
        index = self._objects.get(src.key)
        if index is None:
            index = self._objects[src.key] = ExtentIndex()
        extent = _Extent(start, end, index, size, counters, prefetch)
        index.add(extent)
        self._reserved += size
        self._note_peak()
        self._nursery.start_soon(self._fetch, src, extent, limiter or self._limiter)
        return extent

    async def _fetch(self, src: Source, extent: _Extent, limiter: trio.CapacityLimiter
                     ) -> None:
        stored = False
        try:
            async with limiter:
                data = await src.fetch(extent.start, extent.end)
            if len(data) != extent.end - extent.start:
                raise IntegrityError(
                    f"{src.key[1]}: got {len(data)} bytes for "
                    f"{extent.start}-{extent.end}, expected {extent.end - extent.start}"
                )
        except Exception as e:
            if isinstance(e, DsmountError):
                # An expected failure: its message is all readers need. Its traceback and
                # chained exceptions would keep the frames of the HTTP stack, with a partly
                # read body, alive in a reference cycle for as long as it is remembered.
                e.__traceback__ = e.__context__ = e.__cause__ = None
            extent.error = e
            extent.counters.fetch_errors += 1
            now = trio.current_time()
            self._failed[src.key] = _Failure(now, e)
            self._failed.move_to_end(src.key)
            # Forget the expired ones (oldest first), and never hold more than the cap.
            while self._failed and (
                len(self._failed) > _FAILURES_MAX
                or now - next(iter(self._failed.values())).when >= self.failure_ttl
            ):
                self._failed.popitem(last=False)
            if extent.prefetch:
                log.debug("read-ahead of %s failed: %s", src.key[1], e)
        else:
            self._failed.pop(src.key, None)
            extent.data = data
            extent.counters.blocks_fetched += 1
            extent.counters.bytes_fetched += len(data)
        finally:
            self._release(extent.reserved)
            data_ = extent.data
            if data_ is not None and self._evict_for(len(data_)):
                self._cached += len(data_)
                self._resident.landed(extent, src.key, trio.current_time())
                stored = True
            else:
                # Failed, or larger than the whole budget: handed to its readers, not kept.
                self._forget(extent, src.key, cached=False)
            self._note_peak()
            extent.done.set()
        if stored:
            try:
                src.stored(extent.start, extent.end)
            except Exception:  # a disk-cache hiccup must not fail the read that fetched it
                log.exception("after caching %s %d-%d", src.key[1], extent.start, extent.end)

    def abandon(self, key: ObjectKey) -> None:
        """Nobody is coming for the unread bytes of `key` fetched ahead (an ordered prefetch
        was abandoned): they become the first to evict, instead of pinning the budget until
        they go stale."""
        index = self._objects.get(key)
        if index is not None:
            for extent in index:
                if extent.prefetch and extent.data is not None:
                    self._resident.demote(extent)

    # -- invalidation --------------------------------------------------------------------------
    def drop(self, datastore_id: int, path: str | None = None) -> int:
        """Forget cached extents of a datastore (or one path of it). Returns extents dropped.

        Fetches in flight land as usual (they are of a version some handle pinned)."""
        doomed = self._resident.remove_all(
            lambda key: key[0] == datastore_id and (path is None or key[1] == path))
        for extent, key in doomed:
            self._forget(extent, key, cached=True)
        return len(doomed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.budget,
            "cached_bytes": self.cached_bytes,
            "in_flight_bytes": self._reserved,
            "peak_bytes": self.peak_bytes,
            "blocks": len(self._resident),
        }
