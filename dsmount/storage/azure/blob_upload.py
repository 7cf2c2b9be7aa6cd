"""The upload object of the blob backend: staged blocks made visible by one commit.

- An upload is Put Block per part and one Put Block List at commit (a file that fits in one
  part: one Put Blob at commit): until then nothing is visible, and the commit changes the
  blob in one request (readers see the old version or the whole new one). An append commits
  the blob's committed blocks plus the new ones, so only new bytes travel; the block list of
  a version this backend committed is remembered (`BlockLists`), so appending to it costs no
  Get Block List. A blob holds at most 50,000 committed blocks: past `MAX_KEPT_BLOCKS` an
  append rewrites the blob once in full-size parts instead.
- A retried Put Block List whose lost answer was in fact a success is recognised by its block
  list (a retried If-Match would otherwise say 412).

Requests go through the container's REST client (`blob_client.BlobRest`), each attempt run by
the backend's `_call` (retried, errors mapped).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from dsmount.errors import AlreadyExists, Changed, NotFound
from dsmount.storage.azure.backend import AzureBackend
from dsmount.storage.azure.blob_client import BlobRest, block_list_xml
from dsmount.storage.azure.blob_listing import parse_http_date
from dsmount.storage.azure.common import status_error
from dsmount.storage.base import Entry, Part, Upload, check_tiling
from dsmount.storage.names import content_type, strip_etag
from dsmount.storage.writes import BlockIds

MAX_KEPT_BLOCKS = 40_000  # below the service's 50,000 committed blocks per blob, with room
_BLOCK_LISTS_MAX = 1024  # (blob, ETag) -> committed block list, remembered for appends


def entry_from(name: str, size: int, headers: Any) -> Entry:
    """The Entry of a blob just written, from the write's answer."""
    modified = headers.get("Last-Modified")
    return Entry(
        name.rsplit("/", 1)[-1], False, size, parse_http_date(modified) if modified else 0,
        strip_etag(headers.get("ETag")),
    )


class BlockLists:
    """The committed block lists of the versions this backend committed, by (blob, ETag),
    the oldest forgotten first."""

    def __init__(self) -> None:
        self._lists: OrderedDict[tuple[str, str], list[tuple[str, int]]] = OrderedDict()

    def remember(self, name: str, etag: str | None, blocks: list[tuple[str, int]]) -> None:
        if not etag:
            return
        self._lists[(name, etag)] = blocks
        while len(self._lists) > _BLOCK_LISTS_MAX:
            self._lists.popitem(last=False)

    def get(self, name: str, etag: str | None) -> list[tuple[str, int]] | None:
        return self._lists.get((name, etag)) if etag else None


class BlobUpload(Upload):
    def __init__(
        self,
        backend: AzureBackend,
        rest: BlobRest,
        block_lists: BlockLists,
        path: str,
        name: str,
        base: Entry | None,
        kept_blocks: list[tuple[str, int]],
        ids: BlockIds,
    ) -> None:
        self.backend = backend
        self.rest = rest
        self.block_lists = block_lists
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
        await self.backend._call(
            f"write {self.path!r}", lambda: self.rest.put_block(self.name, block_id, body)
        )
        self.backend.stats.bytes_uploaded += len(body)
        return Part(offset, len(body), block_id)

    async def commit(self, parts: Sequence[Part], size: int, *, keep: bool = True,
                     md5: bytes | None = None, exclusive: bool = False) -> Entry:
        start = self.kept if keep else 0
        check_tiling(parts, start, size, f"commit {self.path!r}")
        kept = [i for i, _ in self.kept_blocks] if keep and start else []
        sizes = [s for _, s in self.kept_blocks] if kept else []
        ids = kept + [p.token for p in parts]
        # Grafting onto kept blocks needs the base to be the blob's current version.
        if_match = self.base.etag if kept and self.base is not None else None
        entry = await self._put_block_list(ids, size, if_match, _content_headers(md5, exclusive))
        self.block_lists.remember(
            self.name, entry.etag, list(zip(ids, sizes + [p.length for p in parts], strict=True))
        )
        return entry

    async def _put_block_list(self, ids: list[str], size: int, if_match: str | None,
                              extra: dict[str, str]) -> Entry:
        headers = {
            "x-ms-blob-content-type": content_type(self.path),
            "Content-Type": "application/xml",
            **extra,
        }
        if if_match:
            headers["If-Match"] = f'"{if_match}"'
        body = block_list_xml(ids)

        async def commit(again: bool) -> Entry:
            status, response, text = await self.rest.request(
                "PUT", self.name, dict(headers), {"comp": "blocklist"}, body
            )
            if status == 201:
                return entry_from(self.name, size, response.headers)
            error = status_error(response, text)
            if status in (409, 412) and again:
                # An earlier attempt may have committed, its answer lost: then the blob's
                # block list is ours.
                current = await self.rest.get_block_list(self.name)
                if current is not None and [i for i, _ in current[0]] == ids:
                    return entry_from(self.name, size, current[1])
            if status in (409, 412) and "If-None-Match" in headers:
                raise self._exists()
            raise error

        return await self.backend._call_again(f"commit {self.path!r}", commit)

    def _exists(self) -> AlreadyExists:
        return AlreadyExists(f"{self.path!r} appeared meanwhile; not overwritten")

    async def commit_whole(self, data: bytes, *, md5: bytes | None = None,
                           exclusive: bool = False) -> Entry:
        """A small file in one request (Put Blob; no block list, so a first append rewrites
        it). Retried as it is: the same bytes again (exclusive: a blob found with exactly these
        bytes after a lost answer is ours)."""
        headers = {
            "x-ms-blob-type": "BlockBlob",
            "x-ms-blob-content-type": content_type(self.path),
            **_content_headers(md5, exclusive),
        }

        async def put(again: bool) -> Entry:
            status, response, body = await self.rest.request(
                "PUT", self.name, dict(headers), None, data if data else None
            )
            if status == 201:
                return entry_from(self.name, len(data), response.headers)
            if status in (409, 412) and exclusive:
                if again and md5 is not None:
                    found = await self.rest.head(self.name)
                    if found is not None and found.get("Content-MD5") == headers.get(
                            "x-ms-blob-content-md5") and int(found.get("Content-Length") or -1
                                                              ) == len(data):
                        return entry_from(self.name, len(data), found)
                raise self._exists()
            raise status_error(response, body)

        entry = await self.backend._call_again(f"write {self.path!r}", put)
        self.backend.stats.bytes_uploaded += len(data)
        return entry


def _content_headers(md5: bytes | None, exclusive: bool) -> dict[str, str]:
    """The whole blob's Content-MD5 (the service computes one only for Put Blob) and the
    create-only condition."""
    headers = {}
    if md5 is not None:
        headers["x-ms-blob-content-md5"] = base64.b64encode(md5).decode("ascii")
    if exclusive:
        headers["If-None-Match"] = "*"
    return headers


async def begin_blob_upload(
    backend: AzureBackend,
    rest: BlobRest,
    block_lists: BlockLists,
    path: str,
    name: str,
    *,
    base: Entry | None,
    append: bool,
) -> BlobUpload:
    """A new upload of blob `name`; with `append`, one that keeps `base`'s committed blocks
    where they are the whole blob and their ids can be matched in length."""
    kept: list[tuple[str, int]] = []
    ids = BlockIds()
    if append and base is not None and base.size > 0:
        blocks = block_lists.get(name, base.etag)
        if blocks is None:
            found = await backend._call(f"append {path!r}", lambda: rest.get_block_list(name))
            if found is None:
                raise NotFound(f"append {path!r}: the blob is gone")
            blocks, headers = found
            if strip_etag(headers.get("ETag")) != base.etag:
                raise Changed(f"append {path!r}: the blob changed since it was opened")
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
    return BlobUpload(backend, rest, block_lists, path.strip("/"), name, base, kept, ids)
