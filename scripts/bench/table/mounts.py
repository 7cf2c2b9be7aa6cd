"""The FUSE mounts of the comparison table: what every mount column does through the
filesystem (`MountClient`), and rclone's mounts (`rclone mount`, vfs cache mode off / full /
writes). dsmount's columns are in table/dsmount.py.

rclone 1.60 (Debian 12) treats `endpoint` as a DNS suffix and `use_emulator` as the fixed
address 127.0.0.1:10000, so neither reaches an Azurite on a free port; rclone is given a
container SAS URL (`sas_url`), which it takes verbatim.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scripts.bench.harness.batch import Figure, run_batch, timed
from scripts.bench.harness.cleanup import check, on_exit, tail
from scripts.bench.harness.meters import CpuMeter, PeakRss
from scripts.bench.harness.servers import Store, free_port
from scripts.bench.table import write_rows as wr
from scripts.bench.table.client import Client, Context
from scripts.bench.table.dataset import MB, RAND_BLOB, SEQ_BLOB, TINY_DIR, MiB
from scripts.bench.table.loader import loader_epoch
from scripts.bench.table.rows import RCLONE_WRITES

MOUNT_WAIT_S = 60.0

class MountClient(Client):
    """A FUSE mount read through the filesystem; subclasses start and stop the daemon."""

    threads = 8
    measures_rss = True  # row 6: the peak RSS of the mount's processes over the read rows

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.dir = ctx.workdir / self.name
        self.mountpoint = self.dir / "mnt"
        self.rss: PeakRss | None = None
        self.cpu_pids: list[int] = []  # the mount's own process(es), for row 9
        self._releases: list[Callable[[], None]] = []  # run by teardown, last first

    @property
    def root(self) -> Path:
        """Directory under which the data container's blobs appear."""
        return self.mountpoint

    @property
    def list_root(self) -> Path:
        """Directory under which the listing container's blobs appear."""
        return self.dir / "mnt-list"

    @property
    def shuffle_root(self) -> Path:
        """Where row 7 reads the (unpacked) small files."""
        return self.root

    def workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        # Listing first: the mount is fresh, so its first listing is cold.
        return [
            ("list_cold_s", self.listing),
            ("list_warm_s", self.listing),
            ("seq_cold_mbps", self.seq_cold),
            ("seq_warm_mbps", self.seq_warm),
            ("small_files_per_s", self.small),
            *self.shuffle_workloads(lambda o, cold: self.read_files(self.shuffle_root, o, cold)),
            *self.more_workloads(),
            ("pread_per_s", self.pread),
            ("pread8_per_s", self.pread8),
            ("sha_cold_mbps", self.sha_cold),
            *self.loader_workloads(),
        ]

    loader_rows = False  # row 17: the DataLoader-style epoch (dsmount and rclone-off)

    @property
    def loader_root(self) -> Path:
        """Where row 17 reads the small files: as cold as can be for this system."""
        return self.root

    def loader_workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        if not self.loader_rows:
            return []
        return [("loader_cold_per_s", lambda: self.per_file(
            "loader_cold_cpu_ms", "fuse_loader_cold", self.loader))]

    def loader(self) -> Figure:
        order = self.ctx.shuffle3
        self.ctx.dropper.drop()
        secs, digests = loader_epoch([self.loader_root / self.ds.small_name(i) for i in order])
        for i, digest in list(zip(order, digests, strict=True))[:64]:
            want = hashlib.sha256(self.ds.small_content(i)).hexdigest()
            check(digest == want, f"wrong content in {self.ds.small_name(i)}")
        return Figure(len(order) / secs, count=len(order))

    def sha_cold(self) -> Figure:
        """Row 15: `sha256sum` of blob 1 through the mount, page cache dropped."""
        self.ctx.dropper.drop()
        secs, proc = timed(lambda: subprocess.run(
            ["sha256sum", str(self.root / SEQ_BLOB)], capture_output=True, text=True,
            timeout=900))
        check(proc.returncode == 0, f"sha256sum failed: {proc.stderr.strip()[-300:]}")
        check(proc.stdout.split()[0] == self.ds.seq_sha256(), "sha256sum printed a wrong sum")
        return Figure(self.ds.scale.big_size / secs / MB)

    def system_pids(self) -> list[int]:
        check(bool(self.cpu_pids), "the mount's process is unknown")
        return self.cpu_pids

    def more_workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        """Subclass rows run after the small-file rows."""
        return []

    def start_rss(self, pids: list[int]) -> None:
        self.rss = PeakRss(pids)
        self.rss.start()

    def peak_rss_mib(self) -> float:
        check(self.rss is not None, "daemon pid unknown")
        assert self.rss is not None
        return self.rss.stop() / MiB

    def dd(self, path: Path) -> float:
        size = self.ds.scale.big_size
        secs, proc = timed(
            lambda: subprocess.run(
                ["dd", f"if={path}", "of=/dev/null", "bs=1M"],
                capture_output=True,
                text=True,
                timeout=900,
            )
        )
        check(proc.returncode == 0, f"dd failed: {proc.stderr.strip()[-300:]}")
        copied = proc.stderr.strip().splitlines()[-1].split(" bytes", 1)[0]
        check(copied == str(size), f"dd copied {copied} bytes, expected {size}")
        return size / secs / MB

    def seq_cold(self) -> Figure:
        self.ctx.dropper.drop()
        path = self.root / SEQ_BLOB
        with open(path, "rb") as f:  # a content check on a separate open, before the clock
            check(f.read(4096) == self.ds.big_range(1, 0, 4096), "wrong bytes at blob start")
        self.ctx.dropper.drop()
        check(bool(self.cpu_pids), "the mount's process is unknown")
        with CpuMeter(self.cpu_pids, reader=True) as cpu:  # the mount process plus `dd`
            mbps = self.dd(path)
        return Figure(mbps, extra=cpu.per_gib(self.ds.scale.big_size))

    def seq_warm(self) -> float:
        return self.dd(self.root / SEQ_BLOB)  # no cache drop: this is the warm figure

    def small(self) -> Figure:
        return self.read_files(self.root, list(range(self.ds.scale.n_small)), cold=True)

    def read_files(self, root: Path, order: list[int], cold: bool) -> Figure:
        """Read small files below `root` in `order` with 8 threads; the page cache is dropped
        first for a cold epoch (a second epoch may find what the first left cached)."""
        if cold:
            self.ctx.dropper.drop()

        def read(i: int) -> bytes:
            with open(root / self.ds.small_name(i), "rb") as f:
                return f.read()

        return self.small_figure(run_batch(read, order, self.threads, self.ctx.cap_s))

    def listing(self) -> float:
        def scan() -> int:
            with os.scandir(self.list_root / TINY_DIR) as it:
                return sum(1 for _ in it)

        secs, n = timed(scan)
        check(n == self.n_tiny, f"listed {n} entries, expected {self.n_tiny}")
        return secs

    def _preads(self, offs: list[int], threads: int) -> Figure:
        self.ctx.dropper.drop()
        size = self.ds.scale.pread_size
        fd = os.open(self.root / RAND_BLOB, os.O_RDONLY)
        try:
            batch = run_batch(lambda o: os.pread(fd, size, o), offs, threads, self.ctx.cap_s)
        finally:
            os.close(fd)
        return self.pread_figure(batch)

    def pread(self) -> Figure:
        return self._preads(self.ctx.offsets1, 1)

    def pread8(self) -> Figure:
        return self._preads(self.ctx.offsets8, self.threads)

    # --- helpers for subclasses ---------------------------------------------------------------

    def _wait_mounted(self, proc: subprocess.Popen[bytes], mountpoint: Path, log: Path) -> None:
        deadline = time.monotonic() + MOUNT_WAIT_S
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}: {tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not mounted after {MOUNT_WAIT_S:.0f}s: {tail(log)}")
            time.sleep(0.05)

    @staticmethod
    def _release_mount(
        proc: subprocess.Popen[bytes], mountpoint: Path, sigterm_first: bool
    ) -> None:
        """Stop the daemon and make sure the mountpoint is unmounted, whatever state it is in."""
        if sigterm_first and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
        subprocess.run(
            ["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True, check=False
        )
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Anything the daemon started in its own session (start_new_session=True) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def teardown(self) -> None:
        while self._releases:
            self._releases.pop()()



class RcloneClient(MountClient):
    """`rclone mount` with the azureblob backend, configured only through environment vars.

    Two rclone processes: one mounts the data container, one the listing container (they live
    in different Azurite instances, see `main`); the RSS figure is their sum.
    """

    name = "rclone-off"
    cache_mode = "off"
    shuffle_rows = True
    loader_rows = True

    def mount_args(self, tag: str) -> list[str]:
        """More `rclone mount` arguments for the mount `tag`."""
        return []

    def setup(self) -> None:
        procs = [
            self._mount(self.data_store, self.mountpoint, "data"),
            self._mount(self.list_store, self.list_root, "list"),
        ]
        self.cpu_pids = [procs[0][0].pid]  # the one serving the data container
        self.start_rss([p.pid for p, _, _ in procs])
        for proc, mountpoint, log_path in procs:
            self._wait_mounted(proc, mountpoint, log_path)

    def _mount(
        self, store: Store, mountpoint: Path, tag: str
    ) -> tuple[subprocess.Popen[bytes], Path, Path]:
        mountpoint.mkdir(parents=True, exist_ok=True)
        remote = f"BENCH{tag.upper()}"
        env = dict(os.environ)
        env[f"RCLONE_CONFIG_{remote}_TYPE"] = "azureblob"
        env[f"RCLONE_CONFIG_{remote}_SAS_URL"] = store.sas_url
        log_path = self.dir / f"rclone-{tag}.log"
        cmd = [
            "rclone", "mount", f"{remote.lower()}:{store.container}", str(mountpoint),
            "--vfs-cache-mode", self.cache_mode,
            "--cache-dir", str(self.dir / f"cache-{tag}"),
            "--config", str(self.dir / "rclone.conf"),  # absent: no user config leaks in
            *self.mount_args(tag),
        ]  # fmt: skip
        with open(log_path, "ab") as logf:  # rclone logs to stderr by default
            proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self._releases.append(
            on_exit(lambda: self._release_mount(proc, mountpoint, sigterm_first=False))
        )
        return proc, mountpoint, log_path


class RcloneFullClient(RcloneClient):
    name = "rclone-full"
    cache_mode = "full"
    shuffle_rows = False  # its disk cache holds the small files since row 3: no cold epoch
    loader_rows = False


class RcloneWritesClient(RcloneClient):
    """`rclone mount --vfs-cache-mode writes`: rows 12-13 only. A file is written to rclone's
    disk cache and uploaded after its close, so its figures are timed twice (close returned;
    durable in the store, using rclone's own rc `vfs/stats` to know when to start checking).
    `--vfs-write-back 0s` (default 5s) starts each upload at once: the best case for rclone;
    `--transfers` stays at its default (4)."""

    name = RCLONE_WRITES
    cache_mode = "writes"
    read_rows = False

    def mount_args(self, tag: str) -> list[str]:
        return ["--vfs-write-back", "0s", "--rc", "--rc-no-auth",
                "--rc-addr", f"127.0.0.1:{self.rc_port}"]  # fmt: skip

    def write_rows(self) -> dict[str, Any]:
        self.rc_port = free_port()
        store, src = self.write_store, self.write_src
        root = self.dir / "mnt-write"
        try:
            proc, mountpoint, log_path = self._mount(store, root, "write")
            self._wait_mounted(proc, mountpoint, log_path)
            cc = wr.container_client(store.conn_str)
            pending = wr.rclone_pending(self.rc_port)
            return {**wr.row_cells(wr.SEQ_KEYS, lambda: wr.mount_seq(root, cc, src, pending)),
                    **wr.row_cells(wr.TAR_KEYS, lambda: wr.mount_tar(root, cc, src, pending))}
        finally:
            self.teardown()


