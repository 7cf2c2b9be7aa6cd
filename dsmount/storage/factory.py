"""THE factory: the async backend (for the mount) or the blocking store (for transfers) of a
`DatastoreSpec`. Both faces of a kind are built from the same validated spec, with the same
resolution of where it lives (`azure.common.resolve_target`) and the same retry policy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dsmount.errors import NotFound
from dsmount.storage.base import Backend
from dsmount.storage.retry import RetryPolicy
from dsmount.storage.spec import DatastoreSpec
from dsmount.storage.store import Store


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


def make_store(spec: DatastoreSpec, *, retry: RetryPolicy | None = None) -> Store:
    """The blocking, whole-file face of `spec` (upload, download, versions, the Python API)."""
    if spec.kind == "local":
        from dsmount.storage.local_store import LocalStore

        return LocalStore(local_root(spec))
    if spec.kind == "blob":
        from dsmount.storage.azure.blob_store import BlobStore

        return BlobStore(container=spec.container or "", **_azure(spec, retry))
    from dsmount.storage.azure.fileshare_store import FileShareStore

    return FileShareStore(share=spec.share or "", **_azure(spec, retry))
