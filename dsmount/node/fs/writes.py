"""The write path: files open for writing on read-write datastores, the strategy each one
writes with, and the commit that makes a new version visible at close or fsync.

Which strategy a handle's content gets (node/fs/write_handle.py holds the protocol):
- a new file, or one truncated to nothing, written from offset 0 onwards is STREAMED
  (`StreamedWrite`, node/fs/write_streamed.py): parts of `part_size` are cut from the writer's
  bytes as they come and uploaded in the background (`parts_in_flight` per file), their memory
  reserved from the block cache's one budget before it is used (a writer waits for room, it
  never overshoots the budget);
- an append (a write at the end of an existing file) is STREAMED too, after the base's
  committed content is kept server-side (`Upload.kept`): only the new bytes travel;
- anything else (a write before the end or past it, a truncate to a non-zero size, a read
  through the handle of something written) is STAGED in a local file (`StagedWrite`,
  node/fs/write_staged.py), parts of the base fetched only where a write does not cover them;
  a sequential writer that seeks back continues STAGED from its shadow copy (the stream
  replaces itself on the handle).
A handle with no strategy holds its base version (or nothing, once emptied): reads go to the
base, a commit of a new or emptied file writes an empty version.
A commit (`commit`, from FUSE flush = close(2), fsync and release) waits for the part uploads,
uploads what is left and commits (`Upload.commit`): readers see the old version or the whole
new one. Its error is the writer's error (EIO, ENOSPC, ESTALE...), within `deadline`; a
handle that failed commits nothing, ever, and reports the same error to every later call.

Invariants: nothing here imports FUSE; every method raises only `dsmount.errors` errors;
memory reserved from the cache is released exactly once (a part's when its upload ends); a
handle's strategy is dropped only after its part uploads ended, and then gives back what it
holds (`discard`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import trio

from dsmount.errors import DsmountError, NotFound, TimedOut, TooManyWriters
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import Node
from dsmount.node.fs.staging import Staging
from dsmount.node.fs.write_handle import (
    BufferPool,
    WriteHandle,
    WriteResources,
    WriteSettings,
    WriteStrategy,
)
from dsmount.node.fs.write_staged import StagedWrite
from dsmount.node.fs.write_streamed import StreamedWrite
from dsmount.storage.base import Entry

log = logging.getLogger(__name__)

__all__ = ["WritePath", "WriteHandle", "WriteSettings"]

# How long an open at the writers' cap, or a detach with open files, waits for RELEASEs already
# on their way (milliseconds in practice; what is really still open is refused after this).
RELEASE_GRACE = 2.0

OnCommit = Callable[[Node, Entry], None]
OnAbandon = Callable[[Node], None]


class WritePath:
    def __init__(self, cache: BlockCache, settings: WriteSettings, on_commit: OnCommit,
                 on_abandon: OnAbandon | None = None) -> None:
        self.cache = cache
        self.settings = settings
        self.staging = Staging(settings.staging_dir, settings.staging_budget)
        self.on_commit = on_commit
        self.on_abandon = on_abandon or (lambda node: None)
        self.by_node: dict[int, set[WriteHandle]] = {}
        self.open_count = 0
        self._released = trio.Event()  # set (and replaced) whenever a writer is released
        # Request room is capped so that every writer open at once holds at most half the
        # budget with it (small budgets: tests, tiny nodes).
        request = min(BufferPool.REQUEST_BYTES, cache.budget // (2 * settings.max_open_files))
        self.pool = BufferPool(cache, settings.part_size, 2 * settings.parts_in_flight,
                               settings.deadline, request_bytes=request)
        self.resources = WriteResources(cache, settings, self.staging, self.pool,
                                        trio.CapacityLimiter(settings.max_concurrent_puts))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery part uploads run in; returns only when cancelled."""
        if self.staging.enabled:
            self.staging.start()
        async with trio.open_nursery() as nursery:
            self.resources.nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.resources.nursery = None

    # -- opening ----------------------------------------------------------------------------------
    async def room(self) -> None:
        """When every writer's slot is taken, wait a moment for one to be given back before
        `open` refuses: close(2) does not wait for the kernel's RELEASE, so a program that
        closes one file and opens the next can arrive before that RELEASE does."""
        with trio.move_on_after(RELEASE_GRACE):
            while self.open_count >= self.settings.max_open_files:
                await self._released.wait()

    def open(self, node: Node, ds: Datastore, flags: int, *, created: bool) -> WriteHandle:
        if self.open_count >= self.settings.max_open_files:
            log.warning("[%s] %s: %d files are open for writing, the [writes] max_open_files "
                        "cap", ds.key, node.path, self.open_count)
            raise TooManyWriters(
                f"{self.open_count} files are open for writing ([writes] max_open_files)"
            )
        base = None if created or node.entry.etag is None else node.entry
        size = 0 if base is None else base.size
        h = WriteHandle(node, ds, flags, base, size, emptied=base is None, dirty=created,
                        base_valid=size, created=created)
        self.open_count += 1
        ds.writes.writers_open += 1
        self.by_node.setdefault(node.ino, set()).add(h)
        return h

    def size_of(self, node: Node) -> int | None:
        """What getattr should say of a file with writes not yet committed, or None."""
        sizes = [h.size for h in self.by_node.get(node.ino, ()) if h.dirty and not h.orphan]
        return max(sizes) if sizes else None

    def writing(self, node: Node) -> bool:
        return bool(self.by_node.get(node.ino))

    # -- the writer's calls -----------------------------------------------------------------------
    async def write(self, h: WriteHandle, offset: int, data: bytes) -> int:
        async with h.lock:
            h.check()
            if not data:
                return 0
            if not h.request_room:
                await self.pool.reserve_request()  # may wait for room, as a buffer does
                h.request_room = True
            if h.strategy is None:
                h.strategy = await self._choose(h, offset)
            await h.strategy.write(offset, data)
            h.size = max(h.size, offset + len(data))
            h.dirty = True
            h.ds.writes.bytes_written += len(data)
            return len(data)

    async def read(self, h: WriteHandle, offset: int, length: int) -> bytes:
        async with h.lock:
            h.check()
            length = min(length, h.size - offset)
            if length <= 0:
                return b""
            if h.strategy is None:
                return b"" if h.emptied else await h.read_base(offset, length)
            return await h.strategy.read(offset, length)

    async def truncate(self, h: WriteHandle, size: int) -> None:
        async with h.lock:
            h.check()
            if size == 0:
                await self._drain(h)
                h.check()
                self._reset(h)
                if h.upload is not None and h.upload.kept:
                    # It grafts onto the old content; the new content starts from nothing.
                    upload, h.upload = h.upload, None
                    await upload.abort()
                h.size, h.emptied, h.dirty, h.base_valid = 0, True, True, 0
                return
            if h.strategy is None:
                h.strategy = await StagedWrite.start(h, self.resources)
            elif size == h.size:
                return
            await h.strategy.truncate(size)
            h.dirty = True

    async def commit(self, h: WriteHandle) -> None:
        """Make what was written visible (close, fsync); raises the upload's error."""
        async with h.lock:
            await self._commit_locked(h)

    async def _commit_locked(self, h: WriteHandle) -> None:
        if h.error is not None:
            self._count_failure(h)
            raise h.error
        if not h.dirty:
            return
        if h.orphan:
            await self._drain(h)
            await self._discard(h)
            return
        deadline = self.settings.deadline
        try:
            with trio.move_on_after(deadline) as scope:
                entry = await self._commit(h)
            if scope.cancelled_caught:
                raise TimedOut(f"{h.ds.key}/{h.node.path}: the upload took longer than "
                               f"{deadline:.0f}s; nothing was committed")
        except DsmountError as e:
            self._fail(h, e)
            self._count_failure(h)
            log.warning("[%s] %s: commit failed, nothing committed: %s", h.ds.key, h.node.path, e)
            raise
        h.ds.writes.commits += 1
        if h.journal_id is not None:
            await self.staging.forget(h.journal_id)
            h.journal_id = None
        self._reset(h)
        h.upload = None
        h.base, h.size, h.base_valid = entry, entry.size, entry.size
        h.emptied = h.dirty = h.created = False
        self.on_commit(h.node, entry)

    async def _commit(self, h: WriteHandle) -> Entry:
        if h.strategy is not None:
            return await h.strategy.commit()
        # New, or emptied: an empty version.
        upload = await self.resources.ensure_upload(h)
        return await upload.commit_whole(b"")

    async def release(self, h: WriteHandle) -> None:
        if h.released:
            return
        try:
            async with h.lock:
                if h.error is None and h.dirty:
                    # close(2) already got any error from flush; release has no caller.
                    with contextlib.suppress(DsmountError):
                        await self._commit_locked(h)
        finally:
            h.released = True
            await self._drain(h, cancel=h.error is not None or h.orphan)
            await self._discard(h)
            if h.created and not h.orphan and not self._others_wrote(h):
                self.on_abandon(h.node)  # a new file that never reached storage: forget it
            if h.request_room:
                h.request_room = False
                self.pool.release_request()
            self.open_count -= 1
            self._released.set()
            self._released = trio.Event()
            if self.open_count == 0:
                self.pool.writers_gone(self.resources.nursery)  # idle buffers give the budget back
            h.ds.writes.writers_open -= 1
            handles = self.by_node.get(h.node.ino)
            if handles is not None:
                handles.discard(h)
                if not handles:
                    del self.by_node[h.node.ino]

    def _others_wrote(self, h: WriteHandle) -> bool:
        """Whether another handle of the same file committed it or may still do so."""
        return any(o is not h and not o.created for o in self.by_node.get(h.node.ino, ()))

    async def commit_node(self, node: Node) -> None:
        """Commit every handle of `node` with pending writes (before a rename moves it)."""
        for h in list(self.by_node.get(node.ino, ())):
            await self.commit(h)

    def orphan(self, node: Node) -> None:
        """`node` was unlinked: its open writers keep writing, but commit nothing."""
        for h in self.by_node.get(node.ino, ()):
            h.orphan = True

    async def recover(self, ds: Datastore) -> int:
        """Delete the temporary objects a killed daemon left on `ds` (journal records)."""
        records = await self.staging.pending(ds.cache_identity)
        for record in records:
            try:
                await ds.backend.delete(record.path)
            except NotFound:
                pass
            except DsmountError as e:
                log.warning("[%s] leftover temporary %s: %s", ds.key, record.path, e)
                continue
            await self.staging.forget(record.id)
        if records:
            log.info("[%s] removed %d temporary file(s) of interrupted writes", ds.key,
                     len(records))
        return len(records)

    # -- choosing a strategy ----------------------------------------------------------------------
    async def _choose(self, h: WriteHandle, offset: int) -> WriteStrategy:
        """The strategy a first write at `offset` needs."""
        if (h.emptied or h.size == 0) and offset == 0:
            return StreamedWrite.start(h, self.resources, origin=0)
        if offset == h.size and h.base is not None:
            h.upload = await h.ds.backend.begin_upload(h.node.path, base=h.base, append=True)
            await self.resources.journal(h)
            if h.upload.kept == h.size:
                return StreamedWrite.start(h, self.resources, origin=h.size)
            # Nothing could be kept (e.g. a blob without a block list): rewrite it.
        return await StagedWrite.start(h, self.resources)

    async def _drain(self, h: WriteHandle, *, cancel: bool = False) -> None:
        """Wait for the part uploads of `h` (cancelling them first with `cancel`)."""
        if cancel and h.strategy is not None:
            h.strategy.cancel()
        with trio.CancelScope(shield=cancel):
            if h.strategy is None:
                await trio.lowlevel.checkpoint()
            else:
                await h.strategy.settle()

    # -- ends -------------------------------------------------------------------------------------
    def _fail(self, h: WriteHandle, error: DsmountError) -> None:
        if h.error is None:
            h.error = error
        if h.strategy is not None:
            h.strategy.cancel()

    def _count_failure(self, h: WriteHandle) -> None:
        if not h.reported:
            h.reported = True
            h.ds.writes.failed_commits += 1

    def _reset(self, h: WriteHandle) -> None:
        """Forget the content: its strategy's buffers, staging file, parts (not the upload)."""
        if h.strategy is not None:
            h.strategy.discard()
            h.strategy = None

    async def _discard(self, h: WriteHandle) -> None:
        """Drop everything `h` staged (release, or an orphan's commit)."""
        self._reset(h)
        upload, h.upload = h.upload, None
        clean = True if upload is None else await upload.abort()
        if h.journal_id is not None and clean:
            try:
                await self.staging.forget(h.journal_id)
            except DsmountError as e:
                log.warning("write journal: %s", e)
            h.journal_id = None
        h.dirty = False
