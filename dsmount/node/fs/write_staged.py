"""Staged writes: the `WriteStrategy` (node/fs/write_handle.py) that holds a handle's content in
a local staging file (node/fs/staging.py): writes, reads and truncates on that file, parts of
the base fetched only where needed, and the commit that uploads the parts not already on
storage. Random writes, updates and truncates are staged, and so is a sequential writer that
seeks back (it continues here from its shadow copy, `StagedWrite.from_stream`).

The staging file holds every part in `present`; a part not there still equals the base (all of
it lies below `base_valid`). Parts are cut on a grid from `grid` (the kept prefix of an append,
else 0): part i is `[grid + i*P, grid + (i+1)*P)` clipped to `size`. `uploaded` are parts
already staged on storage that `changed` has not touched since.

Invariants:
- a part is made `present` before any byte of it changes: the base bytes it keeps (below
  `base_valid`) are fetched first unless the write covers the whole part;
- `base_valid` only shrinks (a truncate below it): bytes past it are never taken from the base;
- each present part reserves `part_size` bytes of the staging budget (NoSpace beyond it);
- a commit re-uses an uploaded part only if nothing changed it and its bounds still hold;
- nothing runs in the background: every upload ends before the call that started it returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from dsmount.errors import DsmountError, NoSpace
from dsmount.node.fs.staging import StagedFile
from dsmount.node.fs.write_handle import WriteHandle, WriteResources
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


class StagedWrite:
    """A handle's content in a staging file (see the module docstring)."""

    def __init__(self, h: WriteHandle, res: WriteResources, file: StagedFile, *,
                 grid: int = 0) -> None:
        self.h = h
        self.res = res
        self.file = file
        self.part = res.settings.part_size
        self.grid = grid
        self.present: set[int] = set()
        self.changed: set[int] = set()
        self.uploaded: dict[int, Part] = {}

    @classmethod
    async def start(cls, h: WriteHandle, res: WriteResources) -> StagedWrite:
        """Stage a handle whose content was its base (or nothing)."""
        file = await res.staging.create()
        staged = cls(h, res, file)
        if h.emptied:
            h.base_valid = 0
        return staged

    @classmethod
    def from_stream(cls, h: WriteHandle, res: WriteResources, file: StagedFile, origin: int,
                    parts: dict[int, Part]) -> StagedWrite:
        """Continue a stream whose content `[origin, size)` is all in `file` (its shadow copy),
        `parts` (by offset) already uploaded; `[0, origin)` stays the kept base."""
        staged = cls(h, res, file, grid=origin)
        staged.uploaded = {(off - origin) // staged.part: p for off, p in parts.items()}
        staged.present = set(range(staged.part_count()))
        staged.changed = staged.present - set(staged.uploaded)
        return staged

    def part_range(self, idx: int) -> tuple[int, int]:
        start = self.grid + idx * self.part
        return start, min(start + self.part, self.h.size)

    def part_count(self) -> int:
        return max(0, -(-(self.h.size - self.grid) // self.part))

    def _account(self, size: int) -> None:
        if not self.file.account(size):
            raise NoSpace(
                f"{self.h.ds.key}/{self.h.node.path}: the [writes] staging budget "
                f"({self.res.staging.budget} bytes) is full"
            )

    async def _materialize(self, idx: int) -> None:
        """Make part `idx` present: reserve it, and fetch the base bytes it keeps."""
        h, part = self.h, self.part
        start = self.grid + idx * part
        self._account(part)
        end = min(start + part, h.base_valid)
        if start < end:
            await self.file.pwrite(start, await h.read_base(start, end - start))
        self.present.add(idx)

    async def _drop_kept(self) -> None:
        """A change below the kept prefix of an append: the prefix is staged too, and the
        whole content will be uploaded (re-gridded from 0)."""
        h, part = self.h, self.part
        top = min(self.grid, h.base_valid)
        for start in range(0, top, part):
            length = min(part, top - start)
            self._account(part)
            await self.file.pwrite(start, await h.read_base(start, length))
        self.grid = 0
        self.present = set(range(self.part_count()))
        self.changed = set(self.present)
        self.uploaded = {}

    # -- the strategy ---------------------------------------------------------------------------
    async def write(self, offset: int, data: bytes) -> None:
        h, part = self.h, self.part
        if offset < self.grid:
            await self._drop_kept()
        end = offset + len(data)
        new_size = max(h.size, end)
        first = (offset - self.grid) // part
        last = (end - 1 - self.grid) // part
        for idx in range(first, last + 1):
            if idx not in self.present:
                start = self.grid + idx * part
                covered = offset <= start and end >= min(start + part, new_size)
                if covered or start >= h.base_valid:
                    self._account(part)
                    self.present.add(idx)
                else:
                    await self._materialize(idx)
            self.changed.add(idx)
        await self.file.pwrite(offset, data)

    async def read(self, offset: int, length: int) -> bytes:
        h, part = self.h, self.part
        out = bytearray()
        pos, end = offset, offset + length
        while pos < end:
            if pos < self.grid:
                stop = min(end, self.grid)
                out += await h.read_base(pos, stop - pos)
            else:
                idx = (pos - self.grid) // part
                stop = min(end, self.grid + (idx + 1) * part)
                if idx in self.present:
                    out += await self.file.pread(pos, stop - pos)
                else:
                    out += await h.read_base(pos, stop - pos)
            pos = stop
        return bytes(out)

    async def truncate(self, size: int) -> None:
        h, part = self.h, self.part
        if size < self.grid:
            await self._drop_kept()
        old = h.size
        if size < old:
            idx = (size - self.grid) // part
            if (size - self.grid) % part:
                if idx not in self.present:
                    await self._materialize(idx)
                self.changed.add(idx)
                keep_below = idx + 1
            else:
                keep_below = idx
            self.present = {i for i in self.present if i < keep_below}
            self.changed = {i for i in self.changed if i < keep_below}
            self.uploaded = {i: p for i, p in self.uploaded.items() if i < keep_below}
        elif size > old:
            first = max(0, (old - self.grid) // part)
            last = (size - 1 - self.grid) // part
            for idx in range(first, last + 1):
                if idx not in self.present:
                    if self.grid + idx * part < min(h.base_valid, old):
                        await self._materialize(idx)
                    else:
                        self._account(part)
                        self.present.add(idx)
                self.changed.add(idx)
        await self.file.truncate(size)
        h.base_valid = min(h.base_valid, size)
        h.size = size

    async def commit(self) -> Entry:
        h, res = self.h, self.res
        upload = await res.ensure_upload(h)
        count = self.part_count()
        parts: list[Part | None] = [None] * count
        todo: list[int] = []
        for idx in range(count):
            start, stop = self.part_range(idx)
            done = self.uploaded.get(idx)
            if (done is not None and idx not in self.changed and done.offset == start
                    and done.length == stop - start):
                parts[idx] = done
            else:
                todo.append(idx)

        def job(idx: int) -> Callable[[], Awaitable[None]]:
            async def upload_part() -> None:
                start, stop = self.part_range(idx)
                await res.cache.reserve(stop - start)
                try:
                    if idx in self.present:
                        data = await self.file.pread(start, stop - start)
                    else:
                        data = await h.read_base(start, stop - start)
                    async with res.puts:
                        done = await upload.put(start, data)
                finally:
                    res.cache.release(stop - start)
                parts[idx] = self.uploaded[idx] = done
                self.changed.discard(idx)

            return upload_part

        try:
            await run_all([job(i) for i in todo], res.settings.parts_in_flight)
        except DsmountError as e:
            e.__traceback__ = e.__context__ = None
            raise
        ready = [p for p in parts if p is not None]
        return await upload.commit(ready, h.size, keep=self.grid > 0)

    async def settle(self) -> None:
        await trio.lowlevel.checkpoint()  # nothing of a staged write runs in the background

    def cancel(self) -> None:
        pass

    def discard(self) -> None:
        self.file.remove()
