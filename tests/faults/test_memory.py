"""Memory: one byte budget for everything cached or in flight, whatever the number of open
files and datastores.

10,000 files open at once across 50 datastores, each read sequentially in turns (so every
handle has a read-ahead window that wants to grow): the daemon's peak RSS stays under the
cache budget plus a fixed margin, and the cache's own accounting (polled through `status`
while it happens) never goes over the budget.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.conftest import MiB, fault_config
from tests.support.daemon import DsmountDaemon, wait_until

pytestmark = pytest.mark.mount

DATASTORES = 50
FILES_PER_DATASTORE = 200
FILE_SIZE = 4 * MiB  # sparse: 10,000 of them cost no disk
BUDGET = 64 * MiB
# Python, pyfuse3, trio, 10,000 handles with their read-ahead state, 10,000 inodes, blocks
# on their way to the kernel. Measured growth: budget + 10-15 MiB with dsmount.node.malloc's fixed
# mmap threshold, budget + 55-60 MiB without it (freed blocks kept in per-thread arenas).
MARGIN = 40 * MiB


def status_memory(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def header(ds: int, i: int) -> bytes:
    return f"datastore {ds:02d} file {i:03d}\n".encode()


def make_datastore(root: Path, ds: int) -> Path:
    root.mkdir(parents=True)
    for i in range(FILES_PER_DATASTORE):
        with open(root / f"f{i:03d}.bin", "wb") as f:
            f.write(header(ds, i))
            f.truncate(FILE_SIZE)
    return root


class BudgetWatch:
    """Polls `status` in a thread and keeps the worst cache accounting it saw."""

    def __init__(self, daemon: DsmountDaemon) -> None:
        self.daemon = daemon
        self.worst_used = 0
        self.worst_in_flight = 0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            cache = self.daemon.call("status", timeout=30)["cache"]
            self.worst_used = max(self.worst_used, cache["cached_bytes"] + cache["in_flight_bytes"])
            self.worst_in_flight = max(self.worst_in_flight, cache["in_flight_bytes"])
            self.polls += 1

    def __enter__(self) -> BudgetWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_10000_open_files_across_50_datastores_stay_in_budget(
    make_daemon: Callable[..., DsmountDaemon], tmp_path: Path
) -> None:
    total = DATASTORES * FILES_PER_DATASTORE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < total + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, total + 5000), hard))
    daemon = make_daemon(
        config_text=fault_config(
            block_size="64KiB",
            readahead_max="1MiB",
            budget=f"{BUDGET // MiB}MiB",
        )
    )
    assert daemon.pid is not None
    roots = [
        daemon.attach_local(f"ds{ds:02d}", make_datastore(tmp_path / f"src{ds:02d}", ds))
        for ds in range(DATASTORES)
    ]
    baseline = status_memory(daemon.pid)["VmRSS"]
    fds: list[tuple[int, bytes]] = []
    chunk = 16 * 1024
    try:
        started = time.monotonic()
        with BudgetWatch(daemon) as watch:
            for ds, root in enumerate(roots):
                for i in range(FILES_PER_DATASTORE):
                    fd = os.open(root / f"f{i:03d}.bin", os.O_RDONLY)
                    # No kernel read-ahead: the daemon sees the reads as they are (and its own
                    # read-ahead decides), and 10,000 files do not cost 10 GB of copying.
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                    fds.append((fd, header(ds, i)))
            assert daemon.call("status")["open"]["files"] == total
            # Two sequential reads per handle: the second makes each one a stream that
            # deserves read-ahead, 10,000 times over.
            for turn in range(2):
                for fd, head in fds:
                    data = os.pread(fd, chunk, turn * chunk)
                    expected = head + bytes(chunk - len(head)) if turn == 0 else bytes(chunk)
                    assert data == expected
        status = daemon.call("status")
    finally:
        for fd, _ in fds:
            os.close(fd)
    memory = status_memory(daemon.pid)
    cache = status["cache"]
    took = time.monotonic() - started
    print(
        f"{total} files open and read in {took:.0f}s; daemon RSS baseline "
        f"{baseline / MiB:.0f} MiB, peak {memory['VmHWM'] / MiB:.0f} MiB (budget "
        f"{BUDGET / MiB:.0f} MiB); cache peak {cache['peak_bytes'] / MiB:.1f} MiB, worst "
        f"polled {watch.worst_used / MiB:.1f} MiB over {watch.polls} polls"
    )
    assert cache["budget_bytes"] == BUDGET
    assert cache["peak_bytes"] <= BUDGET
    assert watch.polls > 5 and watch.worst_used <= BUDGET and watch.worst_in_flight <= BUDGET
    assert memory["VmHWM"] - baseline < BUDGET + MARGIN, memory
    # close(2) does not wait for RELEASE: the kernel queues it (and sends no FLUSH for a
    # reader's handle that asked for none), so the daemon may still be draining 10,000 of them.
    wait_until(
        lambda: daemon.call("status")["open"]["files"] == 0, 60, "every handle to be released"
    )
