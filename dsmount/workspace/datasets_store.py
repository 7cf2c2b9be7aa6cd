"""The storage verbs datasets use, in one place: list a directory, read a small object, create
an object only if it is absent (the commit point), and stream an object with ranged reads.

Everything goes through the blocking face of a registered datastore (`Registry.store`), so
datasets depend on four verbs of it and on nothing inside `dsmount.storage`:
`list_dir`, `read_range`, `put_bytes(exclusive=True)` and `close`.

Invariants:
- `put_if_absent` is the only write that decides anything: on a blob container it is one PUT
  with `If-None-Match: *` (the service refuses it atomically when the blob exists); on a local
  directory an exclusive create. A file share has no such condition, so there a check-then-put
  leaves a small window in which two writers can both win: datasets on a file share are safe
  against one writer at a time only.
- `RangeStream.read(n)` fetches at most n bytes beyond what it holds already (one ranged GET
  when its buffer is empty); only `readline` and iteration read ahead, in blocks.
"""

from __future__ import annotations

import io
from typing import Any

from dsmount.errors import BackendError
from dsmount.storage.files import Files
from dsmount.workspace.registry import Registry

SMALL_OBJECT_LIMIT = 64 * 1024 * 1024  # a catalog or metadata object larger is refused
_LINE_BLOCK = 64 * 1024  # read-ahead of readline / iteration


def open_store(registry: Registry, datastore: str) -> Files:
    """The datastore's store (the caller closes it)."""
    return registry.store(datastore)


def list_files(store: Files, directory: str) -> list[str]:
    """The names of the files directly in `directory` (none when it does not exist)."""
    files, _ = store.list_dir(directory)
    return files


def read_object(store: Files, path: str) -> bytes:
    """The whole of a small object."""
    parts: list[bytes] = []
    offset = 0
    while True:
        chunk = store.read_range(path, offset, 4 * 1024 * 1024)
        parts.append(chunk)
        offset += len(chunk)
        if len(chunk) < 4 * 1024 * 1024:
            return b"".join(parts)
        if offset > SMALL_OBJECT_LIMIT:
            raise BackendError(f"{path} is larger than {SMALL_OBJECT_LIMIT} bytes")


def put_if_absent(store: Files, path: str, data: bytes) -> bool:
    """Create `path` holding `data` unless it exists: True if this call created it."""
    return store.put_bytes(path, data, exclusive=True)


class RangeStream(io.BufferedIOBase):
    """A read-only, seekable binary stream over one object of known size (see the module
    docstring). Owns the store and closes it."""

    def __init__(self, store: Files, path: str, size: int) -> None:
        super().__init__()
        self._store = store
        self._path = path
        self._size = size
        self._pos = 0  # the position of the next byte to fetch
        self._buffer = b""  # bytes fetched ahead, starting at _pos - len(_buffer)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _fetch(self, n: int) -> bytes:
        n = min(n, self._size - self._pos)
        if n <= 0:
            return b""
        data = self._store.read_range(self._path, self._pos, n)
        self._pos += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        self._checkClosed()  # type: ignore[attr-defined]
        if size is None or size < 0:
            size = self._size
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        parts = [out]
        missing = size - len(out)
        while missing > 0:
            data = self._fetch(missing)
            if not data:
                break
            parts.append(data)
            missing -= len(data)
        return b"".join(parts)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        self._checkClosed()  # type: ignore[attr-defined]
        limit = self._size if size is None or size < 0 else size
        while b"\n" not in self._buffer and len(self._buffer) < limit:
            data = self._fetch(_LINE_BLOCK)
            if not data:
                break
            self._buffer += data
        end = self._buffer.find(b"\n")
        end = len(self._buffer) if end < 0 else end + 1
        end = min(end, limit)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line

    def tell(self) -> int:
        return self._pos - len(self._buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.tell(), io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos, self._buffer = base + offset, b""
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._store.close()
        super().close()
