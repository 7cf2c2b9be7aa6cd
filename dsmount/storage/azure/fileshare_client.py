"""The REST client of one file share: every request the file share backend sends, as plain
requests through the asyncio `azure-storage-file-share` client pipeline (`FileShareBackend`
composes it).

Authentication (SharedKey, SAS, Azure AD bearer with the backup intent Files requires) and the
HTTP transport are the SDK's (`common.lean_pipeline`); what is sent and how answers are read is
ours:

- List Directories and Files: `include=Timestamps,ETag`, parsed by `fileshare_listing`
  (sizes, times and ETags without a request per file);
- Get File Properties (one HEAD), Get Directory Properties;
- Get File: exactly one ranged GET per call, raw bytes, no SDK chunking;
- Create File, Set File Properties (resize), Put Range, Rename File/Directory, deletes.

Invariants:
- Every method here runs ON THE ASYNCIO LOOP (`bridge.AsyncioThread`): the backend passes it to
  `AzureBackend._call`, which bridges from trio, retries and maps errors. Nothing here retries.
- Paths are full paths inside the share (the backend adds its prefix).
- Every request says `x-ms-allow-trailing-dot: true`: without it the service trims trailing
  dots from path segments, and a listed "name." would be read as "name".
- The Files service ignores If-Match on reads, so `get_range` compares the response's ETag with
  the pinned one itself: it never returns bytes of another version (Changed instead). It
  returns exactly the bytes the server promised in Content-Range, or raises (a short body is
  Transient and so retried); ranges are checked against the MD5 the service sends
  (`integrity`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from dsmount.errors import AlreadyExists, BackendError, Changed, NotFound, Transient
from dsmount.storage.azure.common import (
    AzureTarget,
    content_range,
    pipeline_options,
    read_body,
    sdk_credential,
    status_error,
)
from dsmount.storage.azure.fileshare_listing import ListPage, parse_list_page
from dsmount.storage.azure.rest import AzureRest
from dsmount.storage.integrity import range_md5_headers, verify_md5
from dsmount.storage.names import strip_etag

# A HEAD on a directory's path: the service answers 404 ResourceNotFound (or, for some
# operations, 409 ResourceTypeMismatch); either means "not a file, maybe a directory".
_NOT_A_FILE = {(404, "ResourceNotFound"), (404, None), (409, "ResourceTypeMismatch")}


class ShareRest(AzureRest):
    """Raw requests to one share (see the module docstring)."""

    def __init__(
        self,
        target: AzureTarget,
        share: str,
        *,
        max_connections: int,
        attempt_timeout: float,
        connection_verify: bool | str,
        page_size: int,
    ) -> None:
        super().__init__(target, max_connections=max_connections, attempt_timeout=attempt_timeout)
        self.share = share
        self.connection_verify = connection_verify
        self.page_size = page_size

    def _make_client(self) -> Any:
        from azure.storage.fileshare.aio import ShareClient

        credential, self._token_credential = sdk_credential(self.target)
        options = pipeline_options(
            endpoint=self.target.endpoint,
            max_connections=self.max_connections,
            attempt_timeout=self.attempt_timeout,
            verify=self.connection_verify,
        )
        if self.target.auth == "azure_ad":
            options["token_intent"] = "backup"  # the SDK refuses token auth without it
        return ShareClient(
            account_url=self.target.endpoint,
            share_name=self.share,
            credential=credential,
            allow_trailing_dot=True,
            **options,
        )

    def _service_headers(self, headers: dict[str, str]) -> None:
        headers["x-ms-allow-trailing-dot"] = "true"
        if self.target.auth == "azure_ad":
            headers["x-ms-file-request-intent"] = "backup"

    def url(self, path: str) -> str:
        """The URL of `path` (a full path inside the share)."""
        base = self.client().url.partition("?")[0]
        return f"{base}/{quote(path, safe='~/')}" if path else base

    def source_url(self, full: str) -> str:
        """The URL of `full` as a rename source."""
        url = self.url(full)
        if self.target.auth == "sas_token" and self.target.secret is not None:
            url += "?" + self.target.secret.reveal().lstrip("?")
        return url

    async def expect(self, ok: tuple[int, ...], method: str, full: str,
                     headers: dict[str, str], params: Any = None,
                     content: bytes | memoryview | None = None) -> Any:
        """The response headers of one request whose status must be one of `ok`."""
        status, response, body = await self.request(method, full, dict(headers), params, content)
        if status not in ok:
            raise status_error(response, body)
        return response.headers

    # --- reading ------------------------------------------------------------------------------
    async def properties(self, full: str, *, directory: bool) -> Any:
        """Headers of Get File Properties (HEAD) or Get Directory Properties; None if the
        service says there is no such file (for a file) / directory (for a directory)."""
        url = self.url(full)
        if directory:
            response = await self.send("GET", url, {}, {"restype": "directory"})
        else:
            response = await self.send("HEAD", url, {})
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

    async def list_page(self, full: str, marker: str | None) -> ListPage:
        params = {
            "restype": "directory",
            "comp": "list",
            "maxresults": str(self.page_size),
            "include": "Timestamps,ETag",
        }
        if marker:
            params["marker"] = marker
        response = await self.send("GET", self.url(full), {}, params)
        try:
            body = await response.read()
            if response.status_code != 200:
                raise status_error(response, body)
        finally:
            await response.close()
        return parse_list_page(body)

    async def get_range(self, full: str, offset: int, length: int, etag: str | None) -> bytes:
        headers = {"x-ms-range": f"bytes={offset}-{offset + length - 1}"}
        headers.update(range_md5_headers(length))
        response = await self.send("GET", self.url(full), headers)
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
        headers = await self.properties(full, directory=False)
        if headers is None:
            raise NotFound(f"read {full!r}: the file is gone")
        if strip_etag(headers.get("ETag")) != etag:
            raise Changed(f"read {full!r}: the file changed (ETag no longer matches)")
        return b""

    # --- writing ------------------------------------------------------------------------------
    async def create_file(self, full: str, size: int) -> None:
        headers = {"x-ms-type": "file", "x-ms-content-length": str(size)}
        await self.expect((201,), "PUT", full, headers)

    async def resize(self, full: str, size: int, content: dict[str, str] | None = None) -> None:
        """Set File Properties: the size, and the content headers (cleared when not given)."""
        headers = {"x-ms-content-length": str(size), **(content or {})}
        await self.expect((200,), "PUT", full, headers, {"comp": "properties"})

    async def create(self, kind: str, full: str = "") -> bool:
        """Create Share (`kind` "share") or Create Directory ("directory"): False if it exists."""
        status, response, body = await self.request("PUT", full, {}, {"restype": kind})
        if status == 201:
            return True
        error = status_error(response, body)
        if status == 409 and error.code in ("ShareAlreadyExists", "ResourceAlreadyExists"):
            return False
        raise error

    async def put_range(self, full: str, offset: int, data: bytes | memoryview) -> None:
        headers = {"x-ms-range": f"bytes={offset}-{offset + len(data) - 1}",
                   "x-ms-write": "update"}
        await self.expect((201,), "PUT", full, headers, {"comp": "range"}, data)

    async def rename(self, src_full: str, dst_full: str, *, is_dir: bool, replace: bool = True
                     ) -> Any:
        """Rename File (replacing a file) or Rename Directory; the response headers."""
        params = {"comp": "rename"}
        if is_dir:
            params["restype"] = "directory"
        headers = {
            "x-ms-file-rename-source": self.source_url(src_full),
            "x-ms-source-allow-trailing-dot": "true",
        }
        if not is_dir:
            headers["x-ms-file-rename-replace-if-exists"] = "true" if replace else "false"
        status, response, body = await self.request("PUT", dst_full, headers, params)
        if status == 200:
            return response.headers
        error = status_error(response, body)
        if not replace and status == 409 and error.code == "ResourceAlreadyExists":
            raise AlreadyExists(f"{dst_full!r} exists")
        raise error
