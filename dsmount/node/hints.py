"""Ordered prefetch: fetching files ahead of a reader along an order it told us (a hint) or
that we guessed (directory order, node/cache/dirorder.py). One mechanism for both.

A hint is a list of files in read order, owned by its caller (uid plus a caller id: by
default the pid of the process that sent it). The scheduler walks each hint's list and
starts, for each file, one background fetch of its first `per_file` bytes into the block
cache (`BlockCache.prefetch`: pending residency, so the bytes are not evicted by read-ahead
before the reader comes), while the reader's opens (`opened`, called by the filesystem core)
consume the list. Bounds:
- A hint has at most `window_files` files fetched ahead and not yet opened; all hints together
  at most `window_bytes` (never more than half the cache budget), so ordered prefetch never
  takes more than the window from other datastores' working sets. Its GETs count against
  `gets_in_flight` of their own, not the cache's: a small file costs one request's latency,
  so many must be in flight, while the bytes stay bounded by the window.
- Hints share the window round-robin: each pass starts one file of each hint that has room.
- A file a reader passed without opening (its position is `PASSED_BY` windows behind the
  furthest one opened) is abandoned, like everything fetched ahead when a hint is replaced or
  cancelled: its pending bytes become the first to evict, and they count as wasted.

A hint ends when its list is consumed, when the same caller sends a new one (replaced), when
its caller's process exits, or when it makes no progress and is not renewed for its idle
timeout. A file the caller may not read (node/hint_access.py: the mount's own rules), that
does not exist or is not a file is skipped, never fetched.

Invariants:
- Bytes fetched ahead and not opened <= window_bytes + one file per hint (a file's size is
  known only once it is looked up, so the last one started may cross the line).
- A file is fetched ahead at most once per position in a hint, and never when its bytes are
  cached already (`prefetch` fetches only holes).
- Nothing here raises into the FUSE path: `opened` only updates counters and starts tasks.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from dsmount.errors import DsmountError, InvalidRequest, NotFound
from dsmount.node.cache.dirorder import DirOrder, DirOrderConfig
from dsmount.node.fs.core import FileSystem
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import Node
from dsmount.node.hint_access import ProcessWatch, may_read_file, reader_of_process
from dsmount.node.hint_list import (
    AHEAD,
    DROPPED,
    FETCHING,
    OPENED,
    SKIPPED,
    TODO,
    Hint,
    Key,
    PrefetchSettings,
    PrefetchStats,
)
from dsmount.storage.base import Entry
from dsmount.storage.local_access import Reader
from dsmount.storage.names import clean_path

log = logging.getLogger(__name__)

TICK = 0.5  # seconds between checks for exited callers and idle hints
ROOM_RETRY = 0.05  # seconds between tries to start a fetch the cache had no room for
PASSED_BY = 4  # windows behind the furthest file opened, a file not opened is abandoned
EARLY_MAX = 8  # windows of files opened ahead of a hint's prefetch remembered
RESOLVING_MAX = 64  # files looked up (stat, access) at once, across hints


class Prefetcher:
    """Runs hints in its own nursery (start it with `nursery.start(prefetcher.run)`)."""

    def __init__(self, core: FileSystem, settings: PrefetchSettings | None = None,
                 *, mountpoint: str = "/datastores",
                 clock: Callable[[], float] = time.monotonic,
                 dir_config: DirOrderConfig | None = None) -> None:
        self.core = core
        self.settings = s = settings or PrefetchSettings()
        self.window_bytes = max(1, min(s.window_bytes, core.cache.budget // 2))
        self.per_file = min(s.per_file, self.window_bytes)
        self.mountpoint = mountpoint.rstrip("/") or "/"
        self.clock = clock
        self.hints: dict[tuple[Any, ...], Hint] = {}
        self.stats = {"hint": PrefetchStats(), "dir": PrefetchStats()}
        self.ended: dict[str, int] = {}  # hints ended, by why
        self.ahead_bytes = 0
        self.dir_order = DirOrder(dir_config or DirOrderConfig(maximum=s.window_files))
        self._listings: dict[tuple[int, str], tuple[object, tuple[str, ...], dict[str, int]]] = {}
        # The files started (FETCHING or AHEAD) of every hint, by what an open names.
        self._by_path: dict[Key, list[tuple[Hint, int]]] = {}
        self._rr: deque[Hint] = deque()
        self._resolving = trio.CapacityLimiter(RESOLVING_MAX)
        self._gets = trio.CapacityLimiter(s.gets_in_flight)
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await trio.sleep(TICK)
                    try:
                        self._reap()
                    except Exception:  # never the daemon
                        log.exception("checking hints")
            finally:
                self._nursery = None

    # -- hints from callers --------------------------------------------------------------------
    def resolve(self, path: str, uid: int) -> tuple[Datastore, str]:
        """The datastore and the path inside it of an absolute path under the mountpoint, as
        a process of `uid` sees the mount (a private datastore of another user is not there)."""
        if not path.startswith("/"):
            raise InvalidRequest(f"{path!r} is not an absolute path")
        prefix = "" if self.mountpoint == "/" else self.mountpoint
        if not path.startswith(prefix + "/"):
            raise InvalidRequest(f"{path} is not under the mountpoint {self.mountpoint}")
        parts = clean_path(path[len(prefix):]).split("/")
        item = self.core.lookups.visible(parts[0], uid) if parts[0] else None
        if isinstance(item, dict):
            item = item.get(parts[1]) if len(parts) > 1 else None
            parts = parts[1:]
        if item is None:
            raise NotFound(f"{path} is not under an attached datastore")
        rest = "/".join(parts[1:])
        if not rest:
            raise InvalidRequest(f"{path} is a datastore, not a file in one")
        return item, rest

    def hint(self, paths: list[str], *, uid: int, reader: Reader, caller: str,
             watch_pid: int | None, append: bool = False,
             idle_timeout: float | None = None) -> dict[str, Any]:
        """Start (or with `append`, extend) the hint of (`uid`, `caller`), replacing the one
        it had. Every path is checked first: one not under an attached datastore the caller
        sees refuses the whole request, and nothing changes."""
        resolved = [self.resolve(p, uid) for p in paths]
        owner = ("hint", uid, caller)
        if not resolved and not append:
            self.cancel(uid, caller)
            return {"caller": caller, "files": 0, "added": 0, "window_files": 0,
                    "window_bytes": self.window_bytes}
        now = self.clock()
        hint = self.hints.get(owner) if append else None
        if hint is None or hint.ended is not None:
            old = self.hints.get(owner)
            if old is not None:
                self._end(old, "replaced")
            hint = Hint(owner, uid, reader, "hint", self.settings.window_files,
                        idle_timeout or self.settings.idle_timeout,
                        ProcessWatch.of(watch_pid) if watch_pid is not None else None, now)
            self._add_hint(hint)
        hint.touched = now
        for ds, path in resolved:
            hint.add(ds, path)
        self._fill()
        return {"caller": caller, "files": len(hint.paths), "added": len(resolved),
                "window_files": hint.limit_files, "window_bytes": self.window_bytes}

    def _add_hint(self, hint: Hint) -> None:
        self.hints[hint.owner] = hint
        self._rr.append(hint)

    # -- the reader's opens --------------------------------------------------------------------
    def opened(self, ds: Datastore, path: str, pid: int | None, uid: int | None) -> None:
        """A file was opened for reading through the mount (by `pid` of `uid`, when known)."""
        try:
            hinted = self._consume(ds, path, uid)
            if not hinted and self.settings.dir_order and pid is not None and uid is not None:
                self._dir_order(ds, path, pid, uid)
            self._fill()
        except Exception:  # prefetch is advice: it must never fail an open
            log.exception("prefetch bookkeeping after opening %s", path)

    def _consume(self, ds: Datastore, path: str, uid: int | None) -> bool:
        """Count the open in the hints that started the file; whether a caller's hint did
        (then the reader is not guessed for: it told us)."""
        hinted = False
        done: set[Hint] = set()
        for hint, i in list(self._by_path.get((ds.id, path), ())):
            if hint in done or (uid is not None and uid != hint.uid and uid != 0):
                continue
            done.add(hint)  # one position per open
            hinted = hinted or hint.source == "hint"
            if hint.states[i] == AHEAD:
                stats = self.stats[hint.source]
                stats.files_used += 1
                stats.bytes_used += hint.live[i][0]
            self._settle(hint, i, OPENED)
            hint.furthest = max(hint.furthest, i)
            hint.touched = self.clock()
            self._pass_by(hint)
            self._maybe_done(hint)
        # The caller's other hints: the reader may be ahead of what they started. While a
        # user has a hint, their opens are not guessed for (they told us their order).
        key = (ds.id, path)
        for hint in list(self.hints.values()):
            if hint.source != "hint" or hint in done or (uid is not None and uid != hint.uid):
                continue
            hinted = True
            hint.early[key] = None
            if len(hint.early) > EARLY_MAX * hint.limit_files:
                hint.early.popitem(last=False)
        return hinted

    def _pass_by(self, hint: Hint) -> None:
        """Abandon what the reader went past without opening (a hint partly wrong). Readers
        in parallel (DataLoader workers, each with batches in flight) open a little out of
        order: only files `PASSED_BY` windows behind the furthest one opened are given up."""
        behind = hint.furthest - PASSED_BY * hint.limit_files
        while hint.swept < behind:
            if hint.states[hint.swept] in (FETCHING, AHEAD):
                self._drop(hint, hint.swept)
            hint.swept += 1

    def _maybe_done(self, hint: Hint) -> None:
        if not hint.live and hint.next_todo() is None:
            self._end(hint, "done")

    def _dir_order(self, ds: Datastore, path: str, pid: int, uid: int) -> None:
        """Feed the directory-order guess of this reader (only from a fresh cached listing:
        it is the order the reader listed; never LIST for it)."""
        if not ds.backend.capabilities.remote:
            return  # a local file is a pread away: nothing to hide
        parent, _, name = path.rpartition("/")
        now = self.clock()
        listing = self.core.metadata.listing(ds.id, parent, ds.metadata_ttl, now)
        if listing is None:
            return
        known = self._listings.get((ds.id, parent))
        if known is None or known[0] is not listing:
            names = tuple(n for n, e in listing.entries.items() if e.kind == "file")
            known = (listing, names, {n: i for i, n in enumerate(names)})
            self._listings[(ds.id, parent)] = known
            while len(self._listings) > 64:
                del self._listings[next(iter(self._listings))]
        _, names, where = known
        index = where.get(name)
        if index is None:
            return
        owner = ("dir", pid, ds.id, parent)
        decision = self.dir_order.opened(owner, names, index, now)
        hint = self.hints.get(owner)
        if hint is not None and decision.abandon:
            gone = {join(parent, n) for n in decision.abandon}
            for i in range(hint.swept, len(hint.paths)):
                if hint.paths[i] in gone and hint.states[i] in (TODO, FETCHING, AHEAD):
                    self._drop(hint, i)
        if not decision.fetch:
            return
        if hint is None or hint.ended is not None:
            hint = Hint(owner, uid, reader_of_process(pid, uid), "dir",
                        self.settings.window_files, self.dir_order.config.idle_after,
                        None, now)
            self._add_hint(hint)
        hint.touched = now
        for n in decision.fetch:
            hint.add(ds, join(parent, n))

    # -- fetching ahead ------------------------------------------------------------------------
    def _fill(self) -> None:
        """Start files of the hints with room, one per hint per pass (round robin)."""
        if self._nursery is None:
            return
        started = True
        finished: list[Hint] = []
        while started and self.ahead_bytes < self.window_bytes:
            started = False
            for _ in range(len(self._rr)):
                hint = self._rr[0]
                self._rr.rotate(-1)
                if len(hint.live) >= hint.limit_files:
                    continue
                i = hint.next_todo()
                while i is not None and hint.early and hint.key(i) in hint.early:
                    del hint.early[hint.key(i)]  # opened already: nothing to fetch ahead
                    hint.states[i] = OPENED
                    hint.furthest = max(hint.furthest, i)
                    i = hint.next_todo()
                if i is None:
                    if not hint.live:
                        finished.append(hint)
                    continue
                hint.states[i] = FETCHING
                hint.live[i] = (0, None)
                self._by_path.setdefault(hint.key(i), []).append((hint, i))
                self._nursery.start_soon(self._fetch, hint, i)
                started = True
                if self.ahead_bytes >= self.window_bytes:
                    break
        for hint in finished:
            self._maybe_done(hint)

    async def _fetch(self, hint: Hint, i: int) -> None:
        ds, path = hint.stores[i], hint.paths[i]
        try:
            async with self._resolving:
                if hint.states[i] != FETCHING:
                    return
                entry, dirs = await self._look_up(ds, path)
            if hint.states[i] != FETCHING:
                return
            if entry is None or entry.kind != "file" or not may_read_file(
                    ds, path, entry, hint.reader, self.core.settings, dirs):
                self._skip(hint, i)
                return
            handle = self.core.reads.handle(Node(0, ds, path, entry, self.clock()), ds)
            size = min(handle.size, self.per_file)
            start, end = handle.base, handle.base + size
            if size == 0 or self.core.cache.assemble(handle.source.key, start, end) is not None:
                # Cached already (a reader got here first, or an earlier epoch): nothing to
                # fetch, and the reader has been here - that is progress.
                hint.touched = self.clock()
                self._settle(hint, i, SKIPPED)
                self._maybe_done(hint)
                return
            # The window in bytes: wait for the reader to consume (or a hint to end) first.
            while hint.states[i] == FETCHING and self.ahead_bytes > 0 \
                    and self.ahead_bytes + size > self.window_bytes:
                await self._wait()
            if hint.states[i] != FETCHING:
                return
            hint.live[i] = (size, handle.source.key)
            self.ahead_bytes += size
            while not self.core.cache.prefetch(handle.source, start, end, ds.counters,
                                               self._gets):
                # No room (the budget is smaller than the window): the reader frees some.
                await trio.sleep(ROOM_RETRY)
                if hint.states[i] != FETCHING:
                    return
            hint.states[i] = AHEAD
            stats = self.stats[hint.source]
            stats.files_prefetched += 1
            stats.bytes_prefetched += size
        except DsmountError as e:
            log.debug("prefetch of %s skipped: %s", path, e)
            if hint.states[i] == FETCHING:
                self._skip(hint, i)
        except Exception:  # a bug must cost one prefetch, never the daemon
            log.exception("prefetch of %s failed", path)
            if hint.states[i] == FETCHING:
                self._skip(hint, i)

    async def _look_up(self, ds: Datastore, path: str) -> tuple[Entry | None, list[Entry]]:
        """The file's entry and those of the directories on its way (root first); entry None
        if it does not exist."""
        lookups = self.core.lookups
        dirs = [lookups.datastore_root(ds).entry]
        if ds.backend.root_entry is not None:  # owners and modes of its own: check each
            parts = path.split("/")
            for depth in range(1, len(parts)):
                dirs.append(await lookups.stat(ds, "/".join(parts[:depth])))
        try:
            return await lookups.stat(ds, path), dirs
        except NotFound:
            return None, dirs

    async def _wait(self) -> None:
        with trio.move_on_after(TICK):
            await self._changed.wait()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _settle(self, hint: Hint, i: int, state: int) -> None:
        """A started (or TODO) position leaves the window: it becomes `state`."""
        live = hint.live.pop(i, None)
        if live is not None:
            self.ahead_bytes -= live[0]
            key = hint.key(i)
            started = self._by_path.get(key)
            if started is not None:
                started.remove((hint, i))
                if not started:
                    del self._by_path[key]
            self._poke()
        hint.states[i] = state

    def _skip(self, hint: Hint, i: int) -> None:
        self._settle(hint, i, SKIPPED)
        self.stats[hint.source].files_skipped += 1
        self._maybe_done(hint)
        self._fill()

    def _drop(self, hint: Hint, i: int) -> None:
        """Give up a position (fetched ahead, being fetched, or not started): nobody is coming
        for it."""
        if hint.states[i] == AHEAD:
            size, key = hint.live[i]
            stats = self.stats[hint.source]
            stats.files_wasted += 1
            stats.bytes_wasted += size
            if key is not None:
                self.core.cache.abandon(key)
        self._settle(hint, i, DROPPED)

    def _end(self, hint: Hint, why: str) -> None:
        if hint.ended is not None:
            return
        hint.ended = why
        if hint.source == "hint":
            self.ended[why] = self.ended.get(why, 0) + 1
        for i in list(hint.live):
            self._drop(hint, i)
        if self.hints.get(hint.owner) is hint:
            del self.hints[hint.owner]
        if hint in self._rr:
            self._rr.remove(hint)
        if hint.source == "hint":
            log.info("hint of uid %d (%s): %s after %d of %d files", hint.uid, hint.owner[2],
                     why, hint.furthest + 1, len(hint.paths))
        self._fill()

    def _reap(self) -> None:
        now = self.clock()
        for hint in list(self.hints.values()):
            if hint.watch is not None and not hint.watch.alive():
                self._end(hint, "caller exited")
            elif now - hint.touched > hint.idle_timeout:
                self._end(hint, "idle")
        self.dir_order.expire(now)

    def cancel(self, uid: int, caller: str) -> bool:
        hint = self.hints.get(("hint", uid, caller))
        if hint is not None:
            self._end(hint, "cancelled")
        return hint is not None

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        hints = [h for h in self.hints.values() if h.source == "hint"]
        return {
            "window_bytes": self.window_bytes,
            "window_files": self.settings.window_files,
            "ahead_bytes": self.ahead_bytes,
            "hints_active": len(hints),
            "dir_guesses_active": len(self.hints) - len(hints),
            "hints_ended": dict(self.ended),
            "hints": self.stats["hint"].as_dict(),
            "dir_order": self.stats["dir"].as_dict(),
        }

    def hints_of(self, uid: int | None) -> list[dict[str, Any]]:
        """The caller hints `uid` may see (None: all)."""
        return [{"caller": h.owner[2], **h.describe()} for h in self.hints.values()
                if h.source == "hint" and (uid is None or h.uid == uid)]


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name
