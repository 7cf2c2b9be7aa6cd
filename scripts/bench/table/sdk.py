"""The direct clients of the comparison table: azure-storage-blob blocking (`sdk-sync`) and
asyncio (`sdk-aio`), adlfs (fsspec), and the asyncio file-share SDK on the Azure Files
emulator (`fs-sdk-aio`). Each runs in this process, which is therefore its system for CPU.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from scripts.bench.harness.batch import (
    Figure,
    run_batch,
    run_batch_async,
    timed,
    window_map,
)
from scripts.bench.harness.cleanup import check
from scripts.bench.harness.meters import CpuMeter
from scripts.bench.table import write_rows as wr
from scripts.bench.table.client import Client
from scripts.bench.table.dataset import (
    BLOCK,
    CONTAINER,
    LIST_CONTAINER,
    MB,
    RAND_BLOB,
    SEQ_BLOB,
    TINY_DIR,
    MiB,
)


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
        return {**wr.row_cells(wr.SEQ_KEYS, lambda: wr.sdk_seq(cc, self.write_src)),
                **wr.row_cells(wr.TAR_KEYS, lambda: wr.sdk_tar(cc, self.write_src))}  # fmt: skip


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
            ("sha_cold_mbps", lambda: self._run(self.sha)),
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

    async def sha(self, cc: Any) -> Figure:
        """Row 15's reference: blob 1 downloaded in 8 MiB ranges (`seq_in_flight` ahead) and
        hashed in order, the hashing in a worker thread so downloads go on meanwhile."""
        size = self.ds.scale.big_size
        offsets = iter(range(0, size, BLOCK))
        pending: collections.deque[asyncio.Task[bytes]] = collections.deque()

        def more() -> None:
            o = next(offsets, None)
            if o is not None:
                pending.append(asyncio.create_task(
                    self._get(cc, SEQ_BLOB, o, min(BLOCK, size - o))))

        h = hashlib.sha256()
        t0 = time.perf_counter()
        for _ in range(self.seq_in_flight):
            more()
        while pending:
            data = await pending.popleft()
            more()
            await asyncio.to_thread(h.update, data)
        secs = time.perf_counter() - t0
        check(h.hexdigest() == self.ds.seq_sha256(), "sha256 of the blob is wrong")
        return Figure(size / secs / MB)

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
        return wr.row_cells(wr.SEQ_KEYS,
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


