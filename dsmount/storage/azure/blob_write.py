"""The write verbs of the blob backend: staged blocks committed at once, deletes, directory
markers, server-side copies and renames. Mixed into `BlobBackend`; every request is a raw
request through the same SDK pipeline as the reads (`_send`), each under `with_retry` (`_call`).

- An upload is Put Block per part and one Put Block List at commit (a file that fits in one
  part: one Put Blob at commit): until then nothing is visible, and the commit changes the
  blob in one request (readers see the old version or the
  whole new one). An append commits the blob's committed blocks plus the new ones, so only new
  bytes travel; the block list of a version this backend committed is remembered, so appending
  to it costs no Get Block List. A blob holds at most 50,000 committed blocks: past
  `MAX_KEPT_BLOCKS` an append rewrites the blob once in full-size parts instead.
- Retries of calls that change state are safe: a Put Block List whose lost answer was in fact
  a success is recognised by its block list (a retried If-Match would otherwise say 412); a
  retried delete that finds nothing, or a retried marker create that finds the marker, succeed.
- A rename is Copy Blob (the destination replaced atomically) then Delete Blob; a directory is
  renamed entry by entry, refused beforehand (CrossDevice) beyond `max_entries` objects.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import trio

from dsmount.errors import (
    AlreadyExists,
    BackendError,
    Changed,
    CrossDevice,
    NotEmpty,
    NotFound,
    TimedOut,
)
from dsmount.storage.azure.blob_listing import parse_http_date
from dsmount.storage.azure.common import StreamedBody, status_error
from dsmount.storage.base import Entry
from dsmount.storage.names import FOLDER_MARKER_KEY, is_folder_marker, strip_etag
from dsmount.storage.store import content_type
from dsmount.storage.writes import BlockIds, Part, Upload, check_tiling

if TYPE_CHECKING:
    from dsmount.storage.azure.blob import BlobBackend

MAX_KEPT_BLOCKS = 40_000  # below the service's 50,000 committed blocks per blob, with room
_BLOCK_LISTS_MAX = 1024  # (blob, ETag) -> committed block list, remembered for appends
_COPY_POLL = 0.05  # seconds between checks of a pending server-side copy


def block_list_xml(ids: Sequence[str]) -> bytes:
    # <Latest>: the uncommitted block of that id if there is one, else the committed one. Ids
    # are unique per upload, so it names exactly the block meant, in the fewest bytes.
    body = "".join(f"<Latest>{escape(i)}</Latest>" for i in ids)
    return f'<?xml version="1.0" encoding="utf-8"?><BlockList>{body}</BlockList>'.encode()


def parse_block_list(body: bytes) -> list[tuple[str, int]]:
    """(id, size) of each committed block of a Get Block List answer."""
    root = ET.fromstring(body)
    out = []
    for block in root.iterfind("./CommittedBlocks/Block"):
        out.append((block.findtext("Name") or "", int(block.findtext("Size") or 0)))
    return out


def _entry_from(name: str, size: int, headers: Any) -> Entry:
    modified = headers.get("Last-Modified")
    return Entry(
        name.rsplit("/", 1)[-1], False, size, parse_http_date(modified) if modified else 0,
        strip_etag(headers.get("ETag")),
    )


class BlobUpload(Upload):
    def __init__(
        self,
        backend: BlobWrites,
        path: str,
        name: str,
        base: Entry | None,
        kept_blocks: list[tuple[str, int]],
        ids: BlockIds,
    ) -> None:
        self.backend = backend
        self.path = path
        self.name = name
        self.base = base
        self.kept_blocks = kept_blocks
        self.kept = sum(size for _, size in kept_blocks)
        self.ids = ids

    async def put(self, offset: int, data: bytes | bytearray | memoryview) -> Part:
        block_id = self.ids.next()
        # Sent as it is: a (pooled) bytearray is not copied; a view is.
        body = data if isinstance(data, bytes | bytearray) else bytes(data)
        await self.backend._put_block(self.path, self.name, block_id, body)
        return Part(offset, len(body), block_id)

    async def commit(self, parts: Sequence[Part], size: int, *, keep: bool = True) -> Entry:
        start = self.kept if keep else 0
        check_tiling(parts, start, size, f"commit {self.path!r}")
        kept = [i for i, _ in self.kept_blocks] if keep and start else []
        sizes = [s for _, s in self.kept_blocks] if kept else []
        ids = kept + [p.token for p in parts]
        # Grafting onto kept blocks needs the base to be the blob's current version.
        if_match = self.base.etag if kept and self.base is not None else None
        entry = await self.backend._put_block_list(self.path, self.name, ids, size, if_match)
        self.backend._remember_blocks(
            self.name, entry.etag, list(zip(ids, sizes + [p.length for p in parts], strict=True))
        )
        return entry


    async def commit_whole(self, data: bytes) -> Entry:
        return await self.backend._put_blob(self.path, self.name, data)


class BlobWrites:
    """Mixed into BlobBackend; see the module docstring."""

    writable = True
    native_dir_rename = False

    if TYPE_CHECKING:
        _call = BlobBackend._call
        _send = BlobBackend._send
        _container = BlobBackend._container
        _blob_name = BlobBackend._blob_name
        _blob_url = BlobBackend._blob_url
        _head = BlobBackend._head
        _list_page = BlobBackend._list_page
        _dir_prefix = BlobBackend._dir_prefix
        stat = BlobBackend.stat
        stats = BlobBackend.stats
        retry = BlobBackend.retry
        target = BlobBackend.target

    _block_lists: OrderedDict[tuple[str, str], list[tuple[str, int]]]

    def _remember_blocks(self, name: str, etag: str | None, blocks: list[tuple[str, int]]) -> None:
        if not etag:
            return
        cache = self.__dict__.setdefault("_block_lists", OrderedDict())
        cache[(name, etag)] = blocks
        while len(cache) > _BLOCK_LISTS_MAX:
            cache.popitem(last=False)

    # --- raw requests (on the asyncio loop) ----------------------------------------------------
    async def _request(
        self, method: str, name: str, headers: dict[str, str], params: Any = None,
        content: bytes | bytearray | None = None,
    ) -> tuple[int, Any, bytes]:
        client = self._container()
        body: Any = content
        if content is None and method == "PUT":
            headers["Content-Length"] = "0"
        elif content is not None:
            # Both are signed by the SDK's policy: the transport must not add its own after
            # (and azure-core sets Content-Length itself only for bytes).
            headers.setdefault("Content-Type", "application/octet-stream")
            headers["Content-Length"] = str(len(content))
            if len(content) > StreamedBody.CHUNK:
                body = StreamedBody(content)
        response = await self._send(method, self._blob_url(client, name), headers, params, body)
        try:
            body = await response.read()
            return response.status_code, response, body
        finally:
            await response.close()

    async def _put_block(self, path: str, name: str, block_id: str, data: bytes | bytearray
                         ) -> None:
        async def put() -> None:
            status, response, body = await self._request(
                # The pipeline does not encode query values, and a base64 id has "+" "/" "=".
                "PUT", name, {}, {"comp": "block", "blockid": quote(block_id, safe="")}, data
            )
            if status != 201:
                raise status_error(response, body)

        await self._call(f"write {path!r}", put)
        self.stats.bytes_uploaded += len(data)

    async def _put_block_list(
        self, path: str, name: str, ids: list[str], size: int, if_match: str | None
    ) -> Entry:
        headers = {"x-ms-blob-content-type": content_type(path), "Content-Type": "application/xml"}
        if if_match:
            headers["If-Match"] = f'"{if_match}"'
        body = block_list_xml(ids)
        attempts = 0

        async def commit() -> Entry:
            nonlocal attempts
            attempts += 1
            status, response, text = await self._request(
                "PUT", name, dict(headers), {"comp": "blocklist"}, body
            )
            if status == 201:
                return _entry_from(name, size, response.headers)
            error = status_error(response, text)
            if status == 412 and attempts > 1:
                # An earlier attempt may have committed, its answer lost: then the blob's
                # block list is ours.
                current = await self._get_block_list(name)
                if current is not None and [i for i, _ in current[0]] == ids:
                    return _entry_from(name, size, current[1])
            raise error

        return await self._call(f"commit {path!r}", commit)

    async def _put_blob(self, path: str, name: str, data: bytes) -> Entry:
        """A small file in one request (Put Blob; no block list, so a first append rewrites
        it). Retried as it is: the same bytes again."""
        headers = {"x-ms-blob-type": "BlockBlob", "x-ms-blob-content-type": content_type(path)}

        async def put() -> Entry:
            status, response, body = await self._request(
                "PUT", name, dict(headers), None, data if data else None
            )
            if status != 201:
                raise status_error(response, body)
            return _entry_from(name, len(data), response.headers)

        entry = await self._call(f"write {path!r}", put)
        self.stats.bytes_uploaded += len(data)
        return entry

    async def _get_block_list(self, name: str) -> tuple[list[tuple[str, int]], Any] | None:
        status, response, body = await self._request(
            "GET", name, {}, {"comp": "blocklist", "blocklisttype": "committed"}
        )
        if status == 404:
            return None
        if status != 200:
            raise status_error(response, body)
        return parse_block_list(body), response.headers

    # --- the write verbs -------------------------------------------------------------------------
    async def begin_upload(
        self, path: str, *, base: Entry | None = None, append: bool = False
    ) -> Upload:
        name = self._blob_name(path)
        kept: list[tuple[str, int]] = []
        ids = BlockIds()
        if append and base is not None and base.size > 0:
            cached = self.__dict__.get("_block_lists", {}).get((name, base.etag))
            if cached is None:
                found = await self._call(f"append {path!r}", lambda: self._get_block_list(name))
                if found is None:
                    raise NotFound(f"append {path!r}: the blob is gone")
                blocks, headers = found
                if strip_etag(headers.get("ETag")) != base.etag:
                    raise Changed(f"append {path!r}: the blob changed since it was opened")
            else:
                blocks = cached
            raw = BlockIds.raw_length_for(len(blocks[0][0])) if blocks else None
            # Kept only if they are the whole blob (a blob written by Put Blob has no block
            # list), their ids can be matched in length, and the blob has room for more.
            if (
                raw is not None
                and sum(s for _, s in blocks) == base.size
                and len({len(i) for i, _ in blocks}) == 1
                and len(blocks) < MAX_KEPT_BLOCKS
            ):
                kept, ids = blocks, BlockIds(raw)
        return BlobUpload(self, path.strip("/"), name, base, kept, ids)

    async def delete(self, path: str) -> None:
        name = self._blob_name(path)
        attempts = 0

        async def delete() -> None:
            nonlocal attempts
            attempts += 1
            status, response, body = await self._request("DELETE", name, {})
            if status == 404 and attempts > 1:
                return  # an earlier attempt deleted it, its answer lost
            if status not in (200, 202):
                raise status_error(response, body)

        await self._call(f"delete {path!r}", delete)

    async def make_dir(self, path: str) -> Entry:
        name = self._blob_name(path)
        headers = {
            "x-ms-blob-type": "BlockBlob",
            f"x-ms-meta-{FOLDER_MARKER_KEY}": "true",
            "If-None-Match": "*",
        }
        attempts = 0

        async def create() -> Entry:
            nonlocal attempts
            attempts += 1
            status, response, body = await self._request("PUT", name, dict(headers))
            if status == 201:
                return Entry(name.rsplit("/", 1)[-1], True)
            if status == 409:
                existing = await self._head(name)
                size = int(existing.get("Content-Length") or 0) if existing is not None else -1
                marker = existing.get(f"x-ms-meta-{FOLDER_MARKER_KEY}") if existing else None
                if attempts > 1 and is_folder_marker(size, marker):
                    return Entry(name.rsplit("/", 1)[-1], True)
                raise AlreadyExists(f"mkdir {path!r}: a blob of that name exists")
            raise status_error(response, body)

        return await self._call(f"mkdir {path!r}", create)

    async def remove_dir(self, path: str) -> None:
        prefix = self._dir_prefix(path)
        page = await self._call(f"rmdir {path!r}", lambda: self._list_page(prefix, None, None, 1))
        if page.items:
            raise NotEmpty(f"rmdir {path!r}: the directory is not empty")
        name = self._blob_name(path)
        headers = await self._call(f"rmdir {path!r}", lambda: self._head(name))
        if headers is None:
            raise NotFound(f"rmdir {path!r}: no such directory")
        size = int(headers.get("Content-Length") or 0)
        if not is_folder_marker(size, headers.get(f"x-ms-meta-{FOLDER_MARKER_KEY}")):
            raise BackendError(f"rmdir {path!r}: not a directory")
        await self.delete(path)

    def _copy_source(self, name: str) -> str:
        url = self._blob_url(self._container(), name)
        if self.target.auth == "sas_token" and self.target.secret is not None and "?" not in url:
            # The copy request's own SAS does not authorize reading the source: it travels in
            # the source URL (a header, never logged).
            url += "?" + self.target.secret.reveal().lstrip("?")
        return url

    async def copy(self, src: str, dst: str) -> Entry:
        src_name, dst_name = self._blob_name(src), self._blob_name(dst)

        async def start() -> Any:
            headers = {"x-ms-copy-source": self._copy_source(src_name)}
            status, response, body = await self._request("PUT", dst_name, headers)
            if status not in (200, 202):
                raise status_error(response, body)
            return response.headers

        headers = await self._call(f"copy {src!r}", start)
        deadline = trio.current_time() + self.retry.deadline
        while (headers.get("x-ms-copy-status") or "success").lower() == "pending":
            if trio.current_time() > deadline:
                raise TimedOut(f"copy {src!r}: the server-side copy did not finish")
            await trio.sleep(_COPY_POLL)
            found = await self._call(f"copy {src!r}", lambda: self._head(dst_name))
            if found is None:
                raise NotFound(f"copy {src!r}: the destination vanished")
            headers = found
        if (headers.get("x-ms-copy-status") or "success").lower() != "success":
            raise BackendError(f"copy {src!r}: the server-side copy failed")
        entry = await self.stat(dst)
        return entry

    async def rename(
        self, src: str, dst: str, *, is_dir: bool = False, max_entries: int = 1000
    ) -> Entry | None:
        if not is_dir:
            entry = await self.copy(src, dst)
            await self.delete(src)
            return entry
        names = await self._all_below(src, max_entries)
        src_name = self._blob_name(src)
        marker = await self._call(f"rename {src!r}", lambda: self._head(src_name))
        base = self._blob_name(src)
        rel = [n[len(base) + 1 :] for n in names]
        for r in rel:  # copy everything first: an interruption leaves both, never neither
            await self.copy(f"{src}/{r}", f"{dst}/{r}")
        if marker is not None:
            await self.make_dir(dst)
        for r in rel:
            await self.delete(f"{src}/{r}")
        if marker is not None:
            await self.delete(src)
        return None

    async def _all_below(self, path: str, limit: int) -> list[str]:
        prefix = self._dir_prefix(path)
        names: list[str] = []
        marker: str | None = None
        while True:
            page = await self._call(
                f"rename {path!r}",
                lambda m=marker: self._list_page(prefix, m, None, min(5000, limit + 1)),
            )
            names += [item.name for item in page.items if not isinstance(item, str)]
            if len(names) > limit:
                raise CrossDevice(
                    f"rename {path!r}: more than {limit} objects below it (the blob directory "
                    "rename limit); copy and delete instead"
                )
            marker = page.next_marker
            if marker is None:
                return names
