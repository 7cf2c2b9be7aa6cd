"""Azure Files backend: one file share (optionally a directory inside it) as a directory tree.

The read side lives here; the write verbs (temporary file + rename, in-place appends,
directories) in `fileshare_write`, mixed in. Listings skip uploads' temporary files.

Requests go through the asyncio `azure-storage-file-share` client pipeline, driven from trio by
the shared `AsyncioThread`, exactly like the blob backend: authentication (SharedKey, SAS,
Azure AD bearer with the backup intent Files requires) and the HTTP transport are the SDK's,
while the calls on hot paths are sent as plain requests through that pipeline:

- List Directories and Files (`list`): `include=Timestamps,ETag`, parsed by
  `fileshare_listing` (sizes, times and ETags without a request per file);
- Get File Properties (`stat` of a file: one HEAD), Get Directory Properties (`stat` of a
  directory, `check`);
- Get File (`read`): exactly one ranged GET per call, raw bytes, no SDK chunking.

Invariants:
- One retry policy: the SDK's retries are off; each network call runs under
  `with_retry(self.retry, ...)` and is counted in `self.stats`.
- Every failure leaves this module as a `dsmount.errors` type built by
  `azure_common.map_error`, with no SDK message, URL or secret in it.
- The Files service ignores If-Match on reads, so `read` compares the response's ETag with the
  pinned one itself: it never returns bytes of another version (Changed instead). It returns
  exactly the bytes the server promised in Content-Range, or raises (a short body is Transient
  and so retried).
- Ranged reads are checked against the MD5 the service sends (`integrity`): the range's own
  for ranges up to 4 MiB, else the file's stored one when the whole file is read; a mismatch
  is an IntegrityError, never served.
- Every request says `x-ms-allow-trailing-dot: true`: without it the service trims trailing
  dots from path segments, and a listed "name." would be read as "name".
- The ETag changes with any change to a file (content or properties): a pinned handle fails
  (ESTALE) even after a change of attributes only, never reads a mix of versions.
- Names are case-insensitive on the service: listings show the stored case, and a lookup in
  another case finds the same file (as on an SMB mount of the share).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any, TypeVar
from urllib.parse import quote

from dsmount.errors import (
    AuthFailed,
    BackendError,
    Changed,
    ConfigError,
    NotFound,
    Transient,
)
from dsmount.shared.credentials import Credential
from dsmount.storage.azure.backend import AzureBackend
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
from dsmount.storage.azure.fileshare_listing import (
    DirectoryEntries,
    ListPage,
    entry_from_headers,
    parse_list_page,
)
from dsmount.storage.azure.fileshare_write import FileShareWrites
from dsmount.storage.base import Entry
from dsmount.storage.integrity import range_md5_headers, verify_md5
from dsmount.storage.names import strip_etag
from dsmount.storage.retry import RetryPolicy
from dsmount.storage.writes import is_temp_name

log = logging.getLogger(__name__)

T = TypeVar("T")

# Share names: 3-63 lower-case letters, digits and single dashes, starting and ending with a
# letter or digit (checked here so a typo fails at attach with a clear message).
_SHARE_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_REPORTED_MAX = 10_000  # names remembered for log-once; beyond it, nothing more is logged
# A HEAD on a directory's path: the service answers 404 ResourceNotFound (or, for some
# operations, 409 ResourceTypeMismatch); either means "not a file, maybe a directory".
_NOT_A_FILE = {(404, "ResourceNotFound"), (404, None), (409, "ResourceTypeMismatch")}


class FileShareBackend(FileShareWrites, AzureBackend):
    """One Azure file share, or a directory inside one, as a directory tree (writable through
    `fileshare_write.FileShareWrites`)."""

    kind = "fileshare"
    list_on_lookup = True
    location_field = "share"

    def __init__(
        self,
        *,
        share: str,
        credential: Credential,
        account: str | None = None,
        endpoint: str | None = None,
        prefix: str = "",
        retry: RetryPolicy | None = None,
        page_size: int = 5000,
        max_connections: int = 32,
        connection_verify: bool | str = True,
        bridge: AsyncioThread | None = None,
    ) -> None:
        super().__init__()
        if not _SHARE_RE.match(share or ""):
            raise ConfigError(
                f"invalid file share name {share!r}: 3-63 lower-case letters, digits and dashes"
            )
        if not 1 <= page_size <= 5000:
            raise ConfigError("page_size must be within 1..5000 (the service's maximum)")
        if credential.kind == "anonymous":
            raise ConfigError("Azure Files has no anonymous access; give a credential")
        segments = [s for s in prefix.strip("/").split("/") if s]
        if any(s in (".", "..") for s in segments) or "//" in prefix.strip("/"):
            raise ConfigError(f"invalid directory prefix {prefix!r}")
        self.share = share
        self._init_azure(credential, bridge)
        self.prefix = "/".join(segments)
        self.retry = retry or RetryPolicy()
        self.page_size = page_size
        self.max_connections = max_connections
        self.connection_verify = connection_verify
        self.target = resolve_target(credential, service="file", account=account, endpoint=endpoint)
        if self.target.auth == "anonymous":
            raise ConfigError("the connection string has no AccountKey or SharedAccessSignature")
        self.account = self.target.account
        self.endpoint = self.target.endpoint
        self._reported: set[tuple[str, str]] = set()

    # --- the adapter: every network call goes through here --------------------------------

    def _share_client(self) -> Any:
        """The SDK client, created on first use ON THE ASYNCIO LOOP (aiohttp needs it)."""
        if self._client is None:
            from azure.storage.fileshare.aio import ShareClient

            credential, self._token_credential = sdk_credential(self.target)
            options = pipeline_options(
                endpoint=self.endpoint,
                max_connections=self.max_connections,
                attempt_timeout=self.retry.attempt_timeout,
                verify=self.connection_verify,
            )
            if self.target.auth == "azure_ad":
                options["token_intent"] = "backup"  # the SDK refuses token auth without it
            self._client = ShareClient(
                account_url=self.endpoint,
                share_name=self.share,
                credential=credential,
                allow_trailing_dot=True,
                **options,
            )
        return self._client

    def _full(self, path: str) -> str:
        """The path inside the share of a datastore path."""
        path = path.strip("/")
        if self.prefix:
            return f"{self.prefix}/{path}" if path else self.prefix
        return path

    def _url(self, client: Any, full: str) -> str:
        base = client.url.partition("?")[0]
        return f"{base}/{quote(full, safe='~/')}" if full else base

    def _report(self, directory: str, name: str, problem: str) -> None:
        key = (directory, name)
        if key in self._reported or len(self._reported) >= _REPORTED_MAX:
            return
        self._reported.add(key)
        where = f"{self.account}/{self.share}/{directory}".rstrip("/")
        log.warning("%s: skipping %r: %s", where, name, problem)

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

        client = self._share_client()
        headers["x-ms-version"] = client.api_version
        headers["x-ms-allow-trailing-dot"] = "true"
        if self.target.auth == "azure_ad":
            headers["x-ms-file-request-intent"] = "backup"
        request = HttpRequest(method, url, headers=headers, params=params, content=content)
        # stream=True: otherwise the pipeline's ContentDecodePolicy decodes the body by its
        # Content-Type (XML into a tree, file content into text).
        if self._lean is None:
            self._lean = lean_pipeline(client)
        return (await self._lean.run(request, stream=True)).http_response

    async def _properties(self, full: str, *, directory: bool) -> Any:
        """Headers of Get File Properties (HEAD) or Get Directory Properties; None if the
        service says there is no such file (for a file) / directory (for a directory)."""
        client = self._share_client()
        url = self._url(client, full)
        if directory:
            response = await self._send("GET", url, {}, {"restype": "directory"})
        else:
            response = await self._send("HEAD", url, {})
        try:
            body = await response.read() if directory else b""
            if response.status_code == 200:
                return response.headers
            error = status_error(response, body)
            if directory and error.status == 404 and error.code in ("ResourceNotFound", None):
                return None
            if not directory and (error.status, error.code) in _NOT_A_FILE:
                return None
            raise error  # ShareNotFound, ParentNotFound, 403, 5xx ...
        finally:
            await response.close()

    async def _list_page(self, full: str, marker: str | None) -> ListPage:
        client = self._share_client()
        params = {
            "restype": "directory",
            "comp": "list",
            "maxresults": str(self.page_size),
            "include": "Timestamps,ETag",
        }
        if marker:
            params["marker"] = marker
        response = await self._send("GET", self._url(client, full), {}, params)
        try:
            body = await response.read()
            if response.status_code != 200:
                raise status_error(response, body)
        finally:
            await response.close()
        return parse_list_page(body)

    async def _get_range(self, full: str, offset: int, length: int, etag: str | None) -> bytes:
        client = self._share_client()
        headers = {"x-ms-range": f"bytes={offset}-{offset + length - 1}"}
        headers.update(range_md5_headers(length))
        response = await self._send("GET", self._url(client, full), headers)
        try:
            # The aiohttp response itself: the SDK's body helper would gunzip a file stored
            # with Content-Encoding: gzip, and the bytes must be those stored.
            body = await read_body(response, length)
            status = response.status_code
            if status == 416:  # offset at or past the end (or an empty file)
                return await self._past_end(full, etag)
            if status not in (200, 206):
                raise status_error(response, body)
            # The service ignores If-Match on Get File: this check is the version pin.
            if etag is not None and strip_etag(response.headers.get("ETag")) != etag:
                raise Changed(f"read {full!r}: the file changed (ETag no longer matches)")
            span = content_range(response.headers.get("Content-Range"))
            if span is None:
                if status == 200 and offset == 0:  # whole file, no range applied
                    if len(body) != int(response.headers.get("Content-Length") or -1):
                        raise Transient(f"read {full!r}: short body")
                    return body[:length]
                raise Transient(f"read {full!r}: response without a valid Content-Range")
            first, last, total = span
            if first != offset or last >= offset + length:
                raise BackendError(f"read {full!r}: server sent range {first}-{last}")
            if len(body) != last - first + 1:
                raise Transient(
                    f"read {full!r}: short body ({len(body)} of {last - first + 1} bytes)"
                )
            await verify_md5(
                body, response.headers, what=f"read {full!r} bytes {first}-{last}",
                asked_range_md5="x-ms-range-get-content-md5" in headers,
                whole=first == 0 and last == total - 1, stored_header="x-ms-content-md5",
            )
            return body
        finally:
            await response.close()

    async def _past_end(self, full: str, etag: str | None) -> bytes:
        """A 416 means "offset >= size" of the CURRENT version: that is end of file for the
        pinned one only if it is still the current one (a truncated file must not look like
        a shorter old one). The 416 carries no ETag, so ask with one HEAD."""
        if etag is None:
            return b""
        headers = await self._properties(full, directory=False)
        if headers is None:
            raise NotFound(f"read {full!r}: the file is gone")
        if strip_etag(headers.get("ETag")) != etag:
            raise Changed(f"read {full!r}: the file changed (ETag no longer matches)")
        return b""

    # --- the Backend interface ----------------------------------------------------------------

    async def stat(self, path: str) -> Entry:
        return await self._stat(path.strip("/"), f"stat {path.strip('/') or '/'!r}")

    async def _stat(self, path: str, what: str) -> Entry:
        full = self._full(path)
        leaf = path.rsplit("/", 1)[-1] if path else ""
        if path:
            headers = await self._call(what, lambda: self._properties(full, directory=False))
            if headers is not None:
                return entry_from_headers(leaf, headers, is_dir=False)
        headers = await self._call(what, lambda: self._properties(full, directory=True))
        if headers is None:
            if not path and self.prefix:
                raise NotFound(f"{what}: no such directory in the share")
            raise NotFound(f"{what}: no such file or directory")
        return entry_from_headers(leaf, headers, is_dir=True)

    async def list(self, path: str) -> AsyncIterator[list[Entry]]:
        path = path.strip("/")
        full = self._full(path)
        entries = DirectoryEntries(full, self._report)
        what = f"list {path or '/'!r}"
        marker: str | None = None
        first = True
        while True:
            page = await self._call(what, lambda m=marker: self._list_page(full, m))
            marker = page.next_marker
            # An upload's temporary file is an implementation detail of a write in progress.
            batch = [e for e in entries.feed(page) if not is_temp_name(e.name)]
            if batch or first or marker is None:
                first = False
                yield batch
            if marker is None:
                return

    async def read(self, path: str, offset: int, length: int, etag: str | None = None) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        if length == 0:
            return b""
        full = self._full(path)
        pinned = strip_etag(etag)
        data = await self._call(
            f"read {path!r}", lambda: self._get_range(full, offset, length, pinned)
        )
        self.stats.bytes_fetched += len(data)
        return data

    async def check(self) -> None:
        """Prove the share (and prefix directory) exist and the credentials work: one Get
        Directory Properties. Not Get Share Properties: a share SAS may not call that.

        The message says which datastore failed: it is what `attach` shows the user."""
        where = f"file share {self.account}/{self.share}"
        try:
            await self._stat("", where + (f" directory {self.prefix!r}" if self.prefix else ""))
        except AuthFailed as exc:
            raise AuthFailed(f"{exc} (the credentials were refused)") from None

    async def create_share(self) -> bool:
        """Create the share, and the prefix directories inside it (for --create-if-not-exists).

        Returns False if the share already existed."""
        from azure.core.exceptions import ResourceExistsError

        async def create_share() -> bool:
            try:
                await self._share_client().create_share()
            except ResourceExistsError:
                return False
            return True

        created = await self._call(f"create share {self.share!r}", create_share)
        parts = self.prefix.split("/") if self.prefix else []
        for depth in range(1, len(parts) + 1):
            directory = "/".join(parts[:depth])

            async def create_directory(directory: str = directory) -> None:
                with contextlib.suppress(ResourceExistsError):
                    await self._share_client().create_directory(directory)

            await self._call(f"create directory {directory!r}", create_directory)
        return created
