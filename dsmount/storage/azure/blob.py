"""Azure Blob Storage backend: one container (optionally below a prefix) as a directory tree.

The backend maps the storage verbs onto its container's REST client (`blob_client.BlobRest`,
which sends every request) and hands out `blob_upload.BlobUpload`s; each network call runs
on the shared asyncio loop (`bridge`, why: see there) under `with_retry` (`AzureBackend._call`).

Reading: `list` is List Blobs with "/" as delimiter, pages read ahead; `stat` one HEAD;
`read` exactly one ranged GET per call. Writing: Put Block / Put Block List (`blob_upload`),
Delete Blob, empty marker blobs for directories, Copy Blob; a rename is Copy Blob (the
destination replaced atomically) then Delete Blob, and a directory is renamed entry by
entry, refused beforehand (CrossDevice) beyond `max_entries` objects.

Invariants:
- One retry policy: the SDK's retries are off (`retry_total=0`); each network call (a HEAD, a
  listing page, a GET) runs under `with_retry(self.retry, ...)`, counted in `self.stats`.
- Every failure leaves this module as a `dsmount.errors` type, built by `map_error` alone, with
  a message made of our own words, HTTP status and Azure error code: never an SDK message or
  URL, which can carry a SAS signature (and `redact` scrubs what we quote from exceptions).
- `read` returns exactly the bytes the server promised, or raises (`BlobRest.get_range`); a
  replaced object under an ETag pin is Changed, a deleted one NotFound.
- Retries of calls that change state are safe: a retried delete that finds nothing, or a
  retried marker create that finds the marker, succeed.
- Directory semantics are those of `blob_listing` (virtual directories from "/"; markers with
  metadata hdi_isfolder=true are directories; invalid names skipped and reported once).
  `stat` answers from the blob when one exists (so a blob "x" that is also a prefix "x/" stats
  as a file, while the listing shows it as a directory: one request on the hot path matters
  more than this rare conflict, which the listing reports).
"""

from __future__ import annotations

import base64
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import trio

from dsmount.errors import (
    AlreadyExists,
    BackendError,
    Changed,
    ConfigError,
    CrossDevice,
    NotEmpty,
    NotFound,
    TimedOut,
)
from dsmount.shared.credentials import Credential
from dsmount.storage.azure.backend import AzureBackend
from dsmount.storage.azure.blob_client import BlobRest
from dsmount.storage.azure.blob_listing import DirectoryPages, parse_http_date
from dsmount.storage.azure.blob_upload import BlockLists, begin_blob_upload
from dsmount.storage.azure.bridge import AsyncioThread
from dsmount.storage.azure.common import status_error
from dsmount.storage.base import REMOTE_WRITABLE, Entry, RemoteFile, Upload
from dsmount.storage.names import FOLDER_MARKER_KEY, is_folder_marker, name_problem, strip_etag
from dsmount.storage.retry import RetryPolicy

log = logging.getLogger(__name__)

# The SDK logs every request's and response's headers at INFO: at our request rates that is
# noise and measurable CPU. Quiet it unless logging was configured for it explicitly.
_sdk_http_log = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
if _sdk_http_log.level == logging.NOTSET:
    _sdk_http_log.setLevel(logging.WARNING)

_REPORTED_MAX = 10_000  # names remembered for log-once; beyond it, nothing more is logged
_COPY_POLL = 0.05  # seconds between checks of a pending server-side copy


class BlobBackend(AzureBackend):
    """One Azure blob container, or a prefix inside one, as a directory tree."""

    kind = "blob"
    list_on_lookup = True
    location_field = "container"
    count_calls = False  # the REST client counts, so read-ahead listing pages count too
    capabilities = REMOTE_WRITABLE
    native_dir_rename = False

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
        if not container:
            raise ConfigError("a blob datastore needs a container name")
        super().__init__(
            service="blob", credential=credential, account=account, endpoint=endpoint,
            retry=retry, page_size=page_size, max_connections=max_connections, bridge=bridge,
        )
        self.container = container
        self.prefix = prefix.strip("/")
        self._reported: set[tuple[str, str]] = set()
        self._listings = itertools.count()
        self._block_lists = BlockLists()
        self.rest = BlobRest(
            self.target, container, stats=self.stats, max_connections=max_connections,
            attempt_timeout=self.retry.attempt_timeout,
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

    # --- the Backend interface ----------------------------------------------------------------

    async def stat(self, path: str) -> Entry:
        path = path.strip("/")
        if not path:
            await self._probe(self._dir_prefix(""), "stat /")
            return Entry("", True)
        name = self._blob_name(path)
        headers = await self._call(f"stat {path!r}", lambda: self.rest.head(name))
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
        page = await self._call(what, lambda: self.rest.list_page(prefix, None, None, 1))
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
                    lambda m=marker: self.rest.list_page(prefix, m, "/", self.page_size, listing),
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
                self._bridge.call_soon(self.rest.drop_prefetch, listing)

    async def read(self, path: str, offset: int, length: int, etag: str | None = None) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        if length == 0:
            return b""
        name = self._blob_name(path)
        etag = strip_etag(etag)
        try:
            data = await self._call(
                f"read {path!r}", lambda: self.rest.get_range(name, offset, length, etag)
            )
        except Changed:
            # 412 on a pinned read: replaced, or deleted (some services, Azurite among them,
            # answer If-Match on a missing blob with 412). One HEAD tells which: a deleted
            # blob is ENOENT for the reader, not ESTALE.
            if etag and await self._call(f"stat {path!r}", lambda: self.rest.head(name)) is None:
                raise NotFound(f"read {path!r}: the blob was deleted") from None
            raise
        self.stats.bytes_fetched += len(data)
        return data

    async def check(self) -> None:
        """Prove the container exists and the credentials may list it (one small request)."""
        await self._probe(self._dir_prefix(""), "check")

    # --- whole files -----------------------------------------------------------------------------
    async def walk(self, prefix: str = "") -> AsyncIterator[list[RemoteFile]]:
        """One flat listing (no delimiter), MD5s included: a blob tree is walked in pages of
        thousands, not a request per directory. Markers and "dir/" placeholders are not files."""
        rel = prefix.strip("/")
        full = self._blob_name(rel)
        start = full if rel else self._dir_prefix("")
        cut = len(self.prefix) + 1 if self.prefix else 0
        marker: str | None = None
        while True:
            page = await self._call(
                f"list {rel or '/'!r}",
                lambda m=marker: self.rest.list_page(start, m, None, self.page_size, md5=True),
            )
            files = [
                RemoteFile(b.name[cut:], b.size, b.md5, b.etag, b.mtime_ns / 1e9 or None)
                for b in page.items
                if not isinstance(b, str) and not b.folder_marker and not b.name.endswith("/")
                # "data.csv.bak" is not below "data.csv"
                and (not rel or b.name == full or b.name.startswith(full + "/"))
            ]
            if files:
                yield files
            marker = page.next_marker
            if marker is None:
                return

    async def file_info(self, path: str) -> RemoteFile | None:
        path = path.strip("/")
        if not path:
            return None
        name = self._blob_name(path)
        headers = await self._call(f"stat {path!r}", lambda: self.rest.head(name))
        if headers is None:
            return None
        size = int(headers.get("Content-Length") or 0)
        if is_folder_marker(size, headers.get(f"x-ms-meta-{FOLDER_MARKER_KEY}")):
            return None
        modified = headers.get("Last-Modified")
        md5 = headers.get("Content-MD5")
        return RemoteFile(path, size, base64.b64decode(md5) if md5 else None,
                          strip_etag(headers.get("ETag")),
                          parse_http_date(modified) / 1e9 if modified else None)

    async def create(self) -> bool:
        """Create Container; False if it exists."""
        return await self._call(f"create container {self.container!r}", self.rest.create)

    # --- the write verbs -------------------------------------------------------------------------
    async def begin_upload(
        self, path: str, *, base: Entry | None = None, append: bool = False,
        parents: bool = False,
    ) -> Upload:
        return await begin_blob_upload(
            self, self.rest, self._block_lists, path, self._blob_name(path),
            base=base, append=append,
        )

    async def delete(self, path: str) -> None:
        name = self._blob_name(path)

        async def delete(again: bool) -> None:
            status, response, body = await self.rest.request("DELETE", name, {})
            if status == 404 and again:
                return  # an earlier attempt deleted it, its answer lost
            if status not in (200, 202):
                raise status_error(response, body)

        await self._call_again(f"delete {path!r}", delete)

    async def make_dir(self, path: str) -> Entry:
        name = self._blob_name(path)
        headers = {
            "x-ms-blob-type": "BlockBlob",
            f"x-ms-meta-{FOLDER_MARKER_KEY}": "true",
            "If-None-Match": "*",
        }

        async def create(again: bool) -> Entry:
            status, response, body = await self.rest.request("PUT", name, dict(headers))
            if status == 201:
                return Entry(name.rsplit("/", 1)[-1], True)
            if status == 409:
                existing = await self.rest.head(name)
                size = int(existing.get("Content-Length") or 0) if existing is not None else -1
                marker = existing.get(f"x-ms-meta-{FOLDER_MARKER_KEY}") if existing else None
                if again and is_folder_marker(size, marker):
                    return Entry(name.rsplit("/", 1)[-1], True)
                raise AlreadyExists(f"mkdir {path!r}: a blob of that name exists")
            raise status_error(response, body)

        return await self._call_again(f"mkdir {path!r}", create)

    async def remove_dir(self, path: str) -> None:
        prefix = self._dir_prefix(path)
        page = await self._call(
            f"rmdir {path!r}", lambda: self.rest.list_page(prefix, None, None, 1)
        )
        if page.items:
            raise NotEmpty(f"rmdir {path!r}: the directory is not empty")
        name = self._blob_name(path)
        headers = await self._call(f"rmdir {path!r}", lambda: self.rest.head(name))
        if headers is None:
            raise NotFound(f"rmdir {path!r}: no such directory")
        size = int(headers.get("Content-Length") or 0)
        if not is_folder_marker(size, headers.get(f"x-ms-meta-{FOLDER_MARKER_KEY}")):
            raise BackendError(f"rmdir {path!r}: not a directory")
        await self.delete(path)

    async def copy(self, src: str, dst: str) -> Entry:
        src_name, dst_name = self._blob_name(src), self._blob_name(dst)

        async def start() -> Any:
            headers = {"x-ms-copy-source": self.rest.copy_source(src_name)}
            status, response, body = await self.rest.request("PUT", dst_name, headers)
            if status not in (200, 202):
                raise status_error(response, body)
            return response.headers

        headers = await self._call(f"copy {src!r}", start)
        deadline = trio.current_time() + self.retry.deadline
        while (headers.get("x-ms-copy-status") or "success").lower() == "pending":
            if trio.current_time() > deadline:
                raise TimedOut(f"copy {src!r}: the server-side copy did not finish")
            await trio.sleep(_COPY_POLL)
            found = await self._call(f"copy {src!r}", lambda: self.rest.head(dst_name))
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
        marker = await self._call(f"rename {src!r}", lambda: self.rest.head(src_name))
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
                lambda m=marker: self.rest.list_page(prefix, m, None, min(5000, limit + 1)),
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
