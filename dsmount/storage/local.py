"""The embedded default backend: a directory on local disk, served read-only.

It goes through the same async interface as the cloud backends (blocking os calls run in
worker threads), so the filesystem core, cache and read-ahead are exercised exactly as with
Blob storage. The "ETag" of a file is derived from (inode, size, mtime_ns): a replaced or
rewritten file gets a new one, and a read pinned to the old one fails with Changed.

Every access goes through `local_root.LocalRoot` (see there): nothing outside the directory
is ever opened, whatever symlinks or swapped directories it holds. Entries carry the source's
owner, group and permission bits (an ACL folded in conservatively), and symlinks that stay
inside are entries with a `symlink` target; devices, FIFOs and sockets are not served.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from dsmount.errors import Changed, from_oserror
from dsmount.storage.base import Backend, Capabilities, Entry
from dsmount.storage.local_root import Found, LocalRoot, NotRegular

PAGE_SIZE = 1000  # entries per listing page; keeps first-entry latency low for huge dirs


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


def entry_of(found: Found) -> Entry:
    st = found.st
    is_dir = statmod.S_ISDIR(st.st_mode)
    if found.target is not None:
        return Entry(found.name, False, len(os.fsencode(found.target)), st.st_mtime_ns, None,
                     st.st_uid, st.st_gid, 0o777, found.target)
    return Entry(
        name=found.name,
        is_dir=is_dir,
        size=0 if is_dir else st.st_size,
        mtime_ns=st.st_mtime_ns,
        etag=None if is_dir else _etag(st),
        uid=st.st_uid,
        gid=st.st_gid,
        mode=found.bits,
    )


class LocalBackend(Backend):
    kind = "local"
    # Read-only (the mount serves local directories as they are); on disk already and its
    # files change in place, so nothing of it goes to the node's disk cache.
    capabilities = Capabilities(local_directory=True)

    def __init__(self, root: str | Path, *, limiter: trio.CapacityLimiter | None = None) -> None:
        super().__init__()
        self.local = LocalRoot(str(root))
        self.root = Path(self.local.real)
        self._limiter = limiter or trio.CapacityLimiter(8)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def check(self) -> None:
        self.root_entry = await self.stat("")

    def directory_identity(self) -> tuple[int, int]:
        return self.local.identity

    async def stat(self, path: str) -> Entry:
        self.stats.requests += 1
        return entry_of(await self._run(self.local.lstat, path))

    async def list(self, path: str) -> AsyncIterator[list[Entry]]:
        self.stats.requests += 1
        found = await self._run(self.local.scan, path)
        entries = [entry_of(f) for f in found]
        for i in range(0, len(entries), PAGE_SIZE):
            yield entries[i : i + PAGE_SIZE]

    async def read(self, path: str, offset: int, length: int, etag: str | None = None) -> bytes:
        self.stats.requests += 1
        local = self.local

        def pread() -> bytes:
            try:
                fd, st = local.open_file(path)
            except NotRegular:
                raise Changed(f"{path}: no longer a regular file") from None
            try:
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

    async def aclose(self) -> None:
        self.local.close()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.local.real}

