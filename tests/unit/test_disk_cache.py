"""The on-disk block cache: round trip, restart, budget, corruption is never served."""

from __future__ import annotations

import os

import trio

from dsmount.node.cache.disk import DiskCache


async def test_round_trip_and_survives_restart(tmp_path):
    cache = DiskCache(tmp_path / "c", budget=10 * 1024 * 1024)
    data = os.urandom(300_000)
    await cache.put("ds|a/b|etag1|0|8388608", data)
    assert await cache.get("ds|a/b|etag1|0|8388608") == data
    assert await cache.get("ds|a/b|etag2|0|8388608") is None  # another version: a miss
    again = DiskCache(tmp_path / "c", budget=10 * 1024 * 1024)
    assert await again.get("ds|a/b|etag1|0|8388608") == data
    assert again.hits == 1
    assert oct(os.stat(tmp_path / "c").st_mode & 0o777) == "0o700"


async def test_budget_evicts_least_recently_used(tmp_path):
    cache = DiskCache(tmp_path, budget=3 * 100_100)
    blocks = {f"k{i}": os.urandom(100_000) for i in range(3)}
    for k, v in blocks.items():
        await cache.put(k, v)
    assert await cache.get("k0") == blocks["k0"]  # k0 is now the most recent
    await cache.put("k3", os.urandom(100_000))
    assert cache.used_bytes <= cache.budget
    assert await cache.get("k1") is None  # the least recently used went
    assert await cache.get("k0") == blocks["k0"]
    assert len(list(tmp_path.glob("*.blk"))) == 3


async def test_corrupt_file_is_discarded_not_served(tmp_path):
    cache = DiskCache(tmp_path, budget=1 << 20)
    await cache.put("key", b"x" * 5000)
    (path,) = tmp_path.glob("*.blk")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # flip one payload bit
    path.write_bytes(bytes(raw))
    assert await cache.get("key") is None
    assert cache.corrupt == 1
    assert not path.exists()
    # Truncated file: also discarded.
    await cache.put("key2", b"y" * 5000)
    (path2,) = tmp_path.glob("*.blk")
    path2.write_bytes(path2.read_bytes()[:100])
    assert await cache.get("key2") is None
    assert cache.corrupt == 2


async def test_block_larger_than_budget_is_not_stored(tmp_path):
    cache = DiskCache(tmp_path, budget=1000)
    await cache.put("big", b"z" * 5000)
    assert await cache.get("big") is None
    assert cache.used_bytes == 0


async def test_block_of_the_older_format_is_a_quiet_miss(tmp_path, caplog):
    cache = DiskCache(tmp_path, budget=1 << 20)
    await cache.put("key", b"x" * 5000)
    (path,) = tmp_path.glob("*.blk")
    raw = path.read_bytes()
    path.write_bytes(b"DSMB1\n" + raw[6:])  # what the BLAKE2b format's files start with
    again = DiskCache(tmp_path, budget=1 << 20)
    assert await again.get("key") is None
    assert (again.corrupt, again.misses, again.used_bytes) == (0, 1, 0)
    assert not path.exists()
    assert "corrupt" not in caplog.text
    await again.put("key", b"y" * 5000)  # and the block is stored again in the new format
    assert await again.get("key") == b"y" * 5000


async def test_longer_file_than_its_header_says_is_discarded(tmp_path):
    cache = DiskCache(tmp_path, budget=1 << 20)
    await cache.put("key", b"x" * 5000)
    (path,) = tmp_path.glob("*.blk")
    path.write_bytes(path.read_bytes() + b"x")
    assert await cache.get("key") is None
    assert cache.corrupt == 1


async def test_many_concurrent_puts_are_all_stored_within_the_budget(tmp_path):
    import trio

    block = 10_000
    cache = DiskCache(tmp_path, budget=20 * (block + 100))
    blocks = {f"k{i}": os.urandom(block) for i in range(60)}
    async with trio.open_nursery() as nursery:
        for k, v in blocks.items():
            nursery.start_soon(cache.put, k, v)
    assert cache.used_bytes <= cache.budget
    kept = [k for k in blocks if cache.has(k)]
    assert 10 <= len(kept) <= 20
    for k in kept:
        assert await cache.get(k) == blocks[k]
    assert len(list(tmp_path.glob("*.blk"))) == len(kept)
    assert not list(tmp_path.glob(".tmp-*"))


async def test_a_block_that_cannot_be_written_is_skipped(tmp_path, caplog):
    cache = DiskCache(tmp_path, budget=1 << 20)
    (tmp_path / cache._name("key")).mkdir()  # the rename cannot replace a directory
    await cache.put("key", b"x" * 5000)
    await cache.put("other", b"y" * 5000)
    assert not cache.has("key") and await cache.get("key") is None
    assert await cache.get("other") == b"y" * 5000
    assert "cannot write block" in caplog.text
    assert not list(tmp_path.glob(".tmp-*"))
    (stored,) = [p for p in tmp_path.glob("*.blk") if p.is_file()]
    assert cache.used_bytes == len(stored.read_bytes())


async def test_a_queued_block_is_served_before_its_file_is_written(tmp_path):
    """Between `put_soon` and the write landing, a reader gets the queued bytes (the memory
    cache may have evicted them meanwhile) instead of missing and fetching them again."""
    cache = DiskCache(tmp_path, budget=1 << 20)
    data = os.urandom(5000)
    async with trio.open_nursery() as nursery:
        started: list[bool] = []

        def spawn(fn, *args):
            nursery.start_soon(fn, *args)
            started.append(True)
            return True

        cache.put_soon("key", data, spawn)
        # Nothing has run yet: the block's file does not exist, the put is only queued.
        assert not list(tmp_path.glob("*.blk"))
        assert cache.has("key")
        assert await cache.get("key") == data
        assert (cache.hits, cache.misses) == (1, 0)
        cache.put_soon("key", data, spawn)  # queued already: not queued twice
        assert started == [True]
    assert await cache.flushed()
    assert len(list(tmp_path.glob("*.blk"))) == 1
    assert await cache.get("key") == data and cache.hits == 2


async def test_a_put_that_cannot_be_started_is_forgotten(tmp_path):
    cache = DiskCache(tmp_path, budget=1 << 20)
    cache.put_soon("key", b"x" * 5000, lambda fn, *args: False)  # the cache is stopping
    assert not cache.has("key") and await cache.get("key") is None
    assert await cache.flushed(timeout=1)
