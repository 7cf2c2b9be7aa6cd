"""The on-disk block cache: round trip, restart, budget, corruption is never served."""

from __future__ import annotations

import os

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
