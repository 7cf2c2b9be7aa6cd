"""The REST client of one blob container: every request the blob backend sends, as plain
requests through the Azure SDK's asyncio client pipeline (`BlobBackend` composes it).

Authentication, SAS signing and the HTTP transport stay the SDK's (`common.lean_pipeline`);
what is sent and how answers are read is ours:

- List Blobs: the XML is parsed by `blob_listing`, not the SDK's model deserializer, and for a
  directory listing the next page is requested while the caller consumes this one (20,000
  blobs in one directory on Azurite: `walk_blobs` 8.9 s / 4.7 s client CPU, this 2.5 s /
  0.8 s; python -m scripts.bench adapters --list-blobs 20000);
- Get Blob Properties: one HEAD;
- Get Blob: exactly one ranged GET per call, raw bytes, no SDK chunking - the cache above
  decides block sizes;
- Put Block, Put Block List, Put Blob, Get Block List, Delete Blob, Copy Blob.

Invariants:
- Every method here runs ON THE ASYNCIO LOOP (`bridge.AsyncioThread`): the backend passes it to
  `AzureBackend._call`, which bridges from trio, retries and maps errors. Nothing here retries.
- An unexpected status leaves as `common.HttpStatus` (typed by `map_error` above); a 404 that
  the verb expects is an answer (None), not an error.
- `get_range` returns exactly the bytes the server promised in Content-Range, or raises: a
  short body is Transient, bytes that do not match the range's MD5 (asked for ranges up to
  4 MiB) or, for a whole-blob read, the blob's stored MD5 are an IntegrityError (`integrity`).
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from dsmount.errors import BackendError, Transient
from dsmount.storage.azure.blob_listing import ListPage, parse_list_page
from dsmount.storage.azure.common import (
    AzureTarget,
    content_range,
    pipeline_options,
    read_body,
    sdk_credential,
    status_error,
)
from dsmount.storage.azure.rest import AzureRest
from dsmount.storage.integrity import range_md5_headers, verify_md5
from dsmount.storage.retry import BackendStats

_PREFETCH_MAX = 16  # listing pages fetched ahead and not yet consumed, across all listings
_PREFETCH_TTL = 30.0  # seconds an unclaimed prefetched page (an abandoned listing) is kept


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


class BlobRest(AzureRest):
    """Raw requests to one container (see the module docstring). `stats.requests` counts every
    request sent, on the loop thread (its only writer), so pages read ahead count too."""

    def __init__(
        self,
        target: AzureTarget,
        container: str,
        *,
        stats: BackendStats,
        max_connections: int,
        attempt_timeout: float,
    ) -> None:
        super().__init__(target, max_connections=max_connections, attempt_timeout=attempt_timeout)
        self.container = container
        self.stats = stats
        self.closed = False
        # Listing pages requested ahead, by (listing id, marker); touched on the loop only.
        self._prefetched: dict[tuple[int, str], asyncio.Task[ListPage]] = {}

    def _make_client(self) -> Any:
        from azure.storage.blob.aio import ContainerClient

        credential, self._token_credential = sdk_credential(self.target)
        # 4 MiB socket reads: an 8 MiB block arrives without flow-control churn.
        options = pipeline_options(
            endpoint=self.target.endpoint,
            max_connections=self.max_connections,
            attempt_timeout=self.attempt_timeout,
            read_bufsize=4 * 1024 * 1024,
        )
        return ContainerClient(
            account_url=self.target.endpoint,
            container_name=self.container,
            credential=credential,
            **options,
        )

    def _count(self) -> None:
        self.stats.requests += 1

    async def close(self) -> None:
        """Cancel pages read ahead and close the SDK client (on the loop)."""
        self.closed = True
        for task in self._prefetched.values():
            task.cancel()
        self._prefetched.clear()
        await super().close()

    def url(self, path: str) -> str:
        """The URL of blob `path` (a full blob name)."""
        base, _, query = self.client().url.partition("?")  # a connection string's SAS: query
        url = f"{base}/{quote(path, safe='~/')}"
        return f"{url}?{query}" if query else url

    def copy_source(self, name: str) -> str:
        url = self.url(name)
        if self.target.auth == "sas_token" and self.target.secret is not None and "?" not in url:
            # The copy request's own SAS does not authorize reading the source: it travels in
            # the source URL (a header, never logged).
            url += "?" + self.target.secret.reveal().lstrip("?")
        return url

    # --- reading ------------------------------------------------------------------------------
    async def list_page(
        self,
        prefix: str,
        marker: str | None,
        delimiter: str | None,
        max_results: int,
        listing: int | None = None,
        md5: bool = False,
    ) -> ListPage:
        """One List Blobs page. For a `listing` (an id unique to one walk of one directory),
        the request for the following page is sent as soon as this one has arrived, so the
        server works on it while the caller consumes this page (listing time ~ server time
        instead of server + client time). A prefetched page serves only its own listing."""
        ahead = self._prefetched.pop((listing, marker), None) if listing is not None else None
        if ahead is not None:
            # A failed prefetch raises here; the retry of this attempt sends a fresh request.
            return await ahead
        page = await self._fetch_page(prefix, marker, delimiter, max_results, md5)
        if listing is not None and page.next_marker is not None and not self.closed:
            task = asyncio.get_running_loop().create_task(
                self._fetch_page(prefix, page.next_marker, delimiter, max_results, md5)
            )
            self._keep_prefetch((listing, page.next_marker), task)
        return page

    def _keep_prefetch(self, key: tuple[int, str], task: asyncio.Task[ListPage]) -> None:
        loop = asyncio.get_running_loop()
        self._prefetched[key] = task
        while len(self._prefetched) > _PREFETCH_MAX:  # abandoned listings: drop the oldest
            self._prefetched.pop(next(iter(self._prefetched))).cancel()

        def expire() -> None:
            if self._prefetched.get(key) is task:  # nobody came for it: the listing was left
                del self._prefetched[key]

        def on_done(_: asyncio.Task[ListPage]) -> None:
            if not task.cancelled():
                task.exception()  # mark it seen: an unclaimed failure is not worth a log line
            loop.call_later(_PREFETCH_TTL, expire)

        task.add_done_callback(on_done)

    def drop_prefetch(self, listing: int) -> None:
        """Cancel the pages read ahead for `listing` (on the loop; its walk was left)."""
        for key in [k for k in self._prefetched if k[0] == listing]:
            self._prefetched.pop(key).cancel()

    def prefetched_count(self) -> int:
        return len(self._prefetched)

    async def _fetch_page(
        self, prefix: str, marker: str | None, delimiter: str | None, max_results: int,
        md5: bool = False,
    ) -> ListPage:
        params = {
            "restype": "container",
            "comp": "list",
            "maxresults": str(max_results),
            # Metadata costs nothing measurable (Azurite; small on Azure) and is the only way to
            # tell an empty directory marker from an empty file without a HEAD per empty blob.
            "include": "metadata",
        }
        if prefix:
            params["prefix"] = prefix
        if delimiter:
            params["delimiter"] = delimiter
        if marker:
            params["marker"] = marker
        response = await self.send("GET", self.client().url, {}, params)
        try:
            body = await response.read()
            if response.status_code != 200:
                raise status_error(response, body)
        finally:
            await response.close()
        return parse_list_page(body, md5=md5)

    async def head(self, name: str) -> Any:
        """The blob's headers (Get Blob Properties), or None if there is no such blob."""
        response = await self.send("HEAD", self.url(name), {})
        try:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise status_error(response, b"")
            return response.headers
        finally:
            await response.close()

    async def get_range(self, name: str, offset: int, length: int, etag: str | None) -> bytes:
        headers = {"x-ms-range": f"bytes={offset}-{offset + length - 1}"}
        headers.update(range_md5_headers(length))
        if etag:
            headers["If-Match"] = f'"{etag}"'
        response = await self.send("GET", self.url(name), headers)
        try:
            # The aiohttp response itself: the SDK's body helper would gunzip a blob stored
            # with Content-Encoding: gzip, and the bytes must be those stored.
            body = await read_body(response, length)
            status = response.status_code
            if status == 416:  # offset at or past the end (or an empty blob)
                return b""
            if status not in (200, 206):
                raise status_error(response, body)
            served = content_range(response.headers.get("Content-Range"))
            if served is None:
                if status == 200 and offset == 0:  # whole blob, no range applied
                    return body[:length]
                raise Transient(f"read {name!r}: response without a valid Content-Range")
            first, last, total = served
            if first != offset or last >= offset + length:
                raise BackendError(f"read {name!r}: server sent range {first}-{last}")
            if len(body) != last - first + 1:
                raise Transient(
                    f"read {name!r}: short body ({len(body)} of {last - first + 1} bytes)"
                )
            await verify_md5(
                body,
                response.headers,
                what=f"read {name!r} bytes {first}-{last}",
                asked_range_md5="x-ms-range-get-content-md5" in headers,
                whole=first == 0 and last == total - 1,
                stored_header="x-ms-blob-content-md5",
            )
            return body
        finally:
            await response.close()

    async def get_block_list(self, name: str) -> tuple[list[tuple[str, int]], Any] | None:
        """The committed blocks of blob `name` and its headers, or None if it is gone."""
        status, response, body = await self.request(
            "GET", name, {}, {"comp": "blocklist", "blocklisttype": "committed"}
        )
        if status == 404:
            return None
        if status != 200:
            raise status_error(response, body)
        return parse_block_list(body), response.headers

    # --- writing ------------------------------------------------------------------------------
    async def create(self) -> bool:
        """Create Container: True, or False if it already exists."""
        response = await self.send("PUT", self.client().url, {"Content-Length": "0"},
                                   {"restype": "container"})
        try:
            body = await response.read()
            if response.status_code == 201:
                return True
            error = status_error(response, body)
            if error.status == 409 and error.code == "ContainerAlreadyExists":
                return False
            raise error
        finally:
            await response.close()

    async def put_block(self, name: str, block_id: str, data: bytes | bytearray) -> None:
        status, response, body = await self.request(
            # The pipeline does not encode query values, and a base64 id has "+" "/" "=".
            "PUT", name, {}, {"comp": "block", "blockid": quote(block_id, safe="")}, data
        )
        if status != 201:
            raise status_error(response, body)
