"""What one file open for writing holds, and what all of them share.

A `WriteHandle` holds the state every way of writing shares: the base version the content
starts from, the logical `size`, whether the content is `emptied` or `dirty`, `base_valid`,
the storage `upload` and its journal record, and the first `error` (a handle that failed
commits nothing, ever). What its content is beyond that is its `strategy`:
- None: its content is its base version (or, if `emptied`, nothing at all);
- a `StreamedWrite` (node/fs/write_streamed.py): a sequential writer whose parts are cut and
  uploaded as they come;
- a `StagedWrite` (node/fs/write_staged.py): the content lives in a local staging file, the
  base fetched only where a write does not cover it.
Both answer the one `WriteStrategy` protocol; the write path (node/fs/writes.py) picks one at
the first write or truncate, and a `StreamedWrite` replaces itself with a `StagedWrite` when it
is asked for anything a stream cannot serve (a write out of sequence, a read, a truncate). A
commit or a truncate to nothing drops the strategy: the handle holds its base again.

Invariants:
- a strategy is switched or dropped only once its part uploads have ended (`settle`);
- a strategy gives back what it holds (buffers, staging file) exactly once, in `discard`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import trio

from dsmount.errors import Changed, NoSpace
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import Node
from dsmount.node.fs.staging import Staging
from dsmount.storage.base import Entry, Upload


class PartBuffer(bytearray):
    """One part being filled by a sequential writer, then uploaded as it is (no copy: the
    HTTP stack sends it directly). A bytearray whose deepcopy is itself: the SDK's pipeline
    deep-copies a request for its history when an attempt fails, and the buffer must not be
    duplicated (nor is it changed while an upload holds it)."""

    def __deepcopy__(self, memo: dict[int, object]) -> PartBuffer:
        return self


class BufferPool:
    """Part buffers, reused: a new 8 MiB buffer costs 2,048 page faults to fill (the daemon
    gives big allocations straight back to the system, see node/malloc.py), a reused one
    none. Every buffer, in use or idle, holds its bytes of the block cache's one budget; idle
    ones beyond `keep` are freed, and (node/fs/writes.py) all but one once no file is open for
    writing, that one shortly after."""

    def __init__(self, cache: BlockCache, size: int, keep: int, deadline: float,
                 linger: float = 2.0, request_bytes: int | None = None) -> None:
        self.cache = cache
        self.size = size
        self.request_bytes = self.REQUEST_BYTES if request_bytes is None else request_bytes
        self.keep = keep
        self.deadline = deadline
        self.linger = linger  # seconds the last idle buffer outlives the last writer
        self._generation = 0  # times the last writer left: a later time voids a pending drain
        self.idle: list[PartBuffer] = []
        self.held = 0  # buffers reserved from the budget (idle or in use)
        self.waiting = 0  # get() calls waiting for room in the budget

    #: What one FUSE write request being served holds outside the part buffers: libfuse's
    #: receive buffer (up to max_pages 256 = 1 MiB of data, plus a header page) and pyfuse3's
    #: bytes copy of the data. Every writer reserves it (`reserve_request`) from its first
    #: write to its release, so N writers' requests fit in the budget beside their buffers
    #: (measured without it: 16 writers x 256 MiB peaked at budget + 104 MiB, ~30 MiB of it
    #: request memory of writers waiting for a buffer).
    REQUEST_BYTES = 2 * (1024**2 + 4096)

    async def get(self) -> PartBuffer:
        if self.idle:
            return self.idle.pop()
        await self._reserve(self.size, "a write buffer")
        self.held += 1
        return PartBuffer(self.size)

    async def reserve_request(self) -> None:
        await self._reserve(self.request_bytes, "a writer's requests")

    def release_request(self) -> None:
        self.cache.release(self.request_bytes)

    async def _reserve(self, size: int, what: str) -> None:
        self.waiting += 1  # meanwhile a returned buffer goes back to the cache, to us
        try:
            with trio.move_on_after(self.deadline):
                await self.cache.reserve(size)
                return
        finally:
            self.waiting -= 1
        raise NoSpace(
            f"no room in the memory budget for {what} within {self.deadline:.0f}s: "
            f"{self.held} buffers of files open for writing hold it"
        )

    def put(self, buf: PartBuffer) -> None:
        # A writer waiting for room waits on the cache's budget: give the bytes back there.
        if len(self.idle) < self.keep and not self.waiting:
            self.idle.append(buf)
        else:
            self._free()

    def _free(self) -> None:
        self.held -= 1
        self.cache.release(self.size)

    def drain(self, keep: int = 0) -> None:
        """Free idle buffers beyond `keep`."""
        while len(self.idle) > keep:
            self.idle.pop()
            self._free()

    def writers_gone(self, nursery: trio.Nursery | None) -> None:
        """No file is open for writing: free the idle buffers, the last one `linger` seconds
        later unless a writer came meanwhile. `tar x` and `cp -r` open one file after another;
        freeing that buffer at each close made every file allocate and fault in a new one
        (measured: a third of the daemon's time on a tar of 100 KiB files)."""
        self.drain(keep=1)
        self._generation += 1
        if nursery is None:
            self.drain()
        elif self.idle:
            nursery.start_soon(self._drain_later, self._generation)

    async def _drain_later(self, generation: int) -> None:
        await trio.sleep(self.linger)
        if generation == self._generation:
            self.drain()


@dataclass(frozen=True)
class WriteSettings:
    #: Bytes per staged part (a Put Block, or Put Ranges of a file share): 8 MiB, the read
    #: block size, amortises a request's latency over enough bytes to reach full bandwidth.
    part_size: int = 8 * 1024**2
    #: Parts of one file uploading at once: 4 keep a link busy while the writer fills the next
    #: (more only holds more memory per writer).
    parts_in_flight: int = 4
    #: Part uploads in flight across all files (like max_concurrent_gets for reads).
    max_concurrent_puts: int = 16
    #: Files open for writing at once; beyond it open/creat fails with ENFILE and a log line.
    #: Write buffers come out of the one memory budget, so this bounds how thinly it is shared.
    max_open_files: int = 64
    #: Where writes are staged on disk (the daemon puts it below the cache or state directory).
    staging_dir: str = "/var/lib/dsmount/staging"
    #: Bytes all staging files may hold together (random writes, updates, shadow copies).
    staging_budget: int = 10 * 1024**3
    #: Keep a disk copy of sequential writes, so a writer that seeks back (zip, HDF5) is
    #: served; without room for it the write still streams, and a seek back gets EINVAL.
    shadow: bool = True
    #: Objects below a blob directory that rename moves one by one; beyond it EXDEV.
    dir_rename_limit: int = 1000
    #: A close or fsync waits at most this long for its upload (EIO after).
    deadline: float = 60.0


class WriteStrategy(Protocol):
    """How a handle's written content is held, uploaded and committed. Every method may
    change the handle's shared state (`size`, `base_valid`, `upload`, `error`); only a
    `StreamedWrite` replaces `WriteHandle.strategy` (with a `StagedWrite`)."""

    async def write(self, offset: int, data: bytes) -> None:
        """Write `data` at `offset` (the caller then grows `size`)."""

    async def read(self, offset: int, length: int) -> bytes:
        """The content's bytes `[offset, offset + length)`, all below `size`."""

    async def truncate(self, size: int) -> None:
        """Make the content `size` bytes (not 0: the write path resets the handle for that)."""

    async def commit(self) -> Entry:
        """Upload what is not on storage yet and commit it: the new version's Entry."""

    async def settle(self) -> None:
        """Wait until no part upload of this content runs (a checkpoint if none can)."""

    def cancel(self) -> None:
        """Cancel the part uploads running in the background."""

    def discard(self) -> None:
        """Give back buffers and the staging file (the upload stays with the handle)."""


@dataclass(eq=False)
class WriteResources:
    """What the handles' strategies draw on: the one memory budget, the staging area, the
    part-buffer pool, the limit on part uploads across all files, and the nursery background
    part uploads run in (None until `WritePath.run`)."""

    cache: BlockCache
    settings: WriteSettings
    staging: Staging
    pool: BufferPool
    puts: trio.CapacityLimiter
    nursery: trio.Nursery | None = None

    async def ensure_upload(self, h: WriteHandle) -> Upload:
        if h.upload is None:
            h.upload = await h.ds.backend.begin_upload(h.node.path, base=h.base)
            await self.journal(h)
        return h.upload

    async def journal(self, h: WriteHandle) -> None:
        """Record the upload's temporary object, if any, before anything is put into it."""
        upload = h.upload
        if upload is not None and upload.temp_path is not None and h.journal_id is None:
            h.journal_id = await self.staging.record(h.ds.cache_identity, upload.temp_path)


@dataclass(eq=False)
class WriteHandle:
    node: Node
    ds: Datastore
    flags: int
    base: Entry | None  # the committed version the content starts from (None: no such file)
    size: int
    strategy: WriteStrategy | None = None  # None: the content is the base (or nothing)
    emptied: bool = False  # the content was truncated to nothing (or the file is new)
    created: bool = False  # a new file not committed yet (never on storage)
    dirty: bool = False  # the content differs from the base: a commit is due
    base_valid: int = 0  # bytes of the content still equal to the base where not staged
    lock: trio.Lock = field(default_factory=trio.Lock)
    upload: Upload | None = None
    journal_id: str | None = None
    error: BaseException | None = None
    reported: bool = False  # the error was counted as a failed commit
    orphan: bool = False  # unlinked while open: never committed
    released: bool = False
    request_room: bool = False  # holds BufferPool.REQUEST_BYTES of the budget (from a write)

    def check(self) -> None:
        """Raise the handle's error, if it failed."""
        if self.error is not None:
            raise self.error

    async def read_base(self, offset: int, length: int) -> bytes:
        """Bytes of the base version, pinned to its ETag."""
        assert self.base is not None
        data = await self.ds.backend.read(self.node.path, offset, length, self.base.etag)
        if len(data) != length:
            raise Changed(f"{self.ds.key}/{self.node.path}: the file changed while open for "
                          "writing")
        return data
