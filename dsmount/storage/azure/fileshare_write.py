"""The write verbs of the file share backend, mixed into `FileShareBackend`: every request is a
raw request through the same SDK pipeline as the reads (`_send`), under `with_retry` (`_call`).

Azure Files has no atomic commit, so:
- a new version of a file is written into a temporary file in the same directory
  (`writes.temp_name`: Create File, then Put Range of at most 4 MiB per request while the
  writer writes, growing the file by Set File Properties as it goes), and renamed over the
  target at commit (Rename File with replace-if-exists), so readers see the old file or the
  whole new one;
- an append writes in place at the end of the file (readers may see it grow; a file's content
  headers are reset by the resize, as Set File Properties does);
- directories are native: Create Directory, Delete Directory, Rename Directory.

Retries of calls that change state are safe: a retried delete that finds nothing, or a
retried Create Directory that finds the directory, succeed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from dsmount.errors import AlreadyExists, DsmountError, NotEmpty, NotFound, NotSupported
from dsmount.storage.azure.common import StreamedBody, status_error
from dsmount.storage.azure.fileshare_listing import entry_from_headers
from dsmount.storage.base import Entry
from dsmount.storage.writes import Part, Upload, check_tiling, temp_name

if TYPE_CHECKING:
    from dsmount.storage.azure.fileshare import FileShareBackend

MAX_RANGE = 4 * 1024**2  # the service's largest Put Range
_GROW_MIN = 64 * 1024**2  # a temporary file grows at least this much at a time (sparse)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class FileShareUpload(Upload):
    def __init__(self, backend: FileShareWrites, path: str, base: Entry | None, *, in_place: bool
                 ) -> None:
        self.backend = backend
        self.path = path
        self.base = base
        self.in_place = in_place
        self.kept = base.size if in_place and base is not None else 0
        # Datastore path of the file being written: the target (in place) or a temporary one.
        self.target = path if in_place else _join(_parent(path), temp_name(path))
        self.temp_path = None if in_place else self.target
        self._size = base.size if in_place and base is not None else -1  # -1: not created
        self._grow = trio.Lock()

    async def _ensure_size(self, end: int) -> None:
        async with self._grow:
            if self._size >= end:
                return
            # A temporary file is sparse and cut to size at commit: grow it in big steps. A
            # file written in place grows exactly (readers see its size).
            size = end if self.in_place else max(end, 2 * self._size, _GROW_MIN)
            if self._size < 0:
                await self.backend._create_file(self.target, size)
            else:
                await self.backend._resize(self.target, size)
            self._size = size

    async def put(self, offset: int, data: bytes | bytearray | memoryview) -> Part:
        view = memoryview(data)
        await self._ensure_size(offset + len(view))
        for start in range(0, len(view), MAX_RANGE):
            await self.backend._put_range(self.target, offset + start,
                                          view[start : start + MAX_RANGE])
        return Part(offset, len(view))

    async def commit(self, parts: Sequence[Part], size: int, *, keep: bool = True) -> Entry:
        start = self.kept if keep else 0
        check_tiling(parts, start, size, f"commit {self.path!r}")
        async with self._grow:
            if self._size < 0:
                await self.backend._create_file(self.target, size)
            elif self._size != size:
                await self.backend._resize(self.target, size)
            self._size = size
        if self.in_place:
            return await self.backend.stat(self.path)
        headers = await self.backend._rename(self.target, self.path, is_dir=False)
        self.temp_path = None
        fields = {k: headers.get(k) for k in ("ETag", "Last-Modified", "x-ms-file-last-write-time")}
        fields = {k: v for k, v in fields.items() if v is not None}
        fields["Content-Length"] = str(size)
        return entry_from_headers(self.path.rsplit("/", 1)[-1], fields, is_dir=False)

    async def commit_whole(self, data: bytes) -> Entry:
        if self.in_place:
            return await super().commit_whole(data)
        async with self._grow:  # created at its exact size: no resize before the rename
            if self._size < 0:
                await self.backend._create_file(self.target, len(data))
                self._size = len(data)
        parts = [await self.put(0, data)] if data else []
        return await self.commit(parts, len(data), keep=False)

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


class FileShareWrites:
    """Mixed into FileShareBackend; see the module docstring."""

    writable = True
    native_dir_rename = True

    if TYPE_CHECKING:
        _call = FileShareBackend._call
        _send = FileShareBackend._send
        _share_client = FileShareBackend._share_client
        _full = FileShareBackend._full
        _url = FileShareBackend._url
        stat = FileShareBackend.stat
        stats = FileShareBackend.stats
        target = FileShareBackend.target

    async def _request(
        self, method: str, path: str, headers: dict[str, str], params: Any = None,
        content: bytes | memoryview | None = None,
    ) -> tuple[int, Any, bytes]:
        client = self._share_client()
        body: Any = content
        if content is None and method == "PUT":
            headers["Content-Length"] = "0"
        elif content is not None:
            # Signed by the SDK's policy: the transport must not add its own after.
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Length"] = str(len(content))
            if len(content) > StreamedBody.CHUNK:
                body = StreamedBody(content)
        url = self._url(client, self._full(path))
        response = await self._send(method, url, headers, params, body)
        try:
            body = await response.read()
            return response.status_code, response, body
        finally:
            await response.close()

    async def _expect(self, what: str, ok: tuple[int, ...], method: str, path: str,
                      headers: dict[str, str], params: Any = None,
                      content: bytes | memoryview | None = None) -> Any:
        async def call() -> Any:
            status, response, body = await self._request(method, path, dict(headers), params,
                                                         content)
            if status not in ok:
                raise status_error(response, body)
            return response.headers

        return await self._call(what, call)

    async def _create_file(self, path: str, size: int) -> None:
        headers = {"x-ms-type": "file", "x-ms-content-length": str(size)}
        await self._expect(f"write {path!r}", (201,), "PUT", path, headers)

    async def _resize(self, path: str, size: int) -> None:
        await self._expect(f"write {path!r}", (200,), "PUT", path,
                           {"x-ms-content-length": str(size)}, {"comp": "properties"})

    async def _put_range(self, path: str, offset: int, data: bytes | memoryview) -> None:
        headers = {"x-ms-range": f"bytes={offset}-{offset + len(data) - 1}",
                   "x-ms-write": "update"}
        await self._expect(f"write {path!r}", (201,), "PUT", path, headers, {"comp": "range"},
                           data)
        self.stats.bytes_uploaded += len(data)

    def _source_url(self, path: str) -> str:
        """The URL of `path` as a rename source (on the asyncio loop: it needs the client)."""
        client = self._share_client()
        url = self._url(client, self._full(path))
        if self.target.auth == "sas_token" and self.target.secret is not None:
            url += "?" + self.target.secret.reveal().lstrip("?")
        return url

    async def _rename(self, src: str, dst: str, *, is_dir: bool) -> Any:
        params = {"comp": "rename"}
        if is_dir:
            params["restype"] = "directory"

        async def rename() -> Any:
            headers = {
                "x-ms-file-rename-source": self._source_url(src),
                "x-ms-source-allow-trailing-dot": "true",
            }
            if not is_dir:
                headers["x-ms-file-rename-replace-if-exists"] = "true"
            status, response, body = await self._request("PUT", dst, headers, params)
            if status != 200:
                raise status_error(response, body)
            return response.headers

        try:
            return await self._call(f"rename {src!r}", rename)
        except NotFound:
            # A retry after a rename whose answer was lost finds no source: done if the
            # destination is there.
            with contextlib.suppress(NotFound):
                entry = await self.stat(dst)
                if entry.is_dir == is_dir:
                    return {"ETag": f'"{entry.etag}"' if entry.etag else ""}
            raise

    # --- the write verbs -----------------------------------------------------------------------
    async def begin_upload(
        self, path: str, *, base: Entry | None = None, append: bool = False
    ) -> Upload:
        return FileShareUpload(self, path.strip("/"), base, in_place=append and base is not None)

    async def delete(self, path: str) -> None:
        attempts = 0

        async def delete() -> None:
            nonlocal attempts
            attempts += 1
            status, response, body = await self._request("DELETE", path, {})
            if status == 404 and attempts > 1:
                return
            if status != 202:
                raise status_error(response, body)

        await self._call(f"delete {path!r}", delete)

    async def make_dir(self, path: str) -> Entry:
        attempts = 0

        async def create() -> Entry:
            nonlocal attempts
            attempts += 1
            status, response, body = await self._request("PUT", path, {},
                                                         {"restype": "directory"})
            if status == 201:
                return entry_from_headers(path.rsplit("/", 1)[-1], response.headers, is_dir=True)
            error = status_error(response, body)
            if status == 409 and error.code == "ResourceAlreadyExists":
                if attempts > 1:
                    return Entry(path.rsplit("/", 1)[-1], True)
                raise AlreadyExists(f"mkdir {path!r}: the name exists")
            raise error

        return await self._call(f"mkdir {path!r}", create)

    async def remove_dir(self, path: str) -> None:
        attempts = 0

        async def remove() -> None:
            nonlocal attempts
            attempts += 1
            status, response, body = await self._request("DELETE", path, {},
                                                         {"restype": "directory"})
            if status == 202 or (status == 404 and attempts > 1):
                return
            error = status_error(response, body)
            if status == 409 and error.code == "DirectoryNotEmpty":
                raise NotEmpty(f"rmdir {path!r}: the directory is not empty")
            raise error

        await self._call(f"rmdir {path!r}", remove)

    async def copy(self, src: str, dst: str) -> Entry:
        raise NotSupported(f"copy {src!r}: file shares rename natively; no copy is needed")

    async def rename(
        self, src: str, dst: str, *, is_dir: bool = False, max_entries: int = 1000
    ) -> Entry | None:
        headers = await self._rename(src, dst, is_dir=is_dir)
        if is_dir:
            return None
        return await self.stat(dst) if headers is not None else None
