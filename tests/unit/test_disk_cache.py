"""The on-disk block cache: round trip, restart, budget, corruption is never served, and the
verified block files it names for passthrough."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib

import trio

from dsmount.node.cache.disk import DiskCache, block_file_name


def digest_hex(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=32).hexdigest()


def file_of(directory, key: str):
    (path,) = directory.glob(f"{digest_hex(key)}-*.blk")
    return path


def flip_last_byte(path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))


async def test_round_trip_and_survives_restart(tmp_path):
    cache = DiskCache(tmp_path / "c", budget=10 * 1024 * 1024)
    data = os.urandom(300_000)
    await cache.put("ds|a/b|etag1|0|8388608", data)
    assert await cache.get("ds|a/b|etag1|0|8388608") == data
    assert await cache.get("ds|a/b|etag2|0|8388608") is None  # another version: a miss
    again = DiskCache(tmp_path / "c", budget=10 * 1024 * 1024)
    assert await again.get("ds|a/b|etag1|0|8388608") == data
    assert again.hits == 1
    assert again.used_bytes == len(data)
    assert oct(os.stat(tmp_path / "c").st_mode & 0o777) == "0o700"


async def test_a_block_file_holds_exactly_the_payload(tmp_path):
    """What FUSE passthrough needs: the file's bytes from offset 0 are the block, nothing
    else; the name carries the key's digest and the payload's CRC-32."""
    cache = DiskCache(tmp_path, budget=1 << 20)
    data = os.urandom(123_457)
    await cache.put("key", data)
    (path,) = tmp_path.glob("*.blk")
    assert path.name == f"{digest_hex('key')}-{zlib.crc32(data):08x}.blk"
    assert path.name == block_file_name(digest_hex("key"), data)
    assert path.read_bytes() == data
    assert cache.used_bytes == len(data) == path.stat().st_size  # no header is counted


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
    assert not list(tmp_path.glob(f"{digest_hex('k1')}-*"))  # its file too


async def test_restart_keeps_recency(tmp_path):
    """A `get` touches its file, and a restarted cache evicts by the files' mtimes."""
    cache = DiskCache(tmp_path, budget=3 * 100_000)
    blocks = {f"k{i}": os.urandom(100_000) for i in range(3)}
    for k, v in blocks.items():
        await cache.put(k, v)
    for age, k in enumerate(blocks):  # k0 the oldest, k2 the newest, well in the past
        t = 1_000_000_000 * (1_700_000_000 + age)
        os.utime(file_of(tmp_path, k), ns=(t, t))
    again = DiskCache(tmp_path, budget=3 * 100_000)
    assert await again.get("k0") == blocks["k0"]  # now the most recent, on disk too
    third = DiskCache(tmp_path, budget=3 * 100_000)
    await third.put("k3", os.urandom(100_000))
    assert not third.has("k1")  # the least recently used went
    assert third.has("k0") and third.has("k2") and third.has("k3")
    assert await third.get("k0") == blocks["k0"]


async def test_corrupt_file_is_discarded_not_served(tmp_path, caplog):
    cache = DiskCache(tmp_path, budget=1 << 20)
    await cache.put("key", b"x" * 5000)
    path = file_of(tmp_path, "key")
    flip_last_byte(path)  # same length, one bit off: only the CRC can tell
    assert await cache.get("key") is None
    assert cache.corrupt == 1
    assert not path.exists()
    assert not cache.has("key") and cache.used_bytes == 0
    assert "corrupt block file" in caplog.text
    # Truncated file: also discarded.
    await cache.put("key2", b"y" * 5000)
    path2 = file_of(tmp_path, "key2")
    path2.write_bytes(path2.read_bytes()[:100])
    assert await cache.get("key2") is None
    assert cache.corrupt == 2
    assert not path2.exists()


async def test_longer_file_than_its_block_is_discarded(tmp_path):
    cache = DiskCache(tmp_path, budget=1 << 20)
    await cache.put("key", b"x" * 5000)
    path = file_of(tmp_path, "key")
    path.write_bytes(path.read_bytes() + b"x")
    assert await cache.get("key") is None
    assert cache.corrupt == 1
    assert not path.exists()


async def test_another_blocks_bytes_under_a_name_are_not_served(tmp_path):
    """A file whose bytes are not the ones its name's CRC says (here: another block's, of
    the same length) is foreign: deleted, never served."""
    cache = DiskCache(tmp_path, budget=1 << 20)
    a, b = os.urandom(5000), os.urandom(5000)
    await cache.put("a", a)
    await cache.put("b", b)
    file_of(tmp_path, "a").write_bytes(b)
    for restarted in (False, True):  # found by a running cache and by a restarted one
        c = DiskCache(tmp_path, budget=1 << 20) if restarted else cache
        assert await c.get("a") is None and c.corrupt == 1
        assert await c.get("b") == b
        await c.put("a", a)  # stored again, and foreign again for the restarted cache
        file_of(tmp_path, "a").write_bytes(b)


async def test_block_larger_than_budget_is_not_stored(tmp_path):
    cache = DiskCache(tmp_path, budget=1000)
    await cache.put("big", b"z" * 5000)
    assert await cache.get("big") is None
    assert cache.used_bytes == 0
    assert not list(tmp_path.iterdir())


def _old_format_file(directory, key: str, payload: bytes, magic: bytes, checksum: int):
    """A block file as the header formats wrote it: `<digest hex>.blk` holding the magic,
    the key's digest, the length and a checksum, then the payload."""
    digest = hashlib.blake2b(key.encode(), digest_size=32).digest()
    path = directory / f"{digest.hex()}.blk"
    path.write_bytes(struct.pack("6s32sQI", magic, digest, len(payload), checksum) + payload)
    return path


async def test_blocks_of_the_older_formats_are_dropped_quietly(tmp_path, caplog):
    old1 = _old_format_file(tmp_path, "key1", b"x" * 5000, b"DSMB1\n", 0)
    old2 = _old_format_file(tmp_path, "key2", b"x" * 5000, b"DSMB2\n", zlib.crc32(b"x" * 5000))
    current = DiskCache(tmp_path, budget=1 << 20)
    await current.put("kept", b"k" * 3000)
    again = DiskCache(tmp_path, budget=1 << 20)
    assert not old1.exists() and not old2.exists()  # deleted at startup
    assert again.used_bytes == 3000  # only the block of the current format counts
    assert not again.has("key1") and await again.get("key1") is None
    assert not again.has("key2") and await again.get("key2") is None
    assert (again.corrupt, again.misses) == (0, 2)
    assert "corrupt" not in caplog.text and "WARNING" not in caplog.text
    assert await again.get("kept") == b"k" * 3000
    await again.put("key2", b"y" * 5000)  # and the block is stored again in the new format
    assert await again.get("key2") == b"y" * 5000
    assert file_of(tmp_path, "key2").read_bytes() == b"y" * 5000


async def test_temp_files_are_swept_at_start(tmp_path):
    cache = DiskCache(tmp_path, budget=1 << 20)
    await cache.put("key", b"x" * 5000)
    left = tmp_path / f".tmp-{digest_hex('other')}-1234-0"  # a writer stopped mid-write
    left.write_bytes(b"half a block")
    again = DiskCache(tmp_path, budget=1 << 20)
    assert not left.exists()
    assert again.used_bytes == 5000 and await again.get("key") == b"x" * 5000


async def test_two_files_of_one_block_keep_the_newer(tmp_path):
    """A stop between writing a block's new file and deleting its old one leaves both: a
    restart keeps the more recent and deletes the other."""
    cache = DiskCache(tmp_path, budget=1 << 20)
    await cache.put("key", b"old" * 1000)
    older = file_of(tmp_path, "key")
    stale = older.read_bytes()
    await cache.put("key", b"new" * 1000)  # another CRC: replaces the old file
    assert not older.exists() and cache.used_bytes == 3000
    older.write_bytes(stale)
    os.utime(older, ns=(1, 1))
    again = DiskCache(tmp_path, budget=1 << 20)
    assert not older.exists()
    assert again.used_bytes == 3000 and await again.get("key") == b"new" * 1000


async def test_many_concurrent_puts_are_all_stored_within_the_budget(tmp_path):
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
    assert cache.used_bytes == block * len(kept)
    assert not list(tmp_path.glob(".tmp-*"))


async def test_puts_arriving_while_others_finish_never_overrun_the_budget(tmp_path):
    """A put checks for room while earlier ones are being written: the bytes of a block just
    written must count somewhere at every moment (queued, then on disk), or the check lets one
    block too many in."""
    block = 10_000
    cache = DiskCache(tmp_path, budget=4 * block)
    worst = 0
    done = trio.Event()

    async def watch() -> None:
        nonlocal worst
        while not done.is_set():
            worst = max(worst, cache.used_bytes)
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        async with trio.open_nursery() as puts:
            for i in range(80):
                puts.start_soon(cache.put, f"k{i}", os.urandom(block))
                await trio.sleep(0.0005 * (i % 3))
        done.set()
    assert worst <= cache.budget and cache.used_bytes <= cache.budget
    assert len(list(tmp_path.glob("*.blk"))) * block == cache.used_bytes


async def test_a_block_that_cannot_be_written_is_skipped(tmp_path, caplog):
    cache = DiskCache(tmp_path, budget=1 << 20)
    data = b"x" * 5000
    (tmp_path / block_file_name(digest_hex("key"), data)).mkdir()  # rename cannot replace it
    await cache.put("key", data)
    await cache.put("other", b"y" * 5000)
    assert not cache.has("key") and await cache.get("key") is None
    assert cache.backing_path("key") is None
    assert await cache.get("other") == b"y" * 5000
    assert "cannot write block" in caplog.text
    assert not list(tmp_path.glob(".tmp-*"))
    (stored,) = [p for p in tmp_path.glob("*.blk") if p.is_file()]
    assert cache.used_bytes == len(stored.read_bytes())


async def test_a_queued_block_is_served_before_its_file_is_written(tmp_path):
    """Between `put_soon` and the write landing, a reader gets the queued bytes (the memory
    cache may have evicted them meanwhile) instead of missing and fetching them again; no
    backing file is named for it until its file is written."""
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
        assert cache.backing_path("key") is None
        assert await cache.get("key") == data
        assert (cache.hits, cache.misses) == (1, 0)
        cache.put_soon("key", data, spawn)  # queued already: not queued twice
        assert started == [True]
    assert await cache.flushed()
    assert len(list(tmp_path.glob("*.blk"))) == 1
    assert await cache.get("key") == data and cache.hits == 2
    assert cache.backing_path("key") == str(file_of(tmp_path, "key"))


async def test_a_put_that_cannot_be_started_is_forgotten(tmp_path):
    cache = DiskCache(tmp_path, budget=1 << 20)
    cache.put_soon("key", b"x" * 5000, lambda fn, *args: False)  # the cache is stopping
    assert not cache.has("key") and await cache.get("key") is None
    assert cache.backing_path("key") is None
    assert await cache.flushed(timeout=1)


async def test_backing_path_names_a_written_block_until_it_is_evicted(tmp_path):
    cache = DiskCache(tmp_path / "c", budget=2 * 100_000)
    a, b = os.urandom(100_000), os.urandom(100_000)
    assert cache.backing_path("a") is None  # never stored
    await cache.put("a", a)
    path = cache.backing_path("a")
    assert path is not None and os.path.isabs(path)
    with open(path, "rb") as f:
        assert f.read() == a  # what passthrough would serve: the block, from offset 0
    await cache.put("b", b)
    await cache.put("c", os.urandom(100_000))  # evicts a, the least recently used
    assert cache.backing_path("a") is None and not os.path.exists(path)
    assert cache.backing_path("b") == str(file_of(tmp_path / "c", "b"))
    # The names it trusts stay as many as the files it holds: evicted ones leave the set.
    assert cache._verified == {p.name for p in (tmp_path / "c").glob("*.blk")}


async def test_backing_path_drops_a_discarded_or_replaced_block(tmp_path):
    cache = DiskCache(tmp_path, budget=1 << 20)
    await cache.put("key", b"x" * 5000)
    path = cache.backing_path("key")
    assert path is not None
    flip_last_byte(file_of(tmp_path, "key"))
    assert await cache.get("key") is None  # found corrupt, discarded
    assert cache.backing_path("key") is None
    await cache.put("key", b"x" * 5000)
    assert cache.backing_path("key") == path
    await cache.put("key", b"z" * 5000)  # other bytes: another CRC, another file
    replaced = cache.backing_path("key")
    assert replaced is not None and replaced != path and not os.path.exists(path)
    with open(replaced, "rb") as f:
        assert f.read() == b"z" * 5000


async def test_a_block_found_at_start_is_backed_only_once_a_get_verified_it(tmp_path):
    data = os.urandom(50_000)
    await DiskCache(tmp_path, budget=1 << 20).put("key", data)
    again = DiskCache(tmp_path, budget=1 << 20)
    assert again.has("key")
    assert again.backing_path("key") is None  # on disk, but not checked by this process
    assert await again.get("key") == data
    assert again.backing_path("key") == str(file_of(tmp_path, "key"))


async def test_a_corrupt_block_found_at_start_never_gets_a_backing_path(tmp_path):
    await DiskCache(tmp_path, budget=1 << 20).put("key", b"x" * 5000)
    path = file_of(tmp_path, "key")
    flip_last_byte(path)
    again = DiskCache(tmp_path, budget=1 << 20)
    assert again.has("key") and again.backing_path("key") is None
    assert await again.get("key") is None and again.corrupt == 1
    assert again.backing_path("key") is None and not again.has("key")
    assert not path.exists()
