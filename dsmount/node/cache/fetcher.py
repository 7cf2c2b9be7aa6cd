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
  objects with an ETag on remote storage (a local file is already on disk).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dsmount.errors import Changed, IntegrityError
from dsmount.node.cache.blocks import BlockCache, Source
from dsmount.node.cache.disk import DiskCache
from dsmount.storage.base import Backend

log = logging.getLogger(__name__)


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

    def source(self, obj: ObjectRef, block_size: int) -> Source:
        key = (obj.datastore_id, obj.path, obj.etag or "")
        backend, path, etag, size = obj.backend, obj.path, obj.etag, obj.size
        disk = self.disk if etag and backend.kind != "local" else None
        cache = self.cache

        def disk_key(block: int) -> str:
            return f"{obj.cache_identity}|{path}|{etag}|{block}|{block_size}"

        def block_range(block: int) -> tuple[int, int]:
            return block * block_size, min(size, (block + 1) * block_size)

        async def fetch(start: int, end: int) -> bytes:
            if disk is not None:
                block = start // block_size
                first, last = block_range(block)
                data = await disk.get(disk_key(block))
                if data is not None and len(data) == last - first:
                    whole = (start, end) == (first, last)
                    return data if whole else data[start - first : end - first]
            data = await backend.read(path, start, end - start, etag)
            if len(data) != end - start:
                if etag is None:
                    raise Changed(f"{path}: size changed while open")
                raise IntegrityError(
                    f"{path}: range {start}-{end} has {len(data)} bytes, expected {end - start}"
                )
            return data

        def stored(start: int, end: int) -> None:
            assert disk is not None
            block = start // block_size
            name = disk_key(block)
            if disk.has(name):
                return
            first, last = block_range(block)
            data = cache.assemble(key, first, last)
            if data is not None:
                cache.spawn(disk.put, name, data)

        return Source(key, size, block_size, fetch, stored if disk is not None else None)
