"""Azure Blob Storage backend: one container (optionally below a prefix) as a directory tree.

The read side lives here; the write verbs (staged blocks, commits, deletes, markers, copies)
in `blob_write`, mixed in.

Requests go through the Azure SDK's asyncio client pipeline, driven from trio by the shared
`AsyncioThread` (why: see aio_bridge). Authentication, SAS signing and the HTTP transport stay
the SDK's; the three calls on the hot paths are sent as plain requests through that pipeline:

- List Blobs (`list`, directory checks): the XML is parsed by `blob_listing`, not the SDK's
  model deserializer, and the next page is requested while the caller consumes this one
  (20,000 blobs in one directory on Azurite: `walk_blobs` 8.9 s / 4.7 s client CPU, this
  2.5 s / 0.8 s; scripts/bench_adapters.py --list-blobs 20000);
- Get Blob Properties (`stat`): one HEAD;
- Get Blob (`read`): exactly one ranged GET per call, raw bytes, no SDK chunking - the cache
  above decides block sizes.

Invariants:
- One retry policy: the SDK's retries are off (`retry_total=0`); each network call (a HEAD, a
  listing page, a GET) runs under `with_retry(self.retry, ...)`, counted in `self.stats`.
- Every failure leaves this module as a `dsmount.errors` type, built by `map_error` alone, with
  a message made of our own words, HTTP status and Azure error code: never an SDK message or
  URL, which can carry a SAS signature (and `redact` scrubs what we quote from exceptions).
- `read` returns exactly the bytes the server promised in Content-Range, or raises: a short
  body is Transient (retried), a replaced object under an ETag pin is Changed, bytes that do
  not match the range's MD5 (asked for ranges up to 4 MiB) or, for a whole-blob read, the
  blob's stored MD5 are an IntegrityError (`integrity`).
- Directory semantics are those of `blob_listing` (virtual directories from "/"; markers with
  metadata hdi_isfolder=true are directories; invalid names skipped and reported once).
  `stat` answers from the blob when one exists (so a blob "x" that is also a prefix "x/" stats
  as a file, while the listing shows it as a directory: one request on the hot path matters
  more than this rare conflict, which the listing reports).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar
from urllib.parse import quote

from dsmount.errors import (
    BackendError,
    Changed,
    ConfigError,
    NotFound,
    Transient,
)
from dsmount.shared.credentials import Credential
from dsmount.storage.azure.backend import AzureBackend
from dsmount.storage.azure.blob_listing import (
    DirectoryPages,
    ListPage,
    parse_http_date,
    parse_list_page,
)
from dsmount.storage.azure.blob_write import BlobWrites
from dsmount.storage.azure.bridge import AsyncioThread
from dsmount.storage.azure.common import (
    content_range,
    lean_pipeline,
    pipeline_options,
    read_body,
    resolve_target,
    sdk_credential,
    status_error,
)
from dsmount.storage.base import Entry
from dsmount.storage.integrity import range_md5_headers, verify_md5
from dsmount.storage.names import FOLDER_MARKER_KEY, is_folder_marker, name_problem, strip_etag
from dsmount.storage.retry import RetryPolicy

log = logging.getLogger(__name__)

# The SDK logs every request's and response's headers at INFO: at our request rates that is
# noise and measurable CPU. Quiet it unless logging was configured for it explicitly.
_sdk_http_log = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
if _sdk_http_log.level == logging.NOTSET:
    _sdk_http_log.setLevel(logging.WARNING)

T = TypeVar("T")

_REPORTED_MAX = 10_000  # names remembered for log-once; beyond it, nothing more is logged
_PREFETCH_MAX = 16  # listing pages fetched ahead and not yet consumed, across all listings
_PREFETCH_TTL = 30.0  # seconds an unclaimed prefetched page (an abandoned listing) is kept


class BlobBackend(BlobWrites, AzureBackend):
    """One Azure blob container, or a prefix inside one, as a directory tree (writable
    through `blob_write.BlobWrites`)."""

    kind = "blob"
    list_on_lookup = True
    location_field = "container"
    count_calls = False  # `_send` counts, so read-ahead listing pages count too

    def __init__(
        self,
        *,
        container: str,
        credential: Credential,
        account: str | None = None,
        endpoint: str | None = None,
        prefix: str = "",
        retry: RetryPolicy | None = None,
        page_size: int = 5000,
        max_connections: int = 32,
        bridge: AsyncioThread | None = None,
    ) -> None:
        super().__init__()
        if not container:
            raise ConfigError("a blob datastore needs a container name")
        if not 1 <= page_size <= 5000:
            raise ConfigError("page_size must be within 1..5000 (the service's maximum)")
        self.container = container
        self._init_azure(credential, bridge)
        self.prefix = prefix.strip("/")
        self.retry = retry or RetryPolicy()
        self.page_size = page_size
        self.max_connections = max_connections
        self._reported: set[tuple[str, str]] = set()
        # Listing pages requested ahead, by (listing id, marker); touched on the loop only.
        self._prefetched: dict[tuple[int, str], asyncio.Task[ListPage]] = {}
        self._listings = itertools.count()

        self.target = resolve_target(credential, service="blob", account=account, endpoint=endpoint)
        self.account = self.target.account
        self.endpoint = self.target.endpoint

    # --- the adapter: every network call goes through here --------------------------------

    def _container(self) -> Any:
        """The SDK client, created on first use ON THE ASYNCIO LOOP (aiohttp needs it)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        from azure.storage.blob.aio import ContainerClient

        credential, self._token_credential = sdk_credential(self.target)
        # 4 MiB socket reads: an 8 MiB block arrives without flow-control churn.
        options = pipeline_options(
            endpoint=self.endpoint,
            max_connections=self.max_connections,
            attempt_timeout=self.retry.attempt_timeout,
            read_bufsize=4 * 1024 * 1024,
        )
        return ContainerClient(
            account_url=self.endpoint,
            container_name=self.container,
            credential=credential,
            **options,
        )

    def _blob_name(self, path: str) -> str:
        """The blob name of datastore path `path`. Paths with segments a listing would never
        show ("", ".", "..", ...) name nothing: NotFound, before any request - which also keeps
        a ".." (normalized away by HTTP stacks) from escaping the datastore's prefix."""
        path = path.strip("/")
        if path:
            for segment in path.split("/"):
                problem = name_problem(segment)
                if problem:
                    raise NotFound(f"{path!r}: not a valid path ({problem})")
        if self.prefix:
            return f"{self.prefix}/{path}" if path else self.prefix
        return path

    def _blob_url(self, client: Any, name: str) -> str:
        base, _, query = client.url.partition("?")  # a connection string's SAS sits in query
        url = f"{base}/{quote(name, safe='~/')}"
        return f"{url}?{query}" if query else url

    def _report(self, kind: str, name: str, detail: str) -> None:
        key = (kind, name)
        if key in self._reported or len(self._reported) >= _REPORTED_MAX:
            return
        self._reported.add(key)
        if kind == "conflict":
            log.warning(
                "%s/%s: %r %s; showing the directory", self.account, self.container, name, detail
            )
        else:
            log.warning("%s/%s: skipping blob %r: %s", self.account, self.container, name, detail)

    # --- raw requests (run on the asyncio loop) ---------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        params: Any = None,
        content: Any = None,
    ) -> Any:
        from azure.core.rest import HttpRequest

        client = self._container()
        headers["x-ms-version"] = client.api_version
        request = HttpRequest(method, url, headers=headers, params=params, content=content)
        # Counted here, on the loop thread (the only writer), so prefetches count too.
        self.stats.requests += 1
        # stream=True: with stream=False the pipeline's ContentDecodePolicy would also decode
        # the body by its Content-Type (XML into a tree, a blob into text).
        if self._lean is None:
            self._lean = lean_pipeline(client)
        return (await self._lean.run(request, stream=True)).http_response

    async def _list_page(
        self,
        prefix: str,
        marker: str | None,
        delimiter: str | None,
        max_results: int,
        listing: int | None = None,
    ) -> ListPage:
        """One List Blobs page. For a `listing` (an id unique to one walk of one directory),
        the request for the following page is sent as soon as this one has arrived, so the
        server works on it while the caller consumes this page (listing time ~ server time
        instead of server + client time). A prefetched page serves only its own listing."""
        ahead = self._prefetched.pop((listing, marker), None) if listing is not None else None
        if ahead is not None:
            # A failed prefetch raises here; the retry of this attempt sends a fresh request.
            return await ahead
        page = await self._fetch_page(prefix, marker, delimiter, max_results)
        if listing is not None and page.next_marker is not None and not self._closed:
            task = asyncio.get_running_loop().create_task(
                self._fetch_page(prefix, page.next_marker, delimiter, max_results)
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

    async def _fetch_page(
        self, prefix: str, marker: str | None, delimiter: str | None, max_results: int
    ) -> ListPage:
        client = self._container()
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
        response = await self._send("GET", client.url, {}, params)
        try:
            body = await response.read()
            if response.status_code != 200:
                raise status_error(response, body)
        finally:
            await response.close()
        return parse_list_page(body)

    async def _head(self, name: str) -> Any:
        client = self._container()
        response = await self._send("HEAD", self._blob_url(client, name), {})
        try:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise status_error(response, b"")
            return response.headers
        finally:
            await response.close()

    async def _get_range(self, name: str, offset: int, length: int, etag: str | None) -> bytes:
        client = self._container()
        headers = {"x-ms-range": f"bytes={offset}-{offset + length - 1}"}
        headers.update(range_md5_headers(length))
        if etag:
            headers["If-Match"] = f'"{etag}"'
        response = await self._send("GET", self._blob_url(client, name), headers)
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


    # --- the Backend interface ----------------------------------------------------------------

    async def stat(self, path: str) -> Entry:
        path = path.strip("/")
        if not path:
            await self._probe(self._dir_prefix(""), "stat /")
            return Entry("", True)
        name = self._blob_name(path)
        headers = await self._call(f"stat {path!r}", lambda: self._head(name))
        leaf = path.rsplit("/", 1)[-1]
        if headers is not None:
            size = int(headers.get("Content-Length") or 0)
            modified = headers.get("Last-Modified")
            mtime_ns = parse_http_date(modified) if modified else 0
            if is_folder_marker(size, headers.get(f"x-ms-meta-{FOLDER_MARKER_KEY}")):
                return Entry(leaf, True, 0, mtime_ns, None)
            return Entry(leaf, False, size, mtime_ns, strip_etag(headers.get("ETag")))
        if await self._probe(name + "/", f"stat {path!r}"):
            return Entry(leaf, True)
        raise NotFound(f"stat {path!r}: no such blob or directory")

    def _dir_prefix(self, path: str) -> str:
        name = self._blob_name(path)
        return name + "/" if name else ""

    async def _probe(self, prefix: str, what: str) -> bool:
        """Whether any blob starts with `prefix`: one flat listing call with maxresults=1.

        Also proves the container exists (404 ContainerNotFound otherwise) and that listing is
        allowed. Flat, not hierarchical: a delimiter listing with a tiny page can be slow."""
        page = await self._call(what, lambda: self._list_page(prefix, None, None, 1))
        return bool(page.items)

    async def list(self, path: str) -> AsyncIterator[list[Entry]]:
        path = path.strip("/")
        prefix = self._dir_prefix(path)
        pages = DirectoryPages(prefix, self._report)
        listing = next(self._listings)
        marker: str | None = None
        first = True
        what = f"list {path or '/'!r}"
        try:
            while True:
                page = await self._call(
                    what,
                    lambda m=marker: self._list_page(prefix, m, "/", self.page_size, listing),
                )
                marker = page.next_marker
                entries = pages.feed(page, last=marker is None)
                if marker is None and not pages.seen_any and path:
                    # Nothing under "path/": an empty directory only if a marker blob says so.
                    entry = await self.stat(path)
                    if not entry.is_dir:
                        raise NotFound(f"{what}: not a directory")
                if entries or first or marker is None:
                    first = False
                    yield entries
                if marker is None:
                    return
        finally:
            if marker is not None and self._bridge is not None:
                # Left early (or failed): cancel the page requested ahead. Not awaited - this
                # may run while the generator is being finalized.
                self._bridge.call_soon(self._drop_prefetch, listing)

    def _drop_prefetch(self, listing: int) -> None:
        for key in [k for k in self._prefetched if k[0] == listing]:
            self._prefetched.pop(key).cancel()

    async def read(self, path: str, offset: int, length: int, etag: str | None = None) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        if length == 0:
            return b""
        name = self._blob_name(path)
        etag = strip_etag(etag)
        try:
            data = await self._call(
                f"read {path!r}", lambda: self._get_range(name, offset, length, etag)
            )
        except Changed:
            # 412 on a pinned read: replaced, or deleted (some services, Azurite among them,
            # answer If-Match on a missing blob with 412). One HEAD tells which: a deleted
            # blob is ENOENT for the reader, not ESTALE.
            if etag and await self._call(f"stat {path!r}", lambda: self._head(name)) is None:
                raise NotFound(f"read {path!r}: the blob was deleted") from None
            raise
        self.stats.bytes_fetched += len(data)
        return data

    async def check(self) -> None:
        """Prove the container exists and the credentials may list it (one small request)."""
        await self._probe(self._dir_prefix(""), "check")

    async def create_container(self) -> bool:
        """Create the container (for --create-if-not-exists). False if it already existed."""
        from azure.core.exceptions import ResourceExistsError

        async def create() -> bool:
            try:
                await self._container().create_container()
            except ResourceExistsError:
                return False
            return True

        return await self._call(f"create container {self.container!r}", create)

    def _before_close(self) -> None:
        for task in self._prefetched.values():
            task.cancel()
        self._prefetched.clear()
