"""dsmount's rows that need a daemon of their own: 6 (peak RSS streaming), 11 (the 1M-file
version behind the proxy), 12-14 (writes, with `[writes]` enabled) and 18 (the disk-cache
epoch beside local disk).

Row 18: a daemon with `[cache] disk_dir` attaches the data container as `benchdisk`, runs
`dsmount warm benchdisk small` (every small file into the memory and disk caches), then
attaches the same container a second time as `benchdisk2`: the memory cache keys blocks by
attachment, the disk cache by storage location, so the epoch that follows (page cache
dropped, 8 threads, one seeded shuffle) finds nothing in memory and everything on disk.
The backend requests it makes are counted too: they should be ~0.

Invariants:
- Each run starts its daemon through the client (`start`), which releases it in `teardown`;
  every run tears down in a `finally`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from scripts.bench.harness.batch import Figure, timed
from scripts.bench.harness.cleanup import check, short_error
from scripts.bench.harness.daemon import BenchDaemon
from scripts.bench.harness.servers import Store
from scripts.bench.table import write_rows as wr
from scripts.bench.table.client import Context
from scripts.bench.table.dataset import (
    DATASTORE,
    MIL_DATASTORE,
    MIL_FILES,
    RAND_BLOB,
    SEQ_BLOB,
    Dataset,
    million_name,
)

MIL_FIND_TIMEOUT_S = 300.0  # the target is 60 s; a hung walk must not hold the run for long
DISK_DATASTORE = "benchdisk"
DISK_READ_DATASTORE = "benchdisk2"
WARM_TIMEOUT_S = 1800.0


class Daemonised(Protocol):
    """What these runs use of a dsmount column (table/dsmount.py's DsmountClient)."""

    ctx: Context
    ds: Dataset
    mountpoint: Path
    cpu_pids: list[int]
    DATA_ENV: str
    WRITE_ENV: str
    WRITE_CONFIG: str

    @property
    def root(self) -> Path: ...
    @property
    def data_store(self) -> Store: ...
    @property
    def write_store(self) -> Store: ...
    @property
    def write_src(self) -> wr.WriteSource: ...
    def start(self, run_dir: Path, attachments: list[tuple[str, list[str]]],
              config_text: str = "", secrets: dict[str, str] | None = None) -> BenchDaemon: ...
    def teardown(self) -> None: ...
    def blob_attachment(self, name: str, store: Store, env_var: str
                        ) -> tuple[str, list[str]]: ...
    def peak_rss_mib(self) -> float: ...
    def dd(self, path: Path) -> float: ...
    def read_files(self, root: Path, order: list[int], cold: bool) -> Figure: ...
    def per_file(self, cpu_key: str, fuse_key: str | None, fn: Any) -> Figure: ...
    def daemon_status(self) -> dict[str, Any]: ...


def write_daemon(self: Daemonised, tag: str) -> Path:
    """A daemon with writes enabled and the write container attached `--read-write`;
    returns the datastore's root in the mount."""
    store = self.write_store
    name, args = self.blob_attachment(wr.WRITE_CONTAINER, store, self.WRITE_ENV)
    self.start(self.ctx.workdir / f"dsmount-{tag}", [(name, [*args, "--read-write"])],
               config_text=self.WRITE_CONFIG, secrets={self.WRITE_ENV: store.conn_str})
    return self.mountpoint / name


def write_rows(self: Daemonised) -> dict[str, Any]:
    """Rows 12-13 in one daemon, row 14 in a fresh one (its VmHWM is that row's peak)."""
    cc = wr.container_client(self.write_store.conn_str)
    src = self.write_src
    cells: dict[str, Any] = {}
    try:
        root = write_daemon(self, "writes")
        cells.update(wr.row_cells(wr.SEQ_KEYS, lambda: wr.mount_seq(root, cc, src)))
        cells.update(wr.row_cells(wr.TAR_KEYS, lambda: wr.mount_tar(root, cc, src)))
        cells["write_daemon_status"] = self.daemon_status()
    except Exception as exc:  # the daemon did not start: every row says why
        err = {"error": "setup: " + short_error(exc)}
        cells.update({k: err for k in (*wr.SEQ_KEYS, *wr.TAR_KEYS) if k not in cells})
    finally:
        self.teardown()
    try:
        root = write_daemon(self, "writers")
        pid = self.cpu_pids[0]
        cells.update(wr.row_cells(wr.W16_KEYS,
                                  lambda: wr.parallel_writers(root, cc, src, pid)))
        cells["writers_daemon_status"] = self.daemon_status()
    except Exception as exc:
        cells.update(dict.fromkeys(wr.W16_KEYS, {"error": "setup: " + short_error(exc)}))
    finally:
        self.teardown()
    return cells


def stream_peak_rss(self: Daemonised) -> float:
    """Row 6: a dedicated daemon's peak RSS while reading both big blobs."""
    self.start(self.ctx.workdir / "dsmount-stream",
               [self.blob_attachment(DATASTORE, self.data_store, self.DATA_ENV)])
    try:
        self.ctx.dropper.drop()
        for name in (SEQ_BLOB, RAND_BLOB):
            self.dd(self.root / name)
        return self.peak_rss_mib()
    finally:
        self.teardown()


def disk_epoch(self: Daemonised) -> dict[str, Any]:
    """Row 18 (see the module docstring): its rate, the daemon's CPU and FUSE requests per
    file, and its backend requests per file."""
    run_dir = self.ctx.workdir / "dsmount-disk"
    config = f'[cache]\ndisk_dir = "{run_dir / "disk-cache"}"\n'
    daemon = self.start(run_dir, [
        self.blob_attachment(DISK_DATASTORE, self.data_store, self.DATA_ENV)],
        config_text=config)  # fmt: skip
    try:
        warm_s, res = timed(lambda: daemon.cli("warm", DISK_DATASTORE, "small", "--json",
                                               timeout=WARM_TIMEOUT_S, check=False))
        check(res.returncode == 0, f"warm failed: {(res.stderr or res.stdout)[-300:]}")
        name, args = self.blob_attachment(DISK_READ_DATASTORE, self.data_store, self.DATA_ENV)
        root = daemon.attach(name, *args)
        before = daemon.counter("backend_requests")
        fig = self.per_file("disk_epoch_cpu_ms", "fuse_disk_epoch",
                            lambda: self.read_files(root, self.ctx.shuffle4, cold=True))
        fetched = daemon.counter("backend_requests") - before
        cells: dict[str, Any] = {"disk_epoch_per_s": fig.value, **fig.extra}
        if fig.count:
            cells["req_disk_epoch"] = fetched / fig.count
        if fig.note:
            cells["notes"] = {"disk_epoch_per_s": fig.note}
        cells["disk_epoch_detail"] = {"warm_s": warm_s,
                                      "disk_cache": daemon.status().get("disk_cache")}
        return cells
    finally:
        self.teardown()


    def million_row(self: Daemonised) -> dict[str, Any]:
        """A dedicated daemon, through the fault proxy: attach the 1,000,000-file version and
        list its root (timed together), then `find | wc -l` it; its peak RSS and the LIST calls
        the proxy forwarded from the attach to the end of the walk.

        The attach is what `dsmount attach benchmil --version N` does, split so the proxy's
        counts are the daemon's alone: the version is resolved here (a LIST of `_versions/` and
        a GET of N.json, timed as part of the attach), then the daemon is asked over its socket.
        """
        from dsmount.workspace.registry import Registry
        from dsmount.workspace.versions import attach_spec_for

        ctx = self.ctx
        check(ctx.million_version is not None, f"no 1M-file version: {ctx.million_error}")
        check(ctx.proxy is not None and ctx.registry_dir is not None, "no fault proxy")
        assert ctx.proxy is not None and ctx.registry_dir is not None
        number = str(ctx.million_version)
        daemon = self.start(ctx.workdir / "dsmount-million", [])
        try:
            root = self.mountpoint / MIL_DATASTORE / number
            ctx.dropper.drop()
            t0 = time.perf_counter()
            spec = attach_spec_for(MIL_DATASTORE, number, registry=Registry(ctx.registry_dir))
            resolve_s = time.perf_counter() - t0
            before = ctx.proxy.forwarded()
            daemon.call("attach", timeout=120, name=MIL_DATASTORE, **spec)
            top = os.listdir(root)
            attach_s = time.perf_counter() - t0
            dirs = ctx.million_dirs
            check(len(top) == dirs, f"{len(top)} entries at the version's root, expected {dirs}")
            find_s, lines = timed(lambda: find_count(root))
            expected = 1 + dirs + dirs * MIL_FILES
            check(lines == expected, f"find printed {lines} lines, expected {expected}")
            done = ctx.proxy.forwarded()
            done.subtract(before)
            for d, j in ((0, 0), (dirs - 1, MIL_FILES - 1), (dirs // 2, 311)):  # after counting
                data = (root / million_name(d, j)).read_bytes()
                check(data == self.ds.million_content(d, j), f"wrong bytes in {million_name(d, j)}")
            return {
                "million_attach_s": attach_s,
                "million_find_s": find_s,
                "million_rss_mib": self.peak_rss_mib(),
                "million_lists": done["list"],
                "million_detail": {"resolve_s": resolve_s,
                                   "requests": {k: v for k, v in done.items() if v}},
            }  # fmt: skip
        finally:
            self.teardown()


def find_count(root: Path) -> int:
    """`find ROOT | wc -l`, bounded; on timeout the whole pipeline is killed (not only sh)."""
    proc = subprocess.Popen(
        ["sh", "-c", 'find "$1" | wc -l', "sh", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=MIL_FIND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"find did not finish within {MIL_FIND_TIMEOUT_S:.0f}s") from None
    check(proc.returncode == 0 and not err.strip(), f"find failed: {err.strip()[-300:]}")
    return int(out.strip())
