"""Measure `dsmount warm` against the direct asyncio SDK, and the read path with metrics on
against metrics off (not a test; run as root on a quiet machine).

    python -m scripts.bench warm [--quick] [--only warm|metrics] [--rounds N] [--profile DIR]
                                  [--metrics-rounds N] [--scrape-interval S] [--workdir DIR]

Starts a private in-memory Azurite, uploads 5,000 x 100 KiB files in 50 directories and one
1 GiB blob (--quick: 500 files, 128 MiB), then:
- warm: the direct asyncio SDK downloads (small files: 16 in flight; the blob: 8 MiB ranged
  GETs, 16 in flight) and `dsmount warm` of the same data into a fresh daemon's memory cache
  (2 GiB budget) and into its disk cache, each into a cold cache, the SDK measured right
  before dsmount each time (ratios per pair: the machine's load changes). For the disk cache
  the SDK also writes what it downloaded to files on the same disk (one per blob or 8 MiB
  range, from worker threads, as the disk cache does). The rate is the job's own (listing
  included, CLI start-up not); the daemon's CPU and its GETs are shown; then the blob is read
  through the mount from the cache. `--profile DIR`: py-spy (raw collapsed stacks, all
  threads) of the daemon during each warm.
- metrics: the daemon CPU of one scrape; then three read workloads through the mount, each in
  a fresh daemon (cold cache): a sequential read of the blob, the small files (8 threads),
  4,000 random 64 KiB preads of the blob (8 threads), alternating metrics off / on (scraped
  every `--scrape-interval` s from the read's start) `--metrics-rounds` times in one run:
  medians, the on/off ratio, and the daemon's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scripts.bench.harness.cleanup import on_exit
from scripts.bench.harness.daemon import BenchDaemon, blob_attach_args
from scripts.bench.harness.meters import median
from scripts.bench.harness.servers import start_azurite

KiB, MiB, GiB, MB = 1024, 1024**2, 1024**3, 1e6
BLOCK = 8 * MiB


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def small_name(i: int) -> str:
    return f"small/d{i % 50:03d}/f{i:05d}.bin"


async def upload(conn: str, n_small: int, big: int) -> None:
    from azure.storage.blob.aio import BlobServiceClient

    base = os.urandom(BLOCK)
    sem = asyncio.Semaphore(64)
    async with BlobServiceClient.from_connection_string(conn) as svc:
        cc = svc.get_container_client("bench")
        await cc.create_container()

        async def put(i: int) -> None:
            async with sem:
                data = i.to_bytes(8, "little") + base[(i * 4096) % MiB:][: 100 * KiB - 8]
                await cc.upload_blob(small_name(i), data)

        bc = cc.get_blob_client("big/blob.bin")
        ids = [base64.b64encode(f"{k:08d}".encode()).decode() for k in range(big // BLOCK)]

        async def stage(k: int) -> None:
            async with sem:
                await bc.stage_block(ids[k], k.to_bytes(8, "little") + base[8:], length=BLOCK)

        await asyncio.gather(*(put(i) for i in range(n_small)), *(stage(k) for k in
                                                                   range(len(ids))))
        await bc.commit_block_list(ids)


def _write_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)


async def sdk_small(conn: str, n: int, in_flight: int, out: Path | None = None) -> float:
    """Files/s of the asyncio SDK downloading the small files; with `out`, each is also
    written to a file there from a worker thread (as the disk cache does)."""
    from azure.storage.blob.aio import BlobServiceClient

    async with BlobServiceClient.from_connection_string(conn) as svc:
        cc = svc.get_container_client("bench")
        await cc.get_container_properties()
        sem = asyncio.Semaphore(in_flight)

        async def one(i: int) -> int:
            async with sem:
                stream = await cc.get_blob_client(small_name(i)).download_blob()
                data = await stream.readall()
                if out is not None:
                    await asyncio.to_thread(_write_file, out / f"f{i:05d}", data)
                return len(data)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - t0)


async def sdk_blob(conn: str, size: int, in_flight: int, out: Path | None = None) -> float:
    """MB/s of the asyncio SDK downloading the blob in 8 MiB ranges; with `out`, each range
    is also written to a file there (one per range, as the disk cache does, from a worker
    thread)."""
    from azure.storage.blob.aio import BlobServiceClient

    async with BlobServiceClient.from_connection_string(conn) as svc:
        cc = svc.get_container_client("bench")
        await cc.get_container_properties()
        sem = asyncio.Semaphore(in_flight)
        bc = cc.get_blob_client("big/blob.bin")

        async def one(o: int) -> int:
            async with sem:
                stream = await bc.download_blob(offset=o, length=min(BLOCK, size - o))
                data = await stream.readall()
                if out is not None:
                    await asyncio.to_thread(_write_file, out / f"b{o // BLOCK:05d}", data)
                return len(data)

        t0 = time.perf_counter()
        total = sum(await asyncio.gather(*(one(o) for o in range(0, size, BLOCK))))
        assert total == size
        return size / (time.perf_counter() - t0) / MB


def daemon_for(workdir: Path, config: str, conn: str,
               extra: tuple[str, ...] = ()) -> BenchDaemon:
    """A fresh daemon (cold caches) with the benchmark's container attached as `b`."""
    d = BenchDaemon(Path(tempfile.mkdtemp(prefix="bw-", dir=workdir)), config_text=config,
                    env={"CS": conn}, extra_args=extra).start()
    d.attach("b", *blob_attach_args("b", "bench", None, "CS"))
    return d


def warm(d: BenchDaemon, conn: str, path: str, profile: Path | None) -> dict:
    assert d.pid is not None
    spy = None
    if profile is not None:  # sampled for the whole job; stopped (SIGINT) right after it
        exe = str(Path(sys.executable).parent / "py-spy")
        spy = subprocess.Popen([exe, "record", "--format", "raw", "--rate", "200", "--threads",
                                "--nonblocking", "--pid", str(d.pid), "-o", str(profile)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    c0, t0 = d.cpu_seconds(), time.perf_counter()
    out = d.cli("warm", "b", path, "--json", timeout=1200).stdout.splitlines()
    wall = time.perf_counter() - t0
    cpu = d.cpu_seconds() - c0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    final = json.loads(out[-1])
    assert final["state"] == "done" and final["errors"] == 0, final
    final["wall"] = wall
    final["daemon_cpu"] = cpu
    ds = next(x for x in d.call("status")["datastores"] if x["name"] == "b")
    final["gets"] = sum(ds.get("backend_calls", {}).get("read", {}).values())
    return final


def warm_once(workdir: Path, conn: str, kind: str, path: str, big: int,
              profile: Path | None) -> dict:
    """One `dsmount warm` of `path` into a fresh daemon (`kind`: memory or disk)."""
    config = {
        "memory": '[cache]\nmemory_budget = "2GiB"\n',
        "disk": f'[cache]\ndisk_dir = "{workdir}/disk"\ndisk_budget = "4GiB"\n',
    }[kind]
    d = daemon_for(workdir, config, conn)
    try:
        got = warm(d, conn, path, profile)
        if path == "big":  # then read it through the mount: from the cache
            t0 = time.perf_counter()
            with open(d.mountpoint / "b/big/blob.bin", "rb", buffering=0) as f:
                while f.read(MiB):
                    pass
            got["read_after_mbps"] = big / (time.perf_counter() - t0) / MB
    finally:
        d.stop()
        shutil.rmtree(workdir / "disk", ignore_errors=True)
    return got


def sdk_once(conn: str, path: str, n_small: int, big: int, out: Path | None
             ) -> tuple[float, float]:
    """(rate, client CPU seconds) of one direct-SDK download of `path` (16 in flight)."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    c0 = time.process_time()
    try:
        if path == "small":
            rate = asyncio.run(sdk_small(conn, n_small, 16, out))
        else:
            rate = asyncio.run(sdk_blob(conn, big, 16, out))
    finally:
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
    return rate, time.process_time() - c0


def run_warm(workdir: Path, conn: str, n_small: int, big: int, rounds: int,
             profile: Path | None) -> None:
    """Each round measures the SDK right before dsmount, so both see the same machine load;
    the ratio is taken per round. Into memory the SDK only downloads; into the disk cache it
    also writes what it downloaded to files (one per blob / per 8 MiB range) on the same
    disk, from worker threads, as the disk cache does (`sdk+disk`)."""
    rows: list[tuple[int, str, str, float, float, float | None]] = []
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    for r in range(rounds):
        for path in ("small", "big"):
            for kind in ("memory", "disk"):
                out = workdir / "sdk-out" if kind == "disk" else None
                ref, ref_cpu = sdk_once(conn, path, n_small, big, out)
                spy = profile / f"{kind}-{path}-{r}.txt" if profile is not None else None
                got = warm_once(workdir, conn, kind, path, big, spy)
                if path == "small":
                    rate, unit = got["files_done"] / got["elapsed"], "files/s"
                else:
                    rate, unit = got["bytes_done"] / got["elapsed"] / MB, "MB/s"
                after = got.get("read_after_mbps")
                rows.append((r, kind, path, rate, ref, after))
                log(f"round {r}: {path} {kind}: sdk{'+disk' if out else ''} {ref:.0f} {unit} "
                    f"(client CPU {ref_cpu:.2f}s), warm {rate:.0f} {unit} = {rate / ref:.2f}x "
                    f"(job {got['elapsed']:.2f}s, wall {got['wall']:.2f}s, daemon CPU "
                    f"{got['daemon_cpu']:.2f}s, {got['gets']} GETs)"
                    + (f"; read after warm {after:.0f} MB/s" if after else ""))
    print("| round | target | data | dsmount warm | sdk-aio | ratio | read after warm |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for r, kind, path, rate, ref, after in rows:
        unit = "files/s" if path == "small" else "MB/s"
        shown = f"{after:.0f} MB/s" if after else ""
        sdk = "sdk+disk" if kind == "disk" else "sdk"
        print(f"| {r} | {kind} | {path} | {rate:.0f} {unit} | {ref:.0f} {unit} ({sdk}) | "
              f"{rate / ref:.2f} | {shown} |")
    for kind in ("memory", "disk"):
        for path in ("small", "big"):
            ratios = [rate / ref for _, k, p, rate, ref, _ in rows if (k, p) == (kind, path)]
            print(f"| median | {kind} | {path} | | | {median(ratios):.2f} | |")


def read_seq(root: Path, n_small: int, big: int) -> float:
    """MB/s of one cold sequential read of the blob (1 MiB reads)."""
    t0 = time.perf_counter()
    with open(root / "big/blob.bin", "rb", buffering=0) as f:
        while f.read(MiB):
            pass
    return big / (time.perf_counter() - t0) / MB


def read_small(root: Path, n_small: int, big: int) -> float:
    """Files/s of reading every small file once (8 threads)."""
    def one(i: int) -> int:
        return len((root / small_name(i)).read_bytes())

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(one, range(n_small))) == n_small * 100 * KiB
    return n_small / (time.perf_counter() - t0)


def read_random(root: Path, n_small: int, big: int, n: int = 4000) -> float:
    """Reads/s of `n` cold 64 KiB preads at random (seeded: the same in every run) 4 KiB-
    aligned offsets of the blob, 8 threads, no page cache (O_DIRECT is not needed: every
    offset is read once, and a fresh daemon's mount holds no pages)."""
    import random

    rng = random.Random(14)
    offsets = [rng.randrange(0, (big - 64 * KiB) // 4096) * 4096 for _ in range(n)]
    fd = os.open(root / "big/blob.bin", os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(lambda o: len(os.pread(fd, 64 * KiB, o)), offsets)) == \
                n * 64 * KiB
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)


WORKLOADS = (("cold sequential read of the blob", "MB/s", read_seq),
             ("small files, 8 threads", "files/s", read_small),
             ("random 64 KiB preads, 8 threads", "reads/s", read_random))


def scrape_cost(workdir: Path, conn: str, n: int = 200) -> None:
    """Daemon CPU per scrape, with one datastore that has been read (all families filled)."""
    d = daemon_for(workdir, "", conn, ("--metrics-address", "127.0.0.1:0"))
    try:
        (d.mountpoint / "b" / small_name(0)).read_bytes()
        address = d.call("status")["metrics"]["address"]
        assert d.pid is not None
        size = 0
        c0, t0 = d.cpu_seconds(), time.perf_counter()
        for _ in range(n):
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
                size = len(r.read())
        c1, t1 = d.cpu_seconds(), time.perf_counter()
    finally:
        d.stop()
    per = (c1 - c0) / n
    print(f"| one scrape ({size} bytes) | daemon CPU {per * 1000:.2f} ms | wall "
          f"{(t1 - t0) / n * 1000:.2f} ms | at one scrape per 15 s: {per / 15:.4%} of a core |")


def measure_once(workdir: Path, conn: str, mode: str, workload: int, n_small: int, big: int,
                 interval: float) -> tuple[float, float, int]:
    """(rate, daemon CPU s, scrapes) of one workload in a fresh daemon (cold cache), with
    metrics off, or on and scraped every `interval` seconds from the start of the read."""
    extra = ("--metrics-address", "127.0.0.1:0") if mode == "on" else ()
    d = daemon_for(workdir, "", conn, extra)
    stop = threading.Event()
    scrapes = 0

    def scrape(address: str) -> None:
        nonlocal scrapes
        while True:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
                r.read()
            scrapes += 1
            if stop.wait(interval):
                return

    scraper = None
    try:
        if mode == "on":
            address = d.call("status")["metrics"]["address"]
            scraper = threading.Thread(target=scrape, args=(address,), daemon=True)
            scraper.start()
        assert d.pid is not None
        c0 = d.cpu_seconds()
        rate = WORKLOADS[workload][2](d.mountpoint / "b", n_small, big)
        cpu = d.cpu_seconds() - c0
    finally:
        stop.set()
        if scraper is not None:
            scraper.join()
        d.stop()
    return rate, cpu, scrapes


def run_metrics(workdir: Path, conn: str, n_small: int, big: int, rounds: int,
                interval: float) -> None:
    """Each workload alternates metrics off / on / off / on ... (`rounds` pairs, in one run,
    each in a fresh daemon); medians of each mode and their ratio."""
    scrape_cost(workdir, conn)
    print(f"| workload | metrics off (median of {rounds}) | on, scraped every {interval:g} s | "
          "on/off | daemon CPU off | on | on/off |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for w, (what, unit, _) in enumerate(WORKLOADS):
        rates: dict[str, list[float]] = {"off": [], "on": []}
        cpus: dict[str, list[float]] = {"off": [], "on": []}
        for r in range(rounds):
            for mode in ("off", "on"):
                rate, cpu, scrapes = measure_once(workdir, conn, mode, w, n_small, big,
                                                  interval)
                rates[mode].append(rate)
                cpus[mode].append(cpu)
                log(f"round {r}: {what}, metrics {mode}: {rate:.0f} {unit}, daemon CPU "
                    f"{cpu:.2f}s" + (f" ({scrapes} scrapes)" if mode == "on" else ""))
        off, on = (median(rates[m]) for m in ("off", "on"))
        coff, con = (median(cpus[m]) for m in ("off", "on"))
        print(f"| {what} | {off:.0f} {unit} | {on:.0f} {unit} | {on / off:.3f} | "
              f"{coff:.2f} s | {con:.2f} s | {con / coff:.3f} |")
        print(f"|  (each run, {unit}) | {' '.join(f'{x:.0f}' for x in rates['off'])} | "
              f"{' '.join(f'{x:.0f}' for x in rates['on'])} | | | | |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.bench warm",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["warm", "metrics"])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=2, help="SDK/warm pairs per workload [2]")
    ap.add_argument("--metrics-rounds", type=int, default=4,
                    help="metrics off/on pairs per read workload [4]")
    ap.add_argument("--scrape-interval", type=float, default=5.0,
                    help="seconds between scrapes with metrics on [5]")
    ap.add_argument("--profile", type=Path, default=None,
                    help="py-spy (raw, collapsed stacks) of the daemon during each warm, here")
    args = ap.parse_args(argv)
    n_small, big = (500, 128 * MiB) if args.quick else (5000, GiB)
    workdir = args.workdir
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="bench-warm-", dir="/tmp"))
        on_exit(lambda: shutil.rmtree(workdir, ignore_errors=True))
    server = start_azurite(workdir / "azurite")
    try:
        log(f"uploading {n_small} small files and a {big // MiB} MiB blob")
        asyncio.run(upload(server.connection_string, n_small, big))
        log(f"load average {os.getloadavg()[0]:.1f}")
        if args.only in (None, "warm"):
            run_warm(workdir, server.connection_string, n_small, big, args.rounds,
                     args.profile)
        if args.only in (None, "metrics"):
            run_metrics(workdir, server.connection_string, n_small, big, args.metrics_rounds,
                        args.scrape_interval)
    finally:
        server.stop()
    return 0

