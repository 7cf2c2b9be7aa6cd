"""An Azure blob container (or a prefix inside one) as a Store (azure-storage-blob, sync).

A blob is committed in one request (Put Blob, or Put Block List for big files), so an
interrupted upload never leaves a partial blob; Content-MD5 is set on every blob written, and
downloads are pinned to the ETag seen when planning (never a mix of two versions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsmount.errors import AlreadyExists, ConfigError
from dsmount.shared.credentials import Credential
from dsmount.storage.azure.store import AzureStore, ProgressHook, client_options
from dsmount.storage.names import (
    FOLDER_MARKER_KEY,
    clean_path,
    content_type,
    is_folder_marker,
    join,
)
from dsmount.storage.retry import RetryPolicy
from dsmount.storage.store import BIG_FILE, CHUNK_CONCURRENCY, Progress, RemoteFile


class BlobStore(AzureStore):
    """An Azure blob container, or a prefix inside one."""

    kind = "blob"

    def __init__(
        self,
        *,
        container: str,
        credential: Credential,
        account: str | None = None,
        endpoint: str | None = None,
        prefix: str = "",
        retry: RetryPolicy | None = None,
    ) -> None:
        if not container:
            raise ConfigError("a blob datastore needs a container name")
        super().__init__(
            credential,
            service="blob",
            account=account,
            endpoint=endpoint,
            prefix=prefix,
            retry=retry,
        )
        self.container = container
        from azure.storage.blob import ContainerClient

        self.client = ContainerClient(
            account_url=self.endpoint,
            container_name=container,
            credential=self._sdk_credential(),
            **client_options(self.retry),
        )

    def describe(self) -> str:
        return "/".join(x for x in (self.account, self.container, self.prefix) if x)

    def check(self) -> None:
        start = self.prefix + "/" if self.prefix else None

        def probe() -> None:
            pages = self.client.list_blobs(name_starts_with=start, results_per_page=1).by_page()
            next(iter(pages), None)

        self._call(f"check {self.describe()}", probe)

    def create(self) -> bool:
        from azure.core.exceptions import ResourceExistsError

        def create() -> bool:
            try:
                self.client.create_container()
            except ResourceExistsError:
                return False
            return True

        return self._call(f"create container {self.container!r}", create)

    def _file(self, props: Any) -> RemoteFile:
        md5 = props.content_settings.content_md5 if props.content_settings else None
        return RemoteFile(
            self._rel(props.name),
            int(props.size or 0),
            bytes(md5) if md5 else None,
            (props.etag or "").strip('"') or None,
            props.last_modified.timestamp() if props.last_modified else None,
        )

    @staticmethod
    def _is_folder(props: Any) -> bool:
        meta = props.metadata or {}
        return props.name.endswith("/") or is_folder_marker(
            int(props.size or 0), str(meta.get(FOLDER_MARKER_KEY, ""))
        )

    def walk(self, prefix: str = "") -> Iterator[RemoteFile]:
        rel = clean_path(prefix)
        full = self._name(rel)
        start = full if rel else (self.prefix + "/" if self.prefix else "")
        what = f"list {self.describe()}/{rel}"
        token: str | None = None
        while True:
            # Page by page, each page one retried call that resumes from its continuation token.
            def page(token: str | None = token) -> tuple[list[Any], str | None]:
                pages = self.client.list_blobs(
                    name_starts_with=start or None, include=["metadata"]
                ).by_page(continuation_token=token)
                items = list(next(iter(pages), []))
                return items, pages.continuation_token

            items, token = self._call(what, page)
            for props in items:
                name = props.name
                if rel and name != full and not name.startswith(full + "/"):
                    continue  # "data.csv.bak" when asked for "data.csv"
                if self._is_folder(props):
                    continue
                yield self._file(props)
            if not token:
                return

    def stat(self, path: str) -> RemoteFile | None:
        from azure.core.exceptions import ResourceNotFoundError

        def head() -> Any:
            try:
                return self.client.get_blob_client(self._name(path)).get_blob_properties()
            except ResourceNotFoundError:
                return None

        props = self._call(f"stat {path}", head)
        return None if props is None or self._is_folder(props) else self._file(props)

    def upload(
        self, local: Path, path: str, *, size: int, md5: bytes, overwrite: bool, progress: Progress
    ) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContentSettings

        blob = self.client.get_blob_client(self._name(path))
        # Content-MD5 is set on every blob we write, also when it is committed as a block list
        # (the service computes it only for single-shot uploads): skip-if-same relies on it.
        settings = ContentSettings(content_type=content_type(path), content_md5=bytearray(md5))
        hook = ProgressHook(progress)  # one across attempts: a retry re-counts nothing
        with open(local, "rb") as data:

            def attempt() -> None:
                data.seek(0)
                try:
                    blob.upload_blob(
                        data,
                        length=size,
                        overwrite=overwrite,
                        content_settings=settings,
                        max_concurrency=CHUNK_CONCURRENCY if size >= BIG_FILE else 1,
                        progress_hook=hook,
                    )
                except ResourceExistsError:
                    raise AlreadyExists(
                        f"{path} appeared in {self.describe()} meanwhile; not overwritten"
                    ) from None

            self._call(f"upload {path}", attempt)

    def _download(self, name: str, **options: Any) -> Any:
        return self.client.get_blob_client(name).download_blob(**options)

    def _pin(self, f: RemoteFile) -> dict[str, Any]:
        from azure.core import MatchConditions

        if not f.etag:
            return {}
        # The bytes of the version we planned with, or Changed: never a mix of two.
        return {"etag": f'"{f.etag}"', "match_condition": MatchConditions.IfNotModified}

    def put_bytes(self, path: str, data: bytes, *, exclusive: bool = False) -> bool:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContentSettings

        blob = self.client.get_blob_client(self._name(path))
        settings = ContentSettings(
            content_type=content_type(path), content_md5=bytearray(hashlib.md5(data).digest())
        )
        def put() -> bool:
            try:
                blob.upload_blob(data, overwrite=not exclusive, content_settings=settings)
            except ResourceExistsError:
                return False
            return True

        return self._call(f"write {path}", put)

    def list_dir(self, path: str) -> tuple[list[str], list[str]]:
        from azure.storage.blob import BlobPrefix

        start = join(self.prefix, clean_path(path))
        start = start + "/" if start else ""
        files: list[str] = []
        dirs: list[str] = []
        def walk() -> list[Any]:
            return list(self.client.walk_blobs(name_starts_with=start or None, delimiter="/"))

        for item in self._call(f"list {path or '/'}", walk):
            name = item.name[len(start) :].rstrip("/")
            if not name:
                continue
            (dirs if isinstance(item, BlobPrefix) else files).append(name)
        return sorted(files), sorted(dirs)


# -- file share -------------------------------------------------------------------------------
