"""A version read through its manifest with the blocking storage face: what `download`,
`dsmount run --download` and the Python API's readers use, so a packed version reads like any
other tree of files.

Paths are those of the version; each file's bytes come from its own object (downloaded pinned
to the recorded ETag) or from its byte range of a pack. Writing is refused: versions are
immutable.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dsmount.errors import NotFound, ReadOnly
from dsmount.storage.manifest import Manifest, Row
from dsmount.storage.names import clean_path
from dsmount.storage.store import Progress, RemoteFile, Store

_CHUNK = 8 * 1024 * 1024


def fetch_manifest_blocking(inner: Store, name: str, dest: Path) -> Path:
    """Copy the manifest object `name` of `inner` to `dest` (ranged reads, no listing)."""
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as out:
        offset = 0
        while True:
            chunk = inner.read_range(name, offset, _CHUNK)
            out.write(chunk)
            offset += len(chunk)
            if len(chunk) < _CHUNK:
                break
    if offset == 0:
        tmp.unlink(missing_ok=True)
        raise NotFound(f"manifest {name!r} is empty or missing")
    tmp.replace(dest)
    return dest


class ManifestStore(Store):
    """A version of `inner` described by the manifest object `name` (fetched on creation)."""

    def __init__(self, inner: Store, name: str) -> None:
        self.inner = inner
        self.kind = inner.kind
        self._dir = tempfile.TemporaryDirectory(prefix="dsmount-manifest-")
        path = fetch_manifest_blocking(inner, name, Path(self._dir.name) / "manifest")
        self.manifest = Manifest(path)

    def describe(self) -> str:
        return f"{self.inner.describe()} (version {self.manifest.meta.get('root', '')})"

    def check(self) -> None:
        """The manifest opened: the version exists and is complete."""

    def create(self) -> bool:
        raise ReadOnly("a version is immutable")

    def _file(self, path: str, row: Row) -> RemoteFile:
        return RemoteFile(path, row.size, row.md5, None, row.mtime_ns / 1e9,
                          md5_known=True)

    def walk(self, prefix: str = "") -> Iterator[RemoteFile]:
        for path, row in self.manifest.walk(clean_path(prefix)):
            yield self._file(path, row)

    def stat(self, path: str) -> RemoteFile | None:
        path = clean_path(path)
        row = self.manifest.row(path)
        return None if row is None or row.is_dir else self._file(path, row)

    def download(self, f: RemoteFile, out: IO[bytes], *, progress: Progress) -> None:
        row = self.manifest.row(f.path)
        if row is None or row.is_dir:
            raise NotFound(f"{f.path}: not in this version")
        where = self.manifest.location(f.path, row)
        if where.offset == 0 and where.length >= _CHUNK:
            # A big file of its own: the store's parallel, pinned download.
            self.inner.download(RemoteFile(where.object, where.length, etag=where.etag), out,
                                progress=progress)
            return
        done = 0
        while done < where.length:
            chunk = self.inner.read_range(where.object, where.offset + done,
                                          min(_CHUNK, where.length - done))
            if not chunk:
                raise NotFound(f"{f.path}: its bytes are missing from {where.object}")
            out.write(chunk)
            done += len(chunk)
            progress(len(chunk))

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        row = self.manifest.row(clean_path(path))
        if row is None or row.is_dir:
            raise NotFound(f"{path}: not in this version")
        where = self.manifest.location(clean_path(path), row)
        if offset >= row.size or length <= 0:
            return b""
        return self.inner.read_range(where.object, where.offset + offset,
                                     min(length, row.size - offset))

    def upload(self, local: Path, path: str, *, size: int, md5: bytes, overwrite: bool,
               progress: Progress) -> None:
        raise ReadOnly("a version is immutable")

    def put_bytes(self, path: str, data: bytes, *, exclusive: bool = False) -> bool:
        raise ReadOnly("a version is immutable")

    def list_dir(self, path: str) -> tuple[list[str], list[str]]:
        files: list[str] = []
        dirs: list[str] = []
        try:
            for page in self.manifest.pages(clean_path(path)):
                for row in page:
                    (dirs if row.is_dir else files).append(row.name)
        except NotFound:
            return [], []
        return files, dirs

    def close(self) -> None:
        self.manifest.close()
        self.inner.close()
        self._dir.cleanup()
