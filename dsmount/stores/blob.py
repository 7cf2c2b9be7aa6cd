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

from dsmount.credentials import Credential
from dsmount.errors import AlreadyExists, ConfigError
from dsmount.stores.azure_common import AzureStore, ProgressHook, retry_options
from dsmount.stores.base import (
    BIG_FILE,
    CHUNK_CONCURRENCY,
    Progress,
    RemoteFile,
    clean_path,
    content_type,
    join,
)


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
        retries: int = 4,
    ) -> None:
        if not container:
            raise ConfigError("a blob datastore needs a container name")
        super().__init__(
            credential, service="blob", account=account, endpoint=endpoint, prefix=prefix
        )
        self.container = container
        from azure.storage.blob import ContainerClient, ExponentialRetry

        self.client = ContainerClient(
            account_url=self.endpoint,
            container_name=container,
            credential=self._sdk_credential(),
            **retry_options(retries, ExponentialRetry),
        )

    def describe(self) -> str:
        return "/".join(x for x in (self.account, self.container, self.prefix) if x)

    def check(self) -> None:
        with self._mapped(f"check {self.describe()}"):
            start = self.prefix + "/" if self.prefix else None
            pages = self.client.list_blobs(name_starts_with=start, results_per_page=1).by_page()
            next(iter(pages), None)

    def create(self) -> bool:
        from azure.core.exceptions import ResourceExistsError

        with self._mapped(f"create container {self.container!r}"):
            try:
                self.client.create_container()
            except ResourceExistsError:
                return False
            return True

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
        return props.name.endswith("/") or (
            not props.size and str(meta.get("hdi_isfolder", "")).lower() == "true"
        )

    def walk(self, prefix: str = "") -> Iterator[RemoteFile]:
        rel = clean_path(prefix)
        full = self._name(rel)
        start = full if rel else (self.prefix + "/" if self.prefix else "")
        with self._mapped(f"list {self.describe()}/{rel}"):
            for props in self.client.list_blobs(
                name_starts_with=start or None, include=["metadata"]
            ):
                name = props.name
                if rel and name != full and not name.startswith(full + "/"):
                    continue  # "data.csv.bak" when asked for "data.csv"
                if self._is_folder(props):
                    continue
                yield self._file(props)

    def stat(self, path: str) -> RemoteFile | None:
        from azure.core.exceptions import ResourceNotFoundError

        with self._mapped(f"stat {path}"):
            try:
                props = self.client.get_blob_client(self._name(path)).get_blob_properties()
            except ResourceNotFoundError:
                return None
        return None if self._is_folder(props) else self._file(props)

    def upload(
        self, local: Path, path: str, *, size: int, md5: bytes, overwrite: bool, progress: Progress
    ) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContentSettings

        blob = self.client.get_blob_client(self._name(path))
        # Content-MD5 is set on every blob we write, also when it is committed as a block list
        # (the service computes it only for single-shot uploads): skip-if-same relies on it.
        settings = ContentSettings(content_type=content_type(path), content_md5=bytearray(md5))
        with open(local, "rb") as data, self._mapped(f"upload {path}"):
            try:
                blob.upload_blob(
                    data,
                    length=size,
                    overwrite=overwrite,
                    content_settings=settings,
                    max_concurrency=CHUNK_CONCURRENCY if size >= BIG_FILE else 1,
                    progress_hook=ProgressHook(progress),
                )
            except ResourceExistsError:
                raise AlreadyExists(
                    f"{path} appeared in {self.describe()} meanwhile; not overwritten"
                ) from None

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
        with self._mapped(f"write {path}"):
            try:
                blob.upload_blob(data, overwrite=not exclusive, content_settings=settings)
            except ResourceExistsError:
                return False
        return True

    def list_dir(self, path: str) -> tuple[list[str], list[str]]:
        from azure.storage.blob import BlobPrefix

        start = join(self.prefix, clean_path(path))
        start = start + "/" if start else ""
        files: list[str] = []
        dirs: list[str] = []
        with self._mapped(f"list {path or '/'}"):
            for item in self.client.walk_blobs(name_starts_with=start or None, delimiter="/"):
                name = item.name[len(start) :].rstrip("/")
                if not name:
                    continue
                (dirs if isinstance(item, BlobPrefix) else files).append(name)
        return sorted(files), sorted(dirs)


# -- file share -------------------------------------------------------------------------------
