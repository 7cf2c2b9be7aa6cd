"""An in-memory backend for core tests, with fault injection.

Objects are a dict of path -> bytes; directories are implied by paths (as in blob storage) or
made explicit by `make_dir` (a marker, as hdi_isfolder blobs are). `faults` lets a test make
the next N calls fail with a given error, or every call slow, to drive the retry policy,
deadlines and errno mapping without a network; `faults.ops` limits them to some operations
("put", "commit", "delete", "read", ...).

It writes like a blob container: parts are staged out of sight and `commit` swaps the new
bytes in at once (`memory_writes.MemoryUpload`).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

from dsmount.errors import Changed, NotFound
from dsmount.storage.base import Backend, Entry
from dsmount.storage.memory_writes import MemoryWrites
from dsmount.storage.retry import RetryPolicy, with_retry

_etags = itertools.count(1)


@dataclass
class Faults:
    fail_next: int = 0
    error: Exception | None = None
    delay: float = 0.0
    calls: int = 0
    reads: list[tuple[str, int, int]] = field(default_factory=list)
    ops: set[str] | None = None  # only these operations fail / wait (None: every one)
    by_op: dict[str, int] = field(default_factory=dict)  # calls per operation

    async def apply(self, op: str = "") -> None:
        self.calls += 1
        self.by_op[op] = self.by_op.get(op, 0) + 1
        if self.ops is not None and op not in self.ops:
            return
        if self.delay:
            await trio.sleep(self.delay)
        if self.fail_next > 0 and self.error is not None:
            self.fail_next -= 1
            raise self.error


class MemoryBackend(MemoryWrites, Backend):
    kind = "memory"

    def __init__(
        self,
        files: dict[str, bytes] | None = None,
        *,
        page_size: int = 100,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.files: dict[str, tuple[bytes, str, int]] = {}
        self.dirs: set[str] = set()  # explicit (empty-capable) directories, like marker blobs
        self.page_size = page_size
        self.faults = Faults()
        self.retry = retry or RetryPolicy(base_delay=0.001, max_delay=0.01)
        for path, data in (files or {}).items():
            self.put(path, data)

    def put(self, path: str, data: bytes, mtime_ns: int = 1_700_000_000_000_000_000) -> None:
        self.files[path.strip("/")] = (data, f"e{next(_etags)}", mtime_ns)

    def remove(self, path: str) -> None:
        """Delete a file behind the filesystem's back (tests); `delete` is the write verb."""
        del self.files[path.strip("/")]

    def _is_dir(self, path: str) -> bool:
        if path == "" or path in self.dirs:
            return True
        prefix = path + "/"
        return any(p.startswith(prefix) for p in self.files) or any(
            d.startswith(prefix) for d in self.dirs
        )

    async def _call(self, fn, op: str = ""):  # type: ignore[no-untyped-def]
        async def attempt():  # type: ignore[no-untyped-def]
            await self.faults.apply(op)
            return fn()

        self.stats.requests += 1
        return await with_retry(self.retry, attempt, stats=self.stats)

    async def stat(self, path: str) -> Entry:
        def do() -> Entry:
            name = path.rsplit("/", 1)[-1]
            if path in self.files:
                data, etag, mtime = self.files[path]
                return Entry(name, False, len(data), mtime, etag)
            if self._is_dir(path):
                return Entry(name, True)
            raise NotFound(path)

        return await self._call(do)

    async def list(self, path: str) -> AsyncIterator[list[Entry]]:
        def do() -> list[Entry]:
            if not self._is_dir(path):
                raise NotFound(path)
            prefix = path + "/" if path else ""
            seen: dict[str, Entry] = {}
            for d in sorted(self.dirs):
                if d.startswith(prefix) and d != path:
                    seen[d[len(prefix) :].partition("/")[0]] = Entry(
                        d[len(prefix) :].partition("/")[0], True
                    )
            for p, (data, etag, mtime) in sorted(self.files.items()):
                if not p.startswith(prefix):
                    continue
                rest = p[len(prefix) :]
                head, sep, _ = rest.partition("/")
                if sep:
                    seen[head] = Entry(head, True)
                elif head not in seen:
                    seen[head] = Entry(head, False, len(data), mtime, etag)
            return list(seen.values())

        entries = await self._call(do)
        for i in range(0, len(entries), self.page_size):
            yield entries[i : i + self.page_size]

    async def read(self, path: str, offset: int, length: int, etag: str | None = None) -> bytes:
        def do() -> bytes:
            if path not in self.files:
                raise NotFound(path)
            data, current, _ = self.files[path]
            if etag is not None and etag != current:
                raise Changed(path)
            self.faults.reads.append((path, offset, length))
            return data[offset : offset + length]

        out = await self._call(do, "read")
        self.stats.bytes_fetched += len(out)
        return out
