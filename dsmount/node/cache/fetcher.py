"""The fetcher: how one block of one object version gets into the block cache.

The fetch policy lives here, under the cache, so a read flows one way (fs -> fetcher -> cache
-> storage): try the disk cache, else one ranged read from the backend pinned to the object's
ETag; check the length the object's size promises; write the block back to the disk cache in
the background.

Invariants:
- A block key names one object version (datastore id, path, ETag) and one block (size, index):
  a block of an old version can never be served for a new one.
- A block has exactly `min(block_size, size - offset)` bytes, or the fetch fails: a short read
  of a pinned object is an IntegrityError, of an unpinned (local) one a Changed.
- The disk cache is used only for objects with an ETag on remote storage (a local file is
  already on disk).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsmount.errors import Changed, IntegrityError
from dsmount.node.cache.blocks import BlockCache, BlockKey, Fetch, ReadCounters
from dsmount.node.cache.disk import DiskCache
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
    """Reads blocks of pinned objects through the block cache (see the module docstring)."""

    def __init__(self, cache: BlockCache, disk: DiskCache | None = None,
                 block_size: int | None = None) -> None:
        self.cache = cache
        self.disk = disk
        # The sequential block size: a smaller (random-read) block missing on disk is cut from
        # the whole block there, so what `dsmount warm` put on disk serves every read.
        self.block_size = block_size

    @staticmethod
    def key(obj: ObjectRef, idx: int, bs: int) -> BlockKey:
        return (obj.datastore_id, obj.path, obj.etag or "", bs, idx)

    def peek(self, obj: ObjectRef, idx: int, bs: int) -> bytes | None:
        return self.cache.peek(self.key(obj, idx, bs))

    def count_hit(self, obj: ObjectRef, idx: int, bs: int, counters: ReadCounters) -> None:
        self.cache.count_hit(self.key(obj, idx, bs), counters)

    async def get(self, obj: ObjectRef, idx: int, bs: int, counters: ReadCounters) -> bytes:
        return await self.cache.get(self.key(obj, idx, bs), *self._job(obj, idx, bs), counters)

    def prefetch(self, obj: ObjectRef, idx: int, bs: int, counters: ReadCounters,
                 *, readahead: bool = True) -> bool:
        return self.cache.prefetch(self.key(obj, idx, bs), *self._job(obj, idx, bs), counters,
                                   readahead=readahead)

    def _job(self, obj: ObjectRef, idx: int, bs: int) -> tuple[int, Fetch]:
        offset = idx * bs
        expected = max(0, min(bs, obj.size - offset))
        backend = obj.backend
        path = obj.path
        etag = obj.etag
        disk = self.disk if etag and backend.kind != "local" else None
        disk_key = f"{obj.cache_identity}|{path}|{etag}|{idx}|{bs}"
        whole = self.block_size
        if whole is None or bs >= whole or whole % bs:
            whole = None
        else:
            widx = offset // whole
            whole_key = f"{obj.cache_identity}|{path}|{etag}|{widx}|{whole}"
            whole_len = max(0, min(whole, obj.size - widx * whole))
            cut = offset - widx * whole

        async def fetch() -> bytes:
            if disk is not None:
                data = await disk.get(disk_key)
                if data is not None and len(data) == expected:
                    return data
                if whole is not None:
                    data = await disk.get(whole_key)
                    if data is not None and len(data) == whole_len:
                        return data[cut : cut + expected]
            data = await backend.read(path, offset, expected, etag)
            if len(data) != expected:
                if etag is None:
                    raise Changed(f"{path}: size changed while open")
                raise IntegrityError(
                    f"{path}: block {idx} has {len(data)} bytes, expected {expected}"
                )
            if disk is not None:
                self.cache.spawn(disk.put, disk_key, data)
            return data

        return expected, fetch
