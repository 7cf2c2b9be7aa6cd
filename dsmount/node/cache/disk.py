"""Optional on-disk block cache: survives a daemon restart, bounded by its own byte budget.

Each block is one file named by a hash of its key, where the key names the datastore's
storage location (not the per-attachment id), the object path, its ETag, the block index and
the block size — so a block is only ever found again for the very same bytes. (The memory
cache keys byte ranges; the fetcher writes a block here once all of its bytes are in memory.)
A file holds a header (magic, key digest, length, BLAKE2b checksum of the payload) then the
payload; it is
written to a temp name and renamed (atomic), and verified on every read: a corrupt or foreign
file is deleted and reported as a miss, never served.

Blocking file I/O runs in worker threads. The index (name -> size, LRU order) is rebuilt by
scanning the directory at start.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
from collections import OrderedDict
from pathlib import Path

import trio

from dsmount.shared.fileutil import atomic_write

log = logging.getLogger(__name__)

_MAGIC = b"DSMB1\n"
_HEADER = struct.Struct(f"{len(_MAGIC)}s32sQ32s")  # magic, key digest, length, checksum


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=32).digest()


class DiskCache:
    def __init__(self, directory: str | Path, budget: int) -> None:
        self.dir = Path(directory)
        self.budget = budget
        self._index: OrderedDict[str, int] = OrderedDict()  # file name -> size, LRU first
        self._limiter = trio.CapacityLimiter(4)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self._writing = 0  # puts under way (see `flushed`)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        entries = []
        for p in self.dir.glob("*.blk"):
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, p.name, st.st_size))
        for _, name, size in sorted(entries):
            self._index[name] = size
        self._used = sum(self._index.values())  # kept in step with _index: puts are O(1)
        for tmp in self.dir.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    @property
    def used_bytes(self) -> int:
        return self._used

    def _name(self, key: str) -> str:
        return _digest(key).hex() + ".blk"

    def has(self, key: str) -> bool:
        """Whether a block is stored under `key` (by the index: no file is read)."""
        return self._name(key) in self._index

    async def get(self, key: str) -> bytes | None:
        name = self._name(key)
        if name not in self._index:
            self.misses += 1
            return None
        path = self.dir / name
        digest = _digest(key)

        def read() -> bytes | None:
            with open(path, "rb") as f:
                raw = f.read()
            if len(raw) < _HEADER.size:
                return None
            magic, kd, length, checksum = _HEADER.unpack_from(raw)
            payload = raw[_HEADER.size :]
            if magic != _MAGIC or kd != digest or length != len(payload):
                return None
            if hashlib.blake2b(payload, digest_size=32).digest() != checksum:
                return None
            os.utime(path)
            return payload

        try:
            data = await trio.to_thread.run_sync(read, limiter=self._limiter)
        except OSError:
            data = None
        if data is None:
            self.corrupt += 1
            log.warning("disk cache: discarding corrupt block file %s", name)
            self._discard(name)
            self.misses += 1
            return None
        self._index.move_to_end(name)
        self.hits += 1
        return data

    def _discard(self, name: str) -> None:
        self._used -= self._index.pop(name, 0)
        with contextlib.suppress(OSError):
            (self.dir / name).unlink()

    async def put(self, key: str, data: bytes) -> None:
        size = _HEADER.size + len(data)
        if size > self.budget:
            return
        name = self._name(key)
        self._writing += 1
        try:
            await self._put(name, key, data, size)
        finally:
            self._writing -= 1

    async def flushed(self, timeout: float = 30.0) -> bool:
        """Wait until no put is under way (so what was fetched is on disk); False on timeout."""
        with trio.move_on_after(timeout):
            await trio.sleep(0)  # let puts spawned just now start
            while self._writing:
                await trio.sleep(0.005)
            return True
        return False

    async def _put(self, name: str, key: str, data: bytes, size: int) -> None:
        while self._index and self.used_bytes + size > self.budget:
            oldest = next(iter(self._index))
            self._discard(oldest)
        header = _HEADER.pack(_MAGIC, _digest(key), len(data),
                              hashlib.blake2b(data, digest_size=32).digest())
        path = self.dir / name

        def write() -> None:
            # ".tmp-" names are what a restart sweeps away (see __init__).
            atomic_write(path, (header, data), 0o600, durable=False, prefix=f".tmp-{name}-")

        try:
            await trio.to_thread.run_sync(write, limiter=self._limiter)
        except OSError as e:
            log.warning("disk cache: cannot write block: %s", e)
            return
        self._used += size - self._index.get(name, 0)
        self._index[name] = size
        self._index.move_to_end(name)

    def as_dict(self) -> dict[str, int | str]:
        return {"dir": str(self.dir), "budget_bytes": self.budget, "used_bytes": self.used_bytes,
                "hits": self.hits, "misses": self.misses, "corrupt_discarded": self.corrupt}
