"""The daemon-wide block cache: fixed-size blocks under ONE byte budget, in-flight dedup.

Invariants:
- `cached_bytes + reserved_bytes <= budget` at every await point. A fetch reserves its block's
  bytes *before* the GET starts, so read-ahead buffers count against the same budget as
  cached blocks, and a burst of readers cannot overshoot it.
- Demand reads wait for room (evicting least-recently-used blocks first); read-ahead never
  waits: under pressure it is skipped, so read-ahead shrinks before anything else.
- At most one GET per block key is in flight; every other reader of that block awaits it.
- Keys carry the object's ETag, so a block of an old version can never be served for a new one.
- Fetch tasks run in the cache's own nursery, so a reader giving up does not cancel a GET
  another reader waits on.
- A failed fetch is remembered for `failure_ttl` seconds: readers of any block of that object
  version in that window get the same error at once. The kernel re-reads a page whose
  read-ahead failed with a synchronous read of its own (which may ask for another block
  size), so without this one read() by a user would wait the whole request deadline twice on
  a dead backend; and read-ahead does not hammer it meanwhile.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import cachetools
import trio

from dsmount.errors import DsmountError

log = logging.getLogger(__name__)

BlockKey = tuple[int, str, str, int, int]  # (datastore id, path, etag, block size, index)
Fetch = Callable[[], Awaitable[bytes]]

FAILURE_TTL = 0.5  # seconds; the kernel's re-read of a failed read-ahead comes within ms
_FAILURES_MAX = 4096  # failed keys remembered at most (oldest forgotten first)


@dataclass(slots=True)
class ReadCounters:
    """Per-datastore read counters shown by `dsmount status`."""

    bytes_read: int = 0
    blocks_fetched: int = 0
    bytes_fetched: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    readahead_hits: int = 0
    readahead_started: int = 0
    readahead_skipped: int = 0
    fetch_errors: int = 0
    reads: int = 0  # FUSE read requests
    readahead_bytes: int = 0  # bytes of read-ahead blocks started
    readahead_unread_bytes: int = 0  # ... of those evicted before anyone read them (waste)

    def as_dict(self) -> dict[str, Any]:
        total = self.cache_hits + self.cache_misses
        return {
            "bytes_read": self.bytes_read,
            "blocks_fetched": self.blocks_fetched,
            "bytes_fetched": self.bytes_fetched,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "cache_hit_ratio": round(self.cache_hits / total, 4) if total else None,
            "readahead_hits": self.readahead_hits,
            "readahead_started": self.readahead_started,
            "readahead_skipped": self.readahead_skipped,
            "fetch_errors": self.fetch_errors,
            "reads": self.reads,
            "readahead_bytes": self.readahead_bytes,
            "readahead_unread_bytes": self.readahead_unread_bytes,
        }


@dataclass(slots=True)
class _InFlight:
    size: int
    counters: ReadCounters
    prefetch: bool
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    error: BaseException | None = None


class BlockCache:
    def __init__(self, budget: int, *, max_concurrent_gets: int = 16,
                 failure_ttl: float = FAILURE_TTL) -> None:
        if budget <= 0:
            raise ValueError("budget must be positive")
        self.budget = budget
        self._lru: cachetools.LRUCache[BlockKey, bytes] = cachetools.LRUCache(
            maxsize=budget, getsizeof=len
        )
        self._reserved = 0
        self._inflight: dict[BlockKey, _InFlight] = {}
        # Cached by read-ahead, not yet read; the counters to charge if evicted unread.
        self._prefetched: dict[BlockKey, ReadCounters] = {}
        self._room = trio.Event()
        self._limiter = trio.CapacityLimiter(max_concurrent_gets)
        self.failure_ttl = failure_ttl
        # By object version (key[:3]): the kernel's re-read may ask for another block size.
        self._failed: OrderedDict[tuple[Any, ...], tuple[float, BaseException]] = OrderedDict()
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

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run a background task (e.g. a disk-cache write) in the cache's nursery."""
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    # -- accounting ----------------------------------------------------------------------------
    @property
    def cached_bytes(self) -> int:
        return int(self._lru.currsize)

    @property
    def reserved_bytes(self) -> int:
        return self._reserved

    @property
    def used_bytes(self) -> int:
        return self.cached_bytes + self._reserved

    def _evict_for(self, size: int) -> bool:
        """Evict LRU blocks until `size` more bytes fit; False if they cannot."""
        while self.used_bytes + size > self.budget and self._lru:
            key, data = self._lru.popitem()
            unread = self._prefetched.pop(key, None)
            if unread is not None:
                unread.readahead_unread_bytes += len(data)
        return self.used_bytes + size <= self.budget

    def _note_peak(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    def _release(self, size: int) -> None:
        self._reserved -= min(size, self.budget)
        self._room.set()
        self._room = trio.Event()

    def _recent_failure(self, key: BlockKey) -> BaseException | None:
        failed = self._failed.get(key[:3])
        if failed is None:
            return None
        when, error = failed
        if trio.current_time() - when < self.failure_ttl:
            return error
        del self._failed[key[:3]]
        return None

    # -- reads ---------------------------------------------------------------------------------
    def peek(self, key: BlockKey) -> bytes | None:
        """The cached block, or None; refreshes its LRU position but counts nothing."""
        return self._lru.get(key)

    def count_hit(self, key: BlockKey, counters: ReadCounters) -> None:
        counters.cache_hits += 1
        if key in self._prefetched:
            del self._prefetched[key]
            counters.readahead_hits += 1

    async def get(self, key: BlockKey, size: int, fetch: Fetch, counters: ReadCounters) -> bytes:
        """The block `key` (expected `size` bytes), from the cache or fetched once."""
        missed = False
        while True:
            data = self._lru.get(key)
            if data is not None:
                if not missed:
                    self.count_hit(key, counters)
                return data
            flight = self._inflight.get(key)
            if flight is not None:
                if flight.prefetch:
                    counters.readahead_hits += 1
                    flight.prefetch = False  # a reader wants it now: count it once
                break
            failed = self._recent_failure(key)
            if failed is not None:
                raise failed
            if not missed:
                counters.cache_misses += 1
                missed = True
            # While we wait for room another reader may fetch this very block: look again.
            if self._evict_for(min(size, self.budget)):
                self._reserved += min(size, self.budget)
                self._note_peak()
                flight = self._start(key, size, fetch, counters, prefetch=False)
                break
            await self._room.wait()
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.data is not None
        return flight.data

    def prefetch(self, key: BlockKey, size: int, fetch: Fetch, counters: ReadCounters,
                 *, readahead: bool = True) -> bool:
        """Start fetching `key` in the background if there is room now; never waits.

        `readahead=False` for the later blocks of one multi-block demand read: fetched early
        the same way, but not counted as read-ahead.
        """
        if key in self._inflight or key in self._lru:
            return True
        if self._recent_failure(key) is not None:
            return False  # the backend just failed this block: do not hammer it
        if self._nursery is None or not self._evict_for(min(size, self.budget)):
            if readahead:
                counters.readahead_skipped += 1
            return False
        self._reserved += min(size, self.budget)
        self._note_peak()
        if readahead:
            counters.readahead_started += 1
            counters.readahead_bytes += size
        self._start(key, size, fetch, counters, prefetch=readahead)
        return True

    def _start(
        self, key: BlockKey, size: int, fetch: Fetch, counters: ReadCounters, *, prefetch: bool
    ) -> _InFlight:
        if self._nursery is None:
            self._release(size)
            raise RuntimeError("BlockCache.run() is not running")
        flight = _InFlight(size=size, counters=counters, prefetch=prefetch)
        self._inflight[key] = flight
        self._nursery.start_soon(self._fetch, key, flight, fetch)
        return flight

    async def _fetch(self, key: BlockKey, flight: _InFlight, fetch: Fetch) -> None:
        try:
            async with self._limiter:
                data = await fetch()
        except Exception as e:
            if isinstance(e, DsmountError):
                # An expected failure: its message is all readers need. Its traceback and
                # chained exceptions would keep the frames of the HTTP stack, with a partly
                # read body, alive in a reference cycle for as long as it is remembered.
                e.__traceback__ = e.__context__ = e.__cause__ = None
            flight.error = e
            flight.counters.fetch_errors += 1
            now = trio.current_time()
            self._failed[key[:3]] = (now, e)
            self._failed.move_to_end(key[:3])
            # Forget the expired ones (oldest first), and never hold more than the cap.
            while self._failed and (
                len(self._failed) > _FAILURES_MAX
                or now - next(iter(self._failed.values()))[0] >= self.failure_ttl
            ):
                self._failed.popitem(last=False)
            if flight.prefetch:
                log.debug("read-ahead of %s failed: %s", key[1], e)
        else:
            self._failed.pop(key[:3], None)
            flight.data = data
            flight.counters.blocks_fetched += 1
            flight.counters.bytes_fetched += len(data)
        finally:
            del self._inflight[key]
            self._release(flight.size)
            if flight.data is not None and self._evict_for(len(flight.data)):
                self._lru[key] = flight.data
                if flight.prefetch:
                    self._prefetched[key] = flight.counters
            self._note_peak()
            flight.done.set()

    # -- invalidation --------------------------------------------------------------------------
    def drop(self, datastore_id: int, path: str | None = None) -> int:
        """Forget cached blocks of a datastore (or one path of it). Returns blocks dropped."""
        doomed = [
            k for k in self._lru if k[0] == datastore_id and (path is None or k[1] == path)
        ]
        for k in doomed:
            self._lru.pop(k, None)
            self._prefetched.pop(k, None)
        return len(doomed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.budget,
            "cached_bytes": self.cached_bytes,
            "in_flight_bytes": self._reserved,
            "peak_bytes": self.peak_bytes,
            "blocks": len(self._lru),
        }
