"""Streaming through faults: a reader gets the exact bytes, or an error, never wrong bytes.

- Connections dropped mid-body every ~50 MiB while a large blob streams through the mount:
  every drop is retried transparently and the sha256 of what the reader got is exact.
- Azurite (on disk) restarted while a reader streams: each read returns the right bytes or
  fails; once Azurite is back, the same open file reads on, still exact.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from tests.faults.conftest import (
    MiB,
    attach_blob,
    fault_config,
    status_of,
    unique,
    upload_pattern,
)
from tests.faults.content import pattern_bytes, pattern_sha256
from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon, wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.trees import sha256_file

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

# 1 GiB as the issue asks; DSM_STREAM_MIB lowers it on a slow machine (see the report).
STREAM_SIZE = int(os.environ.get("DSM_STREAM_MIB", "1024")) * MiB
DROP_EVERY = 50 * MiB


def test_stream_with_connections_dropped_every_50mib_is_exact(
    make_daemon: Callable[..., DsmountDaemon],
    azurite: Azurite,
    blob_container: ContainerClient,
    proxy: FaultProxy,
) -> None:
    seed = 101
    upload_pattern(blob_container, "big.bin", seed, STREAM_SIZE)
    expected = pattern_sha256(seed, STREAM_SIZE)
    daemon = make_daemon(
        config_text=fault_config(
            deadline=60,
            attempt_timeout=20,
            block_size="8MiB",
            readahead_max="64MiB",
            budget="512MiB",
        )
    )
    root = attach_blob(
        daemon,
        "stream",
        blob_container.container_name,
        proxy.connection_string_for(azurite.connection_string),
    )
    proxy.drop_every(DROP_EVERY)
    digest = hashlib.sha256()
    got = 0
    started = time.monotonic()
    with open(root / "big.bin", "rb", buffering=0) as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
            got += len(chunk)
    elapsed = time.monotonic() - started
    drops = proxy.stats["drops"]
    proxy.clear()
    assert got == STREAM_SIZE
    assert digest.hexdigest() == expected
    # The faults really happened and were absorbed by retries, not avoided.
    assert drops >= STREAM_SIZE // DROP_EVERY - 1, drops
    st = status_of(daemon, "stream")
    assert st["backend_retries"] >= 1, st
    assert st["fetch_errors"] == 0, st  # every dropped GET was retried to success
    print(
        f"streamed {got / MiB:.0f} MiB in {elapsed:.1f}s "
        f"({got / MiB / elapsed:.0f} MiB/s) through {drops} dropped connections"
    )


class Reader:
    """A thread reading one blob in a loop (pread, 256 KiB) and checking every read against
    the content versions the blob may have: a read must equal one of them exactly."""

    CHUNK = 256 * 1024

    def __init__(self, path: Path, size: int, seeds: tuple[int, ...]) -> None:
        self.path, self.size, self.seeds = path, size, seeds
        self.wrong: list[int] = []
        self.errors: list[tuple[int, int]] = []
        self.verified = 0
        self.by_seed = dict.fromkeys(seeds, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the reader hung"

    def wait_for(self, nbytes: int, timeout: float, what: str) -> None:
        target = self.verified + nbytes
        wait_until(lambda: self.verified >= target or self.wrong, timeout, what)

    def wait_for_error(self, since: int, timeout: float) -> None:
        """Wait until more than `since` reads have failed."""
        wait_until(lambda: len(self.errors) > since, timeout, "a read to fail")

    def _run(self) -> None:
        fd: int | None = None
        offset = 0
        while not self._stop.is_set():
            try:
                if fd is None:  # (re)open: after a daemon restart the old handle is dead
                    fd = os.open(self.path, os.O_RDONLY)
                data = os.pread(fd, self.CHUNK, offset)
            except OSError as e:
                self.errors.append((offset, e.errno or 0))
                if fd is not None and e.errno in (errno.ENOTCONN, errno.ESTALE, errno.EBADF):
                    with contextlib.suppress(OSError):  # a dead mount fails close() too
                        os.close(fd)
                    fd = None
                time.sleep(0.05)
                continue
            for seed in self.seeds:
                if data == pattern_bytes(seed, offset, len(data)):
                    self.by_seed[seed] += len(data)
                    break
            else:
                self.wrong.append(offset)
            self.verified += len(data)
            offset = (offset + self.CHUNK) % self.size
            if offset == 0:
                # Drop the kernel's page cache of the file: the next pass asks the daemon again.
                with contextlib.suppress(OSError):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def test_azurite_restart_mid_stream_serves_no_wrong_byte(
    make_daemon: Callable[..., DsmountDaemon],
    make_azurite: Callable[..., Azurite],
) -> None:
    server = make_azurite(in_memory=False)
    service = server.blob_service_client()
    container = service.create_container(unique("restart"))
    size, seed, deadline = 96 * MiB, 202, 3.0
    upload_pattern(container, "data.bin", seed, size)
    service.close()
    daemon = make_daemon(
        config_text=fault_config(
            deadline=deadline,
            attempt_timeout=1.5,
            block_size="1MiB",
            readahead_max="4MiB",
            budget="64MiB",
        )
    )
    root = attach_blob(daemon, "persist", container.container_name, server.connection_string)
    with Reader(root / "data.bin", size, (seed,)) as reader:
        reader.wait_for(16 * MiB, 30, "reads before the restart")
        failed = len(reader.errors)
        server.stop()
        # Down for longer than the deadline: reads fail (EIO), none hangs, none is wrong.
        started = time.monotonic()
        reader.wait_for_error(failed, deadline + 10)
        first_error = time.monotonic() - started
        server.restart()  # same port, same data on disk
        # The same open handle reads on (uncached blocks too: the budget < the file).
        reader.wait_for(2 * size, 60, "reads after the restart")
    assert reader.wrong == [], f"wrong bytes at offsets {reader.wrong[:10]}"
    assert {e for _, e in reader.errors} <= {errno.EIO}, reader.errors[:10]
    assert first_error < deadline + 3, first_error
    assert status_of(daemon, "persist")["state"] == "ok"


def test_daemon_killed_and_restarted_mid_stream_serves_no_wrong_byte(
    make_daemon: Callable[..., DsmountDaemon],
    make_azurite: Callable[..., Azurite],
    tmp_path: Path,
) -> None:
    """kill -9 mid-stream, the blob replaced and Azurite restarted while the daemon is down,
    and some on-disk cache blocks corrupted: the restarted daemon (datastore restored from its
    state) serves only the new version's bytes, and discards the corrupt cache files."""
    server = make_azurite(in_memory=False)
    service = server.blob_service_client()
    container = service.create_container(unique("kill"))
    size, old, new, kept = 24 * MiB, 303, 304, 305
    upload_pattern(container, "data.bin", old, size)
    upload_pattern(container, "kept.bin", kept, size)  # not replaced: read from the disk cache
    disk = tmp_path / "diskcache"
    daemon = make_daemon(
        config_text=fault_config(
            deadline=5,
            attempt_timeout=2,
            block_size="1MiB",
            readahead_max="4MiB",
            budget="16MiB",
        )
        + f'disk_dir = "{disk}"\ndisk_budget = "256MiB"\n'
    )
    root = attach_blob(daemon, "killed", container.container_name, server.connection_string)
    try:
        assert sha256_file(root / "kept.bin") == pattern_sha256(kept, size)
        with Reader(root / "data.bin", size, (old, new)) as reader:
            reader.wait_for(2 * size, 60, "the old version read twice (disk cache filled)")
            wait_until(
                lambda: len(list(disk.glob("*.blk"))) >= 2 * size // MiB,
                30,
                "both files in the disk cache",
            )
            failed = len(reader.errors)
            daemon.kill9()
            reader.wait_for_error(failed, 10)
            upload_pattern(container, "data.bin", new, size)  # a new ETag, same size
            server.restart()
            blocks = sorted(disk.glob("*.blk"))
            for path in blocks[::3]:  # flip the last payload byte of every third block file
                raw = bytearray(path.read_bytes())
                raw[-1] ^= 0xFF
                path.write_bytes(bytes(raw))
            daemon.start()
            before_new = reader.by_seed[new]
            wait_until(
                lambda: reader.by_seed[new] >= before_new + 2 * size or reader.wrong,
                60,
                "the new version read twice after the restart",
            )
        assert sha256_file(root / "kept.bin") == pattern_sha256(kept, size)
    finally:
        service.close()
    assert reader.wrong == [], f"wrong bytes at offsets {reader.wrong[:10]}"
    assert sha256_file(root / "data.bin") == pattern_sha256(new, size)
    cache = daemon.call("status")["disk_cache"]
    assert cache["hits"] > 0, cache  # kept.bin came (partly) from the disk cache
    assert cache["corrupt_discarded"] > 0, cache  # and its corrupt blocks were refetched
