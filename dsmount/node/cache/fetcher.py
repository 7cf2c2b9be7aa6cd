"""The fetcher: how byte ranges of one object version get into the block cache.

The fetch policy lives here, under the cache, so a read flows one way (fs -> fetcher -> cache
-> storage): try the disk cache, else one ranged read from the backend pinned to the object's
ETag; check the length; once every byte of a block is in memory, write the block to the disk
cache in the background.

Invariants:
- A `Source` names one object version (datastore id, path, ETag): bytes of an old version can
  never be served for a new one.
- A fetch of [start, end) returns exactly `end - start` bytes, or fails: a short read of a
  pinned object is an IntegrityError, of an unpinned (local) one a Changed.
- The disk cache holds whole blocks (`block_size`-aligned, the last one ending at EOF) under
  the key (storage location, path, ETag, block index, block size), whatever ranges the memory
  cache fetched them in; a fetch inside a block on disk is served from it. It is used only for
  objects with an ETag whose backend is `disk_cacheable` (a local file is already on disk).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsmount.errors import Changed, IntegrityError
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.cache.disk import DiskCache
from dsmount.node.cache.source import Source
from dsmount.storage.base import Backend


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One version of one object, as an open file handle pins it."""

    datastore_id: int
    cache_identity: str  # names the storage location across restarts (disk-cache keys)
    backend: Backend
    path: str
    etag: str | None
    size: int


class Fetcher:
    """Builds the cache's `Source` for pinned objects (see the module docstring)."""

    def __init__(self, cache: BlockCache, disk: DiskCache | None = None) -> None:
        self.cache = cache
        self.disk = disk

    def source(self, obj: ObjectRef, block_size: int) -> PinnedSource:
        disk = self.disk if obj.etag and obj.backend.capabilities.disk_cacheable else None
        return PinnedSource(obj, block_size, self.cache, disk)


class PinnedSource(Source):
    """The bytes of one pinned object version: disk cache, else a conditional ranged read."""

    __slots__ = ("cache", "disk", "obj")

    def __init__(self, obj: ObjectRef, block_size: int, cache: BlockCache,
                 disk: DiskCache | None) -> None:
        super().__init__((obj.datastore_id, obj.path, obj.etag or ""), obj.size, block_size)
        self.obj = obj
        self.cache = cache
        self.disk = disk

    def _disk_key(self, block: int) -> str:
        o = self.obj
        return f"{o.cache_identity}|{o.path}|{o.etag}|{block}|{self.unit}"

    def on_disk(self, offset: int) -> bool:
        """Whether the block holding `offset` is in the disk cache."""
        return self.disk is not None and self.disk.has(self._disk_key(offset // self.unit))

    def backing_path(self) -> str | None:
        """The disk-cache file of block 0 when it holds the whole object and is verified."""
        if self.disk is None or self.size > self.unit:
            return None
        return self.disk.backing_path(self._disk_key(0))

    def _block_range(self, block: int) -> tuple[int, int]:
        return block * self.unit, min(self.size, (block + 1) * self.unit)

    async def fetch(self, start: int, end: int) -> bytes:
        obj = self.obj
        if self.disk is not None:
            block = start // self.unit
            first, last = self._block_range(block)
            data = await self.disk.get(self._disk_key(block))
            if data is not None and len(data) == last - first:
                return data if (start, end) == (first, last) else data[start - first : end - first]
        data = await obj.backend.read(obj.path, start, end - start, obj.etag)
        if len(data) != end - start:
            if obj.etag is None:
                raise Changed(f"{obj.path}: size changed while open")
            raise IntegrityError(
                f"{obj.path}: range {start}-{end} has {len(data)} bytes, expected {end - start}"
            )
        return data

    def stored(self, start: int, end: int) -> None:
        disk = self.disk
        if disk is None:
            return
        block = start // self.unit
        name = self._disk_key(block)
        if disk.has(name):
            return
        first, last = self._block_range(block)
        data = self.cache.assemble(self.key, first, last)
        if data is not None:
            disk.put_soon(name, data, self.cache.spawn)
