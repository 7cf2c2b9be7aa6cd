"""A seekable binary stream over one remote file, for `Datastore.open`: each read is one ranged
request through the datastore's files (`storage.files`, under its retry policy)."""

from __future__ import annotations

import io
from typing import Any

from dsmount.storage.files import Files


class RangeReader(io.RawIOBase):
    """A seekable raw stream over one remote file: each read is one ranged request. Owns
    (and closes) the store."""

    def __init__(self, store: Files, path: str, size: int) -> None:
        super().__init__()
        self._store = store
        self._path = path
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        data = self._store.read_range(self._path, self._pos, n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._store.close()
        super().close()
