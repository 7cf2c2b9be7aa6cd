"""THE factory: the backend of a `DatastoreSpec` (the one storage interface, for the mount),
or its whole files for blocking callers (`files.Files` over that same backend: transfers,
versions, the Python API). One validated spec, one resolution of where it lives
(`azure.common.resolve_target`), one retry policy per use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dsmount.errors import NotFound
from dsmount.storage.base import Backend
from dsmount.storage.files import TRANSFER_RETRY, Files
from dsmount.storage.retry import RetryPolicy
from dsmount.storage.spec import DatastoreSpec


def is_dir(path: Path | str) -> bool:
    """os.path.isdir, but any OSError (ENAMETOOLONG, EACCES...) means "no", never raises."""
    try:
        return Path(path).is_dir()
    except OSError:
        return False


def local_root(spec: DatastoreSpec) -> str:
    """The directory a local spec serves (its path, below its prefix)."""
    return os.path.join(spec.path or "", spec.prefix) if spec.prefix else spec.path or ""


def _azure(spec: DatastoreSpec, retry: RetryPolicy | None) -> dict[str, Any]:
    assert spec.credential is not None  # DatastoreSpec gives every Azure spec one
    return {
        "credential": spec.credential,
        "account": spec.account,
        "endpoint": spec.endpoint,
        "prefix": spec.prefix,
        "retry": retry,
    }


def make_backend(spec: DatastoreSpec, *, retry: RetryPolicy) -> Backend:
    """The async, ranged-read face of `spec` (the mount's)."""
    if spec.kind == "local":
        from dsmount.storage.local import LocalBackend

        root = local_root(spec)
        if not is_dir(root):
            raise NotFound(f"local path {root} does not exist or is not a directory")
        return LocalBackend(root)
    if spec.kind == "blob":
        from dsmount.storage.azure.blob import BlobBackend

        return BlobBackend(container=spec.container or "", **_azure(spec, retry))
    from dsmount.storage.azure.fileshare import FileShareBackend

    return FileShareBackend(share=spec.share or "", **_azure(spec, retry))


def open_files(spec: DatastoreSpec, *, retry: RetryPolicy | None = None) -> Files:
    """The whole files of `spec`, for blocking callers (upload, download, versions, the Python
    API). A local directory may not exist yet (`create`, or a first upload, makes it)."""
    if spec.kind == "local":
        from dsmount.storage.local import LocalBackend

        return Files(LocalBackend(local_root(spec), must_exist=False))
    return Files(make_backend(spec, retry=retry or TRANSFER_RETRY))
