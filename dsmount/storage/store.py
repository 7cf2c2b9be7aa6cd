"""Blocking whole-file access to a datastore: the `Store` interface and its shared helpers.

The FUSE side reads through the trio-async `dsmount.storage` (ranged reads, caches). Uploads,
downloads, versions, registration checks and the Python API's readers need other verbs - put a
whole file, walk a prefix recursively, create a container - from plain synchronous code (the
CLI, a notebook, worker threads), so they go through this small interface instead. One
implementation per datastore kind (`local_store`, `azure/blob_store`, `azure/fileshare_store`);
`dsmount.storage.factory.make_store` builds one from a `DatastoreSpec`.

Invariants of every Store:
- Paths are relative to the store's root (its prefix), POSIX, without leading "/"; a path with
  "..", "." or NUL components is refused before it reaches the network or the disk.
- Every failure leaves a store as a `dsmount.errors` type whose message holds no secret.
- `upload` never leaves a half-written destination that could pass for a complete one (see
  each implementation), and with `overwrite=False` refuses to replace an object that appeared
  meanwhile wherever the service can say so atomically.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

Progress = Callable[[int], None]  # called with the number of bytes just moved
BIG_FILE = 32 * 1024 * 1024  # from this size one file is moved in parallel chunks
CHUNK_CONCURRENCY = 4  # parallel chunk requests for one big file


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file in a store, as a listing reports it."""

    path: str  # relative to the store root
    size: int
    md5: bytes | None = None  # the stored Content-MD5, when the listing carries it
    etag: str | None = None
    mtime: float | None = None  # seconds since the epoch
    md5_known: bool = True  # False: the listing cannot carry MD5s; ask `content_md5`


def file_md5(path: str | Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).digest()


class Store(abc.ABC):
    """Whole-file access to one datastore root (see the module docstring)."""

    kind = "abstract"

    @abc.abstractmethod
    def describe(self) -> str:
        """Where this store points, for messages (never a secret)."""

    @abc.abstractmethod
    def check(self) -> None:
        """One cheap call proving the store exists and the credentials work."""

    @abc.abstractmethod
    def create(self) -> bool:
        """Create the container/share/directory if missing; False if it already existed."""

    @abc.abstractmethod
    def walk(self, prefix: str = "") -> Iterator[RemoteFile]:
        """Every file below `prefix` (recursively); just that file if `prefix` names one."""

    @abc.abstractmethod
    def stat(self, path: str) -> RemoteFile | None:
        """The file at `path`, or None."""

    def content_md5(self, f: RemoteFile) -> bytes | None:
        """The file's stored MD5 (None if it has none)."""
        return f.md5

    @abc.abstractmethod
    def upload(
        self, local: Path, path: str, *, size: int, md5: bytes, overwrite: bool, progress: Progress
    ) -> None:
        """Store the local file at `path` (parents created as needed)."""

    @abc.abstractmethod
    def download(self, f: RemoteFile, out: IO[bytes], *, progress: Progress) -> None:
        """Write the file's bytes to `out` (seekable, positioned at 0); pinned to `f.etag`."""

    @abc.abstractmethod
    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (short only at the end)."""

    @abc.abstractmethod
    def put_bytes(self, path: str, data: bytes, *, exclusive: bool = False) -> bool:
        """Store a small object; with `exclusive`, False (and nothing written) if it exists."""

    @abc.abstractmethod
    def list_dir(self, path: str) -> tuple[list[str], list[str]]:
        """(file names, directory names) directly inside directory `path`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- local ------------------------------------------------------------------------------------
