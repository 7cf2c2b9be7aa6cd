"""Backend outages and HTTP failures through a real mount: never hang, retry only what is
worth retrying.

- Backend down (connections refused) or hung (accepted, never answered): a read of data not
  cached fails with EIO within the request deadline (+ a small margin); meanwhile the daemon
  answers `status` at once, showing the datastore degraded with its last error; a local
  datastore and cached data keep serving. When the backend returns, reads succeed again on
  the same mount and `status` shows the datastore healthy.
- 503 ServerBusy for N requests (with and without Retry-After) is retried transparently;
  403, 404 and 412 are answered at once, without a retry (requests counted at the proxy).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from dsmount.node.cache.blocks import FAILURE_TTL
from tests.faults.conftest import (
    MiB,
    attach_blob,
    fault_config,
    status_of,
)
from tests.faults.content import pattern_bytes
from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon, wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.trees import make_tree

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

DEADLINE = 5.0
MARGIN = 3.0  # scheduling slack on a loaded 2-core CI machine


def read_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_or_none(path: Path) -> bytes | None:
    try:
        return read_file(path)
    except OSError:
        return None


def timed_errno(fn: Callable[[], object]) -> tuple[int, float]:
    """Run `fn`, which must fail with OSError: (errno, seconds it took)."""
    started = time.monotonic()
    with pytest.raises(OSError) as info:
        fn()
    return info.value.errno or 0, time.monotonic() - started


@pytest.fixture
def daemon(make_daemon: Callable[..., DsmountDaemon]) -> DsmountDaemon:
    return make_daemon(config_text=fault_config(deadline=DEADLINE, attempt_timeout=2.0))


@pytest.mark.parametrize("outage", ["down", "blackhole"])
def test_outage_fails_fast_status_answers_others_serve_and_it_recovers(
    daemon: DsmountDaemon,
    azurite: Azurite,
    blob_container: ContainerClient,
    proxy: FaultProxy,
    tmp_path: Path,
    outage: str,
) -> None:
    files = {f"f{i}.bin": pattern_bytes(i, 0, 3 * MiB + i) for i in range(4)}
    for name, data in files.items():
        blob_container.upload_blob(name, data)
    local_src = make_tree(tmp_path / "local", {"l.bin": 2 * MiB + 7})
    local = daemon.attach_local("local", local_src)
    root = attach_blob(
        daemon,
        "remote",
        blob_container.container_name,
        proxy.connection_string_for(azurite.connection_string),
    )
    assert sorted(os.listdir(root)) == sorted(files)  # metadata cached for every file
    assert read_file(root / "f0.bin") == files["f0.bin"]  # f0's blocks cached
    assert status_of(daemon, "remote")["state"] == "ok"

    getattr(proxy, outage)()
    reads_before = status_of(daemon, "remote")["reads"]
    with ThreadPoolExecutor(2) as pool:
        failing = pool.submit(timed_errno, lambda: read_file(root / "f1.bin"))
        # While that read waits on the dead backend (it reached the daemon), the daemon
        # answers at once.
        wait_until(lambda: status_of(daemon, "remote")["reads"] > reads_before, 10,
                   "the read to reach the daemon")
        started = time.monotonic()
        st = status_of(daemon, "remote", timeout=5)
        assert time.monotonic() - started < 2.0
        number, took = failing.result(DEADLINE + 30)
    assert number == errno.EIO
    assert took < DEADLINE + MARGIN, f"EIO after {took:.1f}s (deadline {DEADLINE}s)"
    st = status_of(daemon, "remote")
    assert st["state"] == "degraded", st
    assert st["backend_last_error"], st
    assert st["backend_errors"] > 0 and st["backend_retries"] > 0, st
    # Other datastores and cached data keep serving during the outage, without waiting.
    started = time.monotonic()
    assert read_file(local / "l.bin") == (local_src / "l.bin").read_bytes()
    assert read_file(root / "f0.bin") == files["f0.bin"]
    assert os.stat(root / "f2.bin").st_size == len(files["f2.bin"])
    assert time.monotonic() - started < 2.0
    # A file never read: fails in time as well.
    number, took = timed_errno(lambda: read_file(root / "f3.bin"))
    assert number == errno.EIO and took < DEADLINE + MARGIN, (number, took)
    assert daemon.alive()

    proxy.up()
    # Back: the same mount serves the files that failed, and status turns healthy. A block
    # whose fetch failed in the last moments of the outage answers with that failure for
    # FAILURE_TTL more (see cache/blocks.py), hence a short poll rather than one read.
    started = time.monotonic()
    for name in ("f1.bin", "f3.bin"):
        wait_until(
            lambda name=name: read_or_none(root / name) == files[name],
            FAILURE_TTL + 5,
            f"{name} readable again",
        )
    assert time.monotonic() - started < FAILURE_TTL + 5
    st = status_of(daemon, "remote")
    assert st["state"] == "ok", st


def test_503s_are_retried_transparently(
    daemon: DsmountDaemon,
    azurite: Azurite,
    blob_container: ContainerClient,
    proxy: FaultProxy,
) -> None:
    data = {f"x{i}.bin": pattern_bytes(40 + i, 0, 512 * 1024 + i) for i in range(3)}
    for name, body in data.items():
        blob_container.upload_blob(name, body)
    root = attach_blob(
        daemon,
        "busy",
        blob_container.container_name,
        proxy.connection_string_for(azurite.connection_string),
    )
    assert sorted(os.listdir(root)) == sorted(data)

    # Without Retry-After: our own backoff (short: 0.1 s doubling, with jitter).
    before = status_of(daemon, "busy")
    proxy.respond_503(3)
    assert read_file(root / "x0.bin") == data["x0.bin"]
    after = status_of(daemon, "busy")
    assert proxy.stats["injected_503"] == 3
    assert after["backend_retries"] - before["backend_retries"] == 3, (before, after)
    assert after["fetch_errors"] == 0 and after["state"] == "ok"

    # With Retry-After: the server's wait is honoured (2 x 1 s), still no error.
    proxy.respond_503(2, retry_after=1)
    started = time.monotonic()
    assert read_file(root / "x1.bin") == data["x1.bin"]
    took = time.monotonic() - started
    assert proxy.stats["injected_503"] == 5
    assert took >= 1.8, f"Retry-After not honoured: the read took {took:.2f}s"
    assert took < DEADLINE

    # More 503s than the deadline allows: EIO in time, never a hang.
    proxy.respond_503(1000, retry_after=1)
    number, took = timed_errno(lambda: read_file(root / "x2.bin"))
    assert number == errno.EIO and took < DEADLINE + MARGIN, (number, took)
    proxy.respond_503(0)
    wait_until(
        lambda: read_or_none(root / "x2.bin") == data["x2.bin"],
        FAILURE_TTL + 5,
        "x2.bin readable once the 503s stop",
    )


def requests_for(proxy: FaultProxy, action: Callable[[], object]) -> tuple[int, int]:
    """(HTTP requests that reached the proxy, errno) while running the failing `action`."""
    before = proxy.stats["requests"]
    with pytest.raises(OSError) as info:
        action()
    return proxy.stats["requests"] - before, info.value.errno or 0


def test_403_404_412_are_not_retried(
    daemon: DsmountDaemon,
    azurite: Azurite,
    blob_container: ContainerClient,
    proxy: FaultProxy,
) -> None:
    body = pattern_bytes(7, 0, 100 * 1024)
    for name in ("gone.bin", "secret.bin"):
        blob_container.upload_blob(name, body)
    # Bigger than one block (1 MiB here): a file that fits in one is fetched whole at open,
    # which could race the replacement below; this one is fetched by the read itself.
    blob_container.upload_blob("replaced.bin", pattern_bytes(7, 0, 2 * 1024 * 1024 + 1))
    blob_container.upload_blob("sub/here.bin", body)
    root = attach_blob(
        daemon,
        "perm",
        blob_container.container_name,
        proxy.connection_string_for(azurite.connection_string),
    )
    assert len(os.listdir(root)) == 4  # attributes now cached: a read sends only its GET

    # 404: a name in a directory never listed: one listing of the directory (or a HEAD and a
    # listing probe), ENOENT, nothing retried.
    assert os.path.isdir(root / "sub")
    count, number = requests_for(proxy, lambda: os.stat(root / "sub" / "nope.bin"))
    assert count <= 2 and number == errno.ENOENT, (count, number)
    # Deleted after listing: the read's GET, pinned to the listed ETag, gets 404 or 412 (the
    # service's reading of If-Match on a missing blob); one HEAD tells deleted from replaced:
    # ENOENT, nothing retried.
    blob_container.delete_blob("gone.bin")
    count, number = requests_for(proxy, lambda: read_file(root / "gone.bin"))
    assert count <= 2 and number == errno.ENOENT, (count, number)

    # 412: replaced while open; the pinned GET gets 412, the HEAD finds a blob: ESTALE, no
    # retry.
    with open(root / "replaced.bin", "rb", buffering=0) as f:
        blob_container.upload_blob("replaced.bin", b"new" + body, overwrite=True)
        count, number = requests_for(proxy, lambda: f.read(4096))
    assert (count, number) == (2, errno.ESTALE)

    # 403: a SAS that may list but not read; the GET gets 403 -> EACCES, no retry.
    sas = generate_container_sas(
        azurite.ACCOUNT,
        blob_container.container_name,
        account_key=azurite.KEY,
        permission=ContainerSasPermissions(list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    endpoint = proxy.endpoint_for(azurite.blob_endpoint)
    listonly = attach_blob(
        daemon,
        "listonly",
        blob_container.container_name,
        f"BlobEndpoint={endpoint};SharedAccessSignature={sas}",
    )
    assert "secret.bin" in os.listdir(listonly)
    count, number = requests_for(proxy, lambda: read_file(listonly / "secret.bin"))
    assert (count, number) == (1, errno.EACCES)
    for name in ("perm", "listonly"):
        st = status_of(daemon, name)
        assert st["backend_retries"] == 0 and st["state"] == "ok", st
    wait_until(daemon.alive, 1, "the daemon alive")
