"""dsmount's columns of the comparison table: the daemon in the foreground (harness/daemon.py)
with the blob containers attached (`dsmount`), or the emulator's share (`dsmount-fs`).

`dsmount` attaches the data container as `bench`, once more as `benchshuf` (row 7: its own
memory-cache keys, so that epoch is as cold as rclone-off's) and as `benchload` (row 17), the
listing container as `benchlist`, and the packed version from the benchmark's registry with
`attach benchver --version N` (rows 4 and 8). Rows 6 (streaming RSS), 11 (the 1M-file
version), 12-14 (writes) and 18 (the disk-cache epoch) each run in a dedicated daemon
(table/dsmount_runs.py).

Invariants:
- Every daemon is released by `teardown` (and on any exit); a dedicated run tears down its
  own daemon before the next starts.
- Request counts come from the proxy when every system goes through it (--latency), else
  from the daemon's own counters.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scripts.bench.harness.batch import Figure, timed
from scripts.bench.harness.cleanup import check
from scripts.bench.harness.daemon import BenchDaemon, blob_attach_args
from scripts.bench.harness.servers import Store
from scripts.bench.table import dsmount_runs as runs
from scripts.bench.table.dataset import (
    DATASTORE,
    FS_DATASTORE,
    LIST_DATASTORE,
    SHUF_DATASTORE,
    TINY_DIR,
    VER_DATASTORE,
)
from scripts.bench.table.mounts import MountClient

LOAD_DATASTORE = "benchload"  # the data container once more: row 17 reads it cold


class DsmountClient(MountClient):
    """See the module docstring. Subclasses change only what is attached (`attachments`,
    `secret_env`, `root`, `list_root`); the daemon, the workloads and the measurements are
    shared."""

    name = "dsmount"
    measure_stream_rss = True  # run_client's dedicated streaming run (`stream_peak_rss`)
    measure_million = True  # run_client's dedicated 1M-file version run (`million_row`)
    measure_disk_epoch = True  # run_client's dedicated disk-cache run (`disk_epoch`)
    shuffle_rows = True
    loader_rows = True
    packed_rows = True  # rows 4 (version listing) and 8 (packed epochs)
    measure_writes = True  # rows 12-14 (`write_rows`), in dedicated daemons
    DATA_ENV = "DSMOUNT_BENCH_DATA_CONNECTION_STRING"
    LIST_ENV = "DSMOUNT_BENCH_LIST_CONNECTION_STRING"
    WRITE_ENV = "DSMOUNT_BENCH_WRITE_CONNECTION_STRING"
    # Writes are opt-in per node: a writable mount drops the kernel's `ro`, which slows the
    # read rows, so only the write rows' own daemons enable them.
    WRITE_CONFIG = "[writes]\nenabled = true\n"
    daemon: BenchDaemon | None = None

    @property
    def root(self) -> Path:
        return self.mountpoint / DATASTORE

    @property
    def list_root(self) -> Path:
        return self.mountpoint / LIST_DATASTORE

    @property
    def shuffle_root(self) -> Path:
        return self.mountpoint / SHUF_DATASTORE

    @property
    def loader_root(self) -> Path:
        return self.mountpoint / LOAD_DATASTORE

    @property
    def version_root(self) -> Path:
        check(self.ctx.packed_version is not None, f"no packed version: {self.ctx.packed_error}")
        return self.mountpoint / VER_DATASTORE / str(self.ctx.packed_version)

    def running(self) -> BenchDaemon:
        check(self.daemon is not None, "the daemon is not running")
        assert self.daemon is not None
        return self.daemon

    def cli(self, *args: str, timeout: float = 30) -> Any:
        return self.running().cli(*args, timeout=timeout, check=False)

    def setup(self) -> None:
        self.start(self.dir, self.attachments())

    def start(self, run_dir: Path, attachments: list[tuple[str, list[str]]],
              config_text: str = "", secrets: dict[str, str] | None = None) -> BenchDaemon:
        """Start a daemon with its own socket, state and config (`config_text`); run each
        attachment (`dsmount attach ARGS...`, then wait for MOUNTPOINT/PATH) with `secrets`
        (default `secret_env()`) in the environment."""
        env = dict(self.secret_env() if secrets is None else secrets)
        if self.ctx.registry_dir is not None:  # where `attach NAME --version N` looks NAME up
            env["DSMOUNT_REGISTRY"] = str(self.ctx.registry_dir)
        daemon = BenchDaemon(run_dir, config_text=config_text, env=env,
                             cache_budget=self.ctx.cache_budget)
        self.daemon = daemon
        self._releases.append(daemon.stop)
        daemon.start()
        self.mountpoint = daemon.mountpoint
        self.cpu_pids = [daemon.pid]
        self.start_rss([daemon.pid])
        for rel, attach_args in attachments:
            daemon.attach(rel, *attach_args)
        return daemon

    def secret_env(self) -> dict[str, str]:
        """Environment variables holding the credentials `attachments` refers to."""
        return {self.DATA_ENV: self.data_store.conn_str, self.LIST_ENV: self.list_store.conn_str}

    def blob_attachment(self, name: str, store: Store, env_var: str) -> tuple[str, list[str]]:
        return name, blob_attach_args(name, store.container, store.endpoint, env_var)

    def attachments(self) -> list[tuple[str, list[str]]]:
        """(path below the mountpoint, `attach` arguments) for each datastore to attach."""
        out = [
            self.blob_attachment(DATASTORE, self.data_store, self.DATA_ENV),
            self.blob_attachment(LIST_DATASTORE, self.list_store, self.LIST_ENV),
            self.blob_attachment(SHUF_DATASTORE, self.data_store, self.DATA_ENV),
            self.blob_attachment(LOAD_DATASTORE, self.data_store, self.DATA_ENV),
        ]
        number = self.ctx.packed_version
        if number is not None:  # else rows 4 (version) and 8 say why there is no version
            out.append((f"{VER_DATASTORE}/{number}", [VER_DATASTORE, "--version", str(number)]))
        return out

    def workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        rows = super().workloads()
        if self.packed_rows:  # the version is attached but unread: its first listing is cold
            listing = [("ver_list_cold_s", self.version_listing),
                       ("ver_list_warm_s", self.version_listing)]  # fmt: skip
            rows = [*listing, *rows]
        return rows

    def more_workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        if not self.packed_rows:
            return []
        return [
            ("packed_cold_per_s", lambda: self.per_file(
                "packed_cold_cpu_ms", "fuse_packed_cold",
                lambda: self.read_files(self.version_root, self.ctx.shuffle1, cold=True))),
            ("packed_warm_per_s",
             lambda: self.read_files(self.version_root, self.ctx.shuffle2, cold=False)),
        ]  # fmt: skip

    def version_listing(self) -> float:
        def scan() -> int:
            with os.scandir(self.version_root / TINY_DIR) as it:
                return sum(1 for _ in it)

        secs, n = timed(scan)
        check(n == self.n_tiny, f"listed {n} entries, expected {self.n_tiny}")
        return secs

    # --- the daemon's own counters ------------------------------------------------------------

    def daemon_status(self) -> dict[str, Any]:
        return self.running().status()

    def daemon_counter(self, key: str) -> int:
        return self.running().counter(key)

    def fuse_counts(self) -> Counter[str] | None:
        return self.running().fuse_requests()

    def request_count(self) -> int | None:
        if self.ctx.proxied:
            return super().request_count()
        return self.daemon_counter("backend_requests")

    def pread(self) -> Figure:
        before = self.daemon_counter("backend_bytes_fetched")
        fig = super().pread()
        fetched = self.daemon_counter("backend_bytes_fetched") - before
        if fig.count:
            fig.extra["pread_fetch_ratio"] = fetched / (fig.count * self.ds.scale.pread_size)
        return fig

    def extra_info(self) -> dict[str, Any]:
        # The daemon's own counters (fetches, cache hits...) explain its figures.
        res = self.cli("status", "--json")
        if res.returncode != 0:
            return {"daemon_status_error": (res.stderr or res.stdout).strip()[-400:]}
        try:
            return {"daemon_status": json.loads(res.stdout)}
        except ValueError:
            return {"daemon_status": res.stdout}

    # --- dedicated daemons (table/dsmount_runs.py) ---------------------------------------------

    def write_rows(self) -> dict[str, Any]:
        return runs.write_rows(self) if self.measure_writes else {}

    def stream_peak_rss(self) -> float:
        return runs.stream_peak_rss(self)

    def million_row(self) -> dict[str, Any]:
        return runs.million_row(self)

    def disk_epoch(self) -> dict[str, Any]:
        return runs.disk_epoch(self)


class DsmountFsClient(DsmountClient):
    """The `dsmount` client with the emulator's share attached via `attach --fileshare`."""

    name = "dsmount-fs"
    measure_stream_rss = False  # the blob column measures it; the budget logic is shared
    measure_million = False  # versions live in blob containers here
    measure_disk_epoch = False  # the blob column measures it
    loader_rows = False
    measure_writes = False  # the write rows are the blob column's
    shuffle_rows = False
    packed_rows = False
    KEY_ENV = "DSMOUNT_BENCH_SHARE_ACCOUNT_KEY"

    @property
    def n_tiny(self) -> int:
        return self.share_store.n_tiny

    @property
    def root(self) -> Path:
        return self.mountpoint / FS_DATASTORE

    @property
    def list_root(self) -> Path:
        return self.mountpoint / FS_DATASTORE  # one share holds the tiny dir too

    def secret_env(self) -> dict[str, str]:
        return {self.KEY_ENV: self.share_store.key}

    def attachments(self) -> list[tuple[str, list[str]]]:
        store = self.share_store
        return [
            (FS_DATASTORE, [FS_DATASTORE, "--fileshare", "--share", store.share, "--endpoint",
                            store.endpoint, "--account-key-env", self.KEY_ENV])
        ]  # fmt: skip
