"""A version served from its manifest: the mount's face of `storage.manifest`.

`ManifestBackend` wraps the datastore's own backend. `stat` and `list` are answered from the
local manifest (zero LIST and HEAD calls, whatever the size of the version; `walk` and
`file_info` too, with the MD5s the manifest recorded); `read` maps a
file to its bytes (its own object, or a byte range of a pack) and reads them through the
wrapped backend, pinned to the ETag the manifest recorded, so an object changed since the
version was made gives Changed (ESTALE), never mixed bytes.

`fetch_manifest` copies a manifest object to local disk with plain ranged reads (no HEAD), so
attaching costs the GETs of the manifest and nothing else; a manifest already on disk (a
restarted daemon) costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dsmount.errors import Changed, NotFound
from dsmount.storage.base import Backend, Capabilities, Entry, RemoteFile
from dsmount.storage.manifest import Location, Manifest, Row
from dsmount.storage.names import clean_path

FETCH_CHUNK = 8 * 1024 * 1024
# Entries `entry_now` keeps (LRU): the mount keeps no Entry per inode of a version, so what a
# getattr or open asks about again soon is answered without a query; ~400 B each.
ENTRY_CACHE = 4096
WALK_PAGE = 1000  # files per page of `walk`


def _entry(name: str, row: Row, location: Location | None) -> Entry:
    if row.is_dir:
        return Entry(name, True, 0, row.mtime_ns)
    # The cache identity of this file's bytes (with its path, in the block cache's keys):
    # short, because a million-entry version holds a million of them in the daemon.
    tag = row.md5.hex()[:16] if row.md5 else f"{row.size:x}-{row.mtime_ns:x}"
    if location is not None and location.etag:
        tag = f"{location.etag[-8:]}{location.offset:x}:{tag}"
    return Entry(name, False, row.size, row.mtime_ns, tag)


def _file(path: str, row: Row) -> RemoteFile:
    # No ETag: a version's file is pinned by its location (`read` passes the object's).
    return RemoteFile(path, row.size, row.md5, None, row.mtime_ns / 1e9, md5_known=True)


class ManifestBackend(Backend):
    """A read-only version: namespace from a manifest, bytes from the wrapped backend."""

    list_on_lookup = False  # a lookup is one local query: cheaper than any listing
    local_namespace = True  # the mount asks `entry_now` rather than keep an Entry per inode

    def __init__(self, inner: Backend, manifest: Manifest, *, name: str) -> None:
        super().__init__()
        self.inner = inner
        self.manifest = manifest
        self.name = name  # the manifest object, for status
        self.kind = inner.kind
        self.capabilities = Capabilities(
            remote=inner.capabilities.remote,
            disk_cacheable=inner.capabilities.disk_cacheable,
            locate=True,
        )
        self.stats = inner.stats  # one set of counters: the requests are the inner backend's
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def _row(self, path: str) -> Row:
        try:
            row = self.manifest.row(path.strip("/"))
        except sqlite3.ProgrammingError:  # closed: the datastore was detached
            raise NotFound(f"{path or '/'}: this version was detached") from None
        if row is None:
            raise NotFound(f"{path or '/'}: not in this version")
        return row

    def entry_now(self, path: str) -> Entry:
        path = path.strip("/")
        entries = self._entries
        entry = entries.get(path)
        if entry is not None:
            entries.move_to_end(path)
            return entry
        row = self._row(path)
        where = None if row.is_dir else self.manifest.location(path, row)
        entry = entries[path] = _entry(path.rsplit("/", 1)[-1], row, where)
        if len(entries) > ENTRY_CACHE:
            entries.popitem(last=False)
        return entry

    async def stat(self, path: str) -> Entry:
        return self.entry_now(path)

    async def list(self, path: str) -> AsyncIterator[list[Entry]]:
        path = path.strip("/")
        if not self._row(path).is_dir:
            raise NotFound(f"{path}: not a directory")
        for page in self.manifest.pages(path):
            out = []
            for row in page:
                child = f"{path}/{row.name}" if path else row.name
                where = None if row.is_dir else self.manifest.location(child, row)
                out.append(_entry(row.name, row, where))
            yield out

    def locate(self, path: str) -> Location:
        """Where the bytes of file `path` are (for a cache that keys by pack object)."""
        path = path.strip("/")
        row = self._row(path)
        if row.is_dir:
            raise NotFound(f"{path}: is a directory")
        return self.manifest.location(path, row)

    def objects(self) -> Backend:
        return self.inner

    def content_bytes(self) -> int:
        return self.manifest.total_bytes

    def directory_identity(self) -> tuple[int, int]:
        return self.inner.directory_identity()

    async def read(self, path: str, offset: int, length: int, etag: str | None = None) -> bytes:
        path = path.strip("/")
        row = self._row(path)
        if row.is_dir:
            raise NotFound(f"{path}: is a directory")
        where = self.manifest.location(path, row)
        if etag is not None and etag != _entry("", row, where).etag:
            raise Changed(f"{path}: not the version it was opened as")
        if offset >= row.size or length <= 0:
            return b""
        length = min(length, row.size - offset)
        return await self.inner.read(where.object, where.offset + offset, length, where.etag)

    async def walk(self, prefix: str = "") -> AsyncIterator[list[RemoteFile]]:
        """The manifest's own walk: MD5s recorded when the version was made."""
        page: list[RemoteFile] = []
        for path, row in self.manifest.walk(clean_path(prefix)):
            page.append(_file(path, row))
            if len(page) >= WALK_PAGE:
                yield page
                page = []
        if page:
            yield page

    async def file_info(self, path: str) -> RemoteFile | None:
        path = clean_path(path)
        row = self.manifest.row(path) if path else None
        return None if row is None or row.is_dir else _file(path, row)

    async def check(self) -> None:
        """The manifest is local and complete; the data's reachability shows at the first read
        (a LIST here would cost the call this backend exists to avoid)."""

    async def aclose(self) -> None:
        self.manifest.close()
        await self.inner.aclose()

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "manifest": self.name, "files": self.manifest.files}


def manifest_cache_path(directory: Path, location: str, name: str) -> Path:
    """Where a manifest object is kept on local disk: named by a hash of where it came from,
    so two datastores never share one and a restart finds its own."""
    digest = hashlib.sha256(f"{location}\0{name}".encode()).hexdigest()[:32]
    return directory / f"{digest}.manifest"


async def fetch_manifest(inner: Backend, name: str, dest: Path) -> Path:
    """`dest`, holding the object `name` of `inner` (fetched unless already there)."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.part")
    try:
        with open(tmp, "wb") as out:
            offset = 0
            while True:
                chunk = await inner.read(name, offset, FETCH_CHUNK)
                out.write(chunk)
                offset += len(chunk)
                if len(chunk) < FETCH_CHUNK:
                    break
        if offset == 0:
            raise NotFound(f"manifest {name!r} is empty or missing")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
