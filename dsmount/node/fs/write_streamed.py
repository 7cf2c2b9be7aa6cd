"""Streamed writes: the `WriteStrategy` (node/fs/write_handle.py) of a sequential writer. Parts
of `part_size` are cut from the writer's bytes as they come and uploaded in the background
(`parts_in_flight` per file), their memory reserved from the block cache's one budget before it
is used (a writer waits for room, it never overshoots the budget).

A `StreamedWrite`: `[0, origin)` is the base kept server-side (an append) or nothing,
`[origin, frontier)` was handed to part uploads (`parts`, by offset), and `fill` holds
`[frontier, size)` in memory (a pooled buffer, reserved from the block cache's one budget).
`shadow`, if not None, is a shadow copy on disk of `[origin, frontier)` (made when the first
part is cut, so a small file never touches the disk), so a later seek back can still be served:
a write out of sequence, a read or a truncate make the stream replace itself on its handle with
a `StagedWrite` over that copy (node/fs/write_staged.py). Without room for the copy the write
still streams, and a seek back gets InvalidRequest (EINVAL).

Invariants:
- memory reserved from the cache is released exactly once: a part's buffer goes back to the
  pool when its upload ends, the one being filled at commit, switch or discard;
- at most `parts_in_flight` part uploads of one file run at once (a writer waits for a slot);
- the first failure of a part upload becomes the handle's error;
- the switch to staged, a commit and a discard come only after every part upload ended.
"""

from __future__ import annotations

import logging

import trio

from dsmount.errors import DsmountError, InvalidRequest, NoSpace, TimedOut
from dsmount.node.fs.staging import StagedFile
from dsmount.node.fs.write_handle import PartBuffer, WriteHandle, WriteResources
from dsmount.node.fs.write_staged import StagedWrite
from dsmount.storage.base import Entry, Part

log = logging.getLogger(__name__)


class StreamedWrite:
    """A sequential writer's content, uploaded as it comes (see the module docstring)."""

    def __init__(self, h: WriteHandle, res: WriteResources, origin: int) -> None:
        self.h = h
        self.res = res
        self.origin = origin
        self.frontier = origin
        self.fill: PartBuffer | None = None  # the part being filled: [frontier, +filled)
        self.filled = 0
        self.parts: dict[int, Part] = {}
        self.shadow: StagedFile | None = None
        self.shadow_lost = False  # a shadow copy could not be kept (budget full)
        # part uploads running in the background
        self.inflight = 0
        self.idle = trio.Event()
        self.idle.set()
        self.slots = trio.Semaphore(res.settings.parts_in_flight)
        self.scopes: set[trio.CancelScope] = set()

    @classmethod
    def start(cls, h: WriteHandle, res: WriteResources, *, origin: int) -> StreamedWrite:
        """Stream a handle whose content was its base (`origin`: the kept prefix) or nothing."""
        h.emptied = h.emptied and origin == 0
        if origin == 0:
            h.base_valid = 0
        return cls(h, res, origin)

    # -- the strategy ---------------------------------------------------------------------------
    async def write(self, offset: int, data: bytes) -> None:
        if offset != self.h.size:
            await (await self.to_staged()).write(offset, data)
            return
        part = self.res.settings.part_size
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self.fill is None:
                self.fill, self.filled = await self.res.pool.get(), 0  # may wait for room
            n = min(part - self.filled, len(view) - pos)
            self.fill[self.filled : self.filled + n] = view[pos : pos + n]
            self.filled += n
            pos += n
            if self.filled == part:
                await self._cut()

    async def read(self, offset: int, length: int) -> bytes:
        return await (await self.to_staged()).read(offset, length)

    async def truncate(self, size: int) -> None:
        await (await self.to_staged()).truncate(size)

    async def commit(self) -> Entry:
        h, res = self.h, self.res
        await self.settle()
        h.check()
        upload = await res.ensure_upload(h)
        if not self.parts and self.origin == 0:
            # Nothing uploaded yet (a small file): one request instead of two.
            whole = bytes(memoryview(self.fill)[: self.filled]) if self.fill is not None else b""
            self._drop_fill()
            async with res.puts:
                return await upload.commit_whole(whole)
        if self.fill is not None and self.filled:
            tail = bytes(memoryview(self.fill)[: self.filled])
            async with res.puts:
                self.parts[self.frontier] = await upload.put(self.frontier, tail)
            self.frontier += len(tail)
        self._drop_fill()
        parts = [self.parts[o] for o in sorted(self.parts)]
        return await upload.commit(parts, h.size, keep=self.origin > 0)

    async def settle(self) -> None:
        await self.idle.wait()

    def cancel(self) -> None:
        for scope in list(self.scopes):
            scope.cancel()

    def discard(self) -> None:
        self._drop_fill()
        if self.shadow is not None:
            self.shadow.remove()
            self.shadow = None

    # -- the switch -----------------------------------------------------------------------------
    async def to_staged(self) -> StagedWrite:
        """Continue staged from the shadow copy; the handle's strategy from now on."""
        h, res = self.h, self.res
        await self.settle()
        h.check()
        if self.shadow is None and self.frontier == self.origin and res.staging.enabled:
            self.shadow = await res.staging.create()  # nothing was cut: all of it is in `fill`
        if self.shadow is None:
            raise InvalidRequest(
                f"{h.ds.key}/{h.node.path}: a write or read out of sequence, and no staging "
                "copy of what was streamed (the [writes] staging budget was full)"
            )
        if self.fill is not None:
            if not self.shadow.account(self.filled):
                raise NoSpace(f"{h.ds.key}/{h.node.path}: the [writes] staging budget is full")
            await self.shadow.pwrite(self.frontier, memoryview(self.fill)[: self.filled])
            self._drop_fill()
        staged = StagedWrite.from_stream(h, res, self.shadow, self.origin, self.parts)
        self.shadow, self.parts = None, {}
        h.strategy = staged
        return staged

    # -- part uploads ---------------------------------------------------------------------------
    async def _cut(self) -> None:
        h, res = self.h, self.res
        assert self.fill is not None
        await self.slots.acquire()  # back-pressure: at most parts_in_flight per file
        try:
            await res.ensure_upload(h)
            if (self.shadow is None and not self.shadow_lost and res.settings.shadow
                    and res.staging.enabled):
                try:
                    self.shadow = await res.staging.create()
                except DsmountError as e:
                    log.info("[%s] %s: no shadow copy (%s)", h.ds.key, h.node.path, e)
                    self.shadow_lost = True
        except BaseException:
            self.slots.release()
            raise
        buf, self.fill = self.fill, None
        offset, self.frontier = self.frontier, self.frontier + len(buf)
        self._spawn(offset, buf)

    def _spawn(self, offset: int, buf: PartBuffer) -> None:
        nursery = self.res.nursery
        if nursery is None:
            self.res.pool.put(buf)
            self.slots.release()
            raise RuntimeError("WritePath.run() is not running")
        if self.inflight == 0:
            self.idle = trio.Event()
        self.inflight += 1
        nursery.start_soon(self._part_task, offset, buf)

    async def _part_task(self, offset: int, data: PartBuffer) -> None:
        h = self.h
        scope = trio.CancelScope()
        self.scopes.add(scope)
        try:
            with scope:
                if self.shadow is not None:
                    try:
                        if not self.shadow.account(len(data)):
                            raise NoSpace("the [writes] staging budget is full")
                        await self.shadow.pwrite(offset, data)
                    except DsmountError as e:
                        log.info("[%s] %s: no shadow copy (%s); a seek back will fail",
                                 h.ds.key, h.node.path, e)
                        self._drop_shadow()
                async with self.res.puts:
                    assert h.upload is not None
                    part = await h.upload.put(offset, data)
                self.parts[offset] = part
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
            self.scopes.discard(scope)
            self.res.pool.put(data)
            self.slots.release()
            self.inflight -= 1
            if self.inflight == 0:
                self.idle.set()

    def _drop_fill(self) -> None:
        if self.fill is not None:
            self.res.pool.put(self.fill)
            self.fill, self.filled = None, 0

    def _drop_shadow(self) -> None:
        if self.shadow is not None:
            self.shadow.remove()
            self.shadow = None
            self.shadow_lost = True
