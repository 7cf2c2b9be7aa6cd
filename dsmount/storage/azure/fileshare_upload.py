"""The upload object of the file share backend.

Azure Files has no atomic commit, so:
- a new version of a file is written into a temporary file in the same directory
  (`writes.temp_name`: Create File, then Put Range of at most 4 MiB per request while the
  writer writes, growing the file by Set File Properties as it goes), and renamed over the
  target at commit (Rename File with replace-if-exists), so readers see the old file or the
  whole new one;
- an append writes in place at the end of the file (readers may see it grow; a file's content
  headers are reset by the resize, as Set File Properties does).

Requests go through the share's REST client (`fileshare_client.ShareRest`), each attempt run by
the backend's `_call` (retried, errors mapped).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import trio

from dsmount.errors import AlreadyExists, DsmountError, NotFound
from dsmount.storage.azure.backend import AzureBackend
from dsmount.storage.azure.fileshare_client import ShareRest
from dsmount.storage.azure.fileshare_listing import entry_from_headers
from dsmount.storage.base import Entry, Part, Upload, check_tiling
from dsmount.storage.names import content_type
from dsmount.storage.writes import temp_name

MAX_RANGE = 4 * 1024**2  # the service's largest Put Range
_GROW_MIN = 64 * 1024**2  # a temporary file grows at least this much at a time (sparse)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class FileShareUpload(Upload):
    def __init__(self, backend: AzureBackend, rest: ShareRest, full: Callable[[str], str],
                 path: str, base: Entry | None, *, in_place: bool, parents: bool = False
                 ) -> None:
        self.backend = backend
        self.rest = rest
        self._full = full
        self.path = path
        self.base = base
        self.in_place = in_place
        self.kept = base.size if in_place and base is not None else 0
        # Datastore path of the file being written: the target (in place) or a temporary one.
        self.target = path if in_place else _join(_parent(path), temp_name(path))
        self.temp_path = None if in_place else self.target
        self._size = base.size if in_place and base is not None else -1  # -1: not created
        self._grow = trio.Lock()
        self._parents = parents

    async def _ensure_size(self, end: int) -> None:
        async with self._grow:
            if self._size >= end:
                return
            # A temporary file is sparse and cut to size at commit: grow it in big steps. A
            # file written in place grows exactly (readers see its size).
            size = end if self.in_place else max(end, 2 * self._size, _GROW_MIN)
            if self._size < 0:
                await self._create_file(size)
            else:
                await self._resize(size)
            self._size = size

    async def put(self, offset: int, data: bytes | bytearray | memoryview) -> Part:
        view = memoryview(data)
        await self._ensure_size(offset + len(view))
        for start in range(0, len(view), MAX_RANGE):
            await self._put_range(offset + start, view[start : start + MAX_RANGE])
        return Part(offset, len(view))

    async def commit(self, parts: Sequence[Part], size: int, *, keep: bool = True,
                     md5: bytes | None = None, exclusive: bool = False) -> Entry:
        start = self.kept if keep else 0
        check_tiling(parts, start, size, f"commit {self.path!r}")
        async with self._grow:
            if self._size < 0:
                await self._create_file(size)
            elif self._size != size or md5 is not None:
                # With an MD5: set only now that every byte is in place (and before the rename),
                # so a file cut short never carries one.
                await self._resize(size, md5)
            self._size = size
        if self.in_place:
            return await self.backend.stat(self.path)
        try:
            headers = await rename_over(self.backend, self.rest, self._full, self.target,
                                        self.path, is_dir=False, replace=not exclusive)
        except AlreadyExists:
            await self.abort()
            raise AlreadyExists(f"{self.path!r} appeared meanwhile; not overwritten") from None
        self.temp_path = None
        fields = {k: headers.get(k) for k in ("ETag", "Last-Modified", "x-ms-file-last-write-time")}
        fields = {k: v for k, v in fields.items() if v is not None}
        fields["Content-Length"] = str(size)
        return entry_from_headers(self.path.rsplit("/", 1)[-1], fields, is_dir=False)

    async def commit_whole(self, data: bytes, *, md5: bytes | None = None,
                           exclusive: bool = False) -> Entry:
        if self.in_place:
            return await super().commit_whole(data, md5=md5, exclusive=exclusive)
        async with self._grow:  # created at its exact size: no resize before the rename
            if self._size < 0:
                await self._create_file(len(data))
                self._size = len(data)
        parts = [await self.put(0, data)] if data else []
        return await self.commit(parts, len(data), keep=False, md5=md5, exclusive=exclusive)

    async def abort(self) -> bool:
        if self.temp_path is None or self._size < 0:
            return True
        with trio.CancelScope(shield=True):
            try:
                await self.backend.delete(self.temp_path)
            except NotFound:
                return True
            except DsmountError:
                return False  # still journaled: the next attach deletes it
        return True

    # --- requests on the file being written, each retried --------------------------------------
    async def _create_file(self, size: int) -> None:
        full = self._full(self.target)
        try:
            await self.backend._call(
                f"write {self.target!r}", lambda: self.rest.create_file(full, size)
            )
        except NotFound:
            if not self._parents:
                raise
            # As `mkdir -p`: each missing directory, then the file again.
            parts = _parent(full).split("/")
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                await self.backend._call(f"mkdir {d!r}",
                                         lambda d=d: self.rest.create("directory", d))
            await self.backend._call(
                f"write {self.target!r}", lambda: self.rest.create_file(full, size)
            )

    async def _resize(self, size: int, md5: bytes | None = None) -> None:
        full = self._full(self.target)
        content: dict[str, str] = {}
        if md5 is not None:
            content = {"x-ms-content-md5": base64.b64encode(md5).decode("ascii"),
                       "x-ms-content-type": content_type(self.path)}
        await self.backend._call(f"write {self.target!r}",
                                 lambda: self.rest.resize(full, size, content))

    async def _put_range(self, offset: int, data: bytes | memoryview) -> None:
        full = self._full(self.target)
        await self.backend._call(
            f"write {self.target!r}", lambda: self.rest.put_range(full, offset, data)
        )
        self.backend.stats.bytes_uploaded += len(data)


async def rename_over(backend: AzureBackend, rest: ShareRest, full: Callable[[str], str],
                      src: str, dst: str, *, is_dir: bool, replace: bool = True) -> Any:
    """Rename datastore path `src` over `dst` (a file replaced); the response headers. A retry
    after a rename whose answer was lost finds no source: done if the destination is there."""
    src_full, dst_full = full(src), full(dst)
    try:
        return await backend._call(
            f"rename {src!r}",
            lambda: rest.rename(src_full, dst_full, is_dir=is_dir, replace=replace),
        )
    except NotFound:
        with contextlib.suppress(NotFound):
            entry = await backend.stat(dst)
            if entry.is_dir == is_dir:
                return {"ETag": f'"{entry.etag}"' if entry.etag else ""}
        raise
