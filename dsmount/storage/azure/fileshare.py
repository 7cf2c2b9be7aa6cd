"""Azure Files backend: one file share (optionally a directory inside it) as a directory tree.

The backend maps the storage verbs onto its share's REST client
(`fileshare_client.ShareRest`, which sends every request) and hands out
`fileshare_upload.FileShareUpload`s; each network call runs on the shared asyncio loop
(`bridge`) under `with_retry` (`AzureBackend._call`). Listings skip uploads' temporary files.

Writing: Azure Files has no atomic commit, so a new version of a file is written into a
temporary file and renamed over the target at commit (`fileshare_upload`); directories are
native (Create Directory, Delete Directory, Rename Directory).

Invariants:
- One retry policy: the SDK's retries are off; each network call runs under
  `with_retry(self.retry, ...)` and is counted in `self.stats`.
- Every failure leaves this module as a `dsmount.errors` type built by `common.map_error`,
  with no SDK message, URL or secret in it.
- Reads never return bytes of another version than the pinned one (`ShareRest.get_range`).
- The ETag changes with any change to a file (content or properties): a pinned handle fails
  (ESTALE) even after a change of attributes only, never reads a mix of versions.
- Names are case-insensitive on the service: listings show the stored case, and a lookup in
  another case finds the same file (as on an SMB mount of the share).
- Retries of calls that change state are safe: a retried delete that finds nothing, or a
  retried Create Directory that finds the directory, succeed.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

from dsmount.errors import AlreadyExists, AuthFailed, ConfigError, NotEmpty, NotFound, NotSupported
from dsmount.shared.credentials import Credential
from dsmount.storage.azure.backend import AzureBackend
from dsmount.storage.azure.bridge import AsyncioThread
from dsmount.storage.azure.common import status_error
from dsmount.storage.azure.fileshare_client import ShareRest
from dsmount.storage.azure.fileshare_listing import DirectoryEntries, entry_from_headers
from dsmount.storage.azure.fileshare_upload import FileShareUpload, rename_over
from dsmount.storage.base import REMOTE_WRITABLE, Entry, RemoteFile, Upload
from dsmount.storage.names import strip_etag
from dsmount.storage.retry import RetryPolicy
from dsmount.storage.spec import share_name_problem
from dsmount.storage.writes import is_temp_name

log = logging.getLogger(__name__)

_REPORTED_MAX = 10_000  # names remembered for log-once; beyond it, nothing more is logged


class FileShareBackend(AzureBackend):
    """One Azure file share, or a directory inside one, as a directory tree."""

    kind = "fileshare"
    list_on_lookup = True
    location_field = "share"
    capabilities = REMOTE_WRITABLE
    native_dir_rename = True

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
        problem = share_name_problem(share)
        if problem:
            raise ConfigError(problem)
        if credential.kind == "anonymous":
            raise ConfigError("Azure Files has no anonymous access; give a credential")
        segments = [s for s in prefix.strip("/").split("/") if s]
        if any(s in (".", "..") for s in segments) or "//" in prefix.strip("/"):
            raise ConfigError(f"invalid directory prefix {prefix!r}")
        super().__init__(
            service="file", credential=credential, account=account, endpoint=endpoint,
            retry=retry, page_size=page_size, max_connections=max_connections, bridge=bridge,
        )
        if self.target.auth == "anonymous":
            raise ConfigError("the connection string has no AccountKey or SharedAccessSignature")
        self.share = share
        self.prefix = "/".join(segments)
        self.connection_verify = connection_verify
        self._reported: set[tuple[str, str]] = set()
        self.rest = ShareRest(
            self.target, share, max_connections=max_connections,
            attempt_timeout=self.retry.attempt_timeout, connection_verify=connection_verify,
            page_size=page_size,
        )

    def _full(self, path: str) -> str:
        """The path inside the share of a datastore path."""
        path = path.strip("/")
        if self.prefix:
            return f"{self.prefix}/{path}" if path else self.prefix
        return path

    def _report(self, directory: str, name: str, problem: str) -> None:
        key = (directory, name)
        if key in self._reported or len(self._reported) >= _REPORTED_MAX:
            return
        self._reported.add(key)
        where = f"{self.account}/{self.share}/{directory}".rstrip("/")
        log.warning("%s: skipping %r: %s", where, name, problem)

    # --- the Backend interface ----------------------------------------------------------------

    async def stat(self, path: str) -> Entry:
        return await self._stat(path.strip("/"), f"stat {path.strip('/') or '/'!r}")

    async def _stat(self, path: str, what: str) -> Entry:
        full = self._full(path)
        leaf = path.rsplit("/", 1)[-1] if path else ""
        if path:
            headers = await self._call(what, lambda: self.rest.properties(full, directory=False))
            if headers is not None:
                return entry_from_headers(leaf, headers, is_dir=False)
        headers = await self._call(what, lambda: self.rest.properties(full, directory=True))
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
            page = await self._call(what, lambda m=marker: self.rest.list_page(full, m))
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
            f"read {path!r}", lambda: self.rest.get_range(full, offset, length, pinned)
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

    # --- the write verbs -----------------------------------------------------------------------
    async def begin_upload(
        self, path: str, *, base: Entry | None = None, append: bool = False,
        parents: bool = False,
    ) -> Upload:
        return FileShareUpload(
            self, self.rest, self._full, path.strip("/"), base,
            in_place=append and base is not None, parents=parents,
        )

    # --- whole files (walked by the base class: a share lists one directory at a time) ----------
    async def file_info(self, path: str) -> RemoteFile | None:
        path = path.strip("/")
        if not path:
            return None
        full = self._full(path)
        try:
            headers = await self._call(f"stat {path!r}",
                                       lambda: self.rest.properties(full, directory=False))
        except NotFound:  # ParentNotFound
            return None
        if headers is None:
            return None
        e = entry_from_headers(path, headers, is_dir=False)
        md5 = headers.get("Content-MD5")
        return RemoteFile(path, e.size, base64.b64decode(md5) if md5 else None, e.etag,
                          e.mtime_ns / 1e9 or None)

    async def create(self) -> bool:
        """Create Share, then each directory of the prefix; False if the share existed."""
        created = await self._call(f"create share {self.share!r}",
                                   lambda: self.rest.create("share"))
        parts = self.prefix.split("/") if self.prefix else []
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            await self._call(f"mkdir {d!r}", lambda d=d: self.rest.create("directory", d))
        return created

    async def _rename(self, src: str, dst: str, *, is_dir: bool) -> Any:
        return await rename_over(self, self.rest, self._full, src, dst, is_dir=is_dir)

    async def delete(self, path: str) -> None:
        full = self._full(path)

        async def delete(again: bool) -> None:
            status, response, body = await self.rest.request("DELETE", full, {})
            if status == 404 and again:
                return
            if status != 202:
                raise status_error(response, body)

        await self._call_again(f"delete {path!r}", delete)

    async def make_dir(self, path: str) -> Entry:
        full = self._full(path)

        async def create(again: bool) -> Entry:
            status, response, body = await self.rest.request(
                "PUT", full, {}, {"restype": "directory"}
            )
            if status == 201:
                return entry_from_headers(path.rsplit("/", 1)[-1], response.headers, is_dir=True)
            error = status_error(response, body)
            if status == 409 and error.code == "ResourceAlreadyExists":
                if again:
                    return Entry(path.rsplit("/", 1)[-1], True)
                raise AlreadyExists(f"mkdir {path!r}: the name exists")
            raise error

        return await self._call_again(f"mkdir {path!r}", create)

    async def remove_dir(self, path: str) -> None:
        full = self._full(path)

        async def remove(again: bool) -> None:
            status, response, body = await self.rest.request(
                "DELETE", full, {}, {"restype": "directory"}
            )
            if status == 202 or (status == 404 and again):
                return
            error = status_error(response, body)
            if status == 409 and error.code == "DirectoryNotEmpty":
                raise NotEmpty(f"rmdir {path!r}: the directory is not empty")
            raise error

        await self._call_again(f"rmdir {path!r}", remove)

    async def copy(self, src: str, dst: str) -> Entry:
        raise NotSupported(f"copy {src!r}: file shares rename natively; no copy is needed")

    async def rename(
        self, src: str, dst: str, *, is_dir: bool = False, max_entries: int = 1000
    ) -> Entry | None:
        headers = await self._rename(src, dst, is_dir=is_dir)
        if is_dir:
            return None
        return await self.stat(dst) if headers is not None else None
