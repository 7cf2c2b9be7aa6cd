"""An in-memory backend for core tests, with fault injection (a test double: it lives with the
tests, never in dsmount/).

Objects are a dict of path -> bytes; directories are implied by paths (as in blob storage) or
made explicit by `make_dir` (a marker, as hdi_isfolder blobs are). `faults` lets a test make
the next N calls fail with a given error, or every call slow, to drive the retry policy,
deadlines and errno mapping without a network; `faults.ops` limits them to some operations
("put", "commit", "delete", "read", ...).

It writes like a blob container: parts are staged out of sight and `commit` swaps the new
bytes in at once (`MemoryUpload`). Every verb goes through `MemoryBackend._call`, so `faults`
(with `faults.ops` naming "put", "commit", "delete", "mkdir", "rmdir", "copy", "rename") drive
retries and failures exactly as for reads. `staged_bytes` counts the bytes put (a test proves
an append uploads only new bytes).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import trio

from dsmount.errors import AlreadyExists, Changed, CrossDevice, NotEmpty, NotFound
from dsmount.storage.base import Backend, Capabilities, Entry, Part, Upload, check_tiling
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


class MemoryBackend(Backend):
    """Stands in for a cloud kind: writable, remote, disk-cacheable."""

    kind = "memory"
    capabilities = Capabilities(writable=True, remote=True, disk_cacheable=True, uploads=True)
    native_dir_rename = True
    staged_bytes = 0  # bytes ever given to `put`
    commits = 0

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

    # -- the write verbs ---------------------------------------------------------------------
    def _entry(self, path: str) -> Entry:
        data, etag, mtime = self.files[path]
        return Entry(path.rsplit("/", 1)[-1], False, len(data), mtime, etag)

    async def create(self) -> bool:
        return False  # it exists from the start

    async def begin_upload(
        self, path: str, *, base: Entry | None = None, append: bool = False,
        parents: bool = False,
    ) -> Upload:
        path = path.strip("/")
        kept = base.size if append and base is not None else 0
        return MemoryUpload(self, path, base, kept)

    async def delete(self, path: str) -> None:
        def do() -> None:
            if self.files.pop(path.strip("/"), None) is None:
                raise NotFound(f"delete {path!r}: no such file")

        await self._call(do, "delete")

    async def make_dir(self, path: str) -> Entry:
        path = path.strip("/")

        def do() -> Entry:
            if path in self.files or self._is_dir(path):
                raise AlreadyExists(f"mkdir {path!r}: exists")
            self.dirs.add(path)
            return Entry(path.rsplit("/", 1)[-1], True)

        entry: Entry = await self._call(do, "mkdir")
        return entry

    async def remove_dir(self, path: str) -> None:
        path = path.strip("/")

        def do() -> None:
            prefix = path + "/"
            if any(p.startswith(prefix) for p in self.files) or any(
                d.startswith(prefix) for d in self.dirs
            ):
                raise NotEmpty(f"rmdir {path!r}: not empty")
            if path not in self.dirs:
                raise NotFound(f"rmdir {path!r}: no such directory")
            self.dirs.discard(path)

        await self._call(do, "rmdir")

    async def copy(self, src: str, dst: str) -> Entry:
        src, dst = src.strip("/"), dst.strip("/")

        def do() -> Entry:
            if src not in self.files:
                raise NotFound(f"copy {src!r}: no such file")
            self.put(dst, self.files[src][0])
            return self._entry(dst)

        entry: Entry = await self._call(do, "copy")
        return entry

    async def rename(
        self, src: str, dst: str, *, is_dir: bool = False, max_entries: int = 1000
    ) -> Entry | None:
        src, dst = src.strip("/"), dst.strip("/")

        def do() -> Entry | None:
            if not is_dir:
                if src not in self.files:
                    raise NotFound(f"rename {src!r}: no such file")
                data, etag, mtime = self.files.pop(src)
                self.files[dst] = (data, etag, mtime)  # a native rename keeps the version
                return self._entry(dst)
            moved = [p for p in self.files if p.startswith(src + "/")]
            dirs = [d for d in self.dirs if d == src or d.startswith(src + "/")]
            if len(moved) + len(dirs) > max_entries:
                raise CrossDevice(f"rename {src!r}: more than {max_entries} entries")
            for p in moved:
                self.files[dst + p[len(src) :]] = self.files.pop(p)
            for d in dirs:
                self.dirs.discard(d)
                self.dirs.add(dst + d[len(src) :])
            return None

        result: Entry | None = await self._call(do, "rename")
        return result


class MemoryUpload(Upload):
    def __init__(self, backend: MemoryBackend, path: str, base: Entry | None, kept: int) -> None:
        self.backend = backend
        self.path = path
        self.base = base
        self.kept = kept
        self._staged: dict[str, bytes] = {}
        self._next = 0

    async def put(self, offset: int, data: bytes | bytearray | memoryview) -> Part:
        blob = bytes(data)

        def do() -> Part:
            self._next += 1
            token = f"p{self._next}"
            self._staged[token] = blob
            self.backend.staged_bytes += len(blob)
            self.backend.stats.bytes_uploaded += len(blob)
            return Part(offset, len(blob), token)

        part: Part = await self.backend._call(do, "put")
        return part

    async def commit(self, parts: Sequence[Part], size: int, *, keep: bool = True,
                     md5: bytes | None = None, exclusive: bool = False) -> Entry:
        start = self.kept if keep else 0
        check_tiling(parts, start, size, f"commit {self.path!r}")
        backend = self.backend

        def do() -> Entry:
            prefix = b""
            if start:
                current = backend.files.get(self.path)
                if current is None or self.base is None or current[1] != self.base.etag:
                    raise Changed(f"commit {self.path!r}: the base version was replaced")
                prefix = current[0][:start]
            body = prefix + b"".join(self._staged[p.token] for p in parts)
            if self.path in backend.dirs:
                raise AlreadyExists(f"commit {self.path!r}: a directory has that name")
            if exclusive and self.path in backend.files:
                raise AlreadyExists(f"commit {self.path!r}: the file exists")
            backend.put(self.path, body)
            backend.commits += 1
            return backend._entry(self.path)

        entry: Entry = await backend._call(do, "commit")
        self._staged.clear()
        return entry

    async def abort(self) -> bool:
        self._staged.clear()
        return True
