"""The warm jobs (dsmount/node/warm.py) on the filesystem core, without FUSE: a MemoryBackend
counts what is fetched. Covered: a warm fetches each byte once and a second one nothing;
overlapping paths are warmed once; the memory target stops at its capacity and says so; a
warm counts neither as reads nor as stalls; files that fail are reported, and a dead backend
fails the job without taking anything else down; cancel; the running-jobs limit; a packed
version is warmed under its packs' keys, so its readers fetch nothing more."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from dsmount.errors import Busy, NotFound, Transient
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.fs.core import FileSystem, FsSettings
from dsmount.node.fs.datastore import Datastore
from dsmount.node.warm import MAX_RUNNING, Warmer
from dsmount.storage.base import Backend
from dsmount.storage.manifest import FileRecord, Manifest, write_manifest
from dsmount.storage.manifest_backend import ManifestBackend
from dsmount.storage.retry import RetryPolicy
from tests.support.memory_backend import MemoryBackend

BS = 64 * 1024


def files() -> dict[str, bytes]:
    out = {f"a/{i}.bin": bytes([i]) * (1000 + i * 5000) for i in range(10)}
    out.update({f"a/b/{i}.bin": bytes([i]) * (3 * BS + i) for i in range(4)})
    out["top.bin"] = b"t" * (5 * BS)
    return out


@asynccontextmanager
async def warm_fs(backend: Backend, budget: int = 64 * 2**20
                  ) -> AsyncIterator[tuple[FileSystem, Warmer, Datastore]]:
    cache = BlockCache(budget)
    fs = FileSystem(cache, FsSettings(block_size=BS, readahead_max=4 * BS,
                                      request_deadline=2.0))
    warmer = Warmer(fs, parallel=4, abandon_after=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        await nursery.start(warmer.run)
        ds = Datastore(name="w", backend=backend)
        fs.attach(ds)
        yield fs, warmer, ds
        nursery.cancel_scope.cancel()


async def finish(warmer: Warmer, job_id: str) -> dict:
    with trio.fail_after(20):
        while (job := warmer.job(job_id)).state == "running":
            await trio.sleep(0.01)
    return job.as_dict()


async def test_each_byte_is_fetched_once_and_a_second_warm_fetches_nothing() -> None:
    data = files()
    backend = MemoryBackend(data)
    async with warm_fs(backend) as (fs, warmer, ds):
        done = await finish(warmer, warmer.start(ds, []).id)
        total = sum(len(v) for v in data.values())
        assert done["state"] == "done" and done["files_done"] == len(data)
        assert done["bytes_done"] == total == done["bytes_fetched"]
        fetched = sum(n for _, _, n in backend.faults.reads)
        assert fetched == total  # no byte twice
        assert ds.counters.bytes_read == 0 and ds.counters.stalls.count == 0
        calls = backend.faults.calls
        again = await finish(warmer, warmer.start(ds, ["a", "top.bin"]).id)
        assert again["bytes_fetched"] == 0 and again["files_cached"] == len(data)
        assert backend.faults.calls == calls  # listings came from the metadata cache
        # A lookup through the core now needs no backend either.
        node = await fs.lookups.lookup((await fs.lookup(1, "w")).ino, "top.bin")
        assert node.entry.size == 5 * BS and backend.faults.calls == calls


async def test_overlapping_paths_are_warmed_once() -> None:
    async with warm_fs(MemoryBackend(files())) as (_, warmer, ds):
        job = warmer.start(ds, ["a/b", "a", "a/b/1.bin", "/a/"])
        assert job.paths == ["a"]
        done = await finish(warmer, job.id)
        assert done["files_total"] == 14 and done["files_done"] == 14


async def test_memory_capacity_is_three_quarters_of_the_budget_and_the_rest_is_named() -> None:
    data = {f"f{i}.bin": bytes([i]) * (2 * BS) for i in range(10)}
    async with warm_fs(MemoryBackend(data), budget=8 * BS) as (_, warmer, ds):
        done = await finish(warmer, warmer.start(ds, []).id)
        assert done["target"] == "memory" and done["capacity_bytes"] == 6 * BS
        assert done["files_done"] == 3 and done["files_not_fitting"] == 7
        assert done["bytes_not_fitting"] == 14 * BS
        assert "do not fit" in done["message"] and "disk_dir" in done["message"]


async def test_a_missing_path_fails_the_job_and_a_dead_backend_gives_up() -> None:
    backend = MemoryBackend(files(), retry=RetryPolicy(max_attempts=2, base_delay=0.001,
                                                       deadline=0.5, attempt_timeout=0.2))
    async with warm_fs(backend) as (fs, warmer, ds):
        missing = await finish(warmer, warmer.start(ds, ["no/such"]).id)
        assert missing["state"] == "failed" and "no/such" in missing["message"]
        await finish(warmer, warmer.start(ds, []).id)  # every listing cached
        fs.cache.drop(ds.id)
        backend.faults.error = Transient("down")
        backend.faults.fail_next = 10**6
        dead = await finish(warmer, warmer.start(ds, ["a"]).id)
        assert dead["state"] == "failed" and "in a row" in dead["message"]
        assert dead["errors"] >= 1 and dead["error_messages"]


async def test_cancel_stops_the_job_and_a_rerun_completes() -> None:
    backend = MemoryBackend(files())
    backend.faults.delay = 0.05
    async with warm_fs(backend) as (_, warmer, ds):
        job = warmer.start(ds, [])
        with trio.fail_after(10):
            while job.progress.files_done < 1:
                await trio.sleep(0.01)
        warmer.cancel(job.id)
        cancelled = await finish(warmer, job.id)
        assert cancelled["state"] == "cancelled"
        assert cancelled["files_done"] < cancelled["files_total"] or cancelled["listing"]
        backend.faults.delay = 0
        rerun = await finish(warmer, warmer.start(ds, []).id)
        assert rerun["state"] == "done" and rerun["files_done"] == len(files())
        assert rerun["files_cached"] >= cancelled["files_done"]
        with pytest.raises(NotFound):
            warmer.job("w-nope")


async def test_at_most_a_few_jobs_run_at_once() -> None:
    backend = MemoryBackend(files())
    backend.faults.delay = 0.2
    async with warm_fs(backend) as (_, warmer, ds):
        jobs = [warmer.start(ds, []) for _ in range(MAX_RUNNING)]
        with pytest.raises(Busy):
            warmer.start(ds, [])
        for job in jobs:
            warmer.cancel(job.id)


def packed_version(tmp_path: Path, inner: MemoryBackend
                   ) -> tuple[ManifestBackend, dict[str, bytes]]:
    """A version of eight files in two packs (the first spans three blocks)."""
    content = {f"d/{i}.bin": bytes([i + 1]) * (30_000 + i) for i in range(8)}
    records, packs = [], []
    for name, members in (("v/.packs/p1", range(6)), ("v/.packs/p2", range(6, 8))):
        blob, offset = b"", 0
        for i in members:
            data = content[f"d/{i}.bin"]
            records.append(FileRecord(f"d/{i}.bin", len(data), 7, None, pack=name,
                                      offset=offset))
            blob += data
            offset += len(data)
        inner.put(name, blob)
        packs.append((name, len(blob), inner.files[name][1]))
    write_manifest(tmp_path / "m", records, root="v", kind="version", packs=packs)
    return ManifestBackend(inner, Manifest(tmp_path / "m"), name="m"), content


async def test_a_packed_version_is_warmed_under_its_packs_keys(tmp_path: Path) -> None:
    inner = MemoryBackend()
    version, content = packed_version(tmp_path, inner)
    async with warm_fs(version) as (fs, warmer, ds):
        done = await finish(warmer, warmer.start(ds, []).id)
        assert done["state"] == "done" and done["files_done"] == len(content)
        await trio.testing.wait_all_tasks_blocked()  # the packs' read-ahead has landed
        fetched = sum(n for _, _, n in inner.faults.reads)
        assert fetched == sum(len(v) for v in content.values())  # each pack byte once
        calls = len(inner.faults.reads)
        d = await fs.lookup((await fs.lookup(1, "w")).ino, "d")
        for name, data in content.items():
            attrs = await fs.lookup(d.ino, name.split("/")[1])
            fh, _ = await fs.open(attrs.ino, os.O_RDONLY)
            assert bytes(await fs.read(fh, 0, len(data) + 1)) == data
            await fs.release(fh)
        assert len(inner.faults.reads) == calls  # every read was served by the warm
