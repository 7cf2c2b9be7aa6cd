"""One column of the comparison table (`Client`) and what every column shares (`Context`).

A client's methods return the figure of one workload or raise; `table/run.py` catches per
cell, so a failing workload puts its error in its own cell and the run goes on.

Invariants:
- `system_pids()` are the processes that ARE the system (the daemon, rclone, or this process
  for a direct SDK client): CPU per file and per GiB are theirs, all threads and children.
- Every client reads the same bytes in the same orders, and checks a few of them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.bench.harness.batch import Batch, Figure
from scripts.bench.harness.cleanup import check
from scripts.bench.harness.meters import CacheDropper, CpuMeter
from scripts.bench.harness.servers import ProxyProcess, ShareStore, Store
from scripts.bench.table import write_rows as wr
from scripts.bench.table.dataset import MIL_DIRS, VERIFY_N, Dataset


class Client:
    """One column of the table. Methods return the figure for one workload (or raise)."""

    name = ""
    shuffle_rows = False  # row 7: the shuffled epochs, the columns row 8 is compared with
    read_rows = True  # rows 1-11; False: a column of write rows only

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.ds = ctx.ds

    @property
    def data_store(self) -> Store:
        check(self.ctx.data is not None, "no Azurite started (only file-share clients selected)")
        assert self.ctx.data is not None
        return self.ctx.data

    @property
    def list_store(self) -> Store:
        check(self.ctx.listing is not None, "no Azurite started")
        assert self.ctx.listing is not None
        return self.ctx.listing

    @property
    def share_store(self) -> ShareStore:
        check(self.ctx.share is not None, "no Azure Files emulator started")
        assert self.ctx.share is not None
        return self.ctx.share

    @property
    def n_tiny(self) -> int:
        """Entries the tiny dir holds for this client."""
        return self.ds.scale.n_tiny

    @property
    def write_store(self) -> Store:
        check(self.ctx.write is not None, "no Azurite for the write rows")
        assert self.ctx.write is not None
        return self.ctx.write

    @property
    def write_src(self) -> wr.WriteSource:
        check(self.ctx.write_src is not None, "no write source")
        assert self.ctx.write_src is not None
        return self.ctx.write_src

    def write_rows(self) -> dict[str, Any]:
        """Rows 12-14 (scripts/bench_write_rows.py), each with its own resources, after the
        read rows and their teardown; a failing row puts its error in its own cells."""
        return {}

    def setup(self) -> None:  # noqa: B027 - optional hook
        pass

    def teardown(self) -> None:  # noqa: B027 - optional hook
        pass

    def workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        raise NotImplementedError

    def extra_info(self) -> dict[str, Any]:
        """Raw details for the JSON output (not the table), taken after the workloads."""
        return {}

    def request_count(self) -> int | None:
        """Backend requests so far, as row 10 counts them (None: not countable here)."""
        proxy = self.ctx.proxy
        return proxy.requests() if proxy is not None and self.ctx.proxied else None

    def system_pids(self) -> list[int]:
        """The processes of this system (default: this one, where a direct client runs)."""
        return [os.getpid()]

    def fuse_counts(self) -> Counter[str] | None:
        """FUSE requests answered so far by kind, if this system counts them."""
        return None

    def per_file(self, cpu_key: str, fuse_key: str | None,
                 fn: Callable[[], Figure]) -> Figure:
        """`fn`'s figure with the system's CPU milliseconds per file (`cpu_key`) and, where
        counted, its FUSE requests per file by kind (`fuse_key`) as extra cells."""
        before = self.fuse_counts() if fuse_key else None
        with CpuMeter(self.system_pids()) as cpu:
            fig = fn()
        if fig.count:
            fig.extra[cpu_key] = cpu.proc_s * 1000 / fig.count
            if fuse_key and before is not None:
                after = self.fuse_counts()
                if after is not None:
                    after.subtract(before)
                    fig.extra[fuse_key] = {k: v / fig.count for k, v in sorted(after.items())
                                           if v}
        return fig

    def shuffle_workloads(
        self, read: Callable[[list[int], bool], float | Figure]
    ) -> list[tuple[str, Callable[[], float | Figure]]]:
        """Row 7 with `read(order, cold)` reading the small files in that order: two seeded
        shuffles, the same for every client, the cold epoch then a second one (cold False:
        it may find what the first left cached)."""
        if not self.shuffle_rows:
            return []
        return [
            ("shuffle_cold_per_s", lambda: self.per_file(
                "shuffle_cold_cpu_ms", "fuse_shuffle_cold",
                lambda: as_figure(read(self.ctx.shuffle1, True)))),
            ("shuffle_warm_per_s", lambda: read(self.ctx.shuffle2, False)),
        ]

    def pread_figure(self, batch: Batch) -> Figure:
        """Check the reads (length of all, content of a few) and return their rate."""
        size = self.ds.scale.pread_size
        check(all(len(data) == size for _, data in batch.done), "short read")
        for off, data in batch.done[:VERIFY_N]:
            check(data == self.ds.big_range(2, off, size), f"wrong bytes at offset {off}")
        return batch.rate("reads")

    def small_figure(self, batch: Batch) -> Figure:
        size = self.ds.scale.small_size
        check(all(len(data) == size for _, data in batch.done), "short small-file read")
        for i, data in batch.done[:VERIFY_N]:
            check(data == self.ds.small_content(i), f"wrong content in {self.ds.small_name(i)}")
        return batch.rate("files")



def as_figure(fig: float | Figure) -> Figure:
    return fig if isinstance(fig, Figure) else Figure(fig)


@dataclass
class Context:
    workdir: Path
    ds: Dataset
    data: Store | None  # big blobs and small files; None when no blob client runs
    listing: Store | None  # the tiny blobs (a separate Azurite: see `start_store`)
    share: ShareStore | None  # the whole dataset on the emulator; None: no file-share client
    dropper: CacheDropper
    offsets1: list[int]
    offsets8: list[int]
    cap_s: float
    shuffle1: list[int] = field(default_factory=list)  # row 7/8 cold epoch order
    shuffle2: list[int] = field(default_factory=list)  # row 7/8 second epoch order
    shuffle3: list[int] = field(default_factory=list)  # row 17's order
    shuffle4: list[int] = field(default_factory=list)  # row 18's order
    cache_budget: str = "256MiB"  # the daemon's --cache-budget
    proxy: ProxyProcess | None = None
    proxied: bool = False  # the clients' stores are the proxy's (--latency); else direct
    registry_dir: Path | None = None  # DSMOUNT_REGISTRY: endpoints as the daemons see them
    packed_version: int | None = None
    packed_error: str | None = "not made"
    million_version: int | None = None  # None: row 11 not run (million_error says why)
    million_error: str | None = None
    million_dirs: int = MIL_DIRS  # fewer only for smoke runs (--million-dirs)
    million_only: bool = False  # --million-only: dsmount runs row 11 and nothing else
    write: Store | None = None  # the write rows' Azurite and container; None: no write rows
    write_src: wr.WriteSource | None = None
    writes_only: bool = False  # --writes-only: no dataset, no read rows


Results = dict[str, dict[str, Any]]


