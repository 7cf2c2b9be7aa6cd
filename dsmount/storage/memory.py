"""An in-memory backend for core tests, with fault injection.

Objects are a dict of path -> bytes; directories are implied by paths (as in blob storage).
`faults` lets a test make the next N calls fail with a given error, or every call slow, to
drive the retry policy, deadlines and errno mapping without a network.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

from dsmount.errors import Changed, NotFound
from dsmount.storage.base import Backend, Entry
from dsmount.storage.retry import RetryPolicy, with_retry

_etags = itertools.count(1)


@dataclass
class Faults:
    fail_next: int = 0
    error: Exception | None = None
    delay: float = 0.0
    calls: int = 0
    reads: list[tuple[str, int, int]] = field(default_factory=list)

    async def apply(self) -> None:
        self.calls += 1
        if self.delay:
            await trio.sleep(self.delay)
        if self.fail_next > 0 and self.error is not None:
            self.fail_next -= 1
            raise self.error


class MemoryBackend(Backend):
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
        self.page_size = page_size
        self.faults = Faults()
        self.retry = retry or RetryPolicy(base_delay=0.001, max_delay=0.01)
        for path, data in (files or {}).items():
            self.put(path, data)

    def put(self, path: str, data: bytes, mtime_ns: int = 1_700_000_000_000_000_000) -> None:
        self.files[path.strip("/")] = (data, f"e{next(_etags)}", mtime_ns)

    def delete(self, path: str) -> None:
        del self.files[path.strip("/")]

    def _is_dir(self, path: str) -> bool:
        if path == "":
            return True
        prefix = path + "/"
        return any(p.startswith(prefix) for p in self.files)

    async def _call(self, fn):  # type: ignore[no-untyped-def]
        async def attempt():  # type: ignore[no-untyped-def]
            await self.faults.apply()
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

        out = await self._call(do)
        self.stats.bytes_fetched += len(out)
        return out
