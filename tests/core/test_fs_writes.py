"""The write path of the filesystem core (node/fs/writes.py, write_staged.py, mutations.py),
driven through `FileSystem` exactly as the FUSE adapter drives it, over the memory backend
(whose faults drive the failures) with small parts so files span many of them.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from dsmount.errors import (
    AlreadyExists,
    Changed,
    InvalidRequest,
    IsADirectory,
    NotEmpty,
    NotFound,
    NotSupported,
    ReadOnly,
    TooManyWriters,
    Transient,
)
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.fs.core import FileSystem, FsSettings, WriteSettings
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import ROOT_INODE
from dsmount.storage.retry import RetryPolicy
from tests.support.memory_backend import MemoryBackend

PART = 64 * 1024
O_NEW = os.O_WRONLY | os.O_CREAT


def data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


class Env:
    def __init__(self, fs: FileSystem, cache: BlockCache) -> None:
        self.fs = fs
        self.cache = cache

    def attach(self, name: str, backend: MemoryBackend, **kw: Any) -> Datastore:
        ds = Datastore(name, backend, read_write=kw.pop("read_write", True), **kw)
        self.fs.attach(ds)
        return ds

    async def ino(self, path: str) -> int:
        ino = ROOT_INODE
        for part in [p for p in path.split("/") if p]:
            ino = (await self.fs.lookup(ino, part)).ino
        return ino

    async def create(self, path: str, flags: int = O_NEW) -> int:
        parent, _, name = path.rpartition("/")
        fh, _ = await self.fs.create(await self.ino(parent), name, flags)
        return fh

    async def write_all(self, fh: int, body: bytes, offset: int = 0, chunk: int = 10_000) -> None:
        for i in range(0, len(body), chunk):
            assert await self.fs.write(fh, offset + i, body[i : i + chunk]) == len(
                body[i : i + chunk]
            )

    async def close(self, fh: int) -> None:
        try:
            await self.fs.flush(fh)
        finally:
            await self.fs.release(fh)

    async def read(self, path: str) -> bytes:
        fh, _ = await self.fs.open(await self.ino(path), os.O_RDONLY)
        try:
            out, offset = b"", 0
            while chunk := await self.fs.read(fh, offset, 100_000):
                out += bytes(chunk)
                offset += len(chunk)
            return out
        finally:
            await self.fs.release(fh)

    async def names(self, path: str) -> list[str]:
        fh = await self.fs.opendir(await self.ino(path))
        try:
            return sorted(name for _, name, _ in await self.fs.readdir(fh, 0, 10_000))
        finally:
            await self.fs.releasedir(fh)


@asynccontextmanager
async def running(tmp: Path, *, budget: int = 64 * PART, **writes: Any) -> AsyncIterator[Env]:
    cache = BlockCache(budget)
    settings = {"part_size": PART, "staging_dir": str(tmp / "staging"), "deadline": 5.0,
                **writes}
    fs = FileSystem(cache, FsSettings(block_size=PART, request_deadline=5.0),
                    writes=WriteSettings(**settings))
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        await nursery.start(fs.writes.run)
        try:
            yield Env(fs, cache)
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with running(tmp_path) as e:
        yield e


def memory() -> MemoryBackend:
    return MemoryBackend(retry=RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002,
                                           deadline=5))


def stored(backend: MemoryBackend, path: str) -> bytes | None:
    item = backend.files.get(path)
    return item[0] if item else None


async def test_a_sequential_writer_streams_parts_and_commits_at_close(env: Env) -> None:
    backend = memory()
    ds = env.attach("out", backend)
    body = data(20 * PART + 123, 1)
    fh = await env.create("out/model.bin")
    await env.write_all(fh, body)
    await env.fs.writes._drain(env.fs._writers[fh])
    assert backend.staged_bytes >= 16 * PART  # streamed while writing ...
    assert stored(backend, "model.bin") is None  # ... but not visible
    assert (await env.fs.getattr(await env.ino("out/model.bin"))).size == len(body)
    await env.close(fh)
    assert stored(backend, "model.bin") == body
    assert backend.staged_bytes == len(body)  # every byte sent once
    assert await env.read("out/model.bin") == body
    assert "model.bin" in await env.names("out")
    assert ds.writes.commits == 1 and ds.writes.writers_open == 0
    assert ds.writes.bytes_written == len(body)
    # Every write buffer given back: all but one at once, that one (kept for a next writer,
    # as `tar x` opens one file after another) after the pool's linger.
    assert env.cache.reserved_bytes == PART * len(env.fs.writes.pool.idle) <= PART
    with trio.fail_after(5):
        while env.cache.reserved_bytes:
            await trio.sleep(0.02)


async def test_write_buffers_stay_inside_the_memory_budget(tmp_path: Path) -> None:
    async with running(tmp_path, budget=8 * PART, parts_in_flight=4) as env:
        backend = memory()
        backend.faults.delay, backend.faults.ops = 0.005, {"put"}  # slow uploads
        env.attach("out", backend)
        bodies = [data(12 * PART, 10 + i) for i in range(4)]

        async def writer(i: int) -> None:
            fh = await env.create(f"out/f{i}")
            await env.write_all(fh, bodies[i], chunk=PART // 2)
            await env.close(fh)

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(writer, i)
        assert env.cache.peak_bytes <= 8 * PART
        assert [stored(backend, f"f{i}") for i in range(4)] == bodies


async def test_readers_see_the_old_version_until_the_commit(env: Env) -> None:
    backend = memory()
    old = data(5 * PART, 2)
    backend.put("ckpt", old)
    env.attach("out", backend)
    ino = await env.ino("out/ckpt")
    reader, _ = await env.fs.open(ino, os.O_RDONLY)
    first = bytes(await env.fs.read(reader, 0, PART))
    writer, _ = await env.fs.open(ino, os.O_WRONLY | os.O_TRUNC)
    new = data(3 * PART, 3)
    await env.write_all(writer, new)
    assert bytes(await env.fs.read(reader, PART, PART)) == old[PART : 2 * PART]
    await env.close(writer)
    assert stored(backend, "ckpt") == new
    # The old handle is pinned to the old version: cached bytes of it, or ESTALE; never new.
    try:
        again = bytes(await env.fs.read(reader, 3 * PART, PART))
    except Changed:
        pass
    else:
        assert again == old[3 * PART : 4 * PART]
    assert first == old[:PART]
    await env.fs.release(reader)
    assert await env.read("out/ckpt") == new


async def test_appends_upload_only_the_new_bytes(env: Env) -> None:
    backend = memory()
    env.attach("logs", backend)
    fh = await env.create("logs/events")
    await env.write_all(fh, b"start\n")
    await env.close(fh)
    expected = b"start\n"
    for i in range(20):
        before = backend.staged_bytes
        ino = await env.ino("logs/events")
        fh, _ = await env.fs.open(ino, os.O_WRONLY | os.O_APPEND)
        line = f"event {i}\n".encode()
        size = (await env.fs.getattr(ino)).size
        await env.fs.write(fh, size, line)
        await env.close(fh)
        expected += line
        assert backend.staged_bytes - before == len(line)
        assert stored(backend, "events") == expected


async def test_seeking_back_continues_on_disk(env: Env) -> None:
    backend = memory()
    env.attach("out", backend)
    body = bytearray(data(10 * PART + 7, 4))
    fh = await env.create("out/archive.zip")
    await env.write_all(fh, bytes(body))
    header = b"PATCHED-HEADER"
    await env.fs.write(fh, 3, header)  # a zip writer patching a local header
    body[3 : 3 + len(header)] = header
    tail = b"trailer"
    await env.fs.write(fh, len(body), tail)
    body += tail
    assert bytes(await env.fs.read(fh, 0, 20)) == bytes(body[:20])
    await env.close(fh)
    assert stored(backend, "archive.zip") == bytes(body)


async def test_an_update_in_the_middle_fetches_only_what_it_needs(env: Env) -> None:
    backend = memory()
    old = data(10 * PART, 5)
    backend.put("big", old)
    env.attach("out", backend)
    ino = await env.ino("out/big")
    fh, _ = await env.fs.open(ino, os.O_RDWR)
    await env.fs.write(fh, 4 * PART + 10, b"X" * 100)
    reads_before = len(backend.faults.reads)
    assert bytes(await env.fs.read(fh, 4 * PART, 20)) == old[4 * PART : 4 * PART + 10] + b"X" * 10
    assert len(backend.faults.reads) == reads_before  # that part is staged now
    await env.close(fh)
    expected = old[: 4 * PART + 10] + b"X" * 100 + old[4 * PART + 110 :]
    assert stored(backend, "big") == expected


async def test_truncates(env: Env) -> None:
    backend = memory()
    backend.put("f", data(3 * PART, 6))
    env.attach("out", backend)
    ino = await env.ino("out/f")
    await env.fs.setattr(ino, size=PART + 5)  # truncate(2): no handle, committed at once
    assert stored(backend, "f") == data(3 * PART, 6)[: PART + 5]
    fh, _ = await env.fs.open(ino, os.O_RDWR)
    await env.fs.setattr(ino, size=2 * PART, fh=fh)  # ftruncate grows with zeros
    await env.fs.write(fh, 2 * PART, b"end")
    await env.close(fh)
    assert stored(backend, "f") == data(3 * PART, 6)[: PART + 5] + bytes(PART - 5) + b"end"
    await env.fs.setattr(ino, size=0)
    assert stored(backend, "f") == b""


async def test_an_empty_new_file_is_committed(env: Env) -> None:
    backend = memory()
    env.attach("out", backend)
    await env.close(await env.create("out/touched"))
    assert stored(backend, "touched") == b""


async def test_a_failed_upload_is_the_close_error_and_commits_nothing(env: Env) -> None:
    backend = memory()
    backend.put("keep", b"old")
    ds = env.attach("out", backend)
    backend.faults.error, backend.faults.fail_next = Transient("down"), 10**6
    backend.faults.ops = {"commit"}
    fh, _ = await env.fs.open(await env.ino("out/keep"), os.O_WRONLY | os.O_TRUNC)
    await env.fs.write(fh, 0, b"new bytes")
    with pytest.raises(Transient):
        await env.fs.flush(fh)
    with pytest.raises(Transient):  # the same error again, nothing retried behind its back
        await env.fs.fsync(fh)
    with pytest.raises(Transient):
        await env.fs.write(fh, 9, b"more")
    await env.fs.release(fh)
    assert stored(backend, "keep") == b"old"
    assert ds.writes.failed_commits == 1 and ds.writes.commits == 0


async def test_a_failed_part_is_reported_by_the_next_write_or_the_close(env: Env) -> None:
    backend = memory()
    env.attach("out", backend)
    backend.faults.error, backend.faults.fail_next = Transient("down"), 10**6
    backend.faults.ops = {"put"}
    fh = await env.create("out/f")
    with pytest.raises(Transient):
        await env.write_all(fh, data(10 * PART, 7))
        await env.fs.flush(fh)
    await env.fs.release(fh)
    assert stored(backend, "f") is None
    with pytest.raises(NotFound):  # this node does not pretend the file exists either
        await env.ino("out/f")
    assert "f" not in await env.names("out")


async def test_read_only_datastores_versions_and_the_top_refuse_every_change(env: Env) -> None:
    backend = memory()
    backend.put("a", b"a")
    env.attach("ro", backend, read_write=False)
    env.attach("ver", memory(), version="1", immutable=True, read_write=False)
    ro, a = await env.ino("ro"), await env.ino("ro/a")
    calls = [
        env.fs.create(ro, "new", O_NEW),
        env.fs.open(a, os.O_WRONLY),
        env.fs.open(a, os.O_RDONLY | os.O_TRUNC),
        env.fs.mkdir(ro, "d"),
        env.fs.unlink(ro, "a"),
        env.fs.rmdir(ro, "x"),
        env.fs.rename(ro, "a", ro, "b"),
        env.fs.setattr(a, size=0),
        env.fs.setattr(a),
        env.fs.create(ROOT_INODE, "new", O_NEW),
        env.fs.mkdir(await env.ino("ver/1"), "d"),
    ]
    for call in calls:
        with pytest.raises(ReadOnly):
            await call
    with pytest.raises(ReadOnly):
        env.fs.not_supported(ro, "a hard link")
    assert stored(backend, "a") == b"a"


async def test_the_writer_cap_is_a_clear_error(tmp_path: Path) -> None:
    async with running(tmp_path, max_open_files=2) as env:
        env.attach("out", memory())
        a, b = await env.create("out/a"), await env.create("out/b")
        with pytest.raises(TooManyWriters, match="max_open_files"):
            await env.create("out/c")
        await env.close(a)
        await env.close(await env.create("out/c"))
        await env.close(b)


async def test_an_open_at_the_cap_waits_for_a_release_already_on_its_way(
    tmp_path: Path,
) -> None:
    """close(2) returns after FLUSH; the kernel's RELEASE follows on its own. An open that
    arrives between the two waits for it (within RELEASE_GRACE) instead of failing ENFILE."""
    async with running(tmp_path, max_open_files=2) as env:
        env.attach("out", memory())
        a, b = await env.create("out/a"), await env.create("out/b")
        await env.fs.flush(a)  # the close(2) part
        opened: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _append(opened, env.create("out/c")))
            await trio.sleep(0.2)
            assert opened == []  # waiting, not refused
            await env.fs.release(a)  # the RELEASE arriving late
        assert len(opened) == 1
        await env.close(opened[0])
        await env.close(b)


async def _append(out: list[int], call: Awaitable[int]) -> None:
    out.append(await call)


async def test_directories_unlink_and_rename(env: Env) -> None:
    backend = memory()
    env.attach("ws", backend)
    root = await env.ino("ws")
    await env.fs.mkdir(root, "runs")
    assert await env.names("ws") == ["runs"] and backend.dirs == {"runs"}
    with pytest.raises(AlreadyExists):
        await env.fs.mkdir(root, "runs")
    fh = await env.create("ws/runs/tmp.ckpt")
    await env.write_all(fh, b"v2")
    await env.fs.fsync(fh)  # the checkpoint pattern: write, fsync, rename over the old one
    await env.close(fh)
    backend.put("runs/last.ckpt", b"v1")
    runs = await env.ino("ws/runs")
    await env.fs.rename(runs, "tmp.ckpt", runs, "last.ckpt")
    assert stored(backend, "runs/last.ckpt") == b"v2" and stored(backend, "runs/tmp.ckpt") is None
    assert await env.read("ws/runs/last.ckpt") == b"v2"
    with pytest.raises(NotFound):
        await env.ino("ws/runs/tmp.ckpt")
    with pytest.raises(NotEmpty):
        await env.fs.rmdir(root, "runs")
    with pytest.raises(IsADirectory):
        await env.fs.unlink(root, "runs")
    await env.fs.rename(root, "runs", root, "old-runs")
    assert stored(backend, "old-runs/last.ckpt") == b"v2"
    assert await env.read("ws/old-runs/last.ckpt") == b"v2"
    await env.fs.unlink(await env.ino("ws/old-runs"), "last.ckpt")
    await env.fs.rmdir(root, "old-runs")
    assert await env.names("ws") == [] and backend.files == {}
    with pytest.raises(NotSupported):
        env.fs.not_supported(root, "a symbolic link")
    await env.fs.setattr(root)  # chmod/chown/utimens: accepted, not stored


async def test_unlinking_a_file_being_written_commits_nothing(env: Env) -> None:
    backend = memory()
    env.attach("out", backend)
    fh = await env.create("out/scratch")
    await env.write_all(fh, data(3 * PART, 8))
    await env.fs.unlink(await env.ino("out"), "scratch")
    await env.close(fh)
    assert stored(backend, "scratch") is None


async def test_rename_no_replace_and_exchange(env: Env) -> None:
    backend = memory()
    backend.put("a", b"a")
    backend.put("b", b"b")
    env.attach("out", backend)
    root = await env.ino("out")
    with pytest.raises(AlreadyExists):
        await env.fs.rename(root, "a", root, "b", 1)
    with pytest.raises(InvalidRequest):
        await env.fs.rename(root, "a", root, "b", 2)
    assert stored(backend, "a") == b"a" and stored(backend, "b") == b"b"
