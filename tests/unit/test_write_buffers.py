"""Write buffers share the block cache's one budget: `BlockCache.reserve/release` and the
part-buffer pool of the write path (node/fs/write_handle.py)."""

from __future__ import annotations

import copy

import pytest
import trio
import trio.testing

from dsmount.errors import NoSpace
from dsmount.node.cache.blocks import BlockCache, ReadCounters
from dsmount.node.cache.source import Source
from dsmount.node.fs.write_handle import BufferPool, PartBuffer

B = 1024


class Filler(Source):
    """A 3-block object whose bytes are all "x"."""

    async def fetch(self, start: int, end: int) -> bytes:
        return b"x" * (end - start)


async def test_reserve_evicts_cached_blocks_then_waits_for_a_release() -> None:
    cache = BlockCache(4 * B)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)

        src = Filler((1, "f", "e"), 3 * B, B)
        for i in range(3):
            await cache.read(src, i * B, B, (i * B, (i + 1) * B), ReadCounters(), lambda: None)
        assert cache.cached_bytes == 3 * B
        await cache.reserve(3 * B)  # cached blocks give way to a write buffer
        assert cache.used_bytes <= 4 * B and cache.reserved_bytes == 3 * B
        done = trio.Event()

        async def waiter() -> None:
            await cache.reserve(2 * B)  # only 1 B free: waits
            done.set()

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()  # the waiter is parked on the budget
        assert not done.is_set()
        cache.release(3 * B)
        with trio.fail_after(5):
            await done.wait()
        assert cache.reserved_bytes == 2 * B and cache.peak_bytes <= 4 * B
        nursery.cancel_scope.cancel()


async def test_the_pool_reuses_buffers_inside_the_budget_and_gives_them_back() -> None:
    cache = BlockCache(4 * B)
    pool = BufferPool(cache, B, keep=2, deadline=0.2)
    a, b = await pool.get(), await pool.get()
    assert cache.reserved_bytes == 2 * B
    pool.put(a)
    assert await pool.get() is a  # reused: no new allocation, no new reservation
    assert cache.reserved_bytes == 2 * B
    c, d = await pool.get(), await pool.get()
    with pytest.raises(NoSpace, match="memory budget"):  # a bounded wait, not a hang
        await pool.get()
    for buf in (a, b, c, d):
        pool.put(buf)
    assert cache.reserved_bytes == 2 * B  # two kept idle, two freed
    pool.drain()
    assert cache.reserved_bytes == 0


async def test_the_last_buffer_outlives_the_last_writer_briefly_then_is_freed() -> None:
    cache = BlockCache(4 * B)
    pool = BufferPool(cache, B, keep=4, deadline=0.2, linger=0.2)
    async with trio.open_nursery() as nursery:
        a, b = await pool.get(), await pool.get()
        pool.put(a)
        pool.put(b)
        pool.writers_gone(nursery)  # one file after another (tar x): one buffer stays
        assert cache.reserved_bytes == B and len(pool.idle) == 1
        kept = await pool.get()
        assert kept in (a, b)  # the next file reuses it: no allocation, no page faults
        pool.put(kept)
        await trio.sleep(0.1)
        pool.writers_gone(nursery)  # a later last writer: the first pending drain is void
        await trio.sleep(0.15)
        assert cache.reserved_bytes == B  # 0.25 s after the first, 0.15 s after the second
        with trio.fail_after(5):
            while cache.reserved_bytes:
                await trio.sleep(0.02)
        assert pool.idle == [] and pool.held == 0


async def test_without_a_nursery_no_buffer_outlives_the_last_writer() -> None:
    cache = BlockCache(4 * B)
    pool = BufferPool(cache, B, keep=4, deadline=0.2)
    pool.put(await pool.get())
    pool.writers_gone(None)
    assert cache.reserved_bytes == 0 and pool.idle == []


async def test_a_writers_request_room_counts_in_the_budget_beside_its_buffers() -> None:
    cache = BlockCache(4 * B)
    pool = BufferPool(cache, B, keep=4, deadline=5, request_bytes=B)
    a, b, c = await pool.get(), await pool.get(), await pool.get()
    await pool.reserve_request()  # the budget is now full: 3 buffers + 1 writer's requests
    assert cache.reserved_bytes == 4 * B
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.reserve_request)  # a second writer waits for room ...
        await trio.sleep(0.05)
        assert cache.reserved_bytes == 4 * B
        pool.put(a)  # ... and gets the bytes of a returned buffer, not the idle pool
    assert cache.reserved_bytes == 4 * B and pool.idle == []
    for buf in (b, c):
        pool.put(buf)
    pool.release_request()
    pool.release_request()
    pool.drain()
    assert cache.reserved_bytes == 0


async def test_a_waiting_writer_gets_the_bytes_of_a_returned_buffer() -> None:
    cache = BlockCache(2 * B)
    pool = BufferPool(cache, B, keep=4, deadline=5)
    a, b = await pool.get(), await pool.get()
    got: list[PartBuffer] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _take(pool, got))
        await trio.sleep(0.05)
        pool.put(a)  # someone waits: released to the cache rather than kept idle
    assert len(got) == 1 and cache.reserved_bytes == 2 * B
    pool.put(b)
    pool.put(got[0])


def test_a_part_buffer_is_never_duplicated_by_a_deep_copy() -> None:
    buf = PartBuffer(b"abc")
    assert copy.deepcopy({"body": buf})["body"] is buf


async def _take(pool: BufferPool, out: list[PartBuffer]) -> None:
    out.append(await pool.get())

