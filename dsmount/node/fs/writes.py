"""The write path: files open for writing on read-write datastores, their part uploads, and
the commit that makes a new version visible at close or fsync.

How a write handle moves between its modes (see write_handle.py):
- a new file, or one truncated to nothing, written from offset 0 onwards STREAMs: parts of
  `part_size` are cut from the writer's bytes as they come and uploaded in the background
  (`parts_in_flight` per file), their memory reserved from the block cache's one budget
  before it is used (a writer waits for room, it never overshoots the budget);
- an append (a write at the end of an existing file) STREAMs too, after the base's committed
  content is kept server-side (`Upload.kept`): only the new bytes travel;
- anything else (a write before the end or past it, a truncate to a non-zero size, a read
  through the handle of something written) is STAGED in a local file (`staging`), parts of
  the base fetched only where a write does not cover them; a sequential writer that seeks
  back continues STAGED from its shadow copy.
A commit (`commit`, from FUSE flush = close(2), fsync and release) waits for the part uploads,
uploads what is left and commits (`Upload.commit`): readers see the old version or the whole
new one. Its error is the writer's error (EIO, ENOSPC, ESTALE...), within `deadline`; a
handle that failed commits nothing, ever, and reports the same error to every later call.

Invariants: nothing here imports FUSE; every method raises only `dsmount.errors` errors;
memory reserved from the cache is released exactly once (a part's when its upload ends).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import trio

from dsmount.errors import (
    DsmountError,
    InvalidRequest,
    NoSpace,
    NotFound,
    TimedOut,
    TooManyWriters,
)
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import Node
from dsmount.node.fs.staging import Staging
from dsmount.node.fs.write_handle import (
    CLEAN,
    STAGED,
    STREAM,
    BufferPool,
    PartBuffer,
    WriteHandle,
    WriteSettings,
)
from dsmount.node.fs.write_staged import StagedOps
from dsmount.storage.base import Entry

log = logging.getLogger(__name__)

__all__ = ["WritePath", "WriteHandle", "WriteSettings"]

OnCommit = Callable[[Node, Entry], None]
OnAbandon = Callable[[Node], None]


class WritePath(StagedOps):
    def __init__(self, cache: BlockCache, settings: WriteSettings, on_commit: OnCommit,
                 on_abandon: OnAbandon | None = None) -> None:
        self.cache = cache
        self.settings = settings
        self.staging = Staging(settings.staging_dir, settings.staging_budget)
        self.on_commit = on_commit
        self.on_abandon = on_abandon or (lambda node: None)
        self.by_node: dict[int, set[WriteHandle]] = {}
        self.open_count = 0
        self._puts = trio.CapacityLimiter(settings.max_concurrent_puts)
        # Request room is capped so that every writer open at once holds at most half the
        # budget with it (small budgets: tests, tiny nodes).
        request = min(BufferPool.REQUEST_BYTES, cache.budget // (2 * settings.max_open_files))
        self.pool = BufferPool(cache, settings.part_size, 2 * settings.parts_in_flight,
                               settings.deadline, request_bytes=request)
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery part uploads run in; returns only when cancelled."""
        if self.staging.enabled:
            self.staging.start()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # -- opening ----------------------------------------------------------------------------------
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
        h.slots = trio.Semaphore(self.settings.parts_in_flight)
        h.idle.set()
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
            self._check(h)
            if not data:
                return 0
            if not h.request_room:
                await self.pool.reserve_request()  # may wait for room, as a buffer does
                h.request_room = True
            await self._prepare(h, offset)
            if h.mode == STREAM:
                await self._stream(h, data)
            else:
                await self._staged_write(h, offset, data)
            h.size = max(h.size, offset + len(data))
            h.dirty = True
            h.ds.writes.bytes_written += len(data)
            return len(data)

    async def read(self, h: WriteHandle, offset: int, length: int) -> bytes:
        async with h.lock:
            self._check(h)
            length = min(length, h.size - offset)
            if length <= 0:
                return b""
            if h.mode == CLEAN:
                return b"" if h.emptied else await self._base_read(h, offset, length)
            if h.mode == STREAM:
                await self._to_staged(h)
            return await self._staged_read(h, offset, length)

    async def truncate(self, h: WriteHandle, size: int) -> None:
        async with h.lock:
            self._check(h)
            if size == 0:
                await self._drain(h)
                self._check(h)
                self._reset(h)
                if h.upload is not None and h.upload.kept:
                    # It grafts onto the old content; the new content starts from nothing.
                    upload, h.upload = h.upload, None
                    await upload.abort()
                h.size, h.emptied, h.dirty, h.base_valid = 0, True, True, 0
                return
            if size == h.size and h.mode != CLEAN:
                return
            if h.mode == STREAM:
                await self._to_staged(h)
            elif h.mode == CLEAN:
                await self._start_staged(h)
            await self._staged_truncate(h, size)
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
            if self.open_count == 0:
                self.pool.writers_gone(self._nursery)  # idle buffers give the budget back
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

    # -- modes ------------------------------------------------------------------------------------
    def _check(self, h: WriteHandle) -> None:
        if h.error is not None:
            raise h.error

    async def _prepare(self, h: WriteHandle, offset: int) -> None:
        """Choose the mode a write at `offset` needs."""
        if h.mode == STREAM:
            if offset != h.size:
                await self._to_staged(h)
            return
        if h.mode == STAGED:
            return
        if (h.emptied or h.size == 0) and offset == 0:
            await self._start_stream(h, origin=0)
        elif offset == h.size and h.base is not None:
            h.upload = await h.ds.backend.begin_upload(h.node.path, base=h.base, append=True)
            await self._journal(h)
            if h.upload.kept == h.size:
                await self._start_stream(h, origin=h.size)
            else:  # nothing could be kept (e.g. a blob without a block list): rewrite it
                await self._start_staged(h)
        else:
            await self._start_staged(h)

    async def _start_stream(self, h: WriteHandle, *, origin: int) -> None:
        h.mode, h.origin, h.frontier = STREAM, origin, origin
        h.emptied = h.emptied and origin == 0
        if origin == 0:
            h.base_valid = 0

    async def _stream(self, h: WriteHandle, data: bytes) -> None:
        part = self.settings.part_size
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if h.fill is None:
                h.fill, h.filled = await self.pool.get(), 0  # may wait for room
            n = min(part - h.filled, len(view) - pos)
            h.fill[h.filled : h.filled + n] = view[pos : pos + n]
            h.filled += n
            pos += n
            if h.filled == part:
                await self._cut(h)

    async def _cut(self, h: WriteHandle) -> None:
        assert h.slots is not None and h.fill is not None
        await h.slots.acquire()  # back-pressure: at most parts_in_flight per file
        try:
            await self._ensure_upload(h)
            if (h.staged is None and not h.shadow_lost and self.settings.shadow
                    and self.staging.enabled):
                try:
                    h.staged = await self.staging.create()
                except DsmountError as e:
                    log.info("[%s] %s: no shadow copy (%s)", h.ds.key, h.node.path, e)
                    h.shadow_lost = True
        except BaseException:
            h.slots.release()
            raise
        buf, h.fill = h.fill, None
        offset, h.frontier = h.frontier, h.frontier + len(buf)
        self._spawn(h, offset, buf)

    def _spawn(self, h: WriteHandle, offset: int, buf: PartBuffer) -> None:
        if self._nursery is None:
            self.pool.put(buf)
            assert h.slots is not None
            h.slots.release()
            raise RuntimeError("WritePath.run() is not running")
        if h.inflight == 0:
            h.idle = trio.Event()
        h.inflight += 1
        self._nursery.start_soon(self._part_task, h, offset, buf)

    async def _part_task(self, h: WriteHandle, offset: int, data: PartBuffer) -> None:
        scope = trio.CancelScope()
        h.scopes.add(scope)
        try:
            with scope:
                if h.staged is not None and h.mode == STREAM:
                    try:
                        if not h.staged.account(len(data)):
                            raise NoSpace("the [writes] staging budget is full")
                        await h.staged.pwrite(offset, data)
                    except DsmountError as e:
                        log.info("[%s] %s: no shadow copy (%s); a seek back will fail",
                                 h.ds.key, h.node.path, e)
                        self._drop_shadow(h)
                async with self._puts:
                    assert h.upload is not None
                    part = await h.upload.put(offset, data)
                h.parts[offset] = part
            if scope.cancelled_caught and h.error is None:
                h.error = TimedOut(f"{h.node.path}: upload cancelled")
        except DsmountError as e:
            e.__traceback__ = e.__context__ = e.__cause__ = None
            if h.error is None:
                h.error = e
        except Exception as e:
            log.exception("[%s] %s: part upload failed", h.ds.key, h.node.path)
            if h.error is None:
                h.error = DsmountError(f"{h.node.path}: upload failed ({type(e).__name__})")
        finally:
            h.scopes.discard(scope)
            self.pool.put(data)
            assert h.slots is not None
            h.slots.release()
            h.inflight -= 1
            if h.inflight == 0:
                h.idle.set()

    async def _drain(self, h: WriteHandle, *, cancel: bool = False) -> None:
        """Wait for the part uploads of `h` (cancelling them first with `cancel`)."""
        if cancel:
            for scope in list(h.scopes):
                scope.cancel()
        with trio.CancelScope(shield=cancel):
            await h.idle.wait()

    async def _ensure_upload(self, h: WriteHandle) -> None:
        if h.upload is None:
            h.upload = await h.ds.backend.begin_upload(h.node.path, base=h.base)
            await self._journal(h)

    async def _journal(self, h: WriteHandle) -> None:
        upload = h.upload
        if upload is not None and upload.temp_path is not None and h.journal_id is None:
            h.journal_id = await self.staging.record(h.ds.cache_identity, upload.temp_path)

    async def _to_staged(self, h: WriteHandle) -> None:
        """A STREAM handle continues STAGED from its shadow copy."""
        await self._drain(h)
        self._check(h)
        if h.staged is None and h.frontier == h.origin and self.staging.enabled:
            h.staged = await self.staging.create()  # nothing was cut: all of it is in `fill`
        if h.staged is None:
            raise InvalidRequest(
                f"{h.ds.key}/{h.node.path}: a write or read out of sequence, and no staging "
                "copy of what was streamed (the [writes] staging budget was full)"
            )
        if h.fill is not None:
            if not h.staged.account(h.filled):
                raise NoSpace(f"{h.ds.key}/{h.node.path}: the [writes] staging budget is full")
            await h.staged.pwrite(h.frontier, memoryview(h.fill)[: h.filled])
            self._drop_fill(h)
        part = self.settings.part_size
        h.mode, h.grid = STAGED, h.origin
        h.uploaded = {(off - h.grid) // part: p for off, p in h.parts.items()}
        h.parts = {}
        h.present = set(range(h.part_count(part)))
        h.changed = h.present - set(h.uploaded)

    async def _commit(self, h: WriteHandle) -> Entry:
        if h.mode == STREAM:
            await self._drain(h)
            self._check(h)
            await self._ensure_upload(h)
            assert h.upload is not None
            if not h.parts and h.origin == 0:
                # Nothing uploaded yet (a small file): one request instead of two.
                whole = bytes(memoryview(h.fill)[: h.filled]) if h.fill is not None else b""
                self._drop_fill(h)
                async with self._puts:
                    return await h.upload.commit_whole(whole)
            if h.fill is not None and h.filled:
                tail = bytes(memoryview(h.fill)[: h.filled])
                async with self._puts:
                    h.parts[h.frontier] = await h.upload.put(h.frontier, tail)
                h.frontier += len(tail)
            self._drop_fill(h)
            parts = [h.parts[o] for o in sorted(h.parts)]
            return await h.upload.commit(parts, h.size, keep=h.origin > 0)
        if h.mode == CLEAN:  # new, or emptied: an empty version
            await self._ensure_upload(h)
            assert h.upload is not None
            return await h.upload.commit_whole(b"")
        return await self._staged_commit(h)

    # -- ends -------------------------------------------------------------------------------------
    def _fail(self, h: WriteHandle, error: DsmountError) -> None:
        if h.error is None:
            h.error = error
        for scope in list(h.scopes):
            scope.cancel()

    def _count_failure(self, h: WriteHandle) -> None:
        if not h.reported:
            h.reported = True
            h.ds.writes.failed_commits += 1

    def _drop_fill(self, h: WriteHandle) -> None:
        if h.fill is not None:
            self.pool.put(h.fill)
            h.fill, h.filled = None, 0

    def _drop_shadow(self, h: WriteHandle) -> None:
        if h.staged is not None and h.mode == STREAM:
            h.staged.remove()
            h.staged = None
            h.shadow_lost = True

    def _reset(self, h: WriteHandle) -> None:
        """Forget the content state: buffers, staging file, parts (not the upload)."""
        self._drop_fill(h)
        if h.staged is not None:
            h.staged.remove()
            h.staged = None
        h.mode, h.origin, h.frontier, h.grid = CLEAN, 0, 0, 0
        h.shadow_lost = False
        h.parts, h.uploaded, h.present, h.changed = {}, {}, set(), set()

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
