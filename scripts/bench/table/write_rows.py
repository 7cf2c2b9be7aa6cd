"""The comparison table's write rows (12-14): the source bytes, the workloads, and how
"durable" is decided.

Rows (sizes at full scale; `--quick` is smaller, see `WRITE_QUICK`):
- 12. one sequential write of a 1 GiB file: `dd if=SRC of=MOUNT/FILE bs=1M` (dd's exit includes
  the close) for the mounts, `upload_blob(name, f, length=size, max_concurrency=8)` from the same
  source file for the direct SDKs.
- 13. `tar -xf SRC.tar -C MOUNT` of 5,000 x 100 KiB files in 50 dirs; the direct SDK uploads the
  same files with 8 threads (`upload_blob` each) as a reference.
- 14. 16 `dd` writers of 256 MiB each at once into a dedicated dsmount daemon: every object's
  sha256 read back with the SDK, and the daemon's peak RSS (VmHWM of that daemon's life).

Invariants:
- Two clocks per mount row: until the writer returns (dd or tar exits: close has returned)
  and until the data is durable, i.e. until a check of the store that started after the mount
  reported nothing pending finds every object whole (the right size). rclone's writes mode
  uploads after close, so for it the two differ; dsmount commits at close, so its durable time
  is the close time plus that one check. Both systems pay the same check. The store check is
  the truth; a mount's "nothing pending" (rclone's rc `vfs/stats`) only decides when to start
  checking, so the checks do not load Azurite while uploads are still running.
- Every object written is verified afterwards (outside the clocks) against the source, read
  back with the SDK, not the mount; a mismatch is an error, not a figure. Every row deletes
  what it wrote, so each system writes into an empty container.
- The sources live in /dev/shm (no disk, no generation cost inside a clock) and are removed by
  `WriteSource.cleanup`, which the caller registers to run on any exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.bench.harness.cleanup import check, log, short_error
from scripts.bench.harness.meters import vm_hwm_bytes

KiB, MiB, GiB, MB = 1 << 10, 1 << 20, 1 << 30, 1_000_000
WRITE_CONTAINER = "benchw"  # in an Azurite of its own: the read rows' containers stay as they are
SEQ_NAME = "seq.bin"
TAR_PREFIX = "tar/"  # the tar's members all live below it
W16_PREFIX = "writer-"  # row 14's objects, at the root
THREADS = 8  # the SDK's tar reference, and the verification reads
DURABLE_TIMEOUT_S = 1800.0
POLL_S = 0.05

# Row key -> (label, unit), in table order; table/rows.py appends them to its WORKLOADS.
WRITE_WORKLOADS: dict[str, tuple[str, str]] = {
    "wseq_mbps": ("12. sequential write, 1 file: until durable in the store", "MB/s"),
    "wseq_close_mbps": ("12. sequential write, 1 file: until close returns", "MB/s"),
    "wtar_per_s": ("13. tar x of small files: until all durable in the store", "files/s"),
    "wtar_close_per_s": ("13. tar x of small files: until tar exits", "files/s"),
    "w16_mbps": ("14. parallel writers: until all closed", "MB/s"),
    "w16_rss_mib": ("14. parallel writers: daemon peak RSS (VmHWM)", "MiB"),
}
SEQ_KEYS = ("wseq_mbps", "wseq_close_mbps")
TAR_KEYS = ("wtar_per_s", "wtar_close_per_s")
W16_KEYS = ("w16_mbps", "w16_rss_mib")


@dataclass(frozen=True)
class WriteScale:
    seq_size: int
    n_files: int
    file_size: int
    file_dirs: int
    writers: int
    writer_size: int

    def desc(self) -> str:
        return (f"writes: 1 x {self.seq_size // MiB} MiB, tar of {self.n_files} x "
                f"{self.file_size // KiB} KiB in {self.file_dirs} dirs, {self.writers} writers "
                f"x {self.writer_size // MiB} MiB")  # fmt: skip


WRITE_FULL = WriteScale(GiB, 5000, 100 * KiB, 50, 16, 256 * MiB)
WRITE_QUICK = WriteScale(256 * MiB, 500, 100 * KiB, 10, 16, 64 * MiB)


class WriteSource:
    """The bytes every system writes: one random file (row 12; its first `writer_size` bytes
    are row 14's source) and a tar of small files (row 13), in a private /dev/shm directory."""

    BASE = 64 * MiB  # small files are slices of one random buffer, each stamped with its index

    def __init__(self, scale: WriteScale) -> None:
        assert scale.writer_size <= scale.seq_size and scale.seq_size % MiB == 0
        self.scale = scale
        self.dir = Path("/dev/shm") / f"dsmount-bench-w-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir(mode=0o700)
        try:
            self._make()
        except BaseException:
            self.cleanup()
            raise

    def _make(self) -> None:
        scale = self.scale
        self.seq = self.dir / "seq.bin"
        seq_sha, head_sha = hashlib.sha256(), hashlib.sha256()
        with open(self.seq, "wb") as f:
            for k in range(scale.seq_size // MiB):
                chunk = os.urandom(MiB)
                f.write(chunk)
                seq_sha.update(chunk)
                if k < scale.writer_size // MiB:
                    head_sha.update(chunk)
        self.seq_sha, self.writer_sha = seq_sha.hexdigest(), head_sha.hexdigest()
        self.base = os.urandom(self.BASE)
        self.tar = self.dir / "files.tar"
        self._write_tar()

    def file_name(self, i: int) -> str:
        return f"{TAR_PREFIX}d{i % self.scale.file_dirs:03d}/f{i:05d}.bin"

    def file_content(self, i: int) -> bytes:
        size = self.scale.file_size
        start = (i * 7919 * 64) % (self.BASE - size)
        return struct.pack("<Q", i) + self.base[start + 8 : start + size]

    def _write_tar(self) -> None:
        mtime = int(time.time())
        with tarfile.open(self.tar, "w", format=tarfile.GNU_FORMAT) as tar:
            for d in [TAR_PREFIX.rstrip("/")] + sorted(
                {self.file_name(i).rsplit("/", 1)[0] for i in range(self.scale.n_files)}
            ):
                info = tarfile.TarInfo(d)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
                tar.addfile(info)
            for i in range(self.scale.n_files):  # in directory order, as a real archive is
                data = self.file_content(i)
                info = tarfile.TarInfo(self.file_name(i))
                info.size, info.mode, info.mtime = len(data), 0o644, mtime
                tar.addfile(info, io.BytesIO(data))

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the store: what is there, and whether it is right -----------------------------------


def container_client(conn_str: str) -> Any:
    """A blocking client of the write container, created if missing."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    cc = BlobServiceClient.from_connection_string(conn_str).get_container_client(
        WRITE_CONTAINER
    )
    with contextlib.suppress(ResourceExistsError):
        cc.create_container()
    return cc


def whole_sizes(cc: Any, prefix: str) -> dict[str, int]:
    return {b.name: b.size for b in cc.list_blobs(name_starts_with=prefix)}


def blob_sha(cc: Any, name: str) -> str:
    h = hashlib.sha256()
    for chunk in cc.get_blob_client(name).download_blob(max_concurrency=4).chunks():
        h.update(chunk)
    return h.hexdigest()


def clear(cc: Any, prefix: str = "") -> None:
    """Delete every blob below `prefix`, so the next system writes into an empty container."""
    names = [b.name for b in cc.list_blobs(name_starts_with=prefix)]
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(cc.delete_blob, names))
    check(not whole_sizes(cc, prefix), f"blobs below {prefix!r} left after deleting them")


def verify_files(cc: Any, src: WriteSource) -> None:
    """Every small file, read back with the SDK, equals its source."""
    def one(i: int) -> bool:
        return cc.get_blob_client(src.file_name(i)).download_blob().readall() == src.file_content(i)

    with ThreadPoolExecutor(THREADS) as pool:
        bad = [i for i, ok in zip(range(src.scale.n_files),
                                  pool.map(one, range(src.scale.n_files)), strict=True) if not ok]
    check(not bad, f"{len(bad)} files differ from their source, e.g. {src.file_name(bad[0])}"
          if bad else "")


def files_whole(cc: Any, src: WriteSource) -> bool:
    sizes = whole_sizes(cc, TAR_PREFIX)
    return sum(1 for i in range(src.scale.n_files)
               if sizes.get(src.file_name(i)) == src.scale.file_size) == src.scale.n_files


def seq_whole(cc: Any, size: int) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return cc.get_blob_client(SEQ_NAME).get_blob_properties().size == size
    except ResourceNotFoundError:
        return False


def durable_at(t0: float, store_has_all: Callable[[], bool],
               pending: Callable[[], int] | None) -> float:
    """Seconds from `t0` until the store holds everything: first wait until the mount reports
    nothing pending (if it can say), then check the store until it has all of it."""
    deadline = time.monotonic() + DURABLE_TIMEOUT_S
    while pending is not None and pending() > 0:
        check(time.monotonic() < deadline, "uploads still pending at the deadline")
        time.sleep(POLL_S)
    while not store_has_all():
        check(time.monotonic() < deadline, "objects not whole in the store at the deadline")
        time.sleep(POLL_S)
    return time.perf_counter() - t0


def rclone_pending(rc_port: int) -> Callable[[], int]:
    """rclone's own count of uploads queued or running (its rc `vfs/stats`)."""
    def pending() -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{rc_port}/vfs/stats", data=b"{}",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            disk = json.loads(resp.read())["diskCache"]
        return int(disk["uploadsInProgress"]) + int(disk["uploadsQueued"])
    return pending


# --- the workloads -------------------------------------------------------------------------


def run(cmd: list[str], timeout: float = DURABLE_TIMEOUT_S) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    check(proc.returncode == 0, f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-300:]}")


def mount_seq(root: Path, cc: Any, src: WriteSource,
              pending: Callable[[], int] | None = None) -> dict[str, Any]:
    """Row 12 through a mount whose root is the write container's root."""
    size = src.scale.seq_size
    clear(cc)
    t0 = time.perf_counter()
    run(["dd", f"if={src.seq}", f"of={root / SEQ_NAME}", "bs=1M"])
    close_s = time.perf_counter() - t0
    durable_s = durable_at(t0, lambda: seq_whole(cc, size), pending)
    check(blob_sha(cc, SEQ_NAME) == src.seq_sha, "the written object's sha256 is wrong")
    clear(cc)
    return {"wseq_mbps": size / durable_s / MB, "wseq_close_mbps": size / close_s / MB}


def sdk_seq(cc: Any, src: WriteSource) -> dict[str, Any]:
    """Row 12 for the blocking SDK: one upload_blob from the same source file."""
    size = src.scale.seq_size
    clear(cc)
    t0 = time.perf_counter()
    with open(src.seq, "rb") as f:
        cc.upload_blob(SEQ_NAME, f, length=size, max_concurrency=8, overwrite=True)
    secs = time.perf_counter() - t0
    check(blob_sha(cc, SEQ_NAME) == src.seq_sha, "the uploaded object's sha256 is wrong")
    clear(cc)
    return {"wseq_mbps": size / secs / MB, "wseq_close_mbps": size / secs / MB}


async def sdk_aio_seq(conn_str: str, cc: Any, src: WriteSource) -> dict[str, Any]:
    """Row 12 for the asyncio SDK (azure.storage.blob.aio), the same call and concurrency."""
    from azure.storage.blob.aio import BlobServiceClient as AioService

    size = src.scale.seq_size
    clear(cc)
    async with AioService.from_connection_string(conn_str) as svc:
        acc = svc.get_container_client(WRITE_CONTAINER)
        await acc.get_container_properties()  # connection set up before the clock
        t0 = time.perf_counter()
        with open(src.seq, "rb") as f:
            await acc.upload_blob(SEQ_NAME, f, length=size, max_concurrency=8, overwrite=True)
        secs = time.perf_counter() - t0
    check(blob_sha(cc, SEQ_NAME) == src.seq_sha, "the uploaded object's sha256 is wrong")
    clear(cc)
    return {"wseq_mbps": size / secs / MB, "wseq_close_mbps": size / secs / MB}


def mount_tar(root: Path, cc: Any, src: WriteSource,
              pending: Callable[[], int] | None = None) -> dict[str, Any]:
    """Row 13 through a mount: `tar -xf` into its root, timed to tar's exit and to durable."""
    n = src.scale.n_files
    clear(cc)
    t0 = time.perf_counter()
    run(["tar", "-xf", str(src.tar), "-C", str(root)])
    close_s = time.perf_counter() - t0
    durable_s = durable_at(t0, lambda: files_whole(cc, src), pending)
    verify_files(cc, src)
    clear(cc)
    return {"wtar_per_s": n / durable_s, "wtar_close_per_s": n / close_s}


def sdk_tar(cc: Any, src: WriteSource) -> dict[str, Any]:
    """Row 13's reference: the same files uploaded with 8 threads, one upload_blob each."""
    n = src.scale.n_files
    clear(cc)
    contents = [src.file_content(i) for i in range(n)]  # built before the clock
    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda i: cc.upload_blob(src.file_name(i), contents[i], overwrite=True),
                      range(n)))
    secs = time.perf_counter() - t0
    verify_files(cc, src)
    clear(cc)
    return {"wtar_per_s": n / secs, "wtar_close_per_s": n / secs}


def parallel_writers(root: Path, cc: Any, src: WriteSource, daemon_pid: int) -> dict[str, Any]:
    """Row 14: `writers` dd processes at once, each `writer_size` bytes of the same source;
    every object's sha256 read back with the SDK; the daemon's VmHWM (a fresh daemon: the
    peak of this row)."""
    n, size = src.scale.writers, src.scale.writer_size
    clear(cc)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["dd", f"if={src.seq}", f"of={root / f'{W16_PREFIX}{i:02d}'}",
                               "bs=1M", f"count={size // MiB}", "status=none"],
                              stderr=subprocess.PIPE, text=True) for i in range(n)]
    errors = [(p.wait(timeout=DURABLE_TIMEOUT_S), p.stderr.read() if p.stderr else "")
              for p in procs]
    secs = time.perf_counter() - t0
    check(all(rc == 0 for rc, _ in errors), f"writers failed: {[e for e in errors if e[0]]}")
    hwm = vm_hwm_bytes(daemon_pid) / MiB
    with ThreadPoolExecutor(4) as pool:
        shas = list(pool.map(lambda i: blob_sha(cc, f"{W16_PREFIX}{i:02d}"), range(n)))
    bad = [i for i, sha in enumerate(shas) if sha != src.writer_sha]
    check(not bad, f"writers {bad}: sha256 of the object differs from the source")
    clear(cc)
    return {"w16_mbps": n * size / secs / MB, "w16_rss_mib": hwm}


def row_cells(keys: tuple[str, ...], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One write row's cells, or its error in each of them (the run goes on)."""
    try:
        cells = fn()
        log(", ".join(f"{k} = {cells[k]:.3f}" for k in keys))
        return cells
    except Exception as exc:
        log(f"{keys[0]} error: {short_error(exc)}")
        return dict.fromkeys(keys, {"error": short_error(exc)})
