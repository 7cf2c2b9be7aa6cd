"""An Azure file share (or a directory inside one) as a Store (azure-storage-file-share, sync).

Azure Files has no atomic create-if-absent and a file is written as create + ranges, so: the
file's Content-MD5 is set only after all its bytes are written (an interrupted upload leaves a
file without MD5, which skip-if-same never takes for a complete copy), and `overwrite=False`
is checked just before writing (best effort). A listing carries no MD5; `content_md5` asks.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsmount.errors import AlreadyExists, ConfigError
from dsmount.shared.credentials import Credential
from dsmount.storage.azure.store import AzureStore, ProgressHook, client_options
from dsmount.storage.names import clean_path, content_type, join
from dsmount.storage.retry import RetryPolicy
from dsmount.storage.store import BIG_FILE, CHUNK_CONCURRENCY, Progress, RemoteFile


class FileShareStore(AzureStore):
    """An Azure file share, or a directory inside one."""

    kind = "fileshare"

    def __init__(
        self,
        *,
        share: str,
        credential: Credential,
        account: str | None = None,
        endpoint: str | None = None,
        prefix: str = "",
        retry: RetryPolicy | None = None,
    ) -> None:
        if not share:
            raise ConfigError("a file share datastore needs a share name")
        if credential.kind == "anonymous":
            raise ConfigError("Azure Files has no anonymous access; give a credential")
        super().__init__(
            credential,
            service="file",
            account=account,
            endpoint=endpoint,
            prefix=prefix,
            retry=retry,
        )
        if self.target.auth == "anonymous":
            raise ConfigError("the connection string has no AccountKey or SharedAccessSignature")
        self.share = share
        from azure.storage.fileshare import ShareClient

        options = client_options(self.retry)
        if self.target.auth == "azure_ad":
            options["token_intent"] = "backup"  # what Azure Files requires for OAuth
        self.client = ShareClient(
            account_url=self.endpoint,
            share_name=share,
            credential=self._sdk_credential(),
            **options,
        )
        self._made_dirs: set[str] = set()
        self._dir_lock = threading.Lock()

    def describe(self) -> str:
        return "/".join(x for x in (self.account, self.share, self.prefix) if x)

    def check(self) -> None:
        def probe() -> None:
            if self.prefix:
                self.client.get_directory_client(self.prefix).get_directory_properties()
            else:
                self.client.get_share_properties()

        self._call(f"check {self.describe()}", probe)

    def create(self) -> bool:
        from azure.core.exceptions import ResourceExistsError

        def create_share() -> bool:
            try:
                self.client.create_share()
            except ResourceExistsError:
                return False
            return True

        created = self._call(f"create share {self.share!r}", create_share)
        if self.prefix:
            self._ensure_dirs(self.prefix, include_last=True)
        return created

    def _ensure_dirs(self, name: str, *, include_last: bool = False) -> None:
        from azure.core.exceptions import ResourceExistsError

        parts = name.split("/") if include_last else name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            with self._dir_lock:
                if d in self._made_dirs:
                    continue
            def mkdir(d: str = d) -> None:
                with contextlib.suppress(ResourceExistsError):
                    self.client.get_directory_client(d).create_directory()

            self._call(f"create directory {d}", mkdir)
            with self._dir_lock:
                self._made_dirs.add(d)

    def walk(self, prefix: str = "") -> Iterator[RemoteFile]:
        rel = clean_path(prefix)
        if rel and (f := self.stat(rel)) is not None:
            yield f
            return
        from azure.core.exceptions import ResourceNotFoundError

        stack = [self._name(rel)]
        while stack:
            d = stack.pop()
            def listing(d: str = d) -> list[Any] | None:
                try:
                    return list(self.client.get_directory_client(d).list_directories_and_files())
                except ResourceNotFoundError:
                    if d == self._name(rel):
                        return None  # nothing there: an empty walk, as for a blob prefix
                    raise

            items = self._call(f"list {self._rel(d) or '/'}", listing)
            if items is None:
                return
            for item in sorted(items, key=lambda i: i["name"], reverse=True):
                name = join(d, item["name"])
                if item["is_directory"]:
                    stack.append(name)
                else:
                    yield RemoteFile(self._rel(name), int(item.get("size") or 0), md5_known=False)

    def stat(self, path: str) -> RemoteFile | None:
        from azure.core.exceptions import ResourceNotFoundError

        name = self._name(path)
        if not name:
            return None
        def head() -> Any:
            try:
                return self.client.get_file_client(name).get_file_properties()
            except ResourceNotFoundError:
                return None

        props = self._call(f"stat {path}", head)
        if props is None:
            return None
        md5 = props.content_settings.content_md5 if props.content_settings else None
        return RemoteFile(
            self._rel(name),
            int(props.size or 0),
            bytes(md5) if md5 else None,
            (props.etag or "").strip('"') or None,
            props.last_modified.timestamp() if props.last_modified else None,
        )

    def content_md5(self, f: RemoteFile) -> bytes | None:
        if f.md5_known:
            return f.md5
        full = self.stat(f.path)
        return full.md5 if full is not None else None

    def upload(
        self, local: Path, path: str, *, size: int, md5: bytes, overwrite: bool, progress: Progress
    ) -> None:
        from azure.storage.fileshare import ContentSettings

        name = self._name(path)
        self._ensure_dirs(name)
        fc = self.client.get_file_client(name)
        if not overwrite and self.stat(path) is not None:  # no atomic create-if-absent here
            raise AlreadyExists(f"{path} appeared in {self.describe()} meanwhile; not overwritten")
        hook = ProgressHook(progress)  # one across attempts: a retry re-counts nothing
        with open(local, "rb") as data:

            def attempt() -> None:
                data.seek(0)
                fc.upload_file(
                    data,
                    length=size,
                    max_concurrency=CHUNK_CONCURRENCY if size >= BIG_FILE else 1,
                    content_settings=ContentSettings(content_type=content_type(path)),
                    progress_hook=hook,
                )

            self._call(f"upload {path}", attempt)
        # Only now the MD5: a file cut short by an interruption has none, so it is never taken
        # for a complete copy by skip-if-same.
        self._call(
            f"upload {path}",
            lambda: fc.set_http_headers(
                ContentSettings(content_type=content_type(path), content_md5=bytearray(md5))
            ),
        )

    def _download(self, name: str, **options: Any) -> Any:
        return self.client.get_file_client(name).download_file(**options)

    def put_bytes(self, path: str, data: bytes, *, exclusive: bool = False) -> bool:
        if exclusive and self.stat(path) is not None:
            return False  # best effort: Azure Files has no conditional create
        name = self._name(path)
        self._ensure_dirs(name)
        self._call(
            f"write {path}",
            lambda: self.client.get_file_client(name).upload_file(data, length=len(data)),
        )
        return True

    def list_dir(self, path: str) -> tuple[list[str], list[str]]:
        from azure.core.exceptions import ResourceNotFoundError

        files: list[str] = []
        dirs: list[str] = []
        def listing() -> list[Any]:
            try:
                directory = self.client.get_directory_client(self._name(path))
                return list(directory.list_directories_and_files())
            except ResourceNotFoundError:
                return []

        for item in self._call(f"list {path or '/'}", listing):
            (dirs if item["is_directory"] else files).append(item["name"])
        return sorted(files), sorted(dirs)
