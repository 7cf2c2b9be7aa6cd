"""The read path: open file handles pinned to one object version, and reads through the
fetcher with the read-ahead policy deciding what to fetch ahead.

Invariants:
- An open handle is pinned to the ETag seen at open: its blocks are cached under that ETag and
  every backend read is conditional on it, so a reader never sees a mix of versions.
- A read never waits longer than `request_deadline`; after it the reader gets TimedOut.
- A read that falls inside one cached block is answered with a zero-copy memoryview.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from dsmount.errors import Changed, NotFound, TimedOut
from dsmount.node.cache.fetcher import Fetcher, ObjectRef
from dsmount.node.cache.readahead import (
    ReadaheadConfig,
    ReadaheadState,
    blocks_for_read,
    blocks_to_prefetch,
)
from dsmount.node.fs.attributes import FsSettings, mark_stale
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import Node
from dsmount.node.fs.metadata import MetadataCache


@dataclass(eq=False)
class FileHandle:
    node: Node
    datastore: Datastore
    obj: ObjectRef
    readahead: ReadaheadState
    prefetched_to: int = -1  # highest block index read-ahead has asked for

    @property
    def etag(self) -> str | None:
        return self.obj.etag

    @property
    def size(self) -> int:
        return self.obj.size


class ReadPath:
    def __init__(
        self,
        fetcher: Fetcher,
        metadata: MetadataCache,
        settings: FsSettings,
        invalidate_inode: Callable[[int], None],
    ) -> None:
        self.fetcher = fetcher
        self.metadata = metadata
        self.settings = settings
        self.invalidate_inode = invalidate_inode
        self.readahead_config = ReadaheadConfig(
            block_size=settings.block_size,
            initial=settings.block_size,
            maximum=max(settings.block_size, settings.readahead_max),
            seek_tolerance=min(settings.block_size, 1024**2),
        )

    def handle(self, node: Node, ds: Datastore) -> FileHandle:
        """A handle pinned to the version `node.entry` describes now."""
        obj = ObjectRef(ds.id, ds.cache_identity, ds.backend, node.path, node.entry.etag,
                        node.entry.size)
        return FileHandle(node, ds, obj, ReadaheadState(self.readahead_config))

    async def read(self, h: FileHandle, offset: int, length: int) -> bytes | memoryview:
        size = h.size
        if offset >= size or length <= 0:
            return b""
        length = min(length, size - offset)
        h.datastore.counters.reads += 1
        bs = self.settings.block_size
        window = h.readahead.observe(offset, length)
        if window:
            self._prefetch(h, offset, length, window)
        elif h.prefetched_to >= 0:
            h.prefetched_to = -1  # random access: start the window afresh next time
        # Fast path: the whole read lies in one cached block (the common case for streaming
        # readers): no timeout scope, no copy (pyfuse3 takes any buffer).
        idx = offset // bs
        if (offset + length - 1) // bs == idx:
            block = self.fetcher.peek(h.obj, idx, bs)
            if block is not None:
                self.fetcher.count_hit(h.obj, idx, bs, h.datastore.counters)
                h.datastore.counters.bytes_read += length
                start = offset - idx * bs
                return memoryview(block)[start : start + length]
            small = self.settings.random_block_size
            if not window and length <= small < bs:
                bs = small  # not sequential: fetch only the neighbourhood of this read
        deadline = self.settings.request_deadline
        with trio.move_on_after(deadline) as scope:
            try:
                return await self._read_timed(h, offset, length, bs)
            except (Changed, NotFound):
                # The object was replaced or deleted: stop trusting what we know about it, and
                # make the kernel drop its cached attributes too.
                mark_stale(h.node)
                self.metadata.drop(h.datastore.id, h.node.path)
                self.invalidate_inode(h.node.ino)
                raise
        assert scope.cancelled_caught
        raise TimedOut(f"{h.datastore.key}/{h.node.path}: read took longer than {deadline:.0f}s")

    def _prefetch(self, h: FileHandle, offset: int, length: int, window: int) -> None:
        """Start GETs for the blocks of the read-ahead window not yet asked for."""
        bs = self.settings.block_size
        ahead = blocks_to_prefetch(offset, length, window, bs, h.size)
        first = max(ahead.start, h.prefetched_to + 1)
        for idx in range(first, ahead.stop):
            if not self.fetcher.prefetch(h.obj, idx, bs, h.datastore.counters):
                return  # no room: read-ahead is the first thing to give way
            h.prefetched_to = idx

    async def _read_timed(self, h: FileHandle, offset: int, length: int, bs: int
                          ) -> bytes | memoryview:
        """`_read`, timed into the datastore's stall histogram when a block it needs is not in
        memory yet (missing or in flight): reads served from memory are never observed."""
        needed = blocks_for_read(offset, length, bs, h.size)
        if all(self.fetcher.peek(h.obj, idx, bs) is not None for idx in needed):
            return await self._read(h, offset, length, bs)
        started = trio.current_time()
        try:
            return await self._read(h, offset, length, bs)
        finally:
            h.datastore.stalls.observe(trio.current_time() - started)

    async def _read(self, h: FileHandle, offset: int, length: int, bs: int
                    ) -> bytes | memoryview:
        counters = h.datastore.counters
        needed = blocks_for_read(offset, length, bs, h.size)
        # Start the later blocks of a multi-block read before waiting, so their GETs overlap.
        for idx in list(needed)[1:]:
            self.fetcher.prefetch(h.obj, idx, bs, counters, readahead=False)
        parts = []
        for idx in needed:
            block = await self.fetcher.get(h.obj, idx, bs, counters)
            start = max(offset - idx * bs, 0)
            end = min(offset + length - idx * bs, len(block))
            parts.append(memoryview(block)[start:end])
        # One block: a view of it, no copy (as the fast path; the cache keeps the block alive).
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        counters.bytes_read += len(data)
        return data
