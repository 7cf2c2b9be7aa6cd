"""What differs between kinds is declared on the backend (`Backend.capabilities`), never read
from `kind`: each kind's declaration, and a version's, which follows the backend it wraps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dsmount.errors import ReadOnly
from dsmount.shared.credentials import Credential
from dsmount.storage.azure.blob import BlobBackend
from dsmount.storage.azure.fileshare import FileShareBackend
from dsmount.storage.base import REMOTE_WRITABLE, Capabilities
from dsmount.storage.local import LocalBackend
from dsmount.storage.manifest import FileRecord, Manifest, write_manifest
from dsmount.storage.manifest_backend import ManifestBackend
from tests.support.faulty_backend import FaultyBackend
from tests.support.memory_backend import MemoryBackend


def _version_of(inner: object, tmp_path: Path) -> ManifestBackend:
    path = tmp_path / "manifest"
    write_manifest(path, [FileRecord("f", 1, 1, None, "e1")], root="v", kind="version")
    return ManifestBackend(inner, Manifest(path), name="m")  # type: ignore[arg-type]


def test_each_kind_declares_what_it_can(tmp_path: Path) -> None:
    cloud = [
        BlobBackend(container="c", credential=Credential("azure_ad"), account="acct"),
        FileShareBackend(share="share", credential=Credential("azure_ad"), account="acct"),
    ]
    for backend in cloud:
        assert backend.capabilities == REMOTE_WRITABLE and backend.writable
        assert not backend.capabilities.locate
    local = LocalBackend(tmp_path)
    assert local.capabilities == Capabilities(local_directory=True, uploads=True)
    assert not local.writable  # read-only for the mount; transfers write through uploads
    with pytest.raises(dataclasses.FrozenInstanceError):
        local.capabilities.writable = True  # type: ignore[misc]


async def test_a_version_locates_and_follows_what_it_wraps(tmp_path: Path) -> None:
    remote = _version_of(MemoryBackend(), tmp_path)
    assert remote.capabilities == Capabilities(remote=True, disk_cacheable=True, locate=True)
    assert not remote.writable
    with pytest.raises(ReadOnly):
        await remote.begin_upload("f")
    (tmp_path / "disk").mkdir()
    on_disk = _version_of(LocalBackend(tmp_path / "disk"), tmp_path / "disk")
    assert on_disk.capabilities == Capabilities(locate=True)


def test_a_wrapper_declares_what_it_wraps() -> None:
    inner = MemoryBackend()
    assert FaultyBackend(inner).capabilities == inner.capabilities
