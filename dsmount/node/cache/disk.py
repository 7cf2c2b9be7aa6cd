"""Optional on-disk block cache: survives a daemon restart, bounded by its own byte budget.

Each block is one file, where the block's key names the datastore's storage location (not the
per-attachment id), the object path, its ETag, the block index and the block size — so a block
is only ever found again for the very same bytes. (The memory cache keys byte ranges; the
fetcher writes a block here once all of its bytes are in memory.)

The format: a file named `<BLAKE2b-256 of the key, hex>-<CRC-32 of the payload, 8 hex>.blk`
holds the block's bytes and nothing else, so it can back a file served by FUSE passthrough
(the kernel reads the block file from offset 0, with no header to skip). The name plays the
role a header used to: the digest says whose block it is, the file's size is the block's
length, and the CRC is checked on every `get`: a file whose bytes do not match it (torn,
truncated, grown, rotted, or another block's bytes) is deleted, counted in `corrupt` and
reported as a miss, never served. A file is written to a temp name and renamed (atomic) and
never modified in place, so a name that was verified once keeps holding those bytes.

Why CRC-32 (zlib) and not a cryptographic hash: the check guards against torn writes and
bit rot of our own files in a root-only (0700) directory, not against an attacker who could
as well rename a file; zlib's CRC-32 runs at ~2.2 GB/s here, BLAKE2b at ~0.4-0.56 GB/s,
and a warm into the disk cache hashes every byte it downloads. Files of the older formats
(`<digest hex>.blk` with a header: magic DSMB1 with BLAKE2b checksums, or DSMB2 with CRC-32)
are deleted without a warning when the cache starts: it is a cache, they are fetched again.

Invariants:
- All blocking work of a put or get (the CRC, the file I/O) runs in worker threads, never on
  the trio thread: hashing a block there stalled every read and the GET dispatch behind it
  (measured: 1 GiB warmed into the disk cache at 0.61x the SDK, most of the trio thread's
  time in BLAKE2b). Puts queue and are written in batches (up to `BATCH_BYTES` per thread
  call, `WRITERS` calls at once), so 100 KiB blocks do not each pay a thread hop.
- `used_bytes` (the sum of the payloads on disk) plus the queued puts never exceed the
  budget: a put evicts for its size counting what is queued before it.
- A block is found from the moment its put is queued (`put_soon`), not only once its file
  is written: a reader that asks for it in between (the memory cache evicted it meanwhile,
  as a warm through a small memory budget does) is served the queued bytes instead of
  fetching the block a second time.
- The index (key digest -> file name and size, LRU order) is rebuilt by scanning the
  directory at start, recency from the files' mtimes (a `get` touches its file); `has` and
  `get` find a block without knowing its CRC.
- `backing_path` names only files on disk whose bytes this process has verified: it wrote
  them (their CRC was computed from the bytes in memory), or a `get` checked their CRC since
  it started. A file found at startup is trusted only once a `get` has checked it, so
  passthrough never serves bytes nobody verified; a discarded, evicted or replaced file
  leaves the verified set at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import trio

log = logging.getLogger(__name__)

_BLOCK_NAME = re.compile(r"([0-9a-f]{64})-([0-9a-f]{8})\.blk")  # digest hex, CRC-32 hex
_CRC = slice(65, 73)  # where a block file's name holds its CRC


def _digest(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=32).hexdigest()


def block_file_name(digest: str, data: bytes | memoryview) -> str:
    """The name of the file holding `data` for the key whose digest is `digest`."""
    return f"{digest}-{zlib.crc32(data):08x}.blk"


WRITERS = 4  # worker threads writing at once
BATCH_BYTES = 8 * 1024 * 1024  # written per thread call at most (one block, or many small)


class _Pending:
    """A block waiting to be written (and, once `done`, under which name, or the error)."""

    __slots__ = ("data", "digest", "done", "error", "name", "size", "tmp")

    def __init__(self, digest: str, tmp: str, data: bytes) -> None:
        self.digest = digest
        self.tmp = tmp
        self.data = data
        self.size = len(data)
        self.name: str | None = None  # set once written (the name holds the CRC)
        self.error: OSError | None = None
        self.done = trio.Event()


def _write_batch(directory: str, batch: list[_Pending]) -> None:
    """In a worker thread: each block to a temp file (".tmp-" names are what a restart sweeps
    away) renamed to its name - atomic; not fsynced (a cache can lose its last blocks)."""
    for item in batch:
        name = block_file_name(item.digest, item.data)
        tmp = os.path.join(directory, item.tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, item.data)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(directory, name))
            item.name = name
        except OSError as e:
            item.error = e
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_verified(path: str, size: int, crc: int) -> bytes | None:
    """In a worker thread: the file's bytes if they are `size` long and match `crc`, else
    None. Plain descriptors and pread, not a buffered file object: a disk-cache epoch of
    small files does this once per file, and the object's set-up was a visible part of its
    CPU."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # One more byte than the block: a longer file is not this block.
        payload = os.pread(fd, size + 1, 0)
        if len(payload) != size or zlib.crc32(payload) != crc:
            return None
        os.utime(fd)  # recency survives a restart (the index is rebuilt by mtime)
    finally:
        os.close(fd)
    return payload


class DiskCache:
    def __init__(self, directory: str | Path, budget: int) -> None:
        self.dir = Path(directory)
        self._dir_str = str(self.dir)
        self.budget = budget
        # key digest (hex) -> (file name, payload size), least recently used first
        self._index: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._verified: set[str] = set()  # file names whose bytes this process checked
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
        self._unwritten: dict[str, bytes] = {}  # key digest -> data of puts not yet on disk
        self._tmp_ids = itertools.count()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        self._scan()
        self._used = sum(size for _, size in self._index.values())  # kept in step with _index

    def _scan(self) -> None:
        """Rebuild the index from the directory: block files by mtime (the most recent
        last); files of an older format, and temp files a stopped writer left, deleted."""
        entries = []
        with os.scandir(self.dir) as it:
            for entry in it:
                match = _BLOCK_NAME.fullmatch(entry.name)
                if match is None:
                    if entry.name.endswith(".blk") or entry.name.startswith(".tmp-"):
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                entries.append((st.st_mtime_ns, entry.name, st.st_size, match.group(1)))
        for _, name, size, digest in sorted(entries):
            older = self._index.pop(digest, None)
            if older is not None:  # the same block under another CRC: keep the newer
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self._dir_str, older[0]))
            self._index[digest] = (name, size)

    @property
    def used_bytes(self) -> int:
        return self._used

    def has(self, key: str) -> bool:
        """Whether a block is stored (or queued to be) under `key`; no file is read."""
        digest = _digest(key)
        return digest in self._index or digest in self._unwritten

    def backing_path(self, key: str) -> str | None:
        """The absolute path of the file holding exactly the block's bytes, for FUSE
        passthrough, or None: only a file on disk (not a put still queued) whose bytes this
        process verified — it wrote them, or a `get` checked their CRC since it started. A
        file found at startup is trusted only once its CRC has been checked, so passthrough
        never serves bytes nobody verified. No file I/O: it runs on the trio thread per open.
        The file may still be evicted before the caller opens it (then the open fails)."""
        entry = self._index.get(_digest(key))
        if entry is None or entry[0] not in self._verified:
            return None
        return os.path.join(self._dir_str, entry[0])

    async def get(self, key: str) -> bytes | None:
        digest = _digest(key)
        unwritten = self._unwritten.get(digest)
        if unwritten is not None:
            self.hits += 1
            return unwritten
        entry = self._index.get(digest)
        if entry is None:
            self.misses += 1
            return None
        name, size = entry
        try:
            data = await trio.to_thread.run_sync(
                _read_verified, os.path.join(self._dir_str, name), size, int(name[_CRC], 16),
                limiter=self._limiter)
        except OSError:
            data = None
        current = self._index.get(digest) == entry  # not evicted or replaced meanwhile
        if data is None:
            if current:
                self.corrupt += 1
                log.warning("disk cache: discarding corrupt block file %s", name)
                self._discard(digest)
            self.misses += 1
            return None
        if current:
            self._verified.add(name)
            self._index.move_to_end(digest)
        self.hits += 1
        return data

    def _discard(self, digest: str) -> None:
        entry = self._index.pop(digest, None)
        if entry is None:
            return
        name, size = entry
        self._used -= size
        self._verified.discard(name)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self._dir_str, name))

    def put_soon(self, key: str, data: bytes, spawn: Callable[..., bool]) -> None:
        """Queue a put now (`get` and `has` see the block from here on) and write it in a
        task started with `spawn` (which returns whether it started one)."""
        digest = self._begin(key, data)
        if digest is not None and not spawn(self._finish, digest, data):
            self._writing -= 1
            del self._unwritten[digest]

    async def put(self, key: str, data: bytes) -> None:
        digest = self._begin(key, data)
        if digest is not None:
            await self._finish(digest, data)

    def _begin(self, key: str, data: bytes) -> str | None:
        digest = _digest(key)
        if len(data) > self.budget or digest in self._unwritten:
            return None
        self._unwritten[digest] = data
        self._writing += 1
        return digest

    async def _finish(self, digest: str, data: bytes) -> None:
        try:
            await self._put(digest, data)
        finally:
            self._writing -= 1
            if self._unwritten.get(digest) is data:
                del self._unwritten[digest]

    async def flushed(self, timeout: float = 30.0) -> bool:
        """Wait until no put is under way (so what was fetched is on disk); False on timeout."""
        with trio.move_on_after(timeout):
            await trio.sleep(0)  # let puts spawned just now start
            while self._writing:
                await trio.sleep(0.005)
            return True
        return False

    async def _put(self, digest: str, data: bytes) -> None:
        size = len(data)
        # Room for it, counting the puts queued before it (they are written first).
        while self._index and self.used_bytes + self._queued_bytes + size > self.budget:
            self._discard(next(iter(self._index)))
        if self.used_bytes + self._queued_bytes + size > self.budget:
            return  # the queued puts alone fill the budget: this block is not kept
        item = _Pending(digest, f".tmp-{digest}-{os.getpid()}-{next(self._tmp_ids)}", data)
        self._queued.append(item)
        self._queued_bytes += size
        if self._writers < WRITERS:
            self._writers += 1
            try:
                await self._write_queued()
            finally:
                self._writers -= 1
        await item.done.wait()
        if item.name is None:
            log.warning("disk cache: cannot write block: %s", item.error)

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
                    await trio.to_thread.run_sync(_write_batch, self._dir_str, batch,
                                                  limiter=self._limiter)
                finally:
                    self._settle(batch)
        except BaseException:
            if self._writers == 1:  # the last writer: nobody would write what is queued
                queued, self._queued = self._queued, []
                self._settle(queued)
            raise

    def _settle(self, items: list[_Pending]) -> None:
        """Move written blocks from the queue into the index in one step (no await between
        `_queued_bytes` going down and `_used` going up: a put checking for room in between
        would count the block nowhere and overrun the budget)."""
        for item in items:
            self._queued_bytes -= item.size
            if item.name is not None:
                self._index_written(item)
            elif item.error is None:
                item.error = OSError("not written (cancelled)")
            item.done.set()

    def _index_written(self, item: _Pending) -> None:
        assert item.name is not None
        old = self._index.get(item.digest)
        if old is not None and old[0] != item.name:  # replaced by bytes of another CRC
            self._discard(item.digest)
        else:
            self._used -= old[1] if old is not None else 0
        self._index[item.digest] = (item.name, item.size)
        self._index.move_to_end(item.digest)
        self._used += item.size
        # Its CRC was computed from the bytes in memory (already checked by the fetcher).
        self._verified.add(item.name)

    def as_dict(self) -> dict[str, int | str]:
        return {"dir": str(self.dir), "budget_bytes": self.budget, "used_bytes": self.used_bytes,
                "hits": self.hits, "misses": self.misses, "corrupt_discarded": self.corrupt}
