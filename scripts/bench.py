#!/usr/bin/env python3
"""Benchmark dsmount against direct SDK clients, adlfs and rclone mounts on a local Azurite,
and dsmount on a file share against the direct file-share SDK on the Azure Files emulator.

This is a measurement, not a test: it starts Azurite in memory, uploads one dataset, then runs
the same workloads through every client side by side and prints a markdown table plus a ratio
section checking dsmount against its targets (`ratios`). Run it as root (FUSE mounts,
`drop_caches`) with the project venv:

    .venv/bin/python scripts/bench.py                 # full scale (~2.5 GiB dataset)
    .venv/bin/python scripts/bench.py --latency 10    # every request 10 ms late, all systems
    .venv/bin/python scripts/bench.py --quick --only sdk-sync,sdk-aio,adlfs --skip-rclone

Clients: `sdk-sync` (azure-storage-blob, threads), `sdk-aio` (azure.storage.blob.aio), `adlfs`
(fsspec), `rclone-off` / `rclone-full` (`rclone mount`, vfs cache mode off / full) and
`dsmount` (`python -m dsmount daemon --foreground` + `attach --blob`). File-share columns
(same workloads, the Azure Files emulator of tests/support/azurefiles as server, run as its own
process so it does not share a GIL with the clients): `fs-sdk-aio`
(azure.storage.fileshare.aio) and `dsmount-fs` (the `dsmount` client, attached with
`attach --fileshare`). Azurite is started only when a blob client is selected, the emulator
only when a file-share client is.

Dataset (full scale; `--quick` is smaller): two 1 GiB random blobs, 5,000 x 100 KiB files in 50
dirs, and 20,000 tiny blobs in one dir. The tiny blobs live in a second Azurite instance (see
`start_store` for why); mounts attach both containers. The file share holds the same files
under the same paths, tiny ones included (at most `--fs-tiny` of them). Count-based workloads
(small files, random reads) stop issuing requests after `--cap` seconds and report the rate
over what ran, so one slow client cannot blow the time budget; such figures carry a note.

Versions (when `dsmount` runs): the same small and tiny files stored once more as a PACKED
version (`dsmount.workspace.versions.create_version`, container `benchver`), registered in a
temporary registry (`DSMOUNT_REGISTRY`) and attached with `dsmount attach benchver --version N`;
rows 4 (version listing) and 8 (packed shuffled epochs) read it. With `--million` (default at
full scale) a 1,000,000-file version is synthesised without uploading a million blobs: a
manifest (`dsmount.storage.manifest.write_manifest`, 1,000 dirs x 1,000 files) pointing into 4
pack objects that exist, committed like versions.py commits (`_versions/N.json`); a dedicated
daemon attaches it and `find | wc -l` walks it (row 11).

`--latency MS` starts tests/support/faultproxy_process.py (its own process, so its CPU is no
client's) and points EVERY system at it: direct SDK clients, adlfs, rclone, dsmount and the
file-share columns; each request's header block is held MS milliseconds (a per-request cost,
not a bandwidth cap). The dataset upload goes direct. The proxy also counts the requests it
forwards, which gives row 10 (backend requests per file) for every system; without it row 10
comes from the daemon's own counters (`status`), dsmount only. Row 11 always goes through the
proxy (with 0 ms unless `--latency`) so its LIST calls are counted there.

Write rows 12-14 (issue 13; `--no-writes` leaves them out, `--writes-only` runs nothing else):
scripts/bench_write_rows.py says what each does. They run after each client's read rows, into an
Azurite of their own (container `benchw`), for `sdk-sync` and `sdk-aio` (upload_blob,
max_concurrency=8; sdk-sync also uploads row 13's files with 8 threads), `rclone-writes` (a
column of its own: `rclone mount --vfs-cache-mode writes`, which uploads after close, so both
"close returned" and "durable in the store" are timed) and `dsmount` (dedicated daemons with
`[writes] enabled = true`, the container attached `--read-write`).

Invariants:
- Every process, mount and temp dir this script starts is released on any exit: each resource
  registers its cleanup in `_CLEANUPS` the moment it exists; the normal path runs it in a
  `finally`, and atexit plus SIGTERM/SIGHUP handlers (turned into SystemExit) catch the rest.
- A failing client never stops the run: each cell catches its own error and shows
  "error: ..."; a client whose setup fails gets that error in every cell.
- Every client reads the same bytes: preads use the same seeded offsets everywhere, and a few
  reads per client are checked against the generated content, so a fast wrong answer is an
  error rather than a figure.
- Cold measurements drop the kernel page cache first (when allowed; the run notes it if not);
  the warm re-read never does, so dsmount's warm figure may come from the page cache.
- MB/s means 10**6 bytes per second (as `dd` prints it); sizes in MiB/GiB are powers of two.
- Uploads (the dataset, the versions) always go straight to the servers; with --latency every
  client (and every daemon's registry entry) points at the proxy, so its delay and its request
  counts apply to every system alike. The proxy is its own process: its CPU is no client's.
- A cold epoch (rows 7 and 8) finds nothing cached in any system: the page cache is dropped,
  dsmount reads datastores no earlier row has read, and rclone-full (whose disk cache holds
  the files since row 3) does not run row 7.

rclone 1.60 (Debian 12) treats `endpoint` as a DNS suffix (https://<account>.<endpoint>) and
`use_emulator` as the fixed address 127.0.0.1:10000, so neither reaches an Azurite on a free
port; rclone is therefore given a container SAS URL (`sas_url`), which it takes verbatim.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import collections
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the write rows' module beside this one

import bench_write_rows as wr  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
MB = 1_000_000

BLOCK = 8 * MiB  # upload block and direct-client range size
BASE_SIZE = 64 * MiB  # random bytes generated once; every blob is cut from it
CONTAINER = "bench"
LIST_CONTAINER = "benchlist"
DATASTORE = "bench"  # dsmount datastore names: files appear under <mountpoint>/<name>/
LIST_DATASTORE = "benchlist"
# The data container attached a second time: its own block-cache keys (the datastore id is in
# the key), so the shuffled epoch (row 7) is cold for dsmount as it is for rclone-off.
SHUF_DATASTORE = "benchshuf"
VER_DATASTORE = VER_CONTAINER = "benchver"  # the packed version of the small and tiny files
MIL_DATASTORE = MIL_CONTAINER = "benchmil"  # the synthesised 1,000,000-file version
MIL_DIRS, MIL_FILES, MIL_SIZE, MIL_PACKS = 1000, 1000, 4 * KiB, 4
MIL_FIND_TIMEOUT_S = 300.0  # the target is 60 s; a hung walk must not hold the run for long
SEQ_BLOB = "big/seq.bin"
RAND_BLOB = "big/rand.bin"
TINY_DIR = "tiny"
SEED = 20240601
VERIFY_N = 8  # reads per client checked byte for byte against the generated content
AZURITE_WAIT_S = 600.0  # tests/support/azurite.py may still be being written: poll for it
MOUNT_WAIT_S = 60.0

SHARE = "bench"  # the file share holding the whole dataset (tiny files included)
FS_DATASTORE = "benchfs"
RANGE = 4 * MiB  # Azure Files' largest Put Range: the share upload's write size
EMULATOR_WAIT_S = 30.0

CLIENTS = (
    "sdk-sync", "sdk-aio", "adlfs", "rclone-off", "rclone-full", "rclone-writes", "dsmount",
    "fs-sdk-aio", "dsmount-fs",
)  # fmt: skip
DIRECT = ("sdk-sync", "sdk-aio", "adlfs")
RCLONE = ("rclone-off", "rclone-full")  # the read rows' rclone columns
RCLONE_WRITES = "rclone-writes"  # `--vfs-cache-mode writes`: the write rows (12-13) only
WRITERS = ("sdk-sync", "sdk-aio", RCLONE_WRITES, "dsmount")  # the clients with write rows
FILESHARE = ("fs-sdk-aio", "dsmount-fs")  # run against the Azure Files emulator, not Azurite

# Row key -> (label, unit). Order is the table's row order.
WORKLOADS: dict[str, tuple[str, str]] = {
    "seq_cold_mbps": ("1. cold sequential read, 1 blob", "MB/s"),
    "seq_warm_mbps": ("2. warm re-read, same blob", "MB/s"),
    "small_files_per_s": ("3. small files, 8 threads", "files/s"),
    "list_cold_s": ("4. list tiny dir, cold", "s"),
    "list_warm_s": ("4. list tiny dir, warm", "s"),
    "ver_list_cold_s": ("4. list tiny dir of the packed version, cold", "s"),
    "ver_list_warm_s": ("4. list tiny dir of the packed version, warm", "s"),
    "pread_per_s": ("5. random 64 KiB reads, 1 in flight", "reads/s"),
    "pread8_per_s": ("5. random 64 KiB reads, 8 in flight", "reads/s"),
    "pread_fetch_ratio": ("5. bytes fetched / bytes read, 1 in flight", "x"),
    "peak_rss_mib": ("6. daemon peak RSS, whole run", "MiB"),
    "stream_peak_rss_mib": ("6. peak RSS streaming 2 blobs", "MiB"),
    "shuffle_cold_per_s": ("7. shuffled small files, cold epoch, 8 threads", "files/s"),
    "shuffle_warm_per_s": ("7. shuffled small files, second epoch", "files/s"),
    "packed_cold_per_s": ("8. packed version, shuffled, cold epoch, 8 threads", "files/s"),
    "packed_warm_per_s": ("8. packed version, shuffled, second epoch", "files/s"),
    "seq_cpu_s_per_gib": ("9. CPU per GiB, cold sequential: all counted", "CPU-s"),
    "seq_proc_cpu_s_per_gib": ("9. CPU per GiB, cold sequential: client/daemon only", "CPU-s"),
    "req_small": ("10. backend requests per file: row 3", "req/file"),
    "req_shuffle_cold": ("10. backend requests per file: row 7 cold", "req/file"),
    "req_shuffle_warm": ("10. backend requests per file: row 7 second", "req/file"),
    "req_packed_cold": ("10. backend requests per file: row 8 cold", "req/file"),
    "req_packed_warm": ("10. backend requests per file: row 8 second", "req/file"),
    "million_attach_s": ("11. 1M-file version: attach + first ls", "s"),
    "million_find_s": ("11. 1M-file version: find | wc -l", "s"),
    "million_rss_mib": ("11. 1M-file version: daemon peak RSS", "MiB"),
    "million_lists": ("11. 1M-file version: LIST calls (at the proxy)", "calls"),
    **wr.WRITE_WORKLOADS,  # rows 12-14 (scripts/bench_write_rows.py)
}
# Workloads whose backend requests are counted, per file done (row 10).
REQUEST_ROWS = {
    "small_files_per_s": "req_small",
    "shuffle_cold_per_s": "req_shuffle_cold",
    "shuffle_warm_per_s": "req_shuffle_warm",
    "packed_cold_per_s": "req_packed_cold",
    "packed_warm_per_s": "req_packed_warm",
}
MILLION_KEYS = ("million_attach_s", "million_find_s", "million_rss_mib", "million_lists")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- cleanup on any exit -------------------------------------------------------------------

_CLEANUPS: list[Callable[[], None]] = []
_CLEANUP_LOCK = threading.Lock()


def on_exit(fn: Callable[[], None]) -> Callable[[], None]:
    """Register `fn` to run on any exit; returns a callable that runs it now, at most once."""
    done = threading.Event()

    def run_once() -> None:
        with _CLEANUP_LOCK:
            if done.is_set():
                return
            done.set()
            with contextlib.suppress(ValueError):
                _CLEANUPS.remove(run_once)
        try:
            fn()
        except Exception as exc:  # cleanup must go on with the other resources
            log(f"cleanup {getattr(fn, '__name__', fn)!r} failed: {exc!r}")

    with _CLEANUP_LOCK:
        _CLEANUPS.append(run_once)
    return run_once


def run_all_cleanups() -> None:
    while True:
        with _CLEANUP_LOCK:
            if not _CLEANUPS:
                return
            fn = _CLEANUPS[-1]  # last registered first: mounts before the server they use
        fn()


def _raise_exit(signum: int, _frame: object) -> None:
    # SystemExit unwinds through every `finally`, so mounts and processes are released in order.
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    atexit.register(run_all_cleanups)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)


# --- scale and dataset ---------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    big_size: int
    n_small: int
    small_dirs: int
    small_size: int
    n_tiny: int
    n_preads: int
    pread_size: int


FULL = Scale(GiB, 5000, 50, 100 * KiB, 20_000, 1000, 64 * KiB)
QUICK = Scale(128 * MiB, 500, 10, 100 * KiB, 2000, 1000, 64 * KiB)


class Dataset:
    """The benchmark's blobs, generated from one random buffer so content is reproducible.

    Big blob `blob_id`'s block k is the base buffer's slice (k * BLOCK mod BASE_SIZE) with its
    first 16 bytes replaced by (blob_id, k), so no two blocks are equal (no dedup anywhere can
    flatter a client) while generation costs only a copy.
    """

    def __init__(self, scale: Scale) -> None:
        self.scale = scale
        self.base = os.urandom(BASE_SIZE)
        assert scale.big_size % BLOCK == 0 and BASE_SIZE % BLOCK == 0

    def big_block(self, blob_id: int, k: int) -> bytes:
        start = (k * BLOCK) % BASE_SIZE
        return struct.pack("<QQ", blob_id, k) + self.base[start + 16 : start + BLOCK]

    def big_range(self, blob_id: int, offset: int, length: int) -> bytes:
        out = bytearray()
        end = min(offset + length, self.scale.big_size)
        while offset < end:
            k, within = divmod(offset, BLOCK)
            take = min(BLOCK - within, end - offset)
            out += self.big_block(blob_id, k)[within : within + take]
            offset += take
        return bytes(out)

    def small_name(self, i: int) -> str:
        return f"small/d{i % self.scale.small_dirs:03d}/f{i:05d}.bin"

    def small_content(self, i: int) -> bytes:
        size = self.scale.small_size
        start = (i * 7919 * 64) % (BASE_SIZE - size)
        return struct.pack("<Q", i) + self.base[start + 8 : start + size]

    def tiny_name(self, i: int) -> str:
        return f"{TINY_DIR}/t{i:05d}.txt"

    @staticmethod
    def tiny_content(i: int) -> bytes:
        return f"t{i}\n".encode()

    def million_pack(self, p: int) -> bytes:
        """Pack object `p` of the synthesised 1M-file version: MIL_FILES files end to end."""
        n = MIL_FILES * MIL_SIZE
        return self.base[p * n : (p + 1) * n]

    def million_content(self, d: int, j: int) -> bytes:
        """File j of dir d of that version: a slice of pack d % MIL_PACKS (dirs share packs)."""
        start = (d % MIL_PACKS) * MIL_FILES * MIL_SIZE + j * MIL_SIZE
        return self.base[start : start + MIL_SIZE]

    def shuffled(self, salt: int) -> list[int]:
        """A seeded permutation of the small files: one epoch's order, the same everywhere."""
        order = list(range(self.scale.n_small))
        random.Random(SEED + 1000 + salt).shuffle(order)
        return order

    def pread_offsets(self, salt: int) -> list[int]:
        rng = random.Random(SEED + salt)
        last = self.scale.big_size - self.scale.pread_size
        return [rng.randrange(0, last + 1) for _ in range(self.scale.n_preads)]


def million_name(d: int, j: int) -> str:
    return f"d{d:04d}/f{j:04d}.bin"


@dataclass(frozen=True)
class Store:
    """One Azurite instance and the container the benchmark uses in it."""

    conn_str: str
    endpoint: str
    container: str
    sas_url: str  # container SAS URL, for rclone
    pid: int | None


async def upload_dataset(data: Store, listing: Store, ds: Dataset, in_flight: int = 64) -> None:
    """Create both containers and upload every blob with many requests in flight."""
    from azure.storage.blob.aio import BlobServiceClient as AioService

    async def put_all(store: Store, jobs: Callable[[Any, asyncio.Semaphore], list[Any]]) -> None:
        sem = asyncio.Semaphore(in_flight)
        async with AioService.from_connection_string(store.conn_str) as svc:
            cc = svc.get_container_client(store.container)
            await cc.create_container()
            await asyncio.gather(*jobs(cc, sem))

    async def put(cc: Any, sem: asyncio.Semaphore, name: str, make: Callable[[], bytes]) -> None:
        async with sem:  # the content is built inside: at most `in_flight` blobs in memory
            await cc.upload_blob(name, make(), overwrite=True)

    async def big(cc: Any, sem: asyncio.Semaphore, blob_id: int, name: str) -> None:
        bc = cc.get_blob_client(name)
        nblocks = ds.scale.big_size // BLOCK
        ids = [base64.b64encode(f"{k:08d}".encode()).decode() for k in range(nblocks)]

        async def stage(k: int) -> None:
            async with sem:
                await bc.stage_block(ids[k], ds.big_block(blob_id, k), length=BLOCK)

        await asyncio.gather(*(stage(k) for k in range(nblocks)))
        await bc.commit_block_list(ids)

    def data_jobs(cc: Any, sem: asyncio.Semaphore) -> list[Any]:
        jobs = [big(cc, sem, 1, SEQ_BLOB), big(cc, sem, 2, RAND_BLOB)]
        for i in range(ds.scale.n_small):
            jobs.append(put(cc, sem, ds.small_name(i), lambda i=i: ds.small_content(i)))
        return jobs

    def listing_jobs(cc: Any, sem: asyncio.Semaphore) -> list[Any]:
        return [
            put(cc, sem, ds.tiny_name(i), lambda i=i: ds.tiny_content(i))
            for i in range(ds.scale.n_tiny)
        ]

    await asyncio.gather(put_all(data, data_jobs), put_all(listing, listing_jobs))


@dataclass(frozen=True)
class ShareStore:
    """The Azure Files emulator process and the share the benchmark uses in it."""

    conn_str: str
    endpoint: str  # account URL, path-style: http://127.0.0.1:PORT/<account>
    account: str
    key: str
    share: str
    pid: int
    n_tiny: int  # tiny files actually written (`--fs-tiny` may make it fewer than the scale's)


def start_share_emulator(workdir: Path) -> ShareStore:
    """Start `python -m tests.support.azurefiles` as its own process (released on any exit).

    A separate process, not the in-process `AzureFilesEmulator`: served from this process it
    would compete for the GIL with the clients it is measuring.
    """
    import select

    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "azurefiles.log"
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.azurefiles", "--port", "0"],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
            start_new_session=True,
        )  # fmt: skip
    on_exit(lambda: stop_process(proc))
    assert proc.stdout is not None
    # It prints its connection string once listening; wait for that line, bounded.
    ready, _, _ = select.select([proc.stdout], [], [], EMULATOR_WAIT_S)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line:
        raise RuntimeError(f"Azure Files emulator did not start: {tail(log_path)}")
    parts = dict(kv.split("=", 1) for kv in line.split(";") if kv)
    store = ShareStore(
        conn_str=line,
        endpoint=parts["FileEndpoint"].rstrip("/"),
        account=parts["AccountName"],
        key=parts["AccountKey"],
        share=SHARE,
        pid=proc.pid,
        n_tiny=0,
    )
    log(f"Azure Files emulator on {store.endpoint} (pid {proc.pid})")
    return store


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def upload_share(store: ShareStore, ds: Dataset, in_flight: int = 32) -> None:
    """Create the share and write the dataset into it: files in 4 MiB ranges, many in flight.

    Only the first `store.n_tiny` tiny files are written (the emulator needs two requests per
    file: Create File, then Put Range).
    """
    from azure.storage.fileshare.aio import ShareServiceClient

    sem = asyncio.Semaphore(in_flight)
    async with ShareServiceClient.from_connection_string(store.conn_str) as svc:
        share = svc.get_share_client(store.share)
        await share.create_share()
        for d in ("big", "small", TINY_DIR):
            await share.create_directory(d)
        dirs = sorted({ds.small_name(i).rsplit("/", 1)[0] for i in range(ds.scale.small_dirs)})
        await asyncio.gather(*(share.create_directory(d) for d in dirs))

        async def big(blob_id: int, name: str) -> None:
            fc = share.get_file_client(name)
            await fc.create_file(ds.scale.big_size)

            async def put(off: int) -> None:
                async with sem:  # content built inside: at most `in_flight` ranges in memory
                    await fc.upload_range(ds.big_range(blob_id, off, RANGE), off, RANGE)

            await asyncio.gather(*(put(o) for o in range(0, ds.scale.big_size, RANGE)))

        async def put_file(name: str, make: Callable[[], bytes]) -> None:
            async with sem:
                await share.get_file_client(name).upload_file(make())

        jobs = [big(1, SEQ_BLOB), big(2, RAND_BLOB)]
        jobs += [
            put_file(ds.small_name(i), lambda i=i: ds.small_content(i))
            for i in range(ds.scale.n_small)
        ]
        jobs += [
            put_file(ds.tiny_name(i), lambda i=i: ds.tiny_content(i)) for i in range(store.n_tiny)
        ]
        await asyncio.gather(*jobs)


# --- versions (dsmount's rows 4, 8 and 11) -------------------------------------------------


def register_blob(registry_dir: Path, name: str, store: Store, container: str) -> None:
    """Register blob datastore `name` (container `container` of `store`'s Azurite, at
    `store.endpoint`) in the registry at `registry_dir`, creating the container."""
    from dsmount.workspace import registry as reg
    from dsmount.workspace.entries import CredentialRef, DatastoreInfo
    from dsmount.workspace.registry import Registry

    parts = dict(kv.split("=", 1) for kv in store.conn_str.split(";") if "=" in kv)
    info = DatastoreInfo(name, "blob", account=parts["AccountName"], container=container,
                         endpoint=store.endpoint, auth=CredentialRef("account_key", "stored"))
    reg.register(info, parts["AccountKey"], registry=Registry(registry_dir), overwrite=True,
                 create_if_not_exists=True)  # fmt: skip


def make_packed_version(upload_registry: Path, ds: Dataset, workdir: Path) -> int:
    """The small and tiny files as a packed version of `benchver`, made the way users make
    one (`create_version`, what `dsmount datastore create` runs); returns its number."""
    from dsmount.workspace.registry import Registry
    from dsmount.workspace.versions import create_version

    src = workdir / "version-src"
    made: set[Path] = set()

    def write(rel: str, data: bytes) -> None:
        path = src / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)

    try:
        for i in range(ds.scale.n_small):
            write(ds.small_name(i), ds.small_content(i))
        for i in range(ds.scale.n_tiny):
            write(ds.tiny_name(i), ds.tiny_content(i))
        number, _ = create_version(VER_DATASTORE, src, registry=Registry(upload_registry))
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return number


def make_million_version(upload_registry: Path, ds: Dataset, workdir: Path, dirs: int) -> int:
    """A 1,000,000-file version of `benchmil` without a million objects: MIL_PACKS pack objects
    (uploaded) and a manifest of `dirs` (MIL_DIRS) x MIL_FILES files pointing into them (dir d
    uses pack d % MIL_PACKS, file j its j-th MIL_SIZE bytes), pinned to the packs' ETags and
    committed as versions.py commits (`_versions/N.claim`, `N.manifest`, then `N.json`).
    Returns N."""
    import hashlib

    from dsmount.storage.manifest import FileRecord, write_manifest
    from dsmount.workspace.registry import Registry
    from dsmount.workspace.versions import PACKS_DIR, VERSIONS_DIR

    check(MIL_PACKS * MIL_FILES * MIL_SIZE <= BASE_SIZE, "packs larger than the base buffer")
    number = 1
    root = f"{VERSIONS_DIR}/{number}"
    names = [f"{root}/{PACKS_DIR}/pack-{p + 1:06d}" for p in range(MIL_PACKS)]
    md5s = [
        [hashlib.md5(ds.million_content(p, j), usedforsecurity=False).digest()
         for j in range(MIL_FILES)]
        for p in range(MIL_PACKS)
    ]  # fmt: skip
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    mtime_ns = time.time_ns()
    manifest_path = workdir / "million.manifest"
    with Registry(upload_registry).store(MIL_DATASTORE) as store:
        claim = json.dumps({"claimed": time.time(), "pid": os.getpid()}).encode()
        check(store.put_bytes(f"{VERSIONS_DIR}/{number}.claim", claim, exclusive=True),
              f"{MIL_CONTAINER} already has a version {number}")  # fmt: skip
        for p, name in enumerate(names):
            store.put_bytes(name, ds.million_pack(p))
        listed = {f.path: f for f in store.walk(root)}
        check(all(n in listed for n in names), "an uploaded pack is not listed")
        packs = [(n, listed[n].size, listed[n].etag) for n in names]
        records = (
            FileRecord(million_name(d, j), MIL_SIZE, mtime_ns, md5s[d % MIL_PACKS][j],
                       pack=names[d % MIL_PACKS], offset=j * MIL_SIZE)
            for d in range(dirs) for j in range(MIL_FILES)
        )  # fmt: skip
        try:
            counts = write_manifest(manifest_path, records, root=root, kind="version",
                                    packs=packs, created=now, dir_mtime_ns=mtime_ns)  # fmt: skip
            manifest = f"{VERSIONS_DIR}/{number}.manifest"
            md5 = hashlib.md5(manifest_path.read_bytes(), usedforsecurity=False).digest()
            store.upload(manifest_path, manifest, size=manifest_path.stat().st_size, md5=md5,
                         overwrite=True, progress=lambda n: None)  # fmt: skip
            log(f"1M-file manifest: {manifest_path.stat().st_size / MiB:.0f} MiB")
        finally:
            manifest_path.unlink(missing_ok=True)
        record = {"version": number, **counts, "packs": MIL_PACKS, "created": now,
                  "manifest": manifest}  # fmt: skip
        store.put_bytes(f"{VERSIONS_DIR}/{number}.json", json.dumps(record, indent=1).encode())
    return number


# --- the fault proxy in front of every store (--latency) -----------------------------------

PROXY_WAIT_S = 30.0


def url_port(url: str) -> int:
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    check(port is not None, f"{url} names no port")
    assert port is not None
    return port


class ProxyProcess:
    """tests/support/faultproxy_process.py: one FaultProxy per upstream in a process of its
    own (released on any exit), with a fixed per-request latency, counting what it forwards."""

    def __init__(self, workdir: Path, upstream_urls: list[str], latency_ms: float) -> None:
        import select

        self.latency_ms = latency_ms
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "faultproxy.log"
        ups = sorted({url_port(u) for u in upstream_urls})
        cmd = [sys.executable, "-m", "tests.support.faultproxy_process",
               "--latency-ms", str(latency_ms)]  # fmt: skip
        for port in ups:
            cmd += ["--upstream", f"127.0.0.1:{port}"]
        with open(log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                start_new_session=True,
            )  # fmt: skip
        on_exit(self.stop)
        assert self.proc.stdout is not None
        self._lock = threading.Lock()
        ready, _, _ = select.select([self.proc.stdout], [], [], PROXY_WAIT_S)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line:
            raise RuntimeError(f"fault proxy did not start: {tail(log_path)}")
        self.ports = {int(up): int(p) for up, p in json.loads(line)["ports"].items()}
        self.pid = self.proc.pid
        log(f"fault proxy (pid {self.pid}, {latency_ms:g} ms per request): {self.ports}")

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # end of input: it stops every proxy and exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def _ask(self, command: str) -> dict[str, Any]:
        with self._lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            check(self.proc.poll() is None, f"fault proxy exited with {self.proc.returncode}")
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    def forwarded(self) -> collections.Counter[str]:
        """Requests forwarded to the stores so far, summed over every upstream, by kind."""
        total: collections.Counter[str] = collections.Counter()
        for counts in self._ask("stats").values():
            total.update(counts["forwarded"])
        return total

    def requests(self) -> int:
        return sum(self.forwarded().values())

    def _redirect(self, url: str) -> tuple[tuple[str, int], tuple[str, int]]:
        up = url_port(url)
        check(up in self.ports, f"{url} is not behind the fault proxy")
        return ("127.0.0.1", up), ("127.0.0.1", self.ports[up])

    def url(self, url: str) -> str:
        from tests.support.faultproxy import redirect_url

        return redirect_url(url, *self._redirect(url))

    def store(self, store: Store) -> Store:
        """`store` as the clients see it through the proxy."""
        from tests.support.faultproxy import redirect_connection_string

        return replace(
            store,
            conn_str=redirect_connection_string(store.conn_str, *self._redirect(store.endpoint)),
            endpoint=self.url(store.endpoint),
            sas_url=self.url(store.sas_url),
        )

    def share(self, store: ShareStore) -> ShareStore:
        from tests.support.faultproxy import redirect_connection_string

        return replace(
            store,
            conn_str=redirect_connection_string(store.conn_str, *self._redirect(store.endpoint)),
            endpoint=self.url(store.endpoint),
        )


# --- measurement helpers -------------------------------------------------------------------


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


class PeakRss(threading.Thread):
    """Samples the summed RSS of some processes and all their children every 50 ms; keeps
    the peak."""

    def __init__(self, pids: list[int], interval: float = 0.05) -> None:
        super().__init__(daemon=True, name=f"rss-{pids}")
        self.pids = pids
        self.interval = interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        procs = []
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
        while procs and not self._stop_event.is_set():
            total = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):  # a process that is gone counts 0
                    total += proc.memory_info().rss
                    for child in proc.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            total += child.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(timeout=5)
        return self.peak


class CpuMeter:
    """CPU seconds (user + system) spent over a `with` block by the processes `pids` (with
    their reaped children), and with `reader=True` by the children of this process reaped
    during the block (the `dd` a mount client runs: subprocess.run reaps it)."""

    def __init__(self, pids: list[int], reader: bool = False) -> None:
        import psutil

        self.procs = [psutil.Process(pid) for pid in pids]
        self.reader = reader
        self.proc_s = 0.0  # the client process(es): the SDK client, the daemon, rclone
        self.reader_s = 0.0

    def _proc_total(self) -> float:
        total = 0.0
        for proc in self.procs:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        return total

    @staticmethod
    def _reaped() -> float:
        import resource

        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def __enter__(self) -> CpuMeter:
        self._proc0, self._reaped0 = self._proc_total(), self._reaped()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc_s = self._proc_total() - self._proc0
        self.reader_s = self._reaped() - self._reaped0 if self.reader else 0.0

    def per_gib(self, nbytes: int) -> dict[str, float]:
        """Row 9's two cells for `nbytes` streamed."""
        gib = nbytes / GiB
        return {
            "seq_cpu_s_per_gib": (self.proc_s + self.reader_s) / gib,
            "seq_proc_cpu_s_per_gib": self.proc_s / gib,
        }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


@dataclass
class Figure:
    """A measured figure with a remark for the table (e.g. that a time cap cut it short).

    `count`: the items (files, reads) it is the rate of, for per-item figures (row 10);
    `extra`: more cells measured by the same run (e.g. its CPU seconds per GiB)."""

    value: float
    note: str = ""
    count: int | None = None
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Batch:
    """What `run_batch` returns: elapsed seconds and the results of the calls that ran."""

    secs: float
    done: list[tuple[Any, Any]]  # (item, result) in item order
    total: int

    def rate(self, what: str) -> Figure:
        check(bool(self.done), f"no {what} finished")
        n = len(self.done)
        rate = n / self.secs
        if n < self.total:
            return Figure(rate, f"time cap reached after {n} of {self.total} {what}", count=n)
        return Figure(rate, count=n)


def run_batch(fn: Callable[[Any], Any], items: list[Any], in_flight: int, cap_s: float) -> Batch:
    """Call `fn` on every item with `in_flight` threads, stopping new calls after `cap_s`.

    The cap keeps one slow client (e.g. rclone-off at ~15 random reads/s) from eating the run's
    time budget; the rate is then taken over the calls that did run.
    """
    skipped = object()
    t0 = time.perf_counter()
    deadline = t0 + cap_s

    def call(item: Any) -> Any:
        return skipped if time.perf_counter() > deadline else fn(item)

    if in_flight == 1:
        results = [call(item) for item in items]
    else:
        with ThreadPoolExecutor(in_flight) as pool:
            results = list(pool.map(call, items))
    secs = time.perf_counter() - t0
    done = [(i, r) for i, r in zip(items, results, strict=True) if r is not skipped]
    return Batch(secs, done, len(items))


async def run_batch_async(
    fn: Callable[[Any], Any], items: list[Any], in_flight: int, cap_s: float
) -> Batch:
    """`run_batch` for coroutine functions: a semaphore bounds the requests in flight."""
    skipped = object()
    sem = asyncio.Semaphore(in_flight)
    t0 = time.perf_counter()
    deadline = t0 + cap_s

    async def call(item: Any) -> Any:
        async with sem:
            return skipped if time.perf_counter() > deadline else await fn(item)

    results = await asyncio.gather(*(call(item) for item in items))
    secs = time.perf_counter() - t0
    done = [(i, r) for i, r in zip(items, results, strict=True) if r is not skipped]
    return Batch(secs, done, len(items))


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise RuntimeError(msg)


def window_map(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: list[Any], n: int
) -> Iterator[Any]:
    """Like pool.map, but at most `n` calls in flight (bounded memory for large reads)."""
    pending: collections.deque[Future[Any]] = collections.deque()
    for item in items:
        if len(pending) >= n:
            yield pending.popleft().result()
        pending.append(pool.submit(fn, item))
    while pending:
        yield pending.popleft().result()


# --- clients -------------------------------------------------------------------------------


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

    def shuffle_workloads(
        self, read: Callable[[list[int], bool], float | Figure]
    ) -> list[tuple[str, Callable[[], float | Figure]]]:
        """Row 7 with `read(order, cold)` reading the small files in that order: two seeded
        shuffles, the same for every client, the cold epoch then a second one (cold False:
        it may find what the first left cached)."""
        if not self.shuffle_rows:
            return []
        return [
            ("shuffle_cold_per_s", lambda: read(self.ctx.shuffle1, True)),
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


class SdkSyncClient(Client):
    """azure-storage-blob's blocking client driven from 8 threads (ranged 8 MiB GETs)."""

    name = "sdk-sync"
    threads = 8
    shuffle_rows = True

    def setup(self) -> None:
        from azure.storage.blob import BlobServiceClient

        # requests' pool keeps 10 connections per host: enough for 8 threads.
        self.svc = BlobServiceClient.from_connection_string(self.data_store.conn_str)
        self.cc = self.svc.get_container_client(CONTAINER)
        self.list_svc = BlobServiceClient.from_connection_string(self.list_store.conn_str)
        self.list_cc = self.list_svc.get_container_client(LIST_CONTAINER)
        self.pool = ThreadPoolExecutor(self.threads)

    def teardown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.svc.close()
        self.list_svc.close()

    def _get(self, name: str, offset: int | None = None, length: int | None = None) -> bytes:
        return self.cc.get_blob_client(name).download_blob(offset=offset, length=length).readall()

    def workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        return [
            ("seq_cold_mbps", self.seq),
            ("small_files_per_s", self.small),
            *self.shuffle_workloads(lambda order, _cold: self.small(order)),
            ("list_cold_s", self.listing),
            ("list_warm_s", self.listing),
            ("pread_per_s", self.pread),
            ("pread8_per_s", self.pread8),
        ]

    def seq(self) -> Figure:
        size = self.ds.scale.big_size
        ranges = [(o, min(BLOCK, size - o)) for o in range(0, size, BLOCK)]
        first = b""

        def run() -> int:
            nonlocal first
            total = 0
            for i, data in enumerate(
                window_map(self.pool, lambda r: self._get(SEQ_BLOB, *r), ranges, self.threads)
            ):
                if i == 0:
                    first = data[:MiB]
                total += len(data)
            return total

        with CpuMeter([os.getpid()]) as cpu:  # this process is the client
            secs, total = timed(run)
        check(total == size, f"read {total} bytes, expected {size}")
        check(first == self.ds.big_range(1, 0, MiB), "wrong bytes at the start of the blob")
        return Figure(size / secs / MB, extra=cpu.per_gib(size))

    def small(self, order: list[int] | None = None) -> Figure:
        items = list(range(self.ds.scale.n_small)) if order is None else order
        fn = lambda i: self._get(self.ds.small_name(i))  # noqa: E731
        return self.small_figure(run_batch(fn, items, self.threads, self.ctx.cap_s))

    def listing(self) -> float:
        prefix = TINY_DIR + "/"
        secs, n = timed(lambda: sum(1 for _ in self.list_cc.list_blobs(name_starts_with=prefix)))
        check(n == self.n_tiny, f"listed {n} blobs, expected {self.n_tiny}")
        return secs

    def _preads(self, offs: list[int], in_flight: int) -> Figure:
        size = self.ds.scale.pread_size
        fn = lambda o: self._get(RAND_BLOB, o, size)  # noqa: E731
        return self.pread_figure(run_batch(fn, offs, in_flight, self.ctx.cap_s))

    def pread(self) -> Figure:
        return self._preads(self.ctx.offsets1, 1)

    def pread8(self) -> Figure:
        return self._preads(self.ctx.offsets8, self.threads)

    def write_rows(self) -> dict[str, Any]:
        cc = wr.container_client(self.write_store.conn_str)
        return {**row_cells(wr.SEQ_KEYS, lambda: wr.sdk_seq(cc, self.write_src)),
                **row_cells(wr.TAR_KEYS, lambda: wr.sdk_tar(cc, self.write_src))}  # fmt: skip


class SdkAioClient(Client):
    """azure.storage.blob.aio (aiohttp) with a fixed number of requests in flight."""

    name = "sdk-aio"
    seq_in_flight = 16
    in_flight = 8
    shuffle_rows = True

    def workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        return [
            ("seq_cold_mbps", lambda: self._run(self.seq)),
            ("small_files_per_s", lambda: self._run(self.small)),
            *self.shuffle_workloads(lambda order, _cold: self._run(self.small, order)),
            ("list_cold_s", lambda: self._run(self.listing, for_listing=True)),
            ("list_warm_s", lambda: self._run(self.listing, for_listing=True)),
            ("pread_per_s", lambda: self._run(self.pread, 1, self.ctx.offsets1)),
            ("pread8_per_s", lambda: self._run(self.pread, self.in_flight, self.ctx.offsets8)),
        ]

    def _run(
        self, coro_fn: Callable[..., Any], *args: Any, for_listing: bool = False
    ) -> float | Figure:
        from azure.storage.blob.aio import BlobServiceClient as AioService

        store = self.list_store if for_listing else self.data_store

        async def main() -> float | Figure:
            # A new client per workload: each event loop needs its own aiohttp session.
            async with AioService.from_connection_string(store.conn_str) as svc:
                cc = svc.get_container_client(store.container)
                # One warm-up call so connection setup is not billed to the workload.
                await cc.get_container_properties()
                return await coro_fn(cc, *args)

        return asyncio.run(main())

    @staticmethod
    async def _get(cc: Any, name: str, offset: int | None = None, length: int | None = None):
        stream = await cc.get_blob_client(name).download_blob(offset=offset, length=length)
        return await stream.readall()

    async def seq(self, cc: Any) -> Figure:
        size = self.ds.scale.big_size
        sem = asyncio.Semaphore(self.seq_in_flight)
        first = b""

        async def one(o: int) -> int:
            nonlocal first
            async with sem:
                data = await self._get(cc, SEQ_BLOB, o, min(BLOCK, size - o))
            if o == 0:
                first = data[:MiB]
            return len(data)

        with CpuMeter([os.getpid()]) as cpu:  # this process is the client
            t0 = time.perf_counter()
            total = sum(await asyncio.gather(*(one(o) for o in range(0, size, BLOCK))))
            secs = time.perf_counter() - t0
        check(total == size, f"read {total} bytes, expected {size}")
        check(first == self.ds.big_range(1, 0, MiB), "wrong bytes at the start of the blob")
        return Figure(size / secs / MB, extra=cpu.per_gib(size))

    async def small(self, cc: Any, order: list[int] | None = None) -> Figure:
        async def one(i: int) -> bytes:
            return await self._get(cc, self.ds.small_name(i))

        items = list(range(self.ds.scale.n_small)) if order is None else order
        return self.small_figure(await run_batch_async(one, items, self.in_flight, self.ctx.cap_s))

    async def listing(self, cc: Any) -> float:
        t0 = time.perf_counter()
        n = 0
        async for _ in cc.list_blobs(name_starts_with=TINY_DIR + "/"):
            n += 1
        secs = time.perf_counter() - t0
        check(n == self.n_tiny, f"listed {n} blobs, expected {self.n_tiny}")
        return secs

    async def pread(self, cc: Any, in_flight: int, offs: list[int]) -> Figure:
        size = self.ds.scale.pread_size

        async def one(o: int) -> bytes:
            return await self._get(cc, RAND_BLOB, o, size)

        return self.pread_figure(await run_batch_async(one, offs, in_flight, self.ctx.cap_s))

    def write_rows(self) -> dict[str, Any]:
        store = self.write_store
        cc = wr.container_client(store.conn_str)
        return row_cells(wr.SEQ_KEYS,
                         lambda: asyncio.run(wr.sdk_aio_seq(store.conn_str, cc, self.write_src)))


class AdlfsClient(Client):
    """adlfs (fsspec AzureBlobFileSystem): cat_file for whole and ranged reads."""

    name = "adlfs"
    threads = 8

    def setup(self) -> None:
        from adlfs import AzureBlobFileSystem

        # skip_instance_cache: a fresh instance, so no listing cached by an earlier use.
        self.fs = AzureBlobFileSystem(
            connection_string=self.data_store.conn_str, max_concurrency=8, skip_instance_cache=True
        )
        self.list_fs = AzureBlobFileSystem(
            connection_string=self.list_store.conn_str, skip_instance_cache=True
        )

    def workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        return [
            ("seq_cold_mbps", self.seq),
            ("small_files_per_s", self.small),
            ("list_cold_s", self.list_cold),
            ("list_warm_s", self.listing),
            ("pread_per_s", self.pread),
            ("pread8_per_s", self.pread8),
        ]

    def _p(self, name: str) -> str:
        return f"{CONTAINER}/{name}"

    def seq(self) -> Figure:
        size = self.ds.scale.big_size
        with CpuMeter([os.getpid()]) as cpu:  # this process is the client
            secs, data = timed(lambda: self.fs.cat_file(self._p(SEQ_BLOB)))
        check(len(data) == size, f"read {len(data)} bytes, expected {size}")
        check(data[:MiB] == self.ds.big_range(1, 0, MiB), "wrong bytes at the start of the blob")
        return Figure(size / secs / MB, extra=cpu.per_gib(size))

    def small(self) -> Figure:
        items = list(range(self.ds.scale.n_small))
        fn = lambda i: self.fs.cat_file(self._p(self.ds.small_name(i)))  # noqa: E731
        return self.small_figure(run_batch(fn, items, self.threads, self.ctx.cap_s))

    def list_cold(self) -> float:
        self.list_fs.invalidate_cache()
        return self.listing()

    def listing(self) -> float:
        # The warm call may be answered from fsspec's listings cache: that is adlfs' warm path.
        path = f"{LIST_CONTAINER}/{TINY_DIR}"
        secs, names = timed(lambda: self.list_fs.ls(path, detail=False))
        check(len(names) == self.n_tiny, f"listed {len(names)} entries")
        return secs

    def _preads(self, offs: list[int], in_flight: int) -> Figure:
        size, path = self.ds.scale.pread_size, self._p(RAND_BLOB)
        fn = lambda o: self.fs.cat_file(path, o, o + size)  # noqa: E731
        return self.pread_figure(run_batch(fn, offs, in_flight, self.ctx.cap_s))

    def pread(self) -> Figure:
        return self._preads(self.ctx.offsets1, 1)

    def pread8(self) -> Figure:
        return self._preads(self.ctx.offsets8, self.threads)


class MountClient(Client):
    """A FUSE mount read through the filesystem; subclasses start and stop the daemon."""

    threads = 8

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
        ]

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


def tail(path: Path, n: int = 6) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:])


class RcloneClient(MountClient):
    """`rclone mount` with the azureblob backend, configured only through environment vars.

    Two rclone processes: one mounts the data container, one the listing container (they live
    in different Azurite instances, see `main`); the RSS figure is their sum.
    """

    name = "rclone-off"
    cache_mode = "off"
    shuffle_rows = True

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
            return {**row_cells(wr.SEQ_KEYS, lambda: wr.mount_seq(root, cc, src, pending)),
                    **row_cells(wr.TAR_KEYS, lambda: wr.mount_tar(root, cc, src, pending))}
        finally:
            self.teardown()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def row_cells(keys: tuple[str, ...], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One write row's cells, or its error in each of them (the run goes on)."""
    try:
        cells = fn()
        log(", ".join(f"{k} = {cells[k]:.3f}" for k in keys))
        return cells
    except Exception as exc:
        log(f"{keys[0]} error: {short_error(exc)}")
        return dict.fromkeys(keys, {"error": short_error(exc)})


class DsmountClient(MountClient):
    """dsmount's daemon in the foreground, with both containers attached via `attach --blob`,
    the data container once more as `benchshuf` (row 7), and the packed version attached from
    the benchmark's registry with `attach benchver --version N` (rows 4 and 8).

    Subclasses change only what is attached (`attachments`, `secret_env`, `root`, `list_root`);
    the daemon, the workloads and the measurements are shared.
    """

    name = "dsmount"
    measure_stream_rss = True  # run_client's dedicated streaming run (`stream_peak_rss`)
    measure_million = True  # run_client's dedicated 1M-file version run (`million_row`)
    shuffle_rows = True
    packed_rows = True  # rows 4 (version listing) and 8 (packed epochs)
    measure_writes = True  # rows 12-14 (`write_rows`), in dedicated daemons
    DATA_ENV = "DSMOUNT_BENCH_DATA_CONNECTION_STRING"
    LIST_ENV = "DSMOUNT_BENCH_LIST_CONNECTION_STRING"
    WRITE_ENV = "DSMOUNT_BENCH_WRITE_CONNECTION_STRING"
    # Writes are opt-in per node: a writable mount drops the kernel's `ro`, which slows the
    # read rows, so only the write rows' own daemons enable them.
    WRITE_CONFIG = "[writes]\nenabled = true\n"

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
    def version_root(self) -> Path:
        check(self.ctx.packed_version is not None, f"no packed version: {self.ctx.packed_error}")
        return self.mountpoint / VER_DATASTORE / str(self.ctx.packed_version)

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dsmount", "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=REPO_ROOT,
            check=False,
        )

    def setup(self) -> None:
        self.start(self.dir, self.attachments())

    def start(self, run_dir: Path, attachments: list[tuple[str, list[str]]],
              config_text: str = "", secrets: dict[str, str] | None = None) -> None:
        """Start a daemon with its own socket, state and config (`config_text`, default
        empty); run each attachment (`dsmount attach ARGS...`, then wait for MOUNTPOINT/PATH)
        with `secrets` (default `secret_env()`) in the environment."""
        run_dir.mkdir(parents=True, exist_ok=True)
        self.mountpoint = run_dir / "mnt"
        self.mountpoint.mkdir(exist_ok=True)
        self.socket = run_dir / "control.sock"
        config = run_dir / "dsmount.toml"
        config.write_text(config_text or "# empty: defaults plus command-line flags only\n")
        self.env = dict(os.environ)
        self.env.update(self.secret_env() if secrets is None else secrets)
        self.env.pop("DSMOUNT_SOCKET", None)
        self.env.pop("DSMOUNT_CONFIG", None)
        if self.ctx.registry_dir is not None:  # where `attach NAME --version N` looks NAME up
            self.env["DSMOUNT_REGISTRY"] = str(self.ctx.registry_dir)
        log_path = run_dir / "daemon.log"
        cmd = [
            sys.executable, "-m", "dsmount", "--socket", str(self.socket),
            "daemon", "--foreground", "--mountpoint", str(self.mountpoint),
            "--cache-budget", self.ctx.cache_budget, "--config", str(config),
            "--state-dir", str(run_dir / "state"),
        ]  # fmt: skip
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                cmd, env=self.env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        mountpoint = self.mountpoint
        self._releases.append(
            on_exit(lambda: self._release_mount(proc, mountpoint, sigterm_first=True))
        )
        self.cpu_pids = [proc.pid]
        self.start_rss([proc.pid])
        deadline = time.monotonic() + MOUNT_WAIT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode}: {tail(log_path)}")
            if self.socket.exists() and self.cli("ping", timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon not answering ping: {tail(log_path)}")
            time.sleep(0.1)
        self._wait_mounted(proc, self.mountpoint, log_path)
        for rel, attach_args in attachments:
            res = self.cli("attach", *attach_args, timeout=120)
            check(
                res.returncode == 0,
                f"attach {rel} failed ({res.returncode}): "
                f"{(res.stderr or res.stdout).strip()[-400:]}",
            )
            while not (self.mountpoint / rel).is_dir():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.mountpoint / rel} did not appear after attach")
                time.sleep(0.05)

    def secret_env(self) -> dict[str, str]:
        """Environment variables holding the credentials `attachments` refers to."""
        return {self.DATA_ENV: self.data_store.conn_str, self.LIST_ENV: self.list_store.conn_str}

    def blob_attachment(self, name: str, store: Store, env_var: str) -> tuple[str, list[str]]:
        return name, [name, "--blob", "--container", store.container, "--endpoint",
                      store.endpoint, "--connection-string-env", env_var]  # fmt: skip

    def attachments(self) -> list[tuple[str, list[str]]]:
        """(path below the mountpoint, `attach` arguments) for each datastore to attach."""
        out = [
            self.blob_attachment(DATASTORE, self.data_store, self.DATA_ENV),
            self.blob_attachment(LIST_DATASTORE, self.list_store, self.LIST_ENV),
            self.blob_attachment(SHUF_DATASTORE, self.data_store, self.DATA_ENV),
        ]
        number = self.ctx.packed_version
        if number is not None:  # else rows 4 (version) and 8 say why there is no version
            out.append((f"{VER_DATASTORE}/{number}", [VER_DATASTORE, "--version", str(number)]))
        return out

    def workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        rows = super().workloads()
        if self.packed_rows:  # the version is attached but unread: its first listing is cold
            listing = ("ver_list_cold_s", self.version_listing), ("ver_list_warm_s",
                                                                  self.version_listing)
            rows = [*listing, *rows]
        return rows

    def more_workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        if not self.packed_rows:
            return []
        return [
            ("packed_cold_per_s",
             lambda: self.read_files(self.version_root, self.ctx.shuffle1, cold=True)),
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
        from dsmount.control.client import ControlClient

        return ControlClient(str(self.socket), timeout=30).call("status")

    def daemon_counter(self, key: str) -> int:
        """`key` (e.g. backend_requests) summed over the attached datastores."""
        return sum(int(d.get(key) or 0) for d in self.daemon_status()["datastores"])

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

    # --- dedicated daemons ---------------------------------------------------------------------

    def write_daemon(self, tag: str) -> Path:
        """A daemon with writes enabled and the write container attached `--read-write`;
        returns the datastore's root in the mount."""
        store = self.write_store
        name, args = self.blob_attachment(wr.WRITE_CONTAINER, store, self.WRITE_ENV)
        self.start(self.ctx.workdir / f"dsmount-{tag}", [(name, [*args, "--read-write"])],
                   config_text=self.WRITE_CONFIG, secrets={self.WRITE_ENV: store.conn_str})
        return self.mountpoint / name

    def write_rows(self) -> dict[str, Any]:
        """Rows 12-13 in one daemon, row 14 in a fresh one (its VmHWM is that row's peak)."""
        if not self.measure_writes:
            return {}
        cc = wr.container_client(self.write_store.conn_str)
        src = self.write_src
        cells: dict[str, Any] = {}
        try:
            root = self.write_daemon("writes")
            cells.update(row_cells(wr.SEQ_KEYS, lambda: wr.mount_seq(root, cc, src)))
            cells.update(row_cells(wr.TAR_KEYS, lambda: wr.mount_tar(root, cc, src)))
            cells["write_daemon_status"] = self.daemon_status()
        except Exception as exc:  # the daemon did not start: every row says why
            err = {"error": "setup: " + short_error(exc)}
            cells.update({k: err for k in (*wr.SEQ_KEYS, *wr.TAR_KEYS) if k not in cells})
        finally:
            self.teardown()
        try:
            root = self.write_daemon("writers")
            pid = self.cpu_pids[0]
            cells.update(row_cells(wr.W16_KEYS, lambda: wr.parallel_writers(root, cc, src, pid)))
            cells["writers_daemon_status"] = self.daemon_status()
        except Exception as exc:
            cells.update(dict.fromkeys(wr.W16_KEYS, {"error": "setup: " + short_error(exc)}))
        finally:
            self.teardown()
        return cells

    def stream_peak_rss(self) -> float:
        """A dedicated daemon: peak RSS while reading both big blobs (2 GiB at full scale)."""
        data = self.blob_attachment(DATASTORE, self.data_store, self.DATA_ENV)
        self.start(self.ctx.workdir / "dsmount-stream", [data])
        try:
            self.ctx.dropper.drop()
            for name in (SEQ_BLOB, RAND_BLOB):
                self.dd(self.root / name)
            return self.peak_rss_mib()
        finally:
            self.teardown()

    def million_row(self) -> dict[str, Any]:
        """A dedicated daemon, through the fault proxy: attach the 1,000,000-file version and
        list its root (timed together), then `find | wc -l` it; its peak RSS and the LIST calls
        the proxy forwarded from the attach to the end of the walk.

        The attach is what `dsmount attach benchmil --version N` does, split so the proxy's
        counts are the daemon's alone: the version is resolved here (a LIST of `_versions/` and
        a GET of N.json, timed as part of the attach), then the daemon is asked over its socket.
        """
        from dsmount.control.client import ControlClient
        from dsmount.workspace.registry import Registry
        from dsmount.workspace.versions import attach_spec_for

        ctx = self.ctx
        check(ctx.million_version is not None, f"no 1M-file version: {ctx.million_error}")
        check(ctx.proxy is not None and ctx.registry_dir is not None, "no fault proxy")
        assert ctx.proxy is not None and ctx.registry_dir is not None
        number = str(ctx.million_version)
        self.start(ctx.workdir / "dsmount-million", [])
        try:
            root = self.mountpoint / MIL_DATASTORE / number
            ctx.dropper.drop()
            t0 = time.perf_counter()
            spec = attach_spec_for(MIL_DATASTORE, number, registry=Registry(ctx.registry_dir))
            resolve_s = time.perf_counter() - t0
            before = ctx.proxy.forwarded()
            ControlClient(str(self.socket), timeout=120).call("attach", name=MIL_DATASTORE, **spec)
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


class FsSdkAioClient(SdkAioClient):
    """azure.storage.fileshare.aio on the emulator: `sdk-aio`'s workloads on the share.

    8 ranged GETs of 8 MiB in flight for the sequential read (the emulator is one Python
    process: more in flight only queues there).
    """

    name = "fs-sdk-aio"
    seq_in_flight = 8
    shuffle_rows = False  # row 7 is the comparison for packed blob versions (row 8)

    @property
    def n_tiny(self) -> int:
        return self.share_store.n_tiny

    def _run(
        self, coro_fn: Callable[..., Any], *args: Any, for_listing: bool = False
    ) -> float | Figure:
        from azure.storage.fileshare.aio import ShareServiceClient

        store = self.share_store  # one share holds everything, tiny dir included

        async def main() -> float | Figure:
            async with ShareServiceClient.from_connection_string(store.conn_str) as svc:
                share = svc.get_share_client(store.share)
                await share.get_share_properties()  # warm-up, as in `sdk-aio`
                return await coro_fn(share, *args)

        return asyncio.run(main())

    @staticmethod
    async def _get(share: Any, name: str, offset: int | None = None, length: int | None = None):
        # 8 MiB and smaller ranges stay under the SDK's single-GET size: one request each.
        stream = await share.get_file_client(name).download_file(offset=offset, length=length)
        return await stream.readall()

    async def listing(self, share: Any) -> float:
        t0 = time.perf_counter()
        n = 0
        async for _ in share.get_directory_client(TINY_DIR).list_directories_and_files():
            n += 1
        secs = time.perf_counter() - t0
        check(n == self.n_tiny, f"listed {n} entries, expected {self.n_tiny}")
        return secs


class DsmountFsClient(DsmountClient):
    """The `dsmount` client with the emulator's share attached via `attach --fileshare`."""

    name = "dsmount-fs"
    measure_stream_rss = False  # the blob column measures it; the budget logic is shared
    measure_million = False  # versions live in blob containers here
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


CLIENT_CLASSES: dict[str, type[Client]] = {
    "sdk-sync": SdkSyncClient,
    "sdk-aio": SdkAioClient,
    "adlfs": AdlfsClient,
    "rclone-off": RcloneClient,
    "rclone-full": RcloneFullClient,
    RCLONE_WRITES: RcloneWritesClient,
    "dsmount": DsmountClient,
    "fs-sdk-aio": FsSdkAioClient,
    "dsmount-fs": DsmountFsClient,
}


# --- the run -------------------------------------------------------------------------------


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


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def counted_requests(client: Client) -> int | None:
    """`client.request_count()`, or None (logged) if counting fails: row 10 is then n/a."""
    try:
        return client.request_count()
    except Exception as exc:
        log(f"{client.name}: counting requests failed: {short_error(exc)}")
        return None


def run_million(client: Client, ctx: Context) -> bool:
    return (isinstance(client, DsmountClient) and client.measure_million
            and (ctx.million_version is not None or ctx.million_error is not None))  # fmt: skip


def run_client(name: str, ctx: Context) -> dict[str, Any]:
    """Run every workload of one client (read rows, then write rows); errors land in the
    cells, never escape."""
    client = CLIENT_CLASSES[name](ctx)
    cells = run_read_rows(client, ctx) if client.read_rows and not ctx.writes_only else {}
    if ctx.write is not None and name in WRITERS:
        log(f"{name}: write rows")
        try:
            cells.update(client.write_rows())
        except Exception as exc:  # write_rows catches per row; this is its own setup failing
            cells["write_rows_error"] = short_error(exc)
            log(f"{name}: write rows error: {cells['write_rows_error']}")
    return cells


def run_read_rows(client: Client, ctx: Context) -> dict[str, Any]:
    """Rows 1-11 of one client."""
    name = client.name
    cells: dict[str, Any] = {}
    if ctx.million_only:
        return million_cells(client, ctx, cells) if run_million(client, ctx) else cells
    log(f"{name}: setup")
    try:
        client.setup()
    except Exception as exc:
        err = {"error": "setup: " + short_error(exc)}
        log(f"{name}: {err['error']}")
        client_teardown(client, cells)
        keys = [k for k, _ in client.workloads()]
        if isinstance(client, MountClient):
            keys.append("peak_rss_mib")
        if isinstance(client, DsmountClient) and client.measure_stream_rss:
            keys.append("stream_peak_rss_mib")
        if run_million(client, ctx):
            keys += MILLION_KEYS
        return dict.fromkeys(keys, err)
    try:
        for key, fn in client.workloads():
            req_key = REQUEST_ROWS.get(key)
            before = counted_requests(client) if req_key else None
            try:
                fig = fn()
                if isinstance(fig, Figure):
                    cells[key] = fig.value
                    cells.update(fig.extra)
                    if fig.note:
                        cells.setdefault("notes", {})[key] = fig.note
                    if req_key and before is not None and fig.count:
                        after = counted_requests(client)
                        if after is not None:
                            cells[req_key] = (after - before) / fig.count
                else:
                    cells[key] = fig
                log(f"{name}: {key} = {cells[key]:.3f}")
            except Exception as exc:
                cells[key] = {"error": short_error(exc)}
                log(f"{name}: {key} error: {cells[key]['error']}")
        if isinstance(client, MountClient):
            try:
                cells["peak_rss_mib"] = client.peak_rss_mib()
            except Exception as exc:
                cells["peak_rss_mib"] = {"error": short_error(exc)}
        try:
            cells.update(client.extra_info())
        except Exception as exc:
            cells["extra_info_error"] = short_error(exc)
    finally:
        client_teardown(client, cells)
    if isinstance(client, DsmountClient) and client.measure_stream_rss:
        log(f"{name}: dedicated streaming run for peak RSS")
        try:
            cells["stream_peak_rss_mib"] = client.stream_peak_rss()
            log(f"{name}: stream_peak_rss_mib = {cells['stream_peak_rss_mib']:.1f}")
        except Exception as exc:
            cells["stream_peak_rss_mib"] = {"error": short_error(exc)}
            log(f"{name}: stream_peak_rss_mib error: {cells['stream_peak_rss_mib']['error']}")
    if run_million(client, ctx):
        million_cells(client, ctx, cells)
    return cells


def million_cells(client: Client, ctx: Context, cells: dict[str, Any]) -> dict[str, Any]:
    """Row 11 (a dedicated daemon) into `cells`; an error lands in its cells."""
    assert isinstance(client, DsmountClient)
    log(f"{client.name}: dedicated run for the 1M-file version")
    try:
        cells.update(client.million_row())
        log(f"{client.name}: " + ", ".join(f"{k} = {cells[k]:.3f}" for k in MILLION_KEYS))
    except Exception as exc:
        err = {"error": short_error(exc)}
        cells.update(dict.fromkeys(MILLION_KEYS, err))
        log(f"{client.name}: 1M-file version error: {err['error']}")
    return cells


def prepare_versions(ctx: Context, direct: Store, million: bool, notes: list[str]) -> None:
    """Make the packed version (rows 4 and 8) and, with `million`, the 1M-file version (row
    11). They are made through a registry whose endpoints are direct (uploads never go through
    the proxy); the daemons look them up in `ctx.registry_dir`, whose endpoints are the
    clients' (the proxy's with --latency; row 11's always). A failure leaves the run going:
    the rows that need the version say why."""
    upload_registry = ctx.workdir / "registry-upload"
    ctx.registry_dir = ctx.workdir / "registry"
    assert ctx.data is not None
    try:
        register_blob(upload_registry, VER_DATASTORE, direct, VER_CONTAINER)
        register_blob(ctx.registry_dir, VER_DATASTORE, ctx.data, VER_CONTAINER)
        secs, number = timed(lambda: make_packed_version(upload_registry, ctx.ds, ctx.workdir))
        ctx.packed_version, ctx.packed_error = number, None
        log(f"packed version {VER_DATASTORE}/{number} made in {secs:.1f}s")
        notes.append(f"packed version (create_version of the small and tiny files): {secs:.1f} s")
    except Exception as exc:
        ctx.packed_error = short_error(exc)
        log(f"packed version not made: {ctx.packed_error}")
    if not million:
        return
    try:
        check(ctx.proxy is not None, "no fault proxy to count LIST calls at")
        assert ctx.proxy is not None
        register_blob(upload_registry, MIL_DATASTORE, direct, MIL_CONTAINER)
        register_blob(ctx.registry_dir, MIL_DATASTORE, ctx.proxy.store(direct), MIL_CONTAINER)
        secs, number = timed(
            lambda: make_million_version(upload_registry, ctx.ds, ctx.workdir, ctx.million_dirs)
        )
        ctx.million_version = number
        log(f"1M-file version {MIL_DATASTORE}/{number} synthesised in {secs:.1f}s")
        notes.append(f"1M-file version synthesised (manifest written and uploaded): {secs:.1f} s")
    except Exception as exc:
        ctx.million_error = short_error(exc)
        log(f"1M-file version not made: {ctx.million_error}")


def method_notes(ctx: Context, results: Results) -> list[str]:
    """How the new rows were measured, for the reader of the table."""
    notes = []
    if any(c in results for c in ("dsmount", "dsmount-fs")):
        notes.append(f"dsmount daemons run with --cache-budget {ctx.cache_budget}")
    if ctx.writes_only:  # the read rows' notes below describe rows that did not run
        return notes + write_notes(ctx)
    notes += [
        "row 9: CPU-seconds (user + system, psutil) per GiB over the timed cold sequential "
        "read; 'all counted': direct clients = this benchmark process (the client runs in it), "
        "rclone = the rclone process serving the data container + the `dd` reading the mount, "
        "dsmount = the daemon + `dd`; 'client/daemon only' leaves `dd` out",
        "rows 7-8: the same two seeded shuffles of the small files for every system, 8 "
        "threads; cold = page cache dropped first, the second epoch is the other shuffle with "
        "nothing dropped; dsmount's row 7 reads a second attachment of the data container "
        f"({SHUF_DATASTORE}: its own cache keys) so it is as cold as everyone's; adlfs and "
        "rclone-full (its disk cache holds the files since row 3) do not run row 7",
    ]
    if ctx.proxied:
        notes.append("row 10: requests forwarded to the stores, counted at the fault proxy, "
                     "per file read (every system alike)")  # fmt: skip
    else:
        notes.append("row 10: the daemon's own backend_requests counters (`status`), dsmount "
                     "only: without --latency no proxy counts the other systems")  # fmt: skip
    return version_notes(ctx, notes) + write_notes(ctx)


def write_notes(ctx: Context) -> list[str]:
    notes = []
    if ctx.write is not None:
        notes.append(
            "rows 12-14: an Azurite of their own, every system into an empty container; the "
            "source in /dev/shm; 'until durable' = until a check of the store (started once "
            "the mount reports nothing pending: rclone's rc vfs/stats; dsmount commits at "
            "close) finds every object whole; every object is then read back with the SDK and "
            "compared with its source; rclone-writes runs --vfs-write-back 0s, --transfers 4; "
            "dsmount's write rows run in dedicated daemons with [writes] enabled (row 14 in a "
            "fresh one, so its VmHWM is that row's peak)"
        )
    return notes


def version_notes(ctx: Context, notes: list[str]) -> list[str]:
    if ctx.packed_error and ctx.registry_dir is not None:
        notes.append(f"no packed version: {ctx.packed_error}")
    if ctx.million_version is not None or ctx.million_error is not None:
        notes.append(
            f"row 11: {ctx.million_dirs:,} dirs x {MIL_FILES:,} files of {MIL_SIZE // KiB} KiB in "
            f"{MIL_PACKS} packs, a dedicated daemon behind the fault proxy; attach = resolving "
            "the version in this process (what `dsmount attach NAME --version N` does before "
            "it calls the daemon) + the daemon's attach + listing the root; LIST calls are "
            "those the proxy forwarded from the daemon's attach to the end of `find`; RSS is "
            "that daemon's peak over its whole life"
        )
    return notes


def wait_quiet(pids: list[int | None], busy_pct: float = 10.0, max_wait_s: float = 30.0) -> None:
    """Wait (bounded) until the Azurites are idle, so post-upload garbage collection or the
    previous client's tail is not billed to the next client."""
    import psutil

    procs = []
    for pid in pids:
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
    deadline = time.monotonic() + max_wait_s
    with contextlib.suppress(psutil.Error):
        for proc in procs:
            proc.cpu_percent(None)  # starts the measuring interval
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if all(proc.cpu_percent(None) < busy_pct for proc in procs):
                return


def client_teardown(client: Client, cells: dict[str, Any]) -> None:
    try:
        client.teardown()
    except Exception as exc:
        cells["teardown_error"] = short_error(exc)
        log(f"{client.name}: teardown error: {cells['teardown_error']}")


def container_sas_url(
    endpoint: str, container: str, account: str, key: str, writable: bool = False
) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    w = writable  # the write rows' rclone mount creates, writes and deletes
    token = generate_container_sas(
        account,
        container,
        account_key=key,
        permission=ContainerSasPermissions(read=True, list=True, write=w, create=w, add=w,
                                           delete=w),  # fmt: skip
        expiry=datetime.now(UTC) + timedelta(hours=6),
    )
    return f"{endpoint}/{container}?{token}"


def start_store(workdir: Path, container: str, writable: bool = False) -> Store:
    """Start one in-memory Azurite (released on any exit) for `container`.

    Two instances, not one: Azurite's in-memory metadata store (LokiJS) finds a blob by
    scanning every blob of the account, so each request costs O(blobs). With all 25,000 blobs
    in one instance, every GET took ~30 ms and uploading took ~9 minutes: the figures measured
    Azurite, not the clients. The 20,000 tiny blobs (used only for listing) get their own, and
    so do the write rows (`writable`: its SAS URL lets rclone write).
    """
    Azurite = import_azurite()
    azurite = Azurite(workdir, in_memory=True)
    on_exit(azurite.stop)  # registered after the workdir's removal: runs before it
    azurite.start()
    log(f"Azurite for {container} on {azurite.blob_endpoint} (pid {azurite.pid})")
    sas = container_sas_url(azurite.blob_endpoint, container, Azurite.ACCOUNT, Azurite.KEY,
                            writable)
    return Store(azurite.connection_string, azurite.blob_endpoint, container, sas, azurite.pid)


def import_azurite() -> type:
    """tests.support.azurite.Azurite, waiting for the module if it is still being written."""
    path = REPO_ROOT / "tests" / "support" / "azurite.py"
    deadline = time.monotonic() + AZURITE_WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} not found")
        log(f"waiting for {path} to exist")
        time.sleep(5)
    from tests.support.azurite import Azurite

    return Azurite


# --- report --------------------------------------------------------------------------------


def value(results: Results, client: str, key: str) -> float | None:
    v = results.get(client, {}).get(key)
    return v if isinstance(v, int | float) else None


def fmt_cell(v: Any, unit: str) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, dict):
        return "error: " + v["error"].replace("|", "\\|")[:120]
    if unit == "s":
        return f"{v:.3f}"
    if unit in ("req/file", "x", "CPU-s"):
        return f"{v:.2f}"
    return f"{v:,.0f}" if v >= 100 or unit == "calls" else f"{v:.1f}"


def best(results: Results, clients: tuple[str, ...], key: str, lower: bool = False):
    vals = [(value(results, c, key), c) for c in clients]
    vals = [(v, c) for v, c in vals if v is not None]
    if not vals:
        return None, None
    return (min if lower else max)(vals)


@dataclass
class Ratio:
    label: str
    measured: float | None
    target: str
    met: bool | None
    detail: str
    group: str = "issue 11"  # whose target: issue 11's, or an earlier issue's still in force


RSS_400MB_MIB = 400 * MB / MiB  # issue 11 states the 1M-file version's RSS in MB


def ratios(results: Results, budget_mib: float, reads: bool = True) -> list[Ratio]:
    out: list[Ratio] = []
    dsm = "dsmount"

    def rel(
        label: str,
        key: str,
        others: tuple[str, ...],
        op: str,
        target: float | None,
        lower: bool,
        me: str = dsm,
        other_key: str | None = None,
        group: str = "issue 11",
    ) -> None:
        """Ratio of `me`'s `key` to the best of `others`' `other_key` (default: `key`);
        `target` None: reported, no target."""
        goal = "reported" if target is None else f"{op} {target}x"
        mine = value(results, me, key)
        other, who = best(results, others, other_key or key, lower=lower)
        if mine is None or other is None or other == 0:
            out.append(Ratio(label, None, goal, None, "missing figure", group))
            return
        r = mine / other
        met = None if target is None else (r >= target if op == ">=" else r <= target)
        out.append(Ratio(label, r, goal, met, f"{mine:.3f} vs {who} {other:.3f}", group))

    def absolute(label: str, key: str, limit: float, unit: str, group: str = "issue 11") -> None:
        mine = value(results, dsm, key)
        goal = f"<= {limit:g} {unit}"
        if mine is None:
            out.append(Ratio(label, None, goal, None, "missing figure", group))
        else:
            out.append(Ratio(label, mine, goal, mine <= limit, f"{unit}", group))

    # A file-share-only run has no blob figures; a --writes-only run has no read figures.
    if reads and any(c not in FILESHARE for c in results):
        direct, off = DIRECT, ("rclone-off",)
        rel("small files vs best direct SDK", "small_files_per_s", direct, ">=", 1.0, False)
        rel("small files vs rclone-off", "small_files_per_s", off, ">=", 1.5, False)
        rel("packed shuffled cold epoch vs rclone-off shuffled", "packed_cold_per_s", off,
            ">=", 5.0, False, other_key="shuffle_cold_per_s")  # fmt: skip
        rel("packed shuffled cold epoch vs best direct per-file GETs", "packed_cold_per_s",
            direct, ">=", 3.0, False, other_key="shuffle_cold_per_s")  # fmt: skip
        rel("packed second epoch vs rclone-off second epoch", "packed_warm_per_s", off, "",
            None, False, other_key="shuffle_warm_per_s")  # fmt: skip
        rel("unpacked shuffled cold epoch vs rclone-off", "shuffle_cold_per_s", off, "", None,
            False)  # fmt: skip
        rel("random 64 KiB preads vs best direct ranged GET (1 in flight)", "pread_per_s",
            direct, ">=", 1.0, False)  # fmt: skip
        absolute("random 64 KiB preads: bytes fetched / bytes read", "pread_fetch_ratio", 2.0,
                 "x")  # fmt: skip
        rel("listing a version cold: time vs best rclone (plain container)", "ver_list_cold_s",
            RCLONE, "<=", 0.1, True, other_key="list_cold_s")  # fmt: skip
        rel("listing a plain container cold: time vs best rclone", "list_cold_s", RCLONE, "<=",
            0.75, True)  # fmt: skip
        absolute("listing warm, plain container", "list_warm_s", 0.05, "s")
        absolute("listing warm, version", "ver_list_warm_s", 0.05, "s")
        absolute("1M-file version: attach + first ls", "million_attach_s", 3.0, "s")
        absolute("1M-file version: find | wc -l", "million_find_s", 60.0, "s")
        absolute("1M-file version: daemon peak RSS (400 MB)", "million_rss_mib",
                 round(RSS_400MB_MIB, 1), "MiB")  # fmt: skip
        absolute("1M-file version: LIST calls", "million_lists", 0, "calls")
        rel("cold sequential vs direct asyncio SDK", "seq_cold_mbps", ("sdk-aio",), ">=", 1.0,
            False)  # fmt: skip
        rel("daemon CPU per GiB vs the direct asyncio SDK's", "seq_proc_cpu_s_per_gib",
            ("sdk-aio",), "<=", 1.5, True)  # fmt: skip
        absolute("peak RSS streaming 2 blobs (budget + 100 MiB)", "stream_peak_rss_mib",
                 budget_mib + 100, "MiB")  # fmt: skip
        absolute("daemon peak RSS, whole run (budget + 100 MiB)", "peak_rss_mib",
                 budget_mib + 100, "MiB")  # fmt: skip
        # Earlier issues' targets that issue 11 does not restate.
        early = "earlier"
        rel("cold sequential vs best direct", "seq_cold_mbps", direct, ">=", 1.0, False,
            group=early)  # fmt: skip
        rel("cold sequential vs rclone-off", "seq_cold_mbps", off, ">=", 2.0, False,
            group=early)  # fmt: skip
        rel("warm re-read vs rclone-full warm", "seq_warm_mbps", ("rclone-full",), ">=", 10.0,
            False, group=early)  # fmt: skip
        rel("small files vs best rclone", "small_files_per_s", RCLONE, ">=", 2.0, False,
            group=early)  # fmt: skip
        rel("random 64 KiB preads vs rclone-off", "pread_per_s", off, ">=", 3.0, False,
            group=early)  # fmt: skip
    if any(value(results, c, k) is not None for c in WRITERS for k in wr.WRITE_WORKLOADS):
        # Issue 13: durable in the store is the fair clock (rclone uploads after close);
        # the close-returns ratios are reported beside it.
        i13, rw, sdks = "issue 13", (RCLONE_WRITES,), ("sdk-sync", "sdk-aio")
        rel("sequential write vs best direct SDK upload_blob(max_concurrency=8)", "wseq_mbps",
            sdks, ">=", 0.8, False, group=i13)  # fmt: skip
        rel("sequential write vs rclone writes-mode, both until durable", "wseq_mbps", rw,
            ">=", 1.5, False, group=i13)  # fmt: skip
        rel("sequential write vs rclone writes-mode, until close returns", "wseq_close_mbps",
            rw, "", None, False, group=i13)  # fmt: skip
        rel("tar x vs rclone writes-mode, both until durable", "wtar_per_s", rw, ">=", 1.5,
            False, group=i13)  # fmt: skip
        rel("tar x vs rclone writes-mode, until tar exits", "wtar_close_per_s", rw, "", None,
            False, group=i13)  # fmt: skip
        rel("tar x vs the SDK uploading the same files, 8 threads", "wtar_per_s",
            ("sdk-sync",), "", None, False, group=i13)  # fmt: skip
        absolute("parallel writers: daemon peak RSS (budget + 100 MiB; every sha256 checked)",
                 "w16_rss_mib", budget_mib + 100, "MiB", group=i13)  # fmt: skip
    if any(c in FILESHARE for c in results):
        # Issue 6: the file share is reported as a ratio against the direct SDK on the same
        # emulator; no target is set for it yet.
        for label, key, lower in (
            ("cold sequential", "seq_cold_mbps", False),
            ("small files", "small_files_per_s", False),
            ("listing cold: time", "list_cold_s", True),
            ("random 64 KiB reads, 1 in flight", "pread_per_s", False),
            ("random 64 KiB reads, 8 in flight", "pread8_per_s", False),
        ):
            rel(f"file share: dsmount-fs vs fs-sdk-aio, {label}", key, ("fs-sdk-aio",), "",
                None, lower, me="dsmount-fs", group="issue 6")  # fmt: skip
    return out


def md_escape(text: str) -> str:
    """A table cell's text: a `|` (as in `find | wc -l`) would end the cell."""
    return text.replace("|", "\\|")


def render_markdown(results: Results, meta: dict[str, Any], rs: list[Ratio]) -> str:
    clients = [c for c in CLIENTS if c in results]
    lines = [
        f"Scale: {meta['scale_desc']}. {meta['servers']}; {meta['network']}; {meta['machine']}.",
        "",
        "| workload | unit | " + " | ".join(clients) + " |",
        "|---|---|" + "---:|" * len(clients),
    ]
    for key, (label, unit) in WORKLOADS.items():
        if all(results[c].get(key) is None for c in clients):
            continue  # a row no selected client measures (e.g. row 11 without --million)
        cells = [
            fmt_cell(results[c].get(key), unit)
            + ("*" if key in results[c].get("notes", {}) else "")
            for c in clients
        ]
        lines.append(f"| {md_escape(label)} | {unit} | " + " | ".join(cells) + " |")
    lines += ["", "| dsmount target | measured | target | met? |", "|---|---:|---|---|"]
    for r in rs:
        measured = "n/a" if r.measured is None else f"{r.measured:.2f}"
        met = "n/a" if r.met is None else ("yes" if r.met else "**no**")
        label = md_escape(f"{r.group}: {r.label} ({r.detail})")
        lines.append(f"| {label} | {measured} | {r.target} | {met} |")
    if meta["notes"]:
        lines += ["", "Notes (* marks a figure with a note):", *(f"- {n}" for n in meta["notes"])]
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small dataset (2 x 128 MiB, ...)")
    p.add_argument("--only", default="", help=f"comma-separated clients, of: {','.join(CLIENTS)}")
    p.add_argument("--skip-rclone", action="store_true", help="leave out both rclone mounts")
    p.add_argument("--workdir", type=Path, help="where mounts, caches and logs go (default: tmp)")
    p.add_argument("--keep", action="store_true", help="keep the workdir (logs) afterwards")
    p.add_argument(
        "--fs-tiny",
        type=int,
        default=None,
        help="write at most this many tiny files to the share (default: the scale's count)",
    )
    p.add_argument("--markdown", type=Path, help="also write the markdown table to this file")
    p.add_argument("--json", type=Path, help="write raw figures as JSON to this file")
    p.add_argument(
        "--cap",
        type=float,
        default=20.0,
        help="seconds after which a count-based workload (small files, preads) stops issuing "
        "requests; its rate is taken over what ran (default 20)",
    )
    p.add_argument(
        "--latency",
        type=float,
        default=None,
        metavar="MS",
        help="put the fault proxy (own process) in front of every store for every system, "
        "holding each request MS milliseconds (0: proxy and request counts, no delay); "
        "default: clients talk to the stores directly (loopback)",
    )
    p.add_argument(
        "--million",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run row 11, the synthesised 1,000,000-file version (default: at full scale only)",
    )
    p.add_argument(
        "--million-only",
        action="store_true",
        help="run row 11 alone: implies --only dsmount --million; no other workload runs",
    )
    p.add_argument(
        "--million-dirs",
        type=int,
        default=MIL_DIRS,
        help=f"directories of {MIL_FILES} files in row 11's version (default {MIL_DIRS}: a "
        "million files; fewer only to smoke-test the row, its figures then are not the target's)",
    )
    p.add_argument(
        "--writes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the write rows 12-14 (default yes) for the clients that have them: "
        f"{', '.join(WRITERS)} (an Azurite of their own)",
    )
    p.add_argument(
        "--writes-only",
        action="store_true",
        help="only the write rows: no dataset upload, no read rows (implies --writes)",
    )
    p.add_argument(
        "--cache-budget",
        default="256MiB",
        help="the dsmount daemons' --cache-budget (default 256MiB); RSS targets follow it",
    )
    args = p.parse_args(argv)
    if args.latency is not None and args.latency < 0:
        p.error("--latency must be >= 0")
    if args.million_dirs < 1:
        p.error("--million-dirs must be >= 1")
    if args.million_only:
        if args.million is False:
            p.error("--million-only contradicts --no-million")
        args.only, args.million = "dsmount", True
    clients = [c.strip() for c in args.only.split(",") if c.strip()] if args.only else list(CLIENTS)
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        p.error(f"unknown client(s): {', '.join(sorted(unknown))}")
    if args.skip_rclone:
        clients = [c for c in clients if c not in (*RCLONE, RCLONE_WRITES)]
    if args.writes_only:
        args.writes = True
        clients = [c for c in clients if c in WRITERS]
    args.clients = [c for c in CLIENTS if c in clients]
    return args


def network_desc(proxy: ProxyProcess | None, proxied: bool) -> str:
    if proxied and proxy is not None:
        return (f"every system through tests/support/faultproxy.py (own process), "
                f"+{proxy.latency_ms:g} ms per request")  # fmt: skip
    if proxy is not None:
        return "loopback, no proxy (row 11 only: through the fault proxy, 0 ms)"
    return "loopback, no proxy"


def servers_desc(results: Results) -> str:
    servers = []
    if any(c not in FILESHARE for c in results):
        servers.append("Azurite in memory on 127.0.0.1")
    if any(c in FILESHARE for c in results):
        servers.append("Azure Files emulator (tests/support/azurefiles, own process), 127.0.0.1")
    return "; ".join(servers)


def load_average() -> str:
    # Other work on the machine skews every column alike; the reader should know how much.
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_workdir(args: argparse.Namespace) -> Path:
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return args.workdir.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="dsmount-bench-"))
    if not args.keep:
        on_exit(lambda: shutil.rmtree(workdir, ignore_errors=True))
    return workdir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    t_start = time.perf_counter()
    scale = QUICK if args.quick else FULL
    wscale = wr.WRITE_QUICK if args.quick else wr.WRITE_FULL
    notes: list[str] = [f"load average at start: {load_average()}"]
    if os.geteuid() != 0:
        notes.append("not run as root: mounts or drop_caches may fail")
    try:
        workdir = make_workdir(args)
        log(f"workdir {workdir}; clients: {', '.join(args.clients)}")
        ds = Dataset(scale)
        total = 2 * scale.big_size + scale.n_small * scale.small_size
        data = listing = share = write = write_src = None
        reads = not args.writes_only
        if reads and any(c not in FILESHARE for c in args.clients):
            data = start_store(workdir / "azurite-data", CONTAINER)
            listing = start_store(workdir / "azurite-list", LIST_CONTAINER)
            secs, _ = timed(lambda: asyncio.run(upload_dataset(data, listing, ds)))
            log(f"uploaded {total / MiB:.0f} MiB + {scale.n_tiny} tiny blobs in {secs:.1f}s")
            notes.append(f"dataset upload: {secs:.1f} s")
        if reads and any(c in FILESHARE for c in args.clients):
            share = start_share_emulator(workdir / "azurefiles")
            n_tiny = scale.n_tiny if args.fs_tiny is None else min(args.fs_tiny, scale.n_tiny)
            share = replace(share, n_tiny=n_tiny)
            secs, _ = timed(lambda: asyncio.run(upload_share(share, ds)))
            log(f"wrote {total / MiB:.0f} MiB + {n_tiny} tiny files to the share in {secs:.1f}s")
            notes.append(f"file share upload: {secs:.1f} s")
            if n_tiny < scale.n_tiny:
                notes.append(
                    f"file share: only {n_tiny} of {scale.n_tiny} tiny files written "
                    "(--fs-tiny): its listing figures are for that many entries"
                )
        if args.writes and any(c in WRITERS for c in args.clients):
            write = start_store(workdir / "azurite-write", wr.WRITE_CONTAINER, writable=True)
            secs, write_src = timed(lambda: wr.WriteSource(wscale))
            on_exit(write_src.cleanup)
            log(f"write sources in {write_src.dir} made in {secs:.1f}s")

        ctx = Context(
            workdir=workdir,
            ds=ds,
            data=data,
            listing=listing,
            share=share,
            dropper=CacheDropper(),
            offsets1=ds.pread_offsets(1),
            offsets8=ds.pread_offsets(8),
            cap_s=args.cap,
            shuffle1=ds.shuffled(1),
            shuffle2=ds.shuffled(2),
            cache_budget=args.cache_budget,
            million_dirs=args.million_dirs,
            million_only=args.million_only,
            write=write,
            write_src=write_src,
            writes_only=args.writes_only,
        )
        with_dsmount = "dsmount" in args.clients
        million = with_dsmount and (args.million if args.million is not None else not args.quick)
        if args.latency is not None or (million and data is not None):
            upstreams = [s.endpoint for s in (data, listing, share, write) if s is not None]
            proxy = ProxyProcess(workdir / "faultproxy", upstreams, args.latency or 0.0)
            ctx.proxy = proxy
            if args.latency is not None:  # every client's store is the proxy's from here on
                ctx.proxied = True
                ctx.data = data and proxy.store(data)
                ctx.listing = listing and proxy.store(listing)
                ctx.share = share and proxy.share(share)
                ctx.write = write and proxy.store(write)
        if with_dsmount and data is not None:
            prepare_versions(ctx, data, million, notes)
        results: Results = {}
        for name in args.clients:
            t0 = time.perf_counter()
            wait_quiet([s.pid for s in (data, listing, share, write, ctx.proxy) if s is not None])
            results[name] = run_client(name, ctx)
            log(f"{name}: done in {time.perf_counter() - t0:.1f}s")
        if ctx.dropper.failed:
            notes.append(ctx.dropper.failed)
    finally:
        run_all_cleanups()

    elapsed = time.perf_counter() - t_start
    notes.append(f"load average at end: {load_average()}")
    notes.append(f"whole benchmark run: {elapsed:.0f} s")
    for client, cells in results.items():
        for key, note in cells.get("notes", {}).items():
            notes.append(f"{client}, {WORKLOADS[key][0]}: {note}")
    notes += method_notes(ctx, results)
    scale_desc = (
        f"{'quick' if args.quick else 'full'}: 2 x {scale.big_size // MiB} MiB blobs, "
        f"{scale.n_small} x {scale.small_size // KiB} KiB files in {scale.small_dirs} dirs, "
        f"{scale.n_tiny} tiny blobs in one dir, {scale.n_preads} x "
        f"{scale.pread_size // KiB} KiB preads"
    )
    if args.writes_only:
        scale_desc = f"{'quick' if args.quick else 'full'}, write rows only"
    if ctx.write is not None:
        scale_desc += f"; {wscale.desc()}"
    meta = {
        "scale": asdict(scale),
        "scale_desc": scale_desc,
        "servers": servers_desc(results),
        "network": network_desc(ctx.proxy, ctx.proxied),
        "latency_ms": args.latency,
        "cache_budget": args.cache_budget,
        "machine": f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "notes": notes,
        "elapsed_s": elapsed,
    }
    from dsmount.shared.sizes import parse_size

    rs = ratios(results, parse_size(args.cache_budget) / MiB, reads=not args.writes_only)
    md = render_markdown(results, meta, rs)
    print(md)
    if args.markdown:
        args.markdown.write_text(md)
    if args.json:
        payload = {"meta": meta, "results": results, "ratios": [asdict(r) for r in rs]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if args.keep:
        log(f"kept {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
