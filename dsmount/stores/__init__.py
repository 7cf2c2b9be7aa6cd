"""Blocking whole-file access to datastores (see `dsmount.stores.base`): `make_store` builds
the right Store from the fields of an attach spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsmount.credentials import Credential
from dsmount.errors import ConfigError, InvalidRequest
from dsmount.stores.base import RemoteFile, Store, clean_path, file_md5, join

__all__ = ["RemoteFile", "Store", "clean_path", "file_md5", "join", "make_store"]


def make_store(
    spec: dict[str, Any], credential: Credential | None = None, *, retries: int = 4
) -> Store:
    """A store for an attach-spec-shaped dict (kind, path / container / share, account,
    endpoint, prefix); `credential` for the Azure kinds."""
    kind = spec.get("kind")
    if kind == "local":
        from dsmount.stores.local import LocalStore

        root = Path(str(spec.get("path") or ""))
        prefix = clean_path(str(spec.get("prefix") or ""), what="prefix")
        return LocalStore(root / prefix if prefix else root)
    if credential is None:
        raise ConfigError(f"a {kind} datastore needs a credential")
    common = {
        "credential": credential,
        "account": spec.get("account") or None,
        "endpoint": spec.get("endpoint") or None,
        "prefix": spec.get("prefix") or "",
        "retries": retries,
    }
    if kind == "blob":
        from dsmount.stores.blob import BlobStore

        return BlobStore(container=str(spec.get("container") or ""), **common)
    if kind == "fileshare":
        from dsmount.stores.fileshare import FileShareStore

        return FileShareStore(share=str(spec.get("share") or ""), **common)
    raise InvalidRequest(f"unknown datastore kind {kind!r}")
