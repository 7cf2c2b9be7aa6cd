"""The Azurite support code works: real uploads, ranged reads, restart with disk persistence."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from tests.support import azurite as azurite_mod
from tests.support.azurite import Azurite, AzuriteNotFound
from tests.support.azurite_fixture import skip_or_fail_without_azurite

# Not a multiple of any SDK chunk size, so partial last chunks are exercised too.
BLOB_SIZE = 3 * 1024 * 1024 + 12345


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.azurite
def test_endpoint_is_local_and_connection_string_works(azurite: Azurite) -> None:
    assert azurite.blob_endpoint == f"http://127.0.0.1:{azurite.blob_port}/devstoreaccount1"
    assert f"BlobEndpoint={azurite.blob_endpoint};" in azurite.connection_string
    assert azurite.pid is not None
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        assert client.account_name == Azurite.ACCOUNT
        client.get_service_properties()  # an authenticated round trip


@pytest.mark.azurite
def test_upload_download_roundtrip(blob_container: ContainerClient) -> None:
    data = os.urandom(BLOB_SIZE)
    blob_container.upload_blob("dir/data.bin", data)
    assert blob_container.download_blob("dir/data.bin").readall() == data
    props = blob_container.get_blob_client("dir/data.bin").get_blob_properties()
    assert props.size == len(data)
    assert [b.name for b in blob_container.list_blobs()] == ["dir/data.bin"]


@pytest.mark.azurite
def test_ranged_download(blob_container: ContainerClient) -> None:
    data = os.urandom(BLOB_SIZE)
    blob_container.upload_blob("ranged.bin", data)
    for offset, length in [(0, 1), (1000, 4096), (BLOB_SIZE // 2 - 7, 1 << 20), (BLOB_SIZE - 5, 5)]:
        got = blob_container.download_blob("ranged.bin", offset=offset, length=length).readall()
        assert got == data[offset : offset + length], (offset, length)


@pytest.mark.azurite
def test_containers_are_unique_and_empty(azurite: Azurite, blob_container: ContainerClient) -> None:
    assert blob_container.container_name.startswith("t-")
    assert list(blob_container.list_blobs()) == []
    with azurite.blob_service_client() as client:
        names = [c.name for c in client.list_containers()]
    assert names.count(blob_container.container_name) == 1


@pytest.mark.azurite
def test_restart_with_disk_persistence_keeps_data(make_azurite: Callable[..., Azurite]) -> None:
    data = os.urandom(256 * 1024 + 1)
    server = make_azurite(in_memory=False)
    port, first_pid = server.blob_port, server.pid
    with server.blob_service_client() as client:
        client.create_container("persist").upload_blob("kept.bin", data)

    server.restart()

    assert server.blob_port == port
    assert server.pid is not None and server.pid != first_pid
    with server.blob_service_client() as client:
        blob = client.get_blob_client("persist", "kept.bin")
        assert blob.download_blob().readall() == data

    # stop() releases everything: no process, nothing listening on the port.
    server.stop()
    assert server.pid is None
    assert not _port_open(port)


@pytest.mark.azurite
def test_context_manager_starts_and_stops(tmp_path: Path) -> None:
    skip_or_fail_without_azurite()
    with Azurite(tmp_path) as server:
        port = server.blob_port
        assert _port_open(port)
    assert server.pid is None
    assert not _port_open(port)


@pytest.mark.azurite
def test_in_memory_restart_loses_data(make_azurite: Callable[..., Azurite]) -> None:
    """The counterpart of the test above: in-memory data does not survive a restart."""
    server = make_azurite()
    with server.blob_service_client() as client:
        client.create_container("gone").upload_blob("x", b"x")
    server.restart()
    with server.blob_service_client() as client, pytest.raises(ResourceNotFoundError):
        client.get_container_client("gone").get_container_properties()
    assert not list(server.workdir.glob("__blobstorage__*"))  # nothing was written to disk


def test_missing_executable_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(azurite_mod, "find_azurite_blob", lambda: None)
    with pytest.raises(AzuriteNotFound, match="install-deps.sh"):
        Azurite(tmp_path).start()
