"""Measure how fast trio code can pull one big blob through each way of driving the Azure SDK.

Starts its own in-memory Azurite on 127.0.0.1 (tests/support/azurite.py), uploads one blob
(1 GiB by default) and reads it whole with ranged GETs of 8 MiB, 8 in flight, from trio:

  sync      the SDK's blocking client in worker threads (`trio.to_thread.run_sync` + a
            CapacityLimiter), `download_blob(offset, length).readall()`
  sync-raw  the same, but one plain ranged GET through the sync client's pipeline
  aio       the SDK's asyncio client on one asyncio loop in a thread (dsmount's AsyncioThread),
            `download_blob(offset, length).readall()`
  aio-raw   the same asyncio client, but one plain ranged GET sent through the SDK's pipeline
            (auth and signing stay the SDK's), skipping its downloader machinery - what
            dsmount.storage.azure.blob does
  backend   dsmount's BlobBackend.read (aio-raw plus retry, error mapping, length checks)

Prints MB/s (10^6 bytes/s) per method: the median of --runs runs, and the client's CPU
seconds per GiB (steadier than wall time on a shared machine).

With --list-blobs N it also uploads N small blobs into one flat directory and lists it, page
size 5000, both with the SDK's `walk_blobs` (asyncio client, iterated on its own loop: its best
case) and with `BlobBackend.list` (same REST calls, parsed by dsmount.storage.azure.blob_listing).

Usage:

    python -m scripts.bench adapters [--size-mib 1024] [--runs 2] [--methods ...]
        [--list-blobs 20000] [--size-mib 0 to skip the read benchmark]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from dsmount.storage.azure.bridge import AsyncioThread
from scripts.bench.harness.meters import median
from scripts.bench.harness.servers import start_azurite
from tests.support.azurite import Azurite

MiB = 1024 * 1024
CONTAINER = "bench-adapters"
BLOB = "big.bin"

ReadFn = Callable[[int, int], Awaitable[int]]


async def read_all(read: ReadFn, size: int, block: int, inflight: int) -> tuple[float, float]:
    """Read [0, size) in `block`-sized ranges with `inflight` concurrent readers.

    Returns (wall seconds, CPU seconds of this process, all threads): on a shared 2-core
    machine the CPU cost is the steadier measure of an adapter's overhead."""
    offsets = iter(range(0, size, block))
    total = 0

    async def worker() -> None:
        nonlocal total
        for offset in offsets:  # shared iterator: each worker takes the next range
            n = await read(offset, min(block, size - offset))
            if n != min(block, size - offset):
                raise RuntimeError(f"short read at {offset}: {n}")
            total += n

    start, cpu_start = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(inflight):
            nursery.start_soon(worker)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert total == size
    return elapsed, cpu


def _range_request(client: Any, offset: int, length: int) -> Any:
    from azure.core.rest import HttpRequest

    return HttpRequest(
        "GET",
        client.url,
        headers={
            "x-ms-version": client.api_version,
            "x-ms-range": f"bytes={offset}-{offset + length - 1}",
        },
    )


async def bench_sync(
    az: Azurite, size: int, block: int, inflight: int, raw: bool
) -> tuple[float, float]:
    from azure.storage.blob import BlobClient

    client = BlobClient.from_connection_string(
        az.connection_string, CONTAINER, BLOB, retry_total=0, max_single_get_size=block
    )
    limiter = trio.CapacityLimiter(inflight)

    def fetch_sdk(offset: int, length: int) -> int:
        return len(client.download_blob(offset=offset, length=length).readall())

    def fetch_raw(offset: int, length: int) -> int:
        response = client._pipeline.run(_range_request(client, offset, length), stream=True)
        body = response.http_response.read()
        if response.http_response.status_code != 206:
            raise RuntimeError(f"GET returned {response.http_response.status_code}")
        return len(body)

    fetch = fetch_raw if raw else fetch_sdk

    async def read(offset: int, length: int) -> int:
        return await trio.to_thread.run_sync(fetch, offset, length, limiter=limiter)

    try:
        return await read_all(read, size, block, inflight)
    finally:
        client.close()


async def bench_aio(
    az: Azurite, size: int, block: int, inflight: int, raw: bool
) -> tuple[float, float]:
    from azure.storage.blob.aio import BlobClient

    bridge = AsyncioThread()
    bridge.start()

    async def make() -> BlobClient:
        return BlobClient.from_connection_string(
            az.connection_string, CONTAINER, BLOB, retry_total=0, max_single_get_size=block
        )

    client = await bridge.run(make)

    async def fetch_sdk(offset: int, length: int) -> int:
        downloader = await client.download_blob(offset=offset, length=length)
        return len(await downloader.readall())

    async def fetch_raw(offset: int, length: int) -> int:
        request = _range_request(client, offset, length)
        # stream=True: with stream=False the pipeline's ContentDecodePolicy would decode the
        # whole body as text by its Content-Type.
        response = (await client._pipeline.run(request, stream=True)).http_response
        body = await response.read()
        if response.status_code != 206:
            raise RuntimeError(f"GET returned {response.status_code}")
        return len(body)

    fetch = fetch_raw if raw else fetch_sdk

    async def read(offset: int, length: int) -> int:
        return await bridge.run(lambda: fetch(offset, length))

    try:
        return await read_all(read, size, block, inflight)
    finally:
        await bridge.run(client.close)
        bridge.stop()


async def bench_backend(az: Azurite, size: int, block: int, inflight: int) -> tuple[float, float]:
    from dsmount.shared.credentials import Credential, Secret
    from dsmount.storage.azure.blob import BlobBackend

    backend = BlobBackend(
        container=CONTAINER,
        credential=Credential("connection_string", Secret(az.connection_string)),
    )

    async def read(offset: int, length: int) -> int:
        return len(await backend.read(BLOB, offset, length))

    try:
        return await read_all(read, size, block, inflight)
    finally:
        await backend.aclose()


LIST_DIR = "flat"


async def upload_many(az: Azurite, count: int) -> None:
    from azure.storage.blob.aio import ContainerClient

    bridge = AsyncioThread()
    bridge.start()

    async def go() -> None:
        async with ContainerClient.from_connection_string(az.connection_string, CONTAINER) as c:
            if not await c.exists():
                await c.create_container()
            sem = asyncio.Semaphore(64)

            async def one(i: int) -> None:
                async with sem:
                    await c.upload_blob(f"{LIST_DIR}/f{i:06d}.bin", b"x" * (i % 100))

            await asyncio.gather(*(one(i) for i in range(count)))

    try:
        await bridge.run(go)
    finally:
        bridge.stop()


async def list_sdk(az: Azurite) -> tuple[float, float, int]:
    from azure.storage.blob.aio import ContainerClient

    bridge = AsyncioThread()
    bridge.start()

    async def go() -> int:
        async with ContainerClient.from_connection_string(
            az.connection_string, CONTAINER, retry_total=0
        ) as c:
            n = 0
            async for _ in c.walk_blobs(name_starts_with=f"{LIST_DIR}/", results_per_page=5000):
                n += 1
            return n

    try:
        start, cpu = time.perf_counter(), time.process_time()
        n = await bridge.run(go)
        return time.perf_counter() - start, time.process_time() - cpu, n
    finally:
        bridge.stop()


async def list_backend(az: Azurite) -> tuple[float, float, int]:
    from dsmount.shared.credentials import Credential, Secret
    from dsmount.storage.azure.blob import BlobBackend

    backend = BlobBackend(
        container=CONTAINER,
        credential=Credential("connection_string", Secret(az.connection_string)),
    )
    try:
        await backend.stat("")  # client creation and first connection outside the timing
        start, cpu = time.perf_counter(), time.process_time()
        n = 0
        async for page in backend.list(LIST_DIR):
            n += len(page)
        return time.perf_counter() - start, time.process_time() - cpu, n
    finally:
        await backend.aclose()


def bench_listing(az: Azurite, count: int, runs: int) -> None:
    t = time.perf_counter()
    trio.run(upload_many, az, count)
    print(f"uploaded {count} blobs in {time.perf_counter() - t:.1f}s", flush=True)
    results: dict[str, list[tuple[float, float]]] = {"walk_blobs": [], "backend.list": []}
    for _ in range(runs):
        for name, fn in (("walk_blobs", list_sdk), ("backend.list", list_backend)):
            wall, cpu, n = trio.run(fn, az)
            if n != count:
                raise RuntimeError(f"{name} listed {n} entries, expected {count}")
            results[name].append((wall, cpu))
    print(f"listing {count} blobs in one directory, median of {runs} runs:")
    for name, values in results.items():
        walls = [w for w, _ in values]
        print(
            f"  {name:12s} {median(walls):6.2f} s  client CPU "
            f"{median(c for _, c in values):5.2f} s   "
            f"(runs: {', '.join(f'{w:.2f}' for w in walls)})",
            flush=True,
        )


def upload(az: Azurite, size: int) -> None:
    service = az.blob_service_client()
    try:
        container = service.get_container_client(CONTAINER)
        if not container.exists():
            container.create_container()
        chunk = bytes(range(256)) * (4 * MiB // 256)

        def chunks():  # stream, so a 1 GiB blob never sits in this process's memory
            sent = 0
            while sent < size:
                piece = chunk[: min(len(chunk), size - sent)]
                sent += len(piece)
                yield piece

        container.upload_blob(BLOB, chunks(), length=size, overwrite=True, max_concurrency=4)
    finally:
        service.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench adapters",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--block-mib", type=int, default=8)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--list-blobs", type=int, default=0, metavar="N")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["sync", "sync-raw", "aio", "aio-raw", "backend"],
        choices=["sync", "sync-raw", "aio", "aio-raw", "backend"],
    )
    args = parser.parse_args(argv)
    size, block = args.size_mib * MiB, args.block_mib * MiB

    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp:
        az = start_azurite(Path(tmp) / "azurite")
        if args.list_blobs:
            bench_listing(az, args.list_blobs, args.runs)
        if not size:
            return 0
        t = time.perf_counter()
        upload(az, size)
        print(f"uploaded {args.size_mib} MiB in {time.perf_counter() - t:.1f}s", flush=True)
        runners = {
            "sync": lambda: bench_sync(az, size, block, args.inflight, raw=False),
            "sync-raw": lambda: bench_sync(az, size, block, args.inflight, raw=True),
            "aio": lambda: bench_aio(az, size, block, args.inflight, raw=False),
            "aio-raw": lambda: bench_aio(az, size, block, args.inflight, raw=True),
            "backend": lambda: bench_backend(az, size, block, args.inflight),
        }
        print(
            f"{args.block_mib} MiB ranged GETs, {args.inflight} in flight, median of "
            f"{args.runs} runs; client CPU = seconds of this process's CPU per GiB read"
        )
        rates: dict[str, list[float]] = {m: [] for m in args.methods}
        cpus: dict[str, list[float]] = {m: [] for m in args.methods}
        # Interleave the methods run by run, so a burst of load from elsewhere on the machine
        # does not land on one method only.
        for _ in range(args.runs):
            for method in args.methods:
                wall, cpu = trio.run(runners[method])
                rates[method].append(size / 1e6 / wall)
                cpus[method].append(cpu / (size / 1024**3))
        for method in args.methods:
            shown = ", ".join(f"{r:.0f}" for r in rates[method])
            print(
                f"  {method:8s} {median(rates[method]):6.0f} MB/s  "
                f"client CPU {median(cpus[method]):5.2f} s/GiB   (runs: {shown})",
                flush=True,
            )
        az.stop()
    return 0
