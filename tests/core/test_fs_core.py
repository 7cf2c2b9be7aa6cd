"""The filesystem core (dsmount/node/fs/core.py) driven directly, without FUSE.

Each test runs a real BlockCache in its own nursery (`running_fs`) over a MemoryBackend with
fault injection (one test uses a LocalBackend on a temp dir), with an injected clock for TTLs.
Covered: the namespace (attach, versions, detach), lookup/getattr/readdir with metadata and
negative caching, read correctness across blocks, read-ahead, ETag pinning when an object is
replaced under an open handle, keep_cache, retries, permanent faults, and deadlines.
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dsmount.errors import (
    AlreadyExists,
    AuthFailed,
    Busy,
    Changed,
    InvalidRequest,
    NotFound,
    ReadOnly,
    TimedOut,
    Transient,
)
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.fs.core import Attributes, FileSystem, FsSettings
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import ROOT_INODE
from dsmount.storage.local import LocalBackend
from tests.support.memory_backend import MemoryBackend

BS = 64 * 1024  # small blocks, so modest files cross many of them
MTIME = 1_700_000_000_000_000_000  # MemoryBackend's default mtime


class Clock:
    """A monotonic clock the test moves by hand (metadata TTLs)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ClosingBackend(MemoryBackend):
    """A MemoryBackend that records aclose() calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


@dataclass
class Env:
    fs: FileSystem
    cache: BlockCache
    clock: Clock
    invalidated: list[tuple[int, str]] = field(default_factory=list)

    def attach(self, name: str, backend: Any, **kwargs: Any) -> Datastore:
        ds = Datastore(name, backend, **kwargs)
        self.fs.attach(ds)
        return ds

    async def resolve(self, path: str) -> Attributes:
        """Look up each component of `path` from the root, as the kernel would."""
        attrs = await self.fs.getattr(ROOT_INODE)
        for part in path.split("/"):
            attrs = await self.fs.lookup(attrs.ino, part)
        return attrs

    async def listdir(self, ino: int, batch: int = 512) -> list[tuple[int, str, Attributes]]:
        fh = await self.fs.opendir(ino)
        out: list[tuple[int, str, Attributes]] = []
        try:
            while chunk := await self.fs.readdir(fh, len(out), batch):
                out.extend(chunk)
        finally:
            await self.fs.releasedir(fh)
        return out

    async def read_file(self, path: str, chunk: int = 32 * 1024) -> bytes:
        attrs = await self.resolve(path)
        fh, _ = await self.fs.open(attrs.ino, os.O_RDONLY)
        parts = []
        try:
            offset = 0
            while data := await self.fs.read(fh, offset, chunk):
                parts.append(data)
                offset += len(data)
        finally:
            await self.fs.release(fh)
        return b"".join(parts)


@asynccontextmanager
async def running_fs(*, budget: int = 64 * BS, **settings: Any) -> AsyncIterator[Env]:
    """A FileSystem over a BlockCache running in its own nursery, cancelled on exit."""
    settings = {"block_size": BS, "readahead_max": 4 * BS, **settings}
    cache = BlockCache(budget)
    clock = Clock()
    invalidated: list[tuple[int, str]] = []
    fs = FileSystem(
        cache,
        FsSettings(**settings),
        clock=clock,
        invalidate_entry=lambda parent, name: invalidated.append((parent, name)),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        try:
            yield Env(fs, cache, clock, invalidated)
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with running_fs() as e:
        yield e


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# -- namespace, lookup, getattr ---------------------------------------------------------------


async def test_root_datastores_lookup_and_getattr() -> None:
    async with running_fs(uid=1000, gid=100) as env:
        fs = env.fs
        env.attach("beta", MemoryBackend())
        env.attach("alpha", MemoryBackend({"a.txt": b"hello", "sub/b.bin": b"x" * 10}))
        assert [name for _, name, _ in await env.listdir(ROOT_INODE)] == ["alpha", "beta"]

        alpha = await fs.lookup(ROOT_INODE, "alpha")
        assert alpha.is_dir and alpha.mode == stat.S_IFDIR | 0o555
        a = await fs.lookup(alpha.ino, "a.txt")
        assert not a.is_dir and a.size == 5 and a.mtime_ns == MTIME
        assert a.mode == stat.S_IFREG | 0o444 and (a.uid, a.gid) == (1000, 100)
        assert await fs.getattr(a.ino) == a
        listing = {name: attrs for _, name, attrs in await env.listdir(alpha.ino)}
        assert set(listing) == {"a.txt", "sub"}
        assert listing["sub"].is_dir and listing["a.txt"].ino == a.ino
        assert (await env.resolve("alpha/sub/b.bin")).size == 10

        for parent, name in [
            (ROOT_INODE, "gamma"),
            (alpha.ino, "nope"),
            (a.ino, "x"),
            (alpha.ino, "."),
            (alpha.ino, "n" * 300),
        ]:
            with pytest.raises(NotFound):
                await fs.lookup(parent, name)
        with pytest.raises(NotFound):
            await fs.getattr(10**9)


async def test_readdir_pages_a_huge_directory(env: Env) -> None:
    names = [f"f{i:04d}" for i in range(1000)]
    backend = MemoryBackend({f"big/{n}": n.encode() for n in names}, page_size=100)
    env.attach("ds", backend)
    big = await env.resolve("ds/big")
    calls = backend.faults.calls
    fh = await env.fs.opendir(big.ino)
    seen: list[str] = []
    position = 0
    while batch := await env.fs.readdir(fh, position, 64):
        assert len(batch) <= 64
        for next_position, name, attrs in batch:
            assert next_position == position + 1  # positions the kernel can resume from
            assert attrs.size == len(name)
            position = next_position
            seen.append(name)
    await env.fs.releasedir(fh)
    assert sorted(seen) == names and len(seen) == len(set(seen))
    assert backend.faults.calls == calls + 1  # one listing, streamed page by page
    # The complete listing is cached: a re-list and a lookup in it cost no backend call.
    assert sorted(n for _, n, _ in await env.listdir(big.ino, batch=37)) == names
    assert (await env.fs.lookup(big.ino, "f0500")).size == 5
    with pytest.raises(NotFound):
        await env.fs.lookup(big.ino, "f1000")
    assert backend.faults.calls == calls + 1
    with pytest.raises(NotFound):
        await env.fs.readdir(fh, 0, 10)  # released


async def test_versions_live_under_a_virtual_directory(env: Env) -> None:
    fs = env.fs
    env.attach("ds", MemoryBackend({"f": b"one"}), version="v1", immutable=True)
    env.attach("ds", MemoryBackend({"f": b"two!"}), version="v2", immutable=True)
    assert [n for _, n, _ in await env.listdir(ROOT_INODE)] == ["ds"]
    virtual = await fs.lookup(ROOT_INODE, "ds")
    assert virtual.is_dir
    assert [n for _, n, _ in await env.listdir(virtual.ino)] == ["v1", "v2"]
    assert await env.read_file("ds/v1/f") == b"one"
    assert await env.read_file("ds/v2/f") == b"two!"
    with pytest.raises(NotFound):
        await fs.lookup(virtual.ino, "v3")
    with pytest.raises(NotFound):
        fs.find("ds")  # attached by version: a version must be named
    assert fs.find("ds", "v2").version == "v2"
    with pytest.raises(AlreadyExists):
        env.attach("ds", MemoryBackend())  # no unversioned one beside versions
    with pytest.raises(AlreadyExists):
        env.attach("ds", MemoryBackend(), version="v1")

    await fs.detach("ds", "v1")
    assert env.invalidated == [(virtual.ino, "v1")]
    assert [n for _, n, _ in await env.listdir(virtual.ino)] == ["v2"]
    await fs.detach("ds", "v2")
    assert env.invalidated[-1] == (ROOT_INODE, "ds")
    assert await env.listdir(ROOT_INODE) == []


async def test_attach_name_rules(env: Env) -> None:
    env.attach("data", MemoryBackend())
    with pytest.raises(AlreadyExists):
        env.attach("data", MemoryBackend())
    with pytest.raises(AlreadyExists):
        env.attach("data", MemoryBackend(), version="v1")  # unversioned one is there
    for bad in ["", ".", "..", "a/b", "nul\0", "x" * 256]:
        with pytest.raises(InvalidRequest):
            env.attach(bad, MemoryBackend())
    with pytest.raises(InvalidRequest):
        env.attach("other", MemoryBackend(), version="v/1")
    assert [d.name for d in env.fs.datastores()] == ["data"]


async def test_negative_lookups_are_cached_for_their_ttl(env: Env) -> None:
    backend = MemoryBackend({"present": b"x"})
    env.attach("ds", backend, negative_ttl=5.0)
    root = await env.resolve("ds")
    calls = backend.faults.calls
    with pytest.raises(NotFound):
        await env.fs.lookup(root.ino, "missing")
    assert backend.faults.calls == calls + 1
    backend.put("missing", b"now here")
    with pytest.raises(NotFound):
        await env.fs.lookup(root.ino, "missing")  # answered from the negative cache
    assert backend.faults.calls == calls + 1
    env.clock.advance(5.1)
    assert (await env.fs.lookup(root.ino, "missing")).size == 8
    assert backend.faults.calls == calls + 2


async def test_attributes_expire_after_the_ttl(env: Env) -> None:
    backend = MemoryBackend({"f": b"short"})
    env.attach("ds", backend, ttl=10.0)
    f = await env.resolve("ds/f")
    calls = backend.faults.calls
    assert (await env.resolve("ds/f")).ino == f.ino
    backend.put("f", b"a longer body")
    assert (await env.fs.getattr(f.ino)).size == 5  # still trusted
    assert backend.faults.calls == calls
    env.clock.advance(10.5)
    assert (await env.fs.getattr(f.ino)).size == 13
    assert backend.faults.calls == calls + 1
    assert (await env.resolve("ds/f")).size == 13  # fresh again: no call
    assert backend.faults.calls == calls + 1


async def test_immutable_datastore_never_restats(env: Env) -> None:
    backend = MemoryBackend({"d/f": b"data"})
    env.attach("ds", backend, immutable=True, ttl=1.0)
    f = await env.resolve("ds/d/f")
    calls = backend.faults.calls
    env.clock.advance(1e9)
    assert (await env.resolve("ds/d/f")).ino == f.ino
    await env.fs.getattr(f.ino)
    fh, keep_cache = await env.fs.open(f.ino, os.O_RDONLY)
    assert keep_cache  # an immutable object's pages may always stay in the page cache
    await env.fs.release(fh)
    assert backend.faults.calls == calls


async def test_forget_removes_nodes(env: Env) -> None:
    env.attach("ds", MemoryBackend({"f": b"x"}))
    root = await env.resolve("ds")
    first = await env.fs.lookup(root.ino, "f")
    await env.fs.lookup(root.ino, "f")  # two kernel references now
    count = len(env.fs.inodes)
    env.fs.forget([(first.ino, 1)])
    assert (await env.fs.getattr(first.ino)).ino == first.ino
    env.fs.forget([(first.ino, 1)])
    assert len(env.fs.inodes) == count - 1
    with pytest.raises(NotFound):
        await env.fs.getattr(first.ino)
    again = await env.fs.lookup(root.ino, "f")
    assert again.ino != first.ino  # inode numbers are never reused
    env.fs.forget([(ROOT_INODE, 100), (10**9, 1)])  # the root and unknown inodes: ignored
    assert (await env.fs.getattr(ROOT_INODE)).is_dir


# -- reads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        os.O_WRONLY,
        os.O_RDWR,
        os.O_RDONLY | os.O_TRUNC,
        os.O_WRONLY | os.O_APPEND,
        os.O_WRONLY | os.O_CREAT,
    ],
)
async def test_open_for_writing_is_read_only(env: Env, flags: int) -> None:
    env.attach("ds", MemoryBackend({"f": b"x"}))
    f = await env.resolve("ds/f")
    with pytest.raises(ReadOnly):
        await env.fs.open(f.ino, flags)
    assert env.fs.find("ds").open_files == 0


async def test_open_a_directory_is_refused(env: Env) -> None:
    env.attach("ds", MemoryBackend({"d/f": b"x"}))
    with pytest.raises(InvalidRequest):
        await env.fs.open((await env.resolve("ds/d")).ino, os.O_RDONLY)


async def test_reads_return_exact_bytes() -> None:
    async with running_fs(budget=8 * BS) as env:  # small: blocks get evicted and refetched
        data = random_bytes(5 * BS + 12345, seed=1)
        env.attach("ds", MemoryBackend({"f": data, "tiny": b"abc", "empty": b""}))
        f = await env.resolve("ds/f")
        fh, _ = await env.fs.open(f.ino, os.O_RDONLY)
        rng = random.Random(2)
        for _ in range(300):
            offset = rng.randrange(0, len(data) + BS)
            length = rng.choice([0, 1, rng.randrange(1, 3 * BS), BS, 2 * BS + 1])
            assert await env.fs.read(fh, offset, length) == data[offset : offset + length]
        await env.fs.release(fh)
        assert env.cache.used_bytes <= env.cache.budget
        assert await env.read_file("ds/f", chunk=100_000) == data
        assert await env.read_file("ds/tiny") == b"abc"
        assert await env.read_file("ds/empty") == b""
        ds = env.fs.find("ds")
        assert ds.open_files == 0
        assert ds.counters.bytes_read >= len(data)


async def test_sequential_reads_trigger_readahead(env: Env) -> None:
    data = random_bytes(16 * BS, seed=3)
    backend = MemoryBackend({"f": data})
    ds = env.attach("ds", backend)
    assert await env.read_file("ds/f", chunk=BS // 2) == data
    c = ds.counters
    assert c.readahead_started > 0 and c.readahead_hits > 0 and c.cache_hits > 0
    # Only the first read (its own range: not yet known to be sequential) and the second (the
    # rest of that block) missed: every later block was read ahead.
    assert c.cache_misses == 2
    # Every byte fetched exactly once: the GETs tile the file, whole blocks after the first.
    assert sorted((offset, n) for _, offset, n in backend.faults.reads) == [
        (0, BS // 2), (BS // 2, BS // 2), *((i * BS, BS) for i in range(1, 16))
    ]


async def test_random_reads_do_not_prefetch(env: Env) -> None:
    data = random_bytes(32 * BS, seed=4)
    backend = MemoryBackend({"f": data})
    ds = env.attach("ds", backend)
    f = await env.resolve("ds/f")
    fh, _ = await env.fs.open(f.ino, os.O_RDONLY)
    blocks = [7, 2, 20, 13, 30, 0, 25, 10, 4, 17]  # never within a block of the previous read
    for b in blocks:
        offset = b * BS + 100
        assert await env.fs.read(fh, offset, 1000) == data[offset : offset + 1000]
    await env.fs.release(fh)
    assert ds.counters.readahead_started == 0
    assert sorted(offset // BS for _, offset, _ in backend.faults.reads) == sorted(blocks)


async def test_replaced_object_under_an_open_handle(env: Env) -> None:
    old = random_bytes(4 * BS, seed=5)
    new = random_bytes(4 * BS, seed=6)
    backend = MemoryBackend({"f": old})
    env.attach("ds", backend)
    f = await env.resolve("ds/f")
    fh, _ = await env.fs.open(f.ino, os.O_RDONLY)
    assert await env.fs.read(fh, 0, 100) == old[:100]  # a first read: block 0 only
    backend.put("f", new)
    # What is cached is of the pinned version: still consistent.
    assert await env.fs.read(fh, 50, 100) == old[50:150]
    # The next uncached block cannot come from the new version.
    with pytest.raises(Changed):
        await env.fs.read(fh, 3 * BS, 100)
    # A read spanning a cached old block and an uncached one never mixes versions.
    with pytest.raises(Changed):
        await env.fs.read(fh, BS - 50, 100)
    await env.fs.release(fh)
    env.fs.refresh("ds", path="f")
    fh, keep_cache = await env.fs.open(f.ino, os.O_RDONLY)
    assert not keep_cache  # the kernel must drop pages of the old version
    assert await env.fs.read(fh, 0, 4 * BS) == new
    await env.fs.release(fh)


async def test_keep_cache_only_for_the_same_etag(env: Env) -> None:
    backend = MemoryBackend({"f": b"v1"})
    env.attach("ds", backend)
    f = await env.resolve("ds/f")

    async def open_close() -> bool:
        fh, keep = await env.fs.open(f.ino, os.O_RDONLY)
        await env.fs.release(fh)
        return keep

    assert await open_close() is False  # first open: nothing cached by the kernel yet
    assert await open_close() is True
    backend.put("f", b"v2")
    env.fs.refresh("ds")
    assert await open_close() is False
    assert await open_close() is True


# -- detach -----------------------------------------------------------------------------------


async def test_detach_with_open_files_is_busy_unless_forced(env: Env) -> None:
    data = random_bytes(3 * BS, seed=7)
    backend = ClosingBackend({"f": data})
    env.attach("ds", backend)
    f = await env.resolve("ds/f")
    fh, _ = await env.fs.open(f.ino, os.O_RDONLY)
    assert await env.fs.read(fh, 0, 10) == data[:10]
    with pytest.raises(Busy):
        await env.fs.detach("ds")
    assert env.fs.find("ds").open_files == 1 and env.invalidated == []

    ds = await env.fs.detach("ds", force=True)  # lazy
    assert env.invalidated == [(ROOT_INODE, "ds")]
    with pytest.raises(NotFound):
        await env.fs.lookup(ROOT_INODE, "ds")
    assert backend.closed == 0
    # The open handle keeps reading, even blocks it never fetched before.
    assert await env.fs.read(fh, 2 * BS, BS) == data[2 * BS :]
    with pytest.raises(NotFound):
        await env.fs.open(f.ino, os.O_RDONLY)  # but nothing new opens
    await env.fs.release(fh)
    assert backend.closed == 1 and ds.open_files == 0


async def test_a_detach_waits_for_a_release_already_on_its_way(env: Env) -> None:
    """close(2) returns before the kernel's RELEASE arrives: a detach right after it waits
    for that release (within RELEASE_GRACE) instead of refusing Busy."""
    backend = ClosingBackend({"f": b"abc"})
    env.attach("ds", backend)
    f = await env.resolve("ds/f")
    fh, _ = await env.fs.open(f.ino, os.O_RDONLY)
    detached: list[Datastore] = []

    async def detach() -> None:
        detached.append(await env.fs.detach("ds"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(detach)
        await trio.sleep(0.2)
        assert detached == []  # waiting, not refused
        await env.fs.release(fh)
    assert detached[0].detached and backend.closed == 1


async def test_detach_without_open_files(env: Env) -> None:
    backend = ClosingBackend({"d/f": b"abc"})
    env.attach("ds", backend)
    env.attach("keep", MemoryBackend({"g": b"g"}))
    d = await env.resolve("ds/d")
    assert await env.read_file("ds/d/f") == b"abc"
    await env.fs.detach("ds")
    assert backend.closed == 1
    assert env.invalidated == [(ROOT_INODE, "ds")]
    assert [n for _, n, _ in await env.listdir(ROOT_INODE)] == ["keep"]
    with pytest.raises(NotFound):
        await env.fs.lookup(d.ino, "f")  # a stale inode of it resolves nothing
    with pytest.raises(NotFound):
        await env.fs.detach("ds")
    assert await env.read_file("keep/g") == b"g"
    # Re-attaching the name gives a fresh datastore, not the old one's cached data.
    env.attach("ds", MemoryBackend({"d/f": b"xyz"}))
    assert await env.read_file("ds/d/f") == b"xyz"


async def test_detach_invalidates_only_entries_the_kernel_holds(env: Env) -> None:
    # pyfuse3 logs an error for invalidating an entry the kernel never looked up.
    plain = ClosingBackend()
    env.attach("plain", plain)
    env.attach("ver", MemoryBackend(), version="v1")
    await env.fs.detach("plain")
    await env.fs.detach("ver", "v1")
    assert env.invalidated == [] and plain.closed == 1
    assert await env.listdir(ROOT_INODE) == []


# -- faults and deadlines ---------------------------------------------------------------------


async def test_transient_faults_are_retried(env: Env) -> None:
    data = random_bytes(2 * BS, seed=8)
    backend = MemoryBackend({"f": data})
    env.attach("ds", backend)
    root = await env.resolve("ds")
    backend.faults.error = Transient("connection reset")
    backend.faults.fail_next = 2
    f = await env.fs.lookup(root.ino, "f")
    assert f.size == len(data) and backend.stats.retries == 2
    fh, _ = await env.fs.open(f.ino, os.O_RDONLY)
    backend.faults.fail_next = 2
    assert await env.fs.read(fh, 0, 2 * BS) == data
    assert backend.stats.retries == 4 and backend.faults.fail_next == 0
    await env.fs.release(fh)


async def test_permanent_faults_surface_as_typed_errors(env: Env) -> None:
    data = random_bytes(BS, seed=9)
    backend = MemoryBackend({"f": data})
    ds = env.attach("ds", backend)
    root = await env.resolve("ds")
    backend.faults.error = AuthFailed("403 AuthorizationFailure")
    backend.faults.fail_next = 1
    with pytest.raises(AuthFailed):
        await env.fs.lookup(root.ino, "f")
    f = await env.fs.lookup(root.ino, "f")  # not remembered as missing
    fh, _ = await env.fs.open(f.ino, os.O_RDONLY)
    backend.faults.fail_next = 1
    with pytest.raises(AuthFailed):
        await env.fs.read(fh, 0, 10)
    assert ds.counters.fetch_errors == 1 and backend.stats.retries == 0
    await trio.sleep(env.cache.failure_ttl)  # replayed only that long (the kernel's re-read)
    assert await env.fs.read(fh, 0, 10) == data[:10]  # the failure was not cached
    await env.fs.release(fh)


async def test_hung_backend_read_times_out_at_the_deadline() -> None:
    deadline = 0.25
    async with running_fs(request_deadline=deadline) as env:
        backend = MemoryBackend({"f": b"x" * 100, "d/a": b"a"})
        env.attach("ds", backend)
        f = await env.resolve("ds/f")
        d = await env.resolve("ds/d")
        fh, _ = await env.fs.open(f.ino, os.O_RDONLY)
        dh = await env.fs.opendir(d.ino)
        backend.faults.delay = 30
        for call in (lambda: env.fs.read(fh, 0, 10), lambda: env.fs.readdir(dh, 0, 10)):
            start = trio.current_time()
            with pytest.raises(TimedOut):
                await call()
            assert deadline <= trio.current_time() - start < deadline + 1.0
        await env.fs.release(fh)
        await env.fs.releasedir(dh)


async def test_hung_backend_lookup_times_out_at_the_deadline() -> None:
    async with running_fs(request_deadline=0.2) as env:
        backend = MemoryBackend({"f": b"x"})
        env.attach("ds", backend)
        root = await env.resolve("ds")
        backend.faults.delay = 30
        with trio.fail_after(1.0):  # bound the test itself; TooSlowError fails it
            with pytest.raises(TimedOut):
                await env.fs.lookup(root.ino, "f")


async def test_failed_listing_is_not_cached_as_complete(env: Env) -> None:
    backend = MemoryBackend({f"d/f{i}": b"x" for i in range(5)})
    env.attach("ds", backend)
    d = await env.resolve("ds/d")
    fh = await env.fs.opendir(d.ino)
    backend.faults.error = AuthFailed("403")
    backend.faults.fail_next = 1
    with pytest.raises(AuthFailed):
        await env.fs.readdir(fh, 0, 10)
    # The application retries on the same handle (getdents again): it may get an error or
    # the whole listing, never a silently truncated one.
    try:
        again = [name for _, name, _ in await env.fs.readdir(fh, 0, 10)]
    except AuthFailed:
        again = None
    await env.fs.releasedir(fh)
    assert again is None or len(again) == 5
    assert (await env.fs.lookup(d.ino, "f1")).size == 1
    assert len(await env.listdir(d.ino)) == 5


async def test_refresh_reaches_immutable_datastores(env: Env) -> None:
    backend = MemoryBackend({"f": b"old"})
    env.attach("ds", backend, version="v1", immutable=True)
    assert await env.read_file("ds/v1/f") == b"old"
    backend.put("f", b"fixed")
    env.fs.refresh("ds", "v1")
    assert await env.read_file("ds/v1/f") == b"fixed"


# -- a real directory -------------------------------------------------------------------------


async def test_local_backend(env: Env, tmp_path: Path) -> None:
    data = random_bytes(3 * BS + 777, seed=10)
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "deep.bin").write_bytes(data)
    (tmp_path / "top.txt").write_text("top\n")
    env.attach("local", LocalBackend(tmp_path))
    root = await env.resolve("local")
    listing = {n: a for _, n, a in await env.listdir(root.ino)}
    assert set(listing) == {"nested", "top.txt"} and listing["nested"].is_dir
    assert listing["top.txt"].size == 4
    assert await env.read_file("local/top.txt") == b"top\n"
    deep = await env.resolve("local/nested/deep.bin")
    fh, _ = await env.fs.open(deep.ino, os.O_RDONLY)
    rng = random.Random(11)
    for _ in range(50):
        offset = rng.randrange(0, len(data))
        length = rng.randrange(1, 2 * BS)
        assert await env.fs.read(fh, offset, length) == data[offset : offset + length]
    # Replace the file (a new inode, so a new ETag): a block not cached yet cannot be served.
    env.fs.cache.drop(env.fs.find("local").id)
    replacement = tmp_path / "nested" / ".new"
    replacement.write_bytes(random_bytes(len(data), seed=12))
    os.replace(replacement, tmp_path / "nested" / "deep.bin")
    with pytest.raises(Changed):
        await env.fs.read(fh, 0, 10)
    await env.fs.release(fh)
    with pytest.raises(NotFound):
        await env.fs.lookup(root.ino, "absent")


# -- object-store access patterns ---------------------------------------------------------------


class CountingBackend(MemoryBackend):
    """A memory backend that behaves like an object store and counts stat and list calls."""

    list_on_lookup = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats_calls = 0
        self.list_calls = 0

    async def stat(self, path: str) -> Any:
        self.stats_calls += 1
        return await super().stat(path)

    async def list(self, path: str) -> AsyncIterator[list[Any]]:
        self.list_calls += 1
        async for page in super().list(path):
            yield page


async def test_lookups_in_an_unlisted_directory_cost_one_listing_not_one_stat_each() -> None:
    files = {f"train/{i:03d}.jpg": random_bytes(100, i) for i in range(50)}
    backend = CountingBackend(files, page_size=100)
    async with running_fs() as e:
        e.attach("ds", backend)
        async with trio.open_nursery() as nursery:  # concurrent readers share one listing
            for i in range(50):
                nursery.start_soon(e.read_file, f"ds/train/{i:03d}.jpg")
        assert backend.list_calls == 2  # one per directory: the root and train/
        assert backend.stats_calls == 0
        with pytest.raises(NotFound):
            await e.resolve("ds/train/missing.jpg")  # answered by the cached listing
        assert backend.stats_calls == 0
        assert await e.read_file("ds/train/007.jpg") == files["train/007.jpg"]


async def test_lookups_in_a_directory_longer_than_a_page_use_stat() -> None:
    files = {f"big/{i:04d}": b"x" for i in range(250)}
    backend = CountingBackend(files, page_size=100)
    async with running_fs() as e:
        e.attach("ds", backend)
        for i in range(5):
            await e.resolve(f"ds/big/{i:04d}")
        assert backend.list_calls == 2  # the root; big/ tried once, then remembered as too big
        assert backend.stats_calls == 5


def fetched_ranges(backend: MemoryBackend) -> list[tuple[int, int]]:
    """The (start, end) of every backend read, in offset order."""
    return sorted((offset, offset + n) for _, offset, n in backend.faults.reads)


def assert_tiles(ranges: list[tuple[int, int]], size: int) -> None:
    """`ranges` cover [0, size) with no byte twice and none missing."""
    pos = 0
    for start, end in ranges:
        assert start == pos, f"gap or overlap at {pos}: next range starts at {start}"
        pos = end
    assert pos == size


async def test_random_reads_fetch_their_pages_sequential_reads_whole_blocks() -> None:
    block = 4 * 1024 * 1024
    page = FsSettings().read_align
    data = random_bytes(8 * block, 7)
    backend = MemoryBackend({"f": data})
    fresh = MemoryBackend({"f": data})  # the same file, read only sequentially
    async with running_fs(block_size=block, readahead_max=4 * block, budget=16 * block) as e:
        e.attach("ds", backend)
        e.attach("fresh", fresh)
        attrs = await e.resolve("ds/f")
        fh, _ = await e.fs.open(attrs.ino, os.O_RDONLY)
        rng = random.Random(3)
        previous_end = 0
        for _ in range(20):
            offset = rng.randrange(0, len(data) - 65536)
            while abs(offset - previous_end) < 2 * 1024 * 1024:  # truly random, not near
                offset = rng.randrange(0, len(data) - 65536)
            previous_end = offset + 65536
            before = len(backend.faults.reads)
            assert bytes(await e.fs.read(fh, offset, 65536)) == data[offset : offset + 65536]
            # One GET of the read's own range rounded out to pages (unless it overlaps bytes
            # an earlier read fetched: then less).
            lo, hi = offset - offset % page, -(-(offset + 65536) // page) * page
            for _, start, n in backend.faults.reads[before:]:
                assert lo <= start and start + n <= hi
        random_gets = fetched_ranges(backend)
        assert sum(end - start for start, end in random_gets) <= 20 * (65536 + page)
        await e.fs.release(fh)
        # Then the whole file sequentially: no byte of it is fetched twice (the random reads'
        # bytes are still cached), and the random reads' extents cost at most one more GET each
        # than a purely sequential read of the same file.
        assert await e.read_file("ds/f", chunk=128 * 1024) == data
        assert_tiles(fetched_ranges(backend), len(data))
        assert await e.read_file("fresh/f", chunk=128 * 1024) == data
        assert_tiles(fetched_ranges(fresh), len(data))
        assert max(n for _, _, n in fresh.faults.reads) == block
        sequential_gets = len(backend.faults.reads) - len(random_gets)
        assert sequential_gets <= len(fresh.faults.reads) + len(random_gets)


async def test_a_file_that_fits_in_a_block_is_one_get_started_at_open(env: Env) -> None:
    files = {f"d/{i}.jpg": random_bytes(BS // 2 + i, i) for i in range(5)}
    backend = MemoryBackend(files)
    ds = env.attach("ds", backend)
    for rel, data in files.items():
        attrs = await env.resolve(f"ds/{rel}")
        fh, _ = await env.fs.open(attrs.ino, os.O_RDONLY)
        await trio.testing.wait_all_tasks_blocked()
        # The GET was started by open, before any read: the whole file, once.
        assert [(p, o, n) for p, o, n in backend.faults.reads if p == rel] == [(rel, 0, len(data))]
        got = b""
        while part := await env.fs.read(fh, len(got), 4096):  # small reads, as `tar` does
            got += bytes(part)
        assert got == data
        await env.fs.release(fh)
    assert len(backend.faults.reads) == len(files)
    c = ds.counters
    assert c.blocks_fetched == len(files) and c.bytes_fetched == sum(map(len, files.values()))
    assert c.readahead_started == len(files) and c.readahead_hits == len(files)
    # Opened again (same version: the kernel may still hold its pages) nothing is fetched
    # until a read asks, and then from the cache.
    attrs = await env.resolve("ds/d/0.jpg")
    fh, keep_cache = await env.fs.open(attrs.ino, os.O_RDONLY)
    assert keep_cache
    assert await env.fs.read(fh, 0, BS) == files["d/0.jpg"]
    await env.fs.release(fh)
    assert len(backend.faults.reads) == len(files)


async def test_a_one_block_file_is_fetched_whole_by_its_first_read_if_open_could_not() -> None:
    async with running_fs(budget=2 * BS) as env:
        data = random_bytes(BS, 1)
        backend = MemoryBackend({"f": data, "g": random_bytes(2 * BS, 2)})
        ds = env.attach("ds", backend)
        g = await env.resolve("ds/g")
        f = await env.resolve("ds/f")
        gh, _ = await env.fs.open(g.ino, os.O_RDONLY)
        backend.faults.delay = 0.3
        async with trio.open_nursery() as nursery:  # the whole budget in flight for g
            nursery.start_soon(env.fs.read, gh, 0, 2 * BS)
            await trio.testing.wait_all_tasks_blocked()
            fh, _ = await env.fs.open(f.ino, os.O_RDONLY)  # no room: read-ahead skipped
            assert ds.counters.readahead_skipped == 1
            assert await env.fs.read(fh, 100, 10) == data[100:110]
        assert [(o, n) for p, o, n in backend.faults.reads if p == "f"] == [(0, BS)]
        await env.fs.release(fh)
        await env.fs.release(gh)


async def test_the_on_the_spot_answers_agree_with_the_awaited_ones_and_never_touch_storage(
    env: Env,
) -> None:
    """lookup_now / open_now / release_now: what a transport answers without a task. They
    answer only from memory (no backend call), say None / False where storage or a commit
    must be waited for, and agree with lookup / open / release."""
    data = random_bytes(BS // 2, seed=11)
    backend = ClosingBackend({"d/f": data})
    env.attach("ds", backend, ttl=10.0)
    root = await env.fs.getattr(ROOT_INODE)
    assert env.fs.lookup_now(root.ino, "ds") is not None  # the virtual top level: memory
    ds = await env.fs.lookup(root.ino, "ds")
    calls = backend.faults.calls
    assert env.fs.lookup_now(ds.ino, "d") is None  # never looked up: storage must answer
    assert backend.faults.calls == calls
    d = await env.fs.lookup(ds.ino, "d")
    f = await env.fs.lookup(d.ino, "f")
    calls = backend.faults.calls
    again = env.fs.lookup_now(d.ino, "f")
    assert again is not None and again.ino == f.ino and again.size == len(data)
    with pytest.raises(NotFound):
        env.fs.lookup_now(d.ino, "x" * 300)  # the same errors as lookup
    opened = env.fs.open_now(f.ino, os.O_RDONLY)
    assert opened is not None and backend.faults.calls == calls
    fh, _ = opened
    assert await env.fs.read(fh, 0, len(data)) == data
    with pytest.raises(ReadOnly):  # read-only datastore: the same error as open
        env.fs.open_now(f.ino, os.O_WRONLY)
    assert env.fs.release_now(fh) and env.fs.find("ds").open_files == 0

    env.clock.advance(11)  # stale: both must ask storage again
    assert env.fs.lookup_now(d.ino, "f") is None
    assert env.fs.open_now(f.ino, os.O_RDONLY) is None

    # A read is answered on the spot only from memory, and then counted exactly once.
    fh, _ = await env.fs.open(f.ino, os.O_RDONLY)
    ds_counters = env.fs.find("ds").counters
    reads, hits = ds_counters.reads, ds_counters.cache_hits
    cached = env.fs.read_now(fh, 0, 100)
    if cached is None:  # not fetched yet: nothing counted, the awaited read fetches it
        assert (ds_counters.reads, ds_counters.cache_hits) == (reads, hits)
        assert await env.fs.read(fh, 0, 100) == data[:100]
        reads += 1
    else:
        assert bytes(cached) == data[:100]
        reads, hits = reads + 1, hits + 1
    again = env.fs.read_now(fh, 100, 200)
    assert again is not None and bytes(again) == data[100:300]
    assert ds_counters.reads == reads + 1 and ds_counters.cache_hits >= hits + 1
    assert env.fs.read_now(fh, len(data), 10) == b""
    assert env.fs.release_now(fh)

    # The last handle of a detached datastore closes its backend: only `release` does that.
    fh, _ = await env.fs.open(f.ino, os.O_RDONLY)
    await env.fs.detach("ds", force=True)
    assert not env.fs.release_now(fh)
    await env.fs.release(fh)
    assert backend.closed == 1
