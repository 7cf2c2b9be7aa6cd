"""A fault-injecting wrapper over ANY backend (as mountpoint-s3's `failure_client.rs` wraps its
clients): the wrapped backend does the real work, and the faults a test plans make chosen calls
fail before they reach it.

A fault names the operations it applies to ("stat", "list", "read", "put", "commit", "abort",
"begin_upload", "delete", "mkdir", "rmdir", "copy", "rename", "check", "walk", "create";
the whole-file `file_info` and `content_md5` count as "stat"), how many calls of them
to let through first (`after`), and how many to fail (`times`). The wrapper sits above the
wrapped backend's own retry policy, so an injected error is what the caller (the filesystem,
a transfer) sees after that policy gave up: the path above is tested, not the retries below.
`calls` counts every call per operation, failed or not.

Invariants: the wrapper declares what the wrapped backend declares (kind, capabilities, flags),
shares its `stats`, and never changes a byte that passes through it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from dsmount.storage.base import Backend, Entry, Part, RemoteFile, Upload


@dataclass
class Fault:
    """Fail `times` calls of `ops` (None: every operation) with `error`, after `after` calls of
    them went through."""

    error: Exception
    ops: frozenset[str] | None = None
    times: int = 1
    after: int = 0
    seen: int = 0  # calls of `ops` so far
    injected: int = 0

    def hits(self, op: str) -> bool:
        if self.ops is not None and op not in self.ops:
            return False
        self.seen += 1
        if self.seen <= self.after or self.injected >= self.times:
            return False
        self.injected += 1
        return True


class FaultyBackend(Backend):
    """`inner`, with the faults of `inject` (see the module docstring)."""

    def __init__(self, inner: Backend) -> None:
        super().__init__()
        self.inner = inner
        self.kind = inner.kind
        self.capabilities = inner.capabilities
        self.list_on_lookup = inner.list_on_lookup
        self.native_dir_rename = inner.native_dir_rename
        self.root_entry = inner.root_entry
        self.stats = inner.stats
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()

    def inject(
        self, error: Exception, *, ops: Sequence[str] | None = None, times: int = 1,
        after: int = 0,
    ) -> Fault:
        fault = Fault(error, frozenset(ops) if ops is not None else None, times, after)
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def gate(self, op: str) -> None:
        """Count a call of `op`; raise the error of the first fault that hits it."""
        self.calls[op] += 1
        for fault in self.faults:
            if fault.hits(op):
                raise fault.error

    # -- reading ---------------------------------------------------------------------------------
    async def stat(self, path: str) -> Entry:
        self.gate("stat")
        return await self.inner.stat(path)

    async def list(self, path: str) -> AsyncIterator[list[Entry]]:
        self.gate("list")
        async for page in self.inner.list(path):
            yield page

    async def read(self, path: str, offset: int, length: int, etag: str | None = None) -> bytes:
        self.gate("read")
        return await self.inner.read(path, offset, length, etag)

    async def check(self) -> None:
        self.gate("check")
        await self.inner.check()

    async def walk(self, prefix: str = "") -> AsyncIterator[list[RemoteFile]]:
        self.gate("walk")
        async for page in self.inner.walk(prefix):
            yield page

    async def file_info(self, path: str) -> RemoteFile | None:
        self.gate("stat")
        return await self.inner.file_info(path)

    async def read_source(self, path: str) -> str:
        return await self.inner.read_source(path)

    async def content_md5(self, path: str) -> bytes | None:
        self.gate("stat")
        return await self.inner.content_md5(path)

    async def create(self) -> bool:
        self.gate("create")
        return await self.inner.create()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    # -- writing ---------------------------------------------------------------------------------
    async def begin_upload(
        self, path: str, *, base: Entry | None = None, append: bool = False,
        parents: bool = False,
    ) -> Upload:
        self.gate("begin_upload")
        return FaultyUpload(self, await self.inner.begin_upload(path, base=base, append=append,
                                                                parents=parents))

    async def delete(self, path: str) -> None:
        self.gate("delete")
        await self.inner.delete(path)

    async def make_dir(self, path: str) -> Entry:
        self.gate("mkdir")
        return await self.inner.make_dir(path)

    async def remove_dir(self, path: str) -> None:
        self.gate("rmdir")
        await self.inner.remove_dir(path)

    async def copy(self, src: str, dst: str) -> Entry:
        self.gate("copy")
        return await self.inner.copy(src, dst)

    async def rename(
        self, src: str, dst: str, *, is_dir: bool = False, max_entries: int = 1000
    ) -> Entry | None:
        self.gate("rename")
        return await self.inner.rename(src, dst, is_dir=is_dir, max_entries=max_entries)


class FaultyUpload(Upload):
    """An upload of the wrapped backend whose verbs pass the wrapper's faults first."""

    def __init__(self, backend: FaultyBackend, inner: Upload) -> None:
        self.backend = backend
        self.inner = inner
        self.path = inner.path
        self.kept = inner.kept
        self.max_part = inner.max_part

    @property
    def temp_path(self) -> str | None:  # type: ignore[override]
        return self.inner.temp_path

    async def put(self, offset: int, data: bytes | bytearray | memoryview) -> Part:
        self.backend.gate("put")
        return await self.inner.put(offset, data)

    async def commit(self, parts: Sequence[Part], size: int, *, keep: bool = True,
                     md5: bytes | None = None, exclusive: bool = False) -> Entry:
        self.backend.gate("commit")
        return await self.inner.commit(parts, size, keep=keep, md5=md5, exclusive=exclusive)

    async def commit_whole(self, data: bytes, *, md5: bytes | None = None,
                           exclusive: bool = False) -> Entry:
        self.backend.gate("commit")
        return await self.inner.commit_whole(data, md5=md5, exclusive=exclusive)

    async def abort(self) -> bool:
        self.backend.calls["abort"] += 1  # never fails: abort is best effort by contract
        return await self.inner.abort()
