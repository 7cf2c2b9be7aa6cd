"""CPU, memory and page-cache instruments, read from /proc.

A system is measured as a whole: its process trees (the daemon and anything it forked, every
thread of each: /proc/PID/stat's utime and stime count all threads of a process, cutime and
cstime the children it reaped), so a multi-process or multi-threaded design is billed all of
its work.

Invariants:
- A process that is gone counts 0 from then on (a meter never raises for a vanished pid).
- `CacheDropper.drop` syncs then writes 3 to /proc/sys/vm/drop_caches; when that is not
  allowed it remembers why, so the report says its cold figures may be warm.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import threading
import time
from collections.abc import Iterable
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it (from /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    text = Path(f"/proc/{p}/task/{task}/children").read_text()
                    todo.extend(int(c) for c in text.split())
    return out


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of the trees rooted at `pids`, all threads, reaped children
    included."""
    ticks = 0
    for root in pids:
        for pid in descendants(root):
            f = _stat_fields(pid)
            if f is not None:  # fields 14-17 of stat(5): utime stime cutime cstime
                ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / _TICK


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident bytes of the trees rooted at `pids` now (statm's resident pages)."""
    total = 0
    for root in pids:
        for pid in descendants(root):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    return total


def vm_hwm_bytes(pid: int) -> int:
    """One process's peak resident set (VmHWM) over its whole life."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) * KiB


def vm_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * KiB


def reaped_children_cpu() -> float:
    """CPU seconds of this process's reaped children (a `dd` or `sha256sum` a row ran)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """CPU seconds spent over a `with` block by the trees `pids` (`proc_s`), and with
    `reader=True` by the children of this process reaped during it (`reader_s`: the `dd` a
    mount client runs; subprocess.run reaps it)."""

    def __init__(self, pids: list[int], reader: bool = False) -> None:
        self.pids = pids
        self.reader = reader
        self.proc_s = 0.0
        self.reader_s = 0.0

    def __enter__(self) -> CpuMeter:
        self._proc0, self._reaped0 = cpu_seconds(self.pids), reaped_children_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc_s = cpu_seconds(self.pids) - self._proc0
        self.reader_s = reaped_children_cpu() - self._reaped0 if self.reader else 0.0

    def per_gib(self, nbytes: int) -> dict[str, float]:
        """Row 9's two cells for `nbytes` streamed."""
        gib = nbytes / GiB
        return {
            "seq_cpu_s_per_gib": (self.proc_s + self.reader_s) / gib,
            "seq_proc_cpu_s_per_gib": self.proc_s / gib,
        }


class PeakRss(threading.Thread):
    """Samples the summed RSS of some process trees every 50 ms; keeps the peak."""

    def __init__(self, pids: list[int], interval: float = 0.05) -> None:
        super().__init__(daemon=True, name=f"rss-{pids}")
        self.pids = pids
        self.interval = interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_bytes(self.pids))
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(timeout=5)
        return self.peak


class CacheDropper:
    """Drops the kernel page cache before cold runs; remembers whether it was allowed."""

    def __init__(self) -> None:
        self.failed: str | None = None

    def drop(self) -> None:
        os.sync()
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        except OSError as exc:
            self.failed = f"could not drop the page cache ({exc}); cold figures may be warm"


def wait_quiet(pids: list[int | None], busy_pct: float = 10.0, max_wait_s: float = 30.0) -> None:
    """Wait (bounded) until every server is idle (under `busy_pct` of a core over half a
    second), so post-upload garbage collection or the previous system's tail is not billed to
    the next one."""
    live = [p for p in pids if p is not None]
    deadline = time.monotonic() + max_wait_s
    before = [cpu_seconds([p]) for p in live]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = [cpu_seconds([p]) for p in live]
        if all((b - a) / 0.5 * 100 < busy_pct for a, b in zip(before, now, strict=True)):
            return
        before = now
