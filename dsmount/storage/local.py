"""The embedded default backend: a directory on local disk, served read-only.

It goes through the same async interface as the cloud backends (blocking os calls run in
worker threads), so the filesystem core, cache and read-ahead are exercised exactly as with
Blob storage. The "ETag" of a file is derived from (inode, size, mtime_ns): a replaced or
rewritten file gets a new one, and a read pinned to the old one fails with Changed.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from dsmount.errors import Changed, NotFound, from_oserror
from dsmount.storage.base import Backend, Entry

PAGE_SIZE = 1000  # entries per listing page; keeps first-entry latency low for huge dirs


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


def _entry(name: str, st: os.stat_result) -> Entry:
    is_dir = statmod.S_ISDIR(st.st_mode)
    return Entry(
        name=name,
        is_dir=is_dir,
        size=0 if is_dir else st.st_size,
        mtime_ns=st.st_mtime_ns,
        etag=None if is_dir else _etag(st),
    )


class LocalBackend(Backend):
    kind = "local"

    def __init__(self, root: str | Path, *, limiter: trio.CapacityLimiter | None = None) -> None:
        super().__init__()
        self.root = Path(root).resolve()
        self._limiter = limiter or trio.CapacityLimiter(8)

    def _abs(self, path: str) -> Path:
        # Paths come from the core, which never produces ".." components; refuse them anyway so a
        # bug upstream cannot read outside the datastore.
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise NotFound(f"{path}: invalid path")
        return self.root.joinpath(*parts)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def stat(self, path: str) -> Entry:
        self.stats.requests += 1
        try:
            st = await self._run(os.stat, self._abs(path))
        except OSError as e:
            raise from_oserror(e, path or "/") from None
        if not (statmod.S_ISDIR(st.st_mode) or statmod.S_ISREG(st.st_mode)):
            raise NotFound(f"{path}: not a regular file or directory")
        return _entry(path.rsplit("/", 1)[-1], st)

    async def list(self, path: str) -> AsyncIterator[list[Entry]]:
        self.stats.requests += 1
        target = self._abs(path)

        def scan() -> list[Entry]:
            out = []
            with os.scandir(target) as it:
                for de in it:
                    try:
                        st = de.stat(follow_symlinks=True)
                    except OSError:
                        continue  # dangling symlink or vanished meanwhile
                    if statmod.S_ISDIR(st.st_mode) or statmod.S_ISREG(st.st_mode):
                        out.append(_entry(de.name, st))
            return out

        try:
            entries = await self._run(scan)
        except OSError as e:
            raise from_oserror(e, path or "/") from None
        for i in range(0, len(entries), PAGE_SIZE):
            yield entries[i : i + PAGE_SIZE]

    async def read(self, path: str, offset: int, length: int, etag: str | None = None) -> bytes:
        self.stats.requests += 1
        target = self._abs(path)

        def pread() -> bytes:
            # O_NONBLOCK: a file replaced by a FIFO must not block this thread forever.
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                st = os.fstat(fd)
                if not statmod.S_ISREG(st.st_mode):
                    raise Changed(f"{path}: no longer a regular file")
                if etag is not None and _etag(st) != etag:
                    raise Changed(f"{path}: changed since it was opened")
                chunks = []
                want = length
                pos = offset
                while want > 0:
                    b = os.pread(fd, want, pos)
                    if not b:
                        break
                    chunks.append(b)
                    want -= len(b)
                    pos += len(b)
                return b"".join(chunks)
            finally:
                os.close(fd)

        try:
            data = await self._run(pread)
        except OSError as e:
            raise from_oserror(e, path or "/") from None
        self.stats.bytes_fetched += len(data)
        return data

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.root)}
