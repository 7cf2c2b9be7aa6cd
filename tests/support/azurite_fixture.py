"""Pytest plugin: a session-wide Azurite Blob service and a fresh container per test.

Listed in tests/conftest.py `pytest_plugins`. When Azurite is not installed the tests that need
it skip with a hint, except in CI or with DSMOUNT_REQUIRE_AZURITE=1, where they fail: a missing
install step must never pass CI silently. Every resource is released even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from tests.support.azurite import INSTALL_HINT, Azurite, find_azurite_blob


def azurite_required() -> bool:
    """True when a missing Azurite must fail tests instead of skipping them."""
    return os.environ.get("DSMOUNT_REQUIRE_AZURITE") == "1" or bool(os.environ.get("CI"))


def skip_or_fail_without_azurite() -> None:
    """Skip the current test (fail it in CI) when azurite-blob is not installed."""
    if find_azurite_blob() is None:
        message = f"azurite-blob is not installed; {INSTALL_HINT}"
        if azurite_required():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A started, in-memory Azurite Blob service shared by the whole session."""
    skip_or_fail_without_azurite()
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def blob_container(azurite: Azurite) -> Iterator[ContainerClient]:
    """A new, uniquely named, empty container; deleted after the test."""
    service = azurite.blob_service_client()
    try:
        # Container names: 3-63 chars of lowercase letters, digits and dashes.
        container = service.create_container(f"t-{uuid.uuid4().hex[:12]}")
        try:
            yield container
        finally:
            # The test may have deleted it itself.
            with contextlib.suppress(ResourceNotFoundError):
                container.delete_container()
            container.close()
    finally:
        service.close()


@pytest.fixture
def make_azurite(tmp_path: Path) -> Iterator[Callable[..., Azurite]]:
    """A factory of private, started Azurite services (e.g. `in_memory=False` for restart or
    fault tests); every one it made is stopped after the test, whatever happened."""
    skip_or_fail_without_azurite()
    servers: list[Azurite] = []

    def make(**kwargs: Any) -> Azurite:
        server = Azurite(tmp_path / f"azurite-{len(servers)}", **kwargs)
        servers.append(server)  # before start(): a half-started server is stopped too
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
