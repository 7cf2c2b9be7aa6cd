"""Writes through a real mount under faults (a FaultProxy in front of Azurite, kill -9):

- the backend down during close: close(2) fails with EIO within the deadline, nothing is
  committed, the daemon keeps serving, and the next write succeeds once it is back;
- connections dropped in the middle of block uploads: retried, the blob is exact;
- 1,000 appends of 1 KiB, a close after each: every commit sends only the new bytes (plus the
  block list), counted at the proxy;
- kill -9 of the daemon in the middle of a write: no partial object is visible, on a blob
  container or on a file share (whose temporary file the next start deletes);
- the cap on files open for writing answers ENFILE.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient
from azure.storage.fileshare import ShareClient

from dsmount.storage.writes import is_temp_name
from tests.faults.conftest import MiB, attach_blob, fault_config, status_of, unique
from tests.faults.content import pattern_bytes
from tests.support.azurefiles import AzureFilesEmulator
from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon, wait_until
from tests.support.faultproxy import FaultProxy

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

DEADLINE = 5.0
MARGIN = 4.0  # scheduling slack on a loaded 2-core machine
WRITES = '[writes]\nenabled = true\npart_size = "1MiB"\n'


@pytest.fixture
def daemon(make_daemon: Callable[..., DsmountDaemon]) -> DsmountDaemon:
    return make_daemon(config_text=fault_config(deadline=DEADLINE, attempt_timeout=2.0) + WRITES)


def attach_rw(daemon: DsmountDaemon, azurite: Azurite, container: ContainerClient,
              proxy: FaultProxy, name: str) -> Path:
    return attach_blob(daemon, name, container.container_name,
                       proxy.connection_string_for(azurite.connection_string), "--read-write")


def exists(container: ContainerClient, name: str) -> bool:
    return container.get_blob_client(name).exists()


def test_backend_down_during_close_fails_in_time_and_commits_nothing(
    daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient, proxy: FaultProxy
) -> None:
    root = attach_rw(daemon, azurite, blob_container, proxy, "out")
    body = pattern_bytes(1, 0, 3 * MiB + 5)
    f = open(root / "model.bin", "wb")  # noqa: SIM115 - closed below, on purpose
    f.write(body)
    proxy.down()
    started = time.monotonic()
    with pytest.raises(OSError) as e:
        f.close()
    took = time.monotonic() - started
    assert e.value.errno == errno.EIO
    assert took < DEADLINE + MARGIN, f"close failed after {took:.1f}s"
    assert not exists(blob_container, "model.bin")
    st = status_of(daemon, "out")
    assert st["failed_commits"] == 1 and st["commits"] == 0 and st["writers_open"] == 0
    assert daemon.alive()
    proxy.up()
    (root / "model.bin").write_bytes(body)
    data = blob_container.get_blob_client("model.bin").download_blob().readall()
    assert data == body


def test_dropped_connections_during_block_uploads_are_retried(
    daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient, proxy: FaultProxy
) -> None:
    root = attach_rw(daemon, azurite, blob_container, proxy, "drops")
    body = pattern_bytes(2, 0, 9 * MiB + 17)
    proxy.drop_up_every(400 * 1024, times=8)  # mid-block cuts: each part's first tries fail
    with open(root / "big.bin", "wb") as f:
        for off in range(0, len(body), 256 * 1024):
            f.write(body[off : off + 256 * 1024])
    assert proxy.stats["drops"] == 8
    data = blob_container.get_blob_client("big.bin").download_blob().readall()
    assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()
    # Each cut attempt is retried: by our policy, or (a PUT on a kept-alive connection the
    # server closed) once by aiohttp itself, which is why not every drop counts here.
    assert status_of(daemon, "drops")["backend_retries"] > 0


def test_appends_send_only_the_new_bytes(
    daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient, proxy: FaultProxy
) -> None:
    root = attach_rw(daemon, azurite, blob_container, proxy, "appends")
    log = root / "events.log"
    chunk = 1024
    expected = bytearray()
    per_commit: list[int] = []
    for i in range(1000):
        line = pattern_bytes(100 + i % 7, i, chunk)
        before = proxy.stats["bytes_up"]
        with open(log, "ab") as f:
            f.write(line)
        per_commit.append(proxy.stats["bytes_up"] - before)
        expected += line
    assert blob_container.get_blob_client("events.log").download_blob().readall() == expected
    # What one commit may send: the new KiB, two requests' headers, and the block list that
    # names every block so far (29 bytes each: <Latest>12-char id</Latest>).
    for n, sent in enumerate(per_commit, start=1):
        assert sent <= chunk + 6 * 1024 + 29 * n, (n, sent)
    total = sum(per_commit)
    resent = sum(chunk * n for n in range(1, 1001))  # re-uploading the file at each close
    assert total < resent / 20, (total, resent)


def test_kill_9_mid_write_leaves_no_partial_blob(
    daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient, proxy: FaultProxy
) -> None:
    root = attach_rw(daemon, azurite, blob_container, proxy, "crash")
    f = open(root / "half.bin", "wb")  # noqa: SIM115 - the daemon dies under it
    f.write(pattern_bytes(3, 0, 5 * MiB))
    f.flush()
    wait_until(lambda: status_of(daemon, "crash")["backend_bytes_uploaded"] >= 4 * MiB, 20,
               "parts uploaded while writing")
    daemon.kill9()
    with pytest.raises(OSError):
        f.close()
    assert not exists(blob_container, "half.bin")
    assert [b.name for b in blob_container.list_blobs()] == []
    daemon.start()
    assert os.listdir(daemon.mountpoint / "crash") == []  # restored, read-write, nothing there
    (daemon.mountpoint / "crash" / "whole.bin").write_bytes(b"whole")
    assert [b.name for b in blob_container.list_blobs()] == ["whole.bin"]


def test_kill_9_mid_write_on_a_share_cleans_the_temporary_file_at_the_next_start(
    make_daemon: Callable[..., DsmountDaemon], azurefiles: AzureFilesEmulator,
    file_share: ShareClient
) -> None:
    daemon = make_daemon(config_text=fault_config(deadline=DEADLINE) + WRITES)
    name = unique("share")
    daemon.cli("attach", name, "--fileshare", "--share", file_share.share_name, "--endpoint",
               azurefiles.endpoint, "--account-key-env", "FILES_KEY", "--read-write",
               env={"FILES_KEY": azurefiles.key})
    f = open(daemon.mountpoint / name / "half.bin", "wb")  # noqa: SIM115
    f.write(pattern_bytes(4, 0, 3 * MiB))
    f.flush()

    def raw() -> list[str]:
        return [i["name"] for i in file_share.list_directories_and_files()]

    temps = wait_until(lambda: [n for n in raw() if is_temp_name(n)], 20, "a temporary file")
    daemon.kill9()
    with pytest.raises(OSError):
        f.close()
    assert "half.bin" not in raw() and temps[0] in raw()  # no partial file under its name
    daemon.start()  # re-attaches the share and deletes what the journal names
    assert raw() == []
    assert os.listdir(daemon.mountpoint / name) == []


def test_the_cap_on_files_open_for_writing(
    make_daemon: Callable[..., DsmountDaemon], azurite: Azurite,
    blob_container: ContainerClient, proxy: FaultProxy
) -> None:
    daemon = make_daemon(
        config_text=fault_config() + '[writes]\nenabled = true\nmax_open_files = 2\n'
    )
    root = attach_rw(daemon, azurite, blob_container, proxy, "capped")
    a, b = open(root / "a", "wb"), open(root / "b", "wb")  # noqa: SIM115
    with pytest.raises(OSError) as e:
        open(root / "c", "wb")  # noqa: SIM115
    assert e.value.errno == errno.ENFILE
    a.close()
    (root / "c").write_bytes(b"c")
    b.close()
    assert sorted(x.name for x in blob_container.list_blobs()) == ["a", "b", "c"]
    assert "max_open_files" in daemon.log_text()
