"""The STAGED mode of the write path (mixed into `writes.WritePath`): writes, reads and
truncates on the local staging file, parts of the base fetched only where needed, and the
commit that uploads the parts not already on storage.

Invariants (see write_handle.py for the grid):
- a part is made `present` before any byte of it changes: the base bytes it keeps (below
  `base_valid`) are fetched first unless the write covers the whole part;
- `base_valid` only shrinks (a truncate below it): bytes past it are never taken from the base;
- each present part reserves `part_size` bytes of the staging budget (NoSpace beyond it);
- a commit re-uses an uploaded part only if nothing changed it and its bounds still hold.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from dsmount.errors import Changed, DsmountError, NoSpace
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.fs.staging import Staging
from dsmount.node.fs.write_handle import STAGED, WriteHandle, WriteSettings
from dsmount.storage.base import Entry, Part


async def run_all(jobs: list[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run `jobs` with at most `limit` at once; the first failure cancels the rest and is
    raised as itself (not wrapped in an exception group)."""
    failure: list[BaseException] = []
    semaphore = trio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[None]], nursery: trio.Nursery) -> None:
        try:
            await job()
        except Exception as e:
            if not failure:
                failure.append(e)
            nursery.cancel_scope.cancel()
        finally:
            semaphore.release()

    async with trio.open_nursery() as nursery:
        for job in jobs:
            await semaphore.acquire()
            if failure:
                semaphore.release()
                break
            nursery.start_soon(one, job, nursery)
    if failure:
        raise failure[0]


class StagedOps:
    # What this mode uses of the `WritePath` it is mixed into, declared here (annotations
    # only, no values) so that this module need not import writes.py, which imports it.
    settings: WriteSettings
    staging: Staging
    cache: BlockCache
    _puts: trio.CapacityLimiter
    _ensure_upload: Callable[[WriteHandle], Awaitable[None]]

    def _account(self, h: WriteHandle, size: int) -> None:
        assert h.staged is not None
        if not h.staged.account(size):
            raise NoSpace(
                f"{h.ds.key}/{h.node.path}: the [writes] staging budget "
                f"({self.staging.budget} bytes) is full"
            )

    async def _start_staged(self, h: WriteHandle) -> None:
        h.staged = await self.staging.create()
        h.mode, h.grid = STAGED, 0
        h.present, h.changed, h.uploaded = set(), set(), {}
        if h.emptied:
            h.base_valid = 0

    async def _base_read(self, h: WriteHandle, offset: int, length: int) -> bytes:
        assert h.base is not None
        data = await h.ds.backend.read(h.node.path, offset, length, h.base.etag)
        if len(data) != length:
            raise Changed(f"{h.ds.key}/{h.node.path}: the file changed while open for writing")
        return data

    async def _materialize(self, h: WriteHandle, idx: int) -> None:
        """Make part `idx` present: reserve it, and fetch the base bytes it keeps."""
        part = self.settings.part_size
        start = h.grid + idx * part
        self._account(h, part)
        end = min(start + part, h.base_valid)
        if start < end:
            assert h.staged is not None
            await h.staged.pwrite(start, await self._base_read(h, start, end - start))
        h.present.add(idx)

    async def _drop_kept(self, h: WriteHandle) -> None:
        """A change below the kept prefix of an append: the prefix is staged too, and the
        whole content will be uploaded (re-gridded from 0)."""
        part = self.settings.part_size
        assert h.staged is not None
        top = min(h.grid, h.base_valid)
        for start in range(0, top, part):
            length = min(part, top - start)
            self._account(h, part)
            await h.staged.pwrite(start, await self._base_read(h, start, length))
        h.grid = 0
        h.present = set(range(h.part_count(part)))
        h.changed = set(h.present)
        h.uploaded = {}

    async def _staged_write(self, h: WriteHandle, offset: int, data: bytes) -> None:
        part = self.settings.part_size
        if offset < h.grid:
            await self._drop_kept(h)
        end = offset + len(data)
        new_size = max(h.size, end)
        first = (offset - h.grid) // part
        last = (end - 1 - h.grid) // part
        for idx in range(first, last + 1):
            if idx not in h.present:
                start = h.grid + idx * part
                covered = offset <= start and end >= min(start + part, new_size)
                if covered or start >= h.base_valid:
                    self._account(h, part)
                    h.present.add(idx)
                else:
                    await self._materialize(h, idx)
            h.changed.add(idx)
        assert h.staged is not None
        await h.staged.pwrite(offset, data)

    async def _staged_read(self, h: WriteHandle, offset: int, length: int) -> bytes:
        part = self.settings.part_size
        out = bytearray()
        pos, end = offset, offset + length
        while pos < end:
            if pos < h.grid:
                stop = min(end, h.grid)
                out += await self._base_read(h, pos, stop - pos)
            else:
                idx = (pos - h.grid) // part
                stop = min(end, h.grid + (idx + 1) * part)
                if idx in h.present:
                    assert h.staged is not None
                    out += await h.staged.pread(pos, stop - pos)
                else:
                    out += await self._base_read(h, pos, stop - pos)
            pos = stop
        return bytes(out)

    async def _staged_truncate(self, h: WriteHandle, size: int) -> None:
        part = self.settings.part_size
        if size < h.grid:
            await self._drop_kept(h)
        old = h.size
        if size < old:
            idx = (size - h.grid) // part
            if (size - h.grid) % part:
                if idx not in h.present:
                    await self._materialize(h, idx)
                h.changed.add(idx)
                keep_below = idx + 1
            else:
                keep_below = idx
            h.present = {i for i in h.present if i < keep_below}
            h.changed = {i for i in h.changed if i < keep_below}
            h.uploaded = {i: p for i, p in h.uploaded.items() if i < keep_below}
        elif size > old:
            first = max(0, (old - h.grid) // part)
            last = (size - 1 - h.grid) // part
            for idx in range(first, last + 1):
                if idx not in h.present:
                    if h.grid + idx * part < min(h.base_valid, old):
                        await self._materialize(h, idx)
                    else:
                        self._account(h, part)
                        h.present.add(idx)
                h.changed.add(idx)
        assert h.staged is not None
        await h.staged.truncate(size)
        h.base_valid = min(h.base_valid, size)
        h.size = size

    async def _staged_commit(self, h: WriteHandle) -> Entry:
        await self._ensure_upload(h)
        upload = h.upload
        assert upload is not None
        part = self.settings.part_size
        count = h.part_count(part)
        parts: list[Part | None] = [None] * count
        todo: list[int] = []
        for idx in range(count):
            start, stop = h.part_range(idx, part)
            done = h.uploaded.get(idx)
            if (done is not None and idx not in h.changed and done.offset == start
                    and done.length == stop - start):
                parts[idx] = done
            else:
                todo.append(idx)

        def job(idx: int) -> Callable[[], Awaitable[None]]:
            async def upload_part() -> None:
                start, stop = h.part_range(idx, part)
                await self.cache.reserve(stop - start)
                try:
                    if idx in h.present:
                        assert h.staged is not None
                        data = await h.staged.pread(start, stop - start)
                    else:
                        data = await self._base_read(h, start, stop - start)
                    async with self._puts:
                        done = await upload.put(start, data)
                finally:
                    self.cache.release(stop - start)
                parts[idx] = h.uploaded[idx] = done
                h.changed.discard(idx)

            return upload_part

        try:
            await run_all([job(i) for i in todo], self.settings.parts_in_flight)
        except DsmountError as e:
            e.__traceback__ = e.__context__ = None
            raise
        ready = [p for p in parts if p is not None]
        return await upload.commit(ready, h.size, keep=h.grid > 0)
