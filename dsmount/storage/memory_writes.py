"""The write verbs of the in-memory backend (tests): uploads staged out of sight and swapped in
at commit, like a blob's blocks; delete, directories, copy and rename.

Every verb goes through `MemoryBackend._call`, so `faults` (with `faults.ops` naming "put",
"commit", "delete", "mkdir", "rmdir", "copy", "rename") drive retries and failures exactly as
for reads. `staged` counts the bytes put (a test proves an append uploads only new bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dsmount.errors import AlreadyExists, Changed, CrossDevice, NotEmpty, NotFound
from dsmount.storage.base import Entry
from dsmount.storage.writes import Part, Upload, check_tiling

if TYPE_CHECKING:
    from dsmount.storage.memory import MemoryBackend


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

    async def commit(self, parts: Sequence[Part], size: int, *, keep: bool = True) -> Entry:
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
            backend.put(self.path, body)
            backend.commits += 1
            return backend._entry(self.path)

        entry: Entry = await backend._call(do, "commit")
        self._staged.clear()
        return entry

    async def abort(self) -> bool:
        self._staged.clear()
        return True


class MemoryWrites:
    """Mixed into MemoryBackend (which provides `files`, `dirs`, `_call`, `put`)."""

    writable = True
    native_dir_rename = True
    staged_bytes = 0  # bytes ever given to `put`
    commits = 0

    files: dict[str, tuple[bytes, str, int]]
    dirs: set[str]
    _call: Callable[..., Any]
    put: Callable[..., None]
    _is_dir: Callable[[str], bool]

    def _entry(self, path: str) -> Entry:
        data, etag, mtime = self.files[path]
        return Entry(path.rsplit("/", 1)[-1], False, len(data), mtime, etag)

    async def begin_upload(
        self, path: str, *, base: Entry | None = None, append: bool = False
    ) -> Upload:
        path = path.strip("/")
        kept = base.size if append and base is not None else 0
        return MemoryUpload(self, path, base, kept)  # type: ignore[arg-type]

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
