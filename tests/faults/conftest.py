"""Fixtures of the fault-injection suite: a FaultProxy in front of Azurite, daemons with short
deadlines, blob datastores attached through the proxy with the real CLI, and fast uploads.

Every resource a fixture starts (proxy thread and sockets, daemons and their mounts, Azurite
processes, containers) is released after the test whatever happened; the daemon fixtures come
from tests/support/daemon_fixture.py, Azurite from tests/support/azurite_fixture.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobBlock, ContainerClient

from tests.faults.content import pattern_chunks
from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon
from tests.support.faultproxy import FaultProxy

MiB = 1024 * 1024
CONN_VAR = "DSM_FAULT_CONN"  # the env var the CLI reads the connection string from


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def fault_config(
    *,
    deadline: float = 5.0,
    attempt_timeout: float = 2.0,
    max_attempts: int = 6,
    block_size: str = "1MiB",
    readahead_max: str = "8MiB",
    budget: str = "256MiB",
    log_level: str = "info",
) -> str:
    """A daemon config with short retry deadlines, so outage tests finish in seconds."""
    return (
        f'[daemon]\nlog_level = "{log_level}"\n'
        f"[retry]\nrequest_deadline = {deadline}\nattempt_timeout = {attempt_timeout}\n"
        f"max_attempts = {max_attempts}\n"
        f'[cache]\nblock_size = "{block_size}"\nreadahead_max = "{readahead_max}"\n'
        f'memory_budget = "{budget}"\n'
    )


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the session's Azurite; stopped after the test."""
    with FaultProxy(azurite.host, azurite.blob_port) as p:
        yield p


def attach_blob(
    daemon: DsmountDaemon,
    name: str,
    container: str,
    connection_string: str,
    *extra: str,
    check: bool = True,
) -> Path:
    """Attach a blob container with the real CLI (secret in an env var); its mount path."""
    daemon.cli(
        "attach",
        name,
        "--blob",
        "--container",
        container,
        "--connection-string-env",
        CONN_VAR,
        *extra,
        env={CONN_VAR: connection_string},
        check=check,
    )
    return daemon.mountpoint / name


def status_of(daemon: DsmountDaemon, name: str, timeout: float = 10.0) -> dict[str, Any]:
    """The `status` entry of datastore `name`."""
    for entry in daemon.call("status", timeout=timeout)["datastores"]:
        if entry["path"] == name:
            return entry
    raise AssertionError(f"{name} not in status")


def upload_pattern(
    container: ContainerClient, name: str, seed: int, size: int, *, workers: int = 8
) -> None:
    """Upload pattern object `seed` (see content.py) as blob `name`, blocks in parallel."""
    blob = container.get_blob_client(name)
    chunk = 8 * MiB
    ids = [f"{i:08d}" for i in range((size + chunk - 1) // chunk)]

    # Executor.map would build every chunk up front: submit in waves of 2 x workers instead,
    # so memory stays bounded whatever the size.
    with ThreadPoolExecutor(workers) as pool:
        pending: list[Future[None]] = []
        for block_id, data in zip(ids, pattern_chunks(seed, size, chunk), strict=True):
            pending.append(pool.submit(blob.stage_block, block_id, data))
            if len(pending) >= 2 * workers:
                for f in pending:
                    f.result()
                pending = []
        for f in pending:
            f.result()
    blob.commit_block_list([BlobBlock(i) for i in ids])


def upload_many(
    container: ContainerClient, items: Iterable[tuple[str, bytes]], workers: int = 16
) -> None:
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda kv: container.upload_blob(kv[0], kv[1], overwrite=True), items))
