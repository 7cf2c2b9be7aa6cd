"""The comparison table's dataset: every blob cut from one random buffer, so content is
reproducible and every system is checked against the same bytes.

Full scale: two 1 GiB random blobs, 5,000 x 100 KiB files in 50 dirs, and 20,000 tiny blobs
in one dir (in an Azurite of their own: see harness/servers.py `start_store`). `--quick` is
smaller (`QUICK`). The file share holds the same files under the same paths.

Invariants:
- No two 8 MiB blocks are equal (each is stamped with its blob and index): no dedup anywhere
  can flatter a system.
- Orders (shuffles) and offsets (preads) are seeded: the same for every system.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scripts.bench.harness.servers import ShareStore, Store

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
SEQ_BLOB = "big/seq.bin"
RAND_BLOB = "big/rand.bin"
TINY_DIR = "tiny"
SEED = 20240601
VERIFY_N = 8  # reads per client checked byte for byte against the generated content

SHARE = "bench"  # the file share holding the whole dataset (tiny files included)
FS_DATASTORE = "benchfs"
RANGE = 4 * MiB  # Azure Files' largest Put Range: the share upload's write size


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
QUICK = Scale(256 * MiB, 1000, 10, 100 * KiB, 2000, 1000, 64 * KiB)


class Dataset:
    """The benchmark's blobs, generated from one random buffer so content is reproducible.

    Big blob `blob_id`'s block k is the base buffer's slice (k * BLOCK mod BASE_SIZE) with its
    first 16 bytes replaced by (blob_id, k), so no two blocks are equal (no dedup anywhere can
    flatter a client) while generation costs only a copy.
    """

    def __init__(self, scale: Scale) -> None:
        self.scale = scale
        self.base = os.urandom(BASE_SIZE)
        self._seq_sha: str | None = None
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

    def seq_sha256(self) -> str:
        """sha256 of blob 1 (the sequential one), computed once."""
        if self._seq_sha is None:
            h = hashlib.sha256()
            for k in range(self.scale.big_size // BLOCK):
                h.update(self.big_block(1, k))
            self._seq_sha = h.hexdigest()
        return self._seq_sha

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


