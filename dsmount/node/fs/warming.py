"""Warming as an operation of the filesystem core: the few things `node/warm.py` needs of
`FileSystem`, behind one small facade the core owns (`FileSystem.warming`), so the warm jobs
never reach into the core's parts.

A warm walks and reads a datastore as the mount would: `stat` and `listing` answer from the
metadata cache when it is fresh and leave what they fetched in it (later lookups through the
mount need no backend), and `read_file` reads a file front to back through the very read path
FUSE reads take (`ReadPath`, its read-ahead, the disk cache), so the blocks land under the keys
a reader will look up - a version's packed files under their pack's.

Invariants:
- A warm read goes through a view of the datastore with counters of its own (it does not show
  as FUSE reads or stalls) and a backend wrapper that counts the bytes it downloaded; what was
  cached already costs nothing and counts nothing.
- A file the kernel does not know gets a private node (ino 0 is never handed out): warming
  never adds to the inode table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from dsmount.node.cache.blocks import BlockCache, ReadCounters
from dsmount.node.cache.disk import DiskCache
from dsmount.node.fs.attributes import FsSettings
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import InodeTable, Node
from dsmount.node.fs.lookup import Lookups, close_listing
from dsmount.node.fs.metadata import MetadataCache
from dsmount.node.fs.reads import ReadPath
from dsmount.storage.base import Backend, Entry
from dsmount.storage.manifest import Location


@dataclass
class Tally:
    fetched: int = 0  # bytes the backend returned


class CountingBackend(Backend):
    """A backend that passes every call through and counts the bytes `read` returned (also
    of the objects a located file lives in: same tally)."""

    def __init__(self, inner: Backend, tally: Tally | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.tally = tally or Tally()
        self.kind = inner.kind
        self.capabilities = inner.capabilities
        self.list_on_lookup = inner.list_on_lookup
        self.local_namespace = inner.local_namespace
        self.entry_now = inner.entry_now  # type: ignore[method-assign]
        self.stats = inner.stats

    async def stat(self, path: str) -> Entry:
        return await self.inner.stat(path)

    def list(self, path: str) -> AsyncIterator[list[Entry]]:
        return self.inner.list(path)

    async def read(self, path: str, offset: int, length: int, etag: str | None = None) -> bytes:
        data = await self.inner.read(path, offset, length, etag)
        self.tally.fetched += len(data)
        return data

    def locate(self, path: str) -> Location:
        return self.inner.locate(path)

    def objects(self) -> Backend:
        return CountingBackend(self.inner.objects(), self.tally)

    def content_bytes(self) -> int:
        return self.inner.content_bytes()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


class Warming:
    """What a warm job may ask of the core (see the module docstring)."""

    def __init__(self, lookups: Lookups, metadata: MetadataCache, inodes: InodeTable,
                 reads: ReadPath, settings: FsSettings, clock: Callable[[], float],
                 cache: BlockCache, disk: DiskCache | None) -> None:
        self._lookups = lookups
        self._metadata = metadata
        self._inodes = inodes
        self._reads = reads
        self._settings = settings
        self._clock = clock
        self._cache = cache
        self._disk = disk

    def room(self) -> tuple[str, int]:
        """Where warmed bytes go and that cache's budget: ("disk", bytes) when there is a disk
        cache, else ("memory", bytes)."""
        if self._disk is not None:
            return "disk", self._disk.budget
        return "memory", self._cache.budget

    async def flushed(self) -> None:
        """Return once every block queued for the disk cache is written."""
        if self._disk is not None:
            await self._disk.flushed()

    async def stat(self, ds: Datastore, path: str) -> Entry:
        return await self._lookups.stat(ds, path)

    async def listing(self, ds: Datastore, directory: str) -> dict[str, Entry]:
        """The entries of `directory`: a fresh cached listing, else listed and cached."""
        cached = self._metadata.listing(ds.id, directory, ds.metadata_ttl, self._clock())
        if cached is not None:
            return cached.entries
        pages = ds.backend.list(directory)
        entries: dict[str, Entry] = {}
        try:
            async for page in pages:
                for e in page:
                    entries[e.name] = e
        finally:
            await close_listing(pages)
        self._metadata.put_listing(ds.id, directory, entries, self._clock(),
                                   local=ds.backend.local_namespace)
        return entries

    async def read_file(self, ds: Datastore, path: str, entry: Entry,
                        progress: Callable[[int], None]) -> int:
        """Read file `path` (as `entry` describes it) whole through the read path, calling
        `progress` with each block's length as it is read; the bytes this downloaded."""
        counting = CountingBackend(ds.backend)
        view = replace(ds, backend=counting, counters=ReadCounters())
        node = self._inodes.find(ds, path)
        if node is None or node.entry.etag != entry.etag or node.entry.size != entry.size:
            node = Node(0, ds, path, entry, self._clock())
        handle = self._reads.handle(node, view)
        # A warm reads the whole file: start with the widest read-ahead window, no ramp.
        handle.readahead.next_offset = 0
        handle.readahead.window = handle.readahead.config.maximum
        bs = self._settings.block_size
        offset = 0
        while offset < entry.size:
            n = min(bs, entry.size - offset)
            await self._reads.read(handle, offset, n)
            offset += n
            progress(n)
        return counting.tally.fetched
