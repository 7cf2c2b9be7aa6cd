"""The read path: open file handles pinned to one object version, and reads through the
block cache with the read policy (node/cache/readahead.py) deciding what to fetch.

Invariants:
- An open handle is pinned to the ETag seen at open: its bytes are cached under that ETag and
  every backend read is conditional on it, so a reader never sees a mix of versions.
- A file that fits in one block is fetched whole with one GET started at open (unless the
  kernel probably still holds its pages), so it overlaps the FUSE round trips of open and read.
- A read never waits longer than `request_deadline`; after it the reader gets TimedOut.
- A read that falls inside one cached extent is answered with a zero-copy memoryview.
- A packed file of a version (a byte range of a pack object, `Backend.locate`) is read
  as that range of its pack: the cache keys the pack's bytes, so files sharing a pack share
  what was fetched. While the whole version fits in half the cache budget a read fetches the
  pack block (`block_size`) around it and starts fetching the rest of its pack, so a
  shuffled epoch fetches each pack block about once, mostly before its files are read. While
  it fits in half the disk cache instead, a read fetches the pack block around it unless that
  block is on disk (then just its own bytes, from disk), so memory does not churn. Otherwise
  only the file's own bytes, so bytes fetched per file stay within its size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from dsmount.errors import Changed, NotFound, TimedOut
from dsmount.node.cache.fetcher import Fetcher, ObjectRef, PinnedSource
from dsmount.node.cache.readahead import (
    ReadaheadConfig,
    ReadaheadState,
    fetch_range,
    ranges_ahead,
)
from dsmount.node.fs.attributes import FsSettings, mark_stale
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import Node
from dsmount.node.fs.metadata import MetadataCache

# The first read-ahead window of a sequential stream (at most a block): small, so that two
# random reads which happen to be neighbours fetch little more than they read.
READAHEAD_INITIAL = 1024**2


@dataclass(eq=False)
class FileHandle:
    node: Node
    datastore: Datastore
    obj: ObjectRef  # the object holding the file's bytes (its own, or its pack)
    source: PinnedSource
    readahead: ReadaheadState
    size: int  # the file's
    base: int = 0  # where the file starts in `obj` (a pack); 0 for a file of its own
    spread: bool = False  # fetch whole blocks of the pack around a read, and the whole pack
    spread_disk: bool = False  # fetch whole blocks not yet in the disk cache
    frontier: int = 0  # read-ahead has asked for the bytes up to here (file offsets)

    @property
    def etag(self) -> str | None:
        return self.obj.etag


class ReadPath:
    def __init__(
        self,
        fetcher: Fetcher,
        metadata: MetadataCache,
        settings: FsSettings,
        invalidate_inode: Callable[[int], None],
    ) -> None:
        self.fetcher = fetcher
        self.cache = fetcher.cache
        self.metadata = metadata
        self.settings = settings
        self.invalidate_inode = invalidate_inode
        bs = settings.block_size
        initial = min(bs, READAHEAD_INITIAL)
        self.readahead_config = ReadaheadConfig(
            block_size=bs,
            initial=initial,
            maximum=max(initial, settings.readahead_max),
            seek_tolerance=min(bs, 1024**2),
            align=settings.read_align,
        )

    def handle(self, node: Node, ds: Datastore) -> FileHandle:
        """A handle pinned to the version `node.entry` describes now."""
        state = ReadaheadState(self.readahead_config)
        backend = ds.backend
        if backend.capabilities.locate:  # a version served from its manifest
            where = backend.locate(node.path)
            obj = ObjectRef(ds.id, ds.cache_identity, backend.objects(), where.object,
                            where.etag, where.object_size)
            source = self.fetcher.source(obj, self.settings.block_size)
            packed = where.object_size > where.length
            twice = 2 * backend.content_bytes()
            spread = packed and twice <= self.cache.budget
            disk = self.fetcher.disk
            spread_disk = packed and not spread and disk is not None and twice <= disk.budget
            return FileHandle(node, ds, obj, source, state, where.length, where.offset, spread,
                              spread_disk)
        obj = ObjectRef(ds.id, ds.cache_identity, ds.backend, node.path, node.entry.etag,
                        node.entry.size)
        source = self.fetcher.source(obj, self.settings.block_size)
        return FileHandle(node, ds, obj, source, state, node.entry.size)

    def _spread_pack(self, h: FileHandle) -> None:
        """A spreading handle's first touch of a pack starts fetching all of it, block by
        block: a shuffled epoch reads every file of the version, so the pack's other files are
        coming, and fetching it now overlaps their FUSE round trips instead of making each
        first reader of a block wait for it. Read-ahead: it gives way under memory pressure."""
        self.cache.prefetch(h.source, 0, h.obj.size, h.datastore.counters)

    def _in_object(self, h: FileHandle, start: int, end: int) -> tuple[int, int]:
        """[start, end) of the file as a range of its object; widened to the pack blocks
        around it when the handle spreads."""
        start, end = start + h.base, end + h.base
        if h.spread or (h.spread_disk and not (h.source.on_disk(start)
                                               and h.source.on_disk(end - 1))):
            bs = self.settings.block_size
            start = start - start % bs
            end = min(h.obj.size, -(-end // bs) * bs)
        return start, end

    def backing_file(self, h: FileHandle) -> str | None:
        """The disk-cache file holding exactly this file's bytes, verified (a file of its own
        that fits in one block, on disk whole): the kernel can read it itself (passthrough).
        The daemon sees no READ of it: counted as an open by passthrough, with its size."""
        if h.base or not 0 < h.size <= self.settings.block_size or h.size != h.obj.size:
            return None
        path = h.source.backing_path()
        if path is not None:
            counters = h.datastore.counters
            counters.passthrough_opens += 1
            counters.passthrough_bytes += h.size
        return path

    def opened(self, h: FileHandle, *, pages_kept: bool) -> None:
        """Start the one GET of a file that fits in one block, unless the kernel probably
        still holds its pages (`pages_kept`: this version was open before) - then a read may
        never come. Read-ahead, so it gives way under memory pressure. Not for local files:
        a pread takes microseconds (nothing to overlap), and one replaced between open and
        read must still fail the read (ESTALE) rather than serve the version opened."""
        if (0 < h.size <= self.settings.block_size and not pages_kept
                and h.obj.backend.capabilities.remote):
            self.cache.prefetch(h.source, *self._in_object(h, 0, h.size), h.datastore.counters)
            h.frontier = h.size
            if h.spread:
                self._spread_pack(h)

    def read_now(self, h: FileHandle, offset: int, length: int) -> bytes | memoryview | None:
        """`read` when the whole read lies in one cached extent (streaming readers, packed
        members, second epochs): a zero-copy view, with nothing awaited. None: nothing was
        counted or observed, await `read`."""
        size = h.size
        if offset >= size or length <= 0:
            return b""
        length = min(length, size - offset)
        counters = h.datastore.counters
        view = self.cache.cached(h.source.key, h.base + offset, length, counters)
        if view is None:
            return None
        counters.reads += 1
        window = h.readahead.observe(offset, length)
        if window:
            self._ahead(h, offset, length, window)
        else:
            h.frontier = 0  # random access: the read-ahead window starts afresh next time
        counters.bytes_read += length
        return view

    async def read(self, h: FileHandle, offset: int, length: int) -> bytes | memoryview:
        now = self.read_now(h, offset, length)
        if now is not None:
            return now
        size = h.size
        length = min(length, size - offset)
        counters = h.datastore.counters
        counters.reads += 1
        window = h.readahead.observe(offset, length)
        if not window:
            h.frontier = 0
        cfg = self.readahead_config
        want = self._in_object(h, *fetch_range(offset, length, window, cfg, size))
        if h.spread:
            self._spread_pack(h)

        def ahead() -> None:
            if window:
                self._ahead(h, offset, length, window)

        deadline = self.settings.request_deadline
        with trio.move_on_after(deadline) as scope:
            try:
                data = await self.cache.read(h.source, h.base + offset, length, want, counters,
                                             ahead)
            except (Changed, NotFound):
                # The object was replaced or deleted: stop trusting what we know about it, and
                # make the kernel drop its cached attributes too.
                mark_stale(h.node)
                self.metadata.drop(h.datastore.id, h.node.path)
                self.invalidate_inode(h.node.ino)
                raise
            counters.bytes_read += len(data)
            return data
        assert scope.cancelled_caught
        raise TimedOut(f"{h.datastore.key}/{h.node.path}: read took longer than {deadline:.0f}s")

    def _ahead(self, h: FileHandle, offset: int, length: int, window: int) -> None:
        """Start GETs for the read-ahead window not yet asked for."""
        for start, end in ranges_ahead(h.frontier, offset, length, window,
                                       self.readahead_config, h.size):
            if not self.cache.prefetch(h.source, *self._in_object(h, start, end),
                                       h.datastore.counters):
                return  # no room: read-ahead is the first thing to give way
            h.frontier = end
