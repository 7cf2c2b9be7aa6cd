"""Optional on-disk block cache: survives a daemon restart, bounded by its own byte budget.

Each block is one file named by a hash of its key, where the key names the datastore's
storage location (not the per-attachment id), the object path, its ETag, the block index and
the block size — so a block is only ever found again for the very same bytes. (The memory
cache keys byte ranges; the fetcher writes a block here once all of its bytes are in memory.)
A file holds a header (magic, key digest, length, CRC-32 of the payload) then the payload; it
is written to a temp name and renamed (atomic), and verified on every read: a corrupt or
foreign file is deleted and reported as a miss, never served.

Why CRC-32 (zlib) and not a cryptographic hash: the check guards against torn writes and
bit rot of our own files in a root-only (0700) directory, not against an attacker who could
as well rewrite the header; zlib's CRC-32 runs at ~2.2 GB/s here, BLAKE2b at ~0.4-0.56 GB/s,
and a warm into the disk cache hashes every byte it downloads. Files of the older format
(BLAKE2b, magic DSMB1) are dropped as misses without a warning.

Invariants:
- All blocking work of a put or get (hashing, the file I/O) runs in worker threads, never on
  the trio thread: hashing a block there stalled every read and the GET dispatch behind it
  (measured: 1 GiB warmed into the disk cache at 0.61x the SDK, most of the trio thread's
  time in BLAKE2b). Puts queue and are written in batches (up to `BATCH_BYTES` per thread
  call, `WRITERS` calls at once), so 100 KiB blocks do not each pay a thread hop.
- `used_bytes` plus the queued puts never exceed the budget: a put evicts for its size
  counting what is queued before it.
- A block is found from the moment its put is queued (`put_soon`), not only once its file
  is written: a reader that asks for it in between (the memory cache evicted it meanwhile,
  as a warm through a small memory budget does) is served the queued bytes instead of
  fetching the block a second time.
- The index (name -> size, LRU order) is rebuilt by scanning the directory at start.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import trio

log = logging.getLogger(__name__)

_MAGIC = b"DSMB2\n"
_OLD_MAGICS = (b"DSMB1\n",)  # BLAKE2b checksums: dropped quietly (see the module docstring)
_HEADER = struct.Struct(f"{len(_MAGIC)}s32sQI")  # magic, key digest, length, CRC-32
_STALE = object()  # a block file of an older format


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=32).digest()


WRITERS = 4  # worker threads writing at once
BATCH_BYTES = 8 * 1024 * 1024  # written per thread call at most (one block, or many small)


class _Pending:
    """A block waiting to be written (and, once `done`, whether it was)."""

    __slots__ = ("data", "digest", "done", "error", "name", "size", "tmp", "written")

    def __init__(self, name: str, tmp: str, digest: bytes, data: bytes, size: int) -> None:
        self.name = name
        self.tmp = tmp
        self.digest = digest
        self.data = data
        self.size = size
        self.written = False
        self.error: OSError | None = None
        self.done = trio.Event()


def _write_batch(directory: Path, batch: list[_Pending]) -> None:
    """In a worker thread: each block to a temp file (".tmp-" names are what a restart sweeps
    away) renamed over its name - atomic; not fsynced (a cache can lose its last blocks)."""
    for item in batch:
        header = _HEADER.pack(_MAGIC, item.digest, len(item.data), zlib.crc32(item.data))
        tmp = os.path.join(directory, item.tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, header, item.data)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(directory, item.name))
            item.written = True
        except OSError as e:
            item.error = e
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _write_all(fd: int, header: bytes, data: bytes) -> None:
    parts = [memoryview(header), memoryview(data)]
    while parts:
        n = os.writev(fd, parts)
        while parts and n >= len(parts[0]):
            n -= len(parts.pop(0))
        if parts:
            parts[0] = parts[0][n:]


class DiskCache:
    def __init__(self, directory: str | Path, budget: int) -> None:
        self.dir = Path(directory)
        self._dir_str = str(self.dir)
        self.budget = budget
        self._index: OrderedDict[str, int] = OrderedDict()  # file name -> size, LRU first
        # Reads and writes in worker threads at once: as many as the default GETs in flight,
        # so an epoch served from a cold disk keeps as many reads queued at the device as
        # readers wait (4 left 8 readers' files queued behind each other).
        self._limiter = trio.CapacityLimiter(16)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self._writing = 0  # puts under way (see `flushed`)
        self._queued: list[_Pending] = []  # puts waiting for a writer thread
        self._queued_bytes = 0  # ... and their sizes, counted against the budget already
        self._writers = 0
        self._unwritten: dict[str, bytes] = {}  # name -> data of puts not yet on disk
        self._tmp_ids = itertools.count()
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
        """Whether a block is stored (or queued to be) under `key`; no file is read."""
        name = self._name(key)
        return name in self._index or name in self._unwritten

    async def get(self, key: str) -> bytes | None:
        name = self._name(key)
        unwritten = self._unwritten.get(name)
        if unwritten is not None:
            self.hits += 1
            return unwritten
        if name not in self._index:
            self.misses += 1
            return None
        path = os.path.join(self._dir_str, name)
        digest = _digest(key)

        def read() -> bytes | object | None:
            # Plain descriptors and pread, not a buffered file object: a disk-cache epoch of
            # small files does this once per file, and the object's set-up was a visible
            # part of its CPU.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                head = os.pread(fd, _HEADER.size, 0)
                if head[: len(_MAGIC)] in _OLD_MAGICS:
                    return _STALE
                if len(head) < _HEADER.size:
                    return None
                magic, kd, length, checksum = _HEADER.unpack(head)
                if magic != _MAGIC or kd != digest:
                    return None
                # One more byte than the block: a longer file is not this block.
                payload = os.pread(fd, length + 1, _HEADER.size)
                if len(payload) != length or zlib.crc32(payload) != checksum:
                    return None
                os.utime(fd)  # recency survives a restart (the index is rebuilt by mtime)
            finally:
                os.close(fd)
            return payload

        try:
            data = await trio.to_thread.run_sync(read, limiter=self._limiter)
        except OSError:
            data = None
        if data is _STALE:
            self._discard(name)
            self.misses += 1
            return None
        if not isinstance(data, bytes):
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

    def put_soon(self, key: str, data: bytes, spawn: Callable[..., bool]) -> None:
        """Queue a put now (`get` and `has` see the block from here on) and write it in a
        task started with `spawn` (which returns whether it started one)."""
        name = self._begin(key, data)
        if name is not None and not spawn(self._finish, name, key, data):
            self._writing -= 1
            del self._unwritten[name]

    async def put(self, key: str, data: bytes) -> None:
        name = self._begin(key, data)
        if name is not None:
            await self._finish(name, key, data)

    def _begin(self, key: str, data: bytes) -> str | None:
        name = self._name(key)
        if _HEADER.size + len(data) > self.budget or name in self._unwritten:
            return None
        self._unwritten[name] = data
        self._writing += 1
        return name

    async def _finish(self, name: str, key: str, data: bytes) -> None:
        try:
            await self._put(name, key, data, _HEADER.size + len(data))
        finally:
            self._writing -= 1
            if self._unwritten.get(name) is data:
                del self._unwritten[name]

    async def flushed(self, timeout: float = 30.0) -> bool:
        """Wait until no put is under way (so what was fetched is on disk); False on timeout."""
        with trio.move_on_after(timeout):
            await trio.sleep(0)  # let puts spawned just now start
            while self._writing:
                await trio.sleep(0.005)
            return True
        return False

    async def _put(self, name: str, key: str, data: bytes, size: int) -> None:
        # Room for it, counting the puts queued before it (they are written first).
        while self._index and self.used_bytes + self._queued_bytes + size > self.budget:
            oldest = next(iter(self._index))
            self._discard(oldest)
        if self.used_bytes + self._queued_bytes + size > self.budget:
            return  # the queued puts alone fill the budget: this block is not kept
        tmp = f".tmp-{name}-{os.getpid()}-{next(self._tmp_ids)}"
        item = _Pending(name, tmp, _digest(key), data, size)
        self._queued.append(item)
        self._queued_bytes += size
        if self._writers < WRITERS:
            self._writers += 1
            try:
                await self._write_queued()
            finally:
                self._writers -= 1
        await item.done.wait()
        if item.error is not None:
            log.warning("disk cache: cannot write block: %s", item.error)
            return
        self._used += size - self._index.get(name, 0)
        self._index[name] = size
        self._index.move_to_end(name)

    async def _write_queued(self) -> None:
        """Write what is queued, a batch per worker-thread call, until nothing is: small
        blocks (a warm of small files) share one thread hop and one wake-up of the trio
        thread instead of paying one each (measured: most of the disk cache's cost per
        100 KiB block)."""
        try:
            while self._queued:
                batch: list[_Pending] = []
                total = 0
                while self._queued and (not batch
                                        or total + self._queued[0].size <= BATCH_BYTES):
                    item = self._queued.pop(0)
                    batch.append(item)
                    total += item.size
                try:
                    await trio.to_thread.run_sync(_write_batch, self.dir, batch,
                                                  limiter=self._limiter)
                finally:
                    self._settle(batch)
        except BaseException:
            if self._writers == 1:  # the last writer: nobody would write what is queued
                queued, self._queued = self._queued, []
                self._settle(queued)
            raise

    def _settle(self, items: list[_Pending]) -> None:
        for item in items:
            self._queued_bytes -= item.size
            if item.error is None and not item.written:
                item.error = OSError("not written (cancelled)")
            item.done.set()

    def as_dict(self) -> dict[str, int | str]:
        return {"dir": str(self.dir), "budget_bytes": self.budget, "used_bytes": self.used_bytes,
                "hits": self.hits, "misses": self.misses, "corrupt_discarded": self.corrupt}
