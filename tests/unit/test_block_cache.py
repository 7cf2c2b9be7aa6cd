"""Tests of the daemon-wide block cache (dsmount/node/cache/blocks.py) under trio.

Fetch functions are fakes that check the cache's budget invariant at each of their await
points and can be held on an event, so the tests see exactly which GETs start, when, and how
often. The property test drives many concurrent readers and prefetches of many keys with
random block sizes and delays on trio's MockClock (virtual time: no real sleeping).
"""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from dsmount.errors import BackendError
from dsmount.node.cache.blocks import BlockCache, BlockKey, ReadCounters

B = 1000  # a block's size in the deterministic tests


def key(name: str, ds: int = 1, path: str = "p", etag: str = "e") -> BlockKey:
    return (ds, path, etag, 1, int.from_bytes(name.encode(), "big"))


def content(name: str, size: int) -> bytes:
    return (name.encode() * (size // max(1, len(name)) + 1))[:size]


class Fetches:
    """Fake GETs: count calls per block, optionally hold them, check the budget at awaits."""

    def __init__(self, cache: BlockCache) -> None:
        self.cache = cache
        self.calls: dict[str, int] = {}
        self.gates: dict[str, trio.Event] = {}
        self.fail: dict[str, Exception] = {}
        self.extra: dict[str, int] = {}  # bytes to return beyond the expected size

    def hold(self, name: str) -> trio.Event:
        self.gates[name] = trio.Event()
        return self.gates[name]

    def check(self) -> None:
        assert self.cache.used_bytes <= self.cache.budget

    def __call__(self, name: str, size: int = B):  # type: ignore[no-untyped-def]
        async def fetch() -> bytes:
            self.check()
            self.calls[name] = self.calls.get(name, 0) + 1
            gate = self.gates.get(name)
            if gate is not None:
                await gate.wait()
            await trio.lowlevel.checkpoint()
            self.check()
            if name in self.fail:
                raise self.fail[name]
            return content(name, size + self.extra.get(name, 0))

        return fetch


async def started_cache(nursery: trio.Nursery, budget: int, **kwargs: int) -> BlockCache:
    cache = BlockCache(budget, **kwargs)
    await nursery.start(cache.run)
    return cache


async def test_one_fetch_for_two_readers_of_a_block(nursery: trio.Nursery) -> None:
    cache = await started_cache(nursery, 4 * B)
    fetches, counters = Fetches(cache), ReadCounters()
    gate = fetches.hold("a")
    results: list[bytes] = []

    async def reader() -> None:
        results.append(await cache.get(key("a"), B, fetches("a"), counters))

    async with trio.open_nursery() as readers:
        readers.start_soon(reader)
        readers.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert fetches.calls == {"a": 1}
        gate.set()
    assert results == [content("a", B)] * 2
    assert fetches.calls == {"a": 1}
    assert counters.cache_misses == 1
    assert counters.blocks_fetched == 1 and counters.bytes_fetched == B
    # Now cached: a third reader is a hit and no GET.
    assert await cache.get(key("a"), B, fetches("a"), counters) == content("a", B)
    assert fetches.calls == {"a": 1} and counters.cache_hits == 1


async def test_one_fetch_for_two_readers_that_waited_for_room(nursery: trio.Nursery) -> None:
    cache = await started_cache(nursery, 2 * B)
    fetches, counters = Fetches(cache), ReadCounters()
    gate_x, gate_y = fetches.hold("x"), fetches.hold("y")
    got: list[bytes] = []

    async def reader(name: str) -> None:
        got.append(await cache.get(key(name), B, fetches(name), counters))

    async with trio.open_nursery() as readers:
        readers.start_soon(reader, "x")
        readers.start_soon(reader, "y")
        await trio.testing.wait_all_tasks_blocked()
        # The budget is all in flight: both readers of "a" wait for room, no GET started.
        readers.start_soon(reader, "a")
        readers.start_soon(reader, "a")
        await trio.testing.wait_all_tasks_blocked()
        assert "a" not in fetches.calls
        gate_x.set()  # room for one block: the first "a" reader fetches it
        await trio.testing.wait_all_tasks_blocked()
        gate_y.set()
    assert sorted(got) == sorted([content(n, B) for n in "xyaa"])
    assert fetches.calls["a"] == 1


async def test_failed_fetch_reaches_every_waiter_and_is_not_cached(nursery: trio.Nursery) -> None:
    cache = await started_cache(nursery, 4 * B)
    fetches, counters = Fetches(cache), ReadCounters()
    gate = fetches.hold("a")
    fetches.fail["a"] = BackendError("boom")
    errors: list[BaseException] = []

    async def reader() -> None:
        try:
            await cache.get(key("a"), B, fetches("a"), counters)
        except BackendError as e:
            errors.append(e)

    async with trio.open_nursery() as readers:
        for _ in range(3):
            readers.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert len(errors) == 3 and all(str(e) == "boom" for e in errors)
    assert fetches.calls == {"a": 1}
    assert counters.fetch_errors == 1 and counters.blocks_fetched == 0
    assert cache.peek(key("a")) is None
    assert cache.used_bytes == 0  # the reservation was returned
    # The failure is replayed for failure_ttl (the kernel re-reads a failed read-ahead page
    # at once: it must not wait for the backend again), read-ahead skips the block...
    del fetches.fail["a"]
    try:
        await cache.get(key("a"), B, fetches("a"), counters)
    except BackendError as e:
        errors.append(e)
    assert len(errors) == 4 and fetches.calls == {"a": 1}
    assert not cache.prefetch(key("a"), B, fetches("a"), counters)
    # ...but it is not cached: after the TTL the next reader fetches again and succeeds.
    await trio.sleep(cache.failure_ttl)
    assert await cache.get(key("a"), B, fetches("a"), counters) == content("a", B)
    assert fetches.calls == {"a": 2}


async def test_prefetch_gives_way_while_demand_reads_wait(nursery: trio.Nursery) -> None:
    cache = await started_cache(nursery, 2 * B)
    fetches, counters = Fetches(cache), ReadCounters()
    gates = [fetches.hold("x"), fetches.hold("y")]
    got: dict[str, bytes] = {}

    async def reader(name: str) -> None:
        got[name] = await cache.get(key(name), B, fetches(name), counters)
        fetches.check()

    async with trio.open_nursery() as readers:
        readers.start_soon(reader, "x")
        readers.start_soon(reader, "y")
        await trio.testing.wait_all_tasks_blocked()
        assert cache.reserved_bytes == 2 * B  # the whole budget is in flight
        # No room: read-ahead is skipped at once, never queued.
        assert cache.prefetch(key("ahead"), B, fetches("ahead"), counters) is False
        assert counters.readahead_skipped == 1 and counters.readahead_started == 0
        # A demand read waits for room instead; its GET has not started.
        readers.start_soon(reader, "z")
        await trio.testing.wait_all_tasks_blocked()
        assert "z" not in fetches.calls and "z" not in got
        for gate in gates:
            gate.set()
    assert got == {n: content(n, B) for n in "xyz"}
    assert "ahead" not in fetches.calls
    assert cache.used_bytes <= cache.budget and cache.peak_bytes <= cache.budget


async def test_prefetch_without_running_cache_is_skipped() -> None:
    cache = BlockCache(4 * B)
    counters = ReadCounters()
    assert cache.prefetch(key("a"), B, Fetches(cache)("a"), counters) is False
    assert counters.readahead_skipped == 1 and cache.used_bytes == 0


async def test_get_without_running_cache_fails_and_returns_its_reservation() -> None:
    cache = BlockCache(4 * B)
    try:
        await cache.get(key("a"), B, Fetches(cache)("a"), ReadCounters())
    except RuntimeError:
        pass
    else:  # pragma: no cover - the assertion below reports it
        raise AssertionError("get() without run() must fail")
    assert cache.used_bytes == 0


async def test_lru_eviction_order(nursery: trio.Nursery) -> None:
    cache = await started_cache(nursery, 3 * B)
    fetches, counters = Fetches(cache), ReadCounters()

    async def get(name: str) -> None:
        assert await cache.get(key(name), B, fetches(name), counters) == content(name, B)

    for name in "abc":
        await get(name)
    await get("a")  # a is now the most recently used
    await get("d")  # evicts the least recently used: b
    assert cache.peek(key("b")) is None
    await get("e")  # then c
    assert cache.peek(key("c")) is None
    for name in "ade":
        assert cache.peek(key(name)) == content(name, B)
    assert cache.cached_bytes == 3 * B
    assert fetches.calls == dict.fromkeys("abcde", 1)


async def test_drop_by_datastore_and_path(nursery: trio.Nursery) -> None:
    cache = await started_cache(nursery, 10 * B)
    fetches, counters = Fetches(cache), ReadCounters()
    keys = {
        "1p0": key("0", ds=1, path="p"),
        "1p1": key("1", ds=1, path="p"),
        "1q0": key("0", ds=1, path="q"),
        "2p0": key("0", ds=2, path="p"),
        "2q0": key("0", ds=2, path="q"),
    }
    for name, k in keys.items():
        await cache.get(k, B, fetches(name), counters)
    assert cache.drop(1, "p") == 2
    assert cache.peek(keys["1p0"]) is None and cache.peek(keys["1p1"]) is None
    assert cache.peek(keys["1q0"]) is not None and cache.peek(keys["2p0"]) is not None
    assert cache.drop(2) == 2
    assert cache.peek(keys["2p0"]) is None and cache.peek(keys["2q0"]) is None
    assert cache.peek(keys["1q0"]) is not None
    assert cache.drop(3) == 0
    assert cache.cached_bytes == B


async def test_counters(nursery: trio.Nursery) -> None:
    cache = await started_cache(nursery, 10 * B)
    fetches, counters = Fetches(cache), ReadCounters()
    await cache.get(key("a"), B, fetches("a"), counters)
    await cache.get(key("a"), B, fetches("a"), counters)
    assert (counters.cache_misses, counters.cache_hits, counters.readahead_hits) == (1, 1, 0)

    # A completed read-ahead: the first read of it counts as a read-ahead hit, later ones not.
    assert cache.prefetch(key("b"), B, fetches("b"), counters) is True
    assert counters.readahead_started == 1
    await trio.testing.wait_all_tasks_blocked()
    assert cache.peek(key("b")) is not None
    await cache.get(key("b"), B, fetches("b"), counters)
    await cache.get(key("b"), B, fetches("b"), counters)
    assert counters.readahead_hits == 1 and counters.cache_hits == 3

    # A read-ahead still in flight when the reader arrives is a read-ahead hit too, once.
    gate = fetches.hold("c")
    assert cache.prefetch(key("c"), B, fetches("c"), counters) is True
    # Asking again for something in flight or cached starts nothing.
    assert cache.prefetch(key("c"), B, fetches("c"), counters) is True
    assert cache.prefetch(key("a"), B, fetches("a"), counters) is True
    assert counters.readahead_started == 2
    async with trio.open_nursery() as readers:
        for _ in range(2):
            readers.start_soon(cache.get, key("c"), B, fetches("c"), counters)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert counters.readahead_hits == 2
    assert fetches.calls == {"a": 1, "b": 1, "c": 1}
    assert counters.blocks_fetched == 3 and counters.bytes_fetched == 3 * B
    assert counters.cache_misses == 1
    d = counters.as_dict()
    assert d["cache_hit_ratio"] == round(counters.cache_hits / (counters.cache_hits + 1), 4)


async def test_oversized_block_still_keeps_the_budget(nursery: trio.Nursery) -> None:
    cache = await started_cache(nursery, 4 * B)
    fetches, counters = Fetches(cache), ReadCounters()
    for name in "abc":
        await cache.get(key(name), B, fetches(name), counters)
    # The server returns three times what was reserved: older blocks make way.
    fetches.extra["big"] = 2 * B
    assert await cache.get(key("big"), B, fetches("big"), counters) == content("big", 3 * B)
    assert cache.used_bytes <= cache.budget
    assert cache.peek(key("big")) is not None
    # More than the whole budget: handed to the reader, never cached.
    fetches.extra["huge"] = 4 * B
    assert await cache.get(key("huge"), B, fetches("huge"), counters) == content("huge", 5 * B)
    assert cache.used_bytes <= cache.budget and cache.peak_bytes <= cache.budget
    assert cache.peek(key("huge")) is None


async def test_read_of_a_block_larger_than_the_budget(nursery: trio.Nursery) -> None:
    cache = await started_cache(nursery, 2 * B)
    fetches, counters = Fetches(cache), ReadCounters()
    assert await cache.get(key("a"), 3 * B, fetches("a", 3 * B), counters) == content("a", 3 * B)
    assert cache.used_bytes == 0 and cache.peak_bytes <= cache.budget


@settings(max_examples=100, deadline=None)
@given(
    budget=st.integers(50, 4000),
    sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=12),
    extra=st.lists(st.integers(0, 300), min_size=12, max_size=12),
    plans=st.lists(
        st.lists(
            st.tuples(st.integers(0, 11), st.booleans(), st.integers(0, 5)),
            min_size=1,
            max_size=8,
        ),
        min_size=1,
        max_size=16,
    ),
    max_gets=st.integers(1, 5),
)
def test_budget_never_exceeded_under_concurrency(
    budget: int, sizes: list[int], extra: list[int], plans: list, max_gets: int
) -> None:
    """Many readers of many keys: the budget holds at every await; every read is right."""
    sizes = [min(s, budget) for s in sizes]
    names = [f"k{i}" for i in range(len(sizes))]

    async def scenario() -> None:
        cache = BlockCache(budget, max_concurrent_gets=max_gets)
        counters = ReadCounters()
        active: set[str] = set()
        delays: dict[str, int] = {}

        def check() -> None:
            assert cache.used_bytes <= cache.budget
            assert cache.reserved_bytes >= 0

        def fetcher(name: str, size: int):  # type: ignore[no-untyped-def]
            async def fetch() -> bytes:
                check()
                assert name not in active, "two GETs of one block at once"
                assert len(active) < max_gets
                active.add(name)
                await trio.sleep(delays.get(name, 0) / 1000)
                check()
                active.discard(name)
                # Some servers return more than asked: the budget must hold anyway.
                return content(name, size + extra[names.index(name)])

            return fetch

        async def reader(plan: list[tuple[int, bool, int]]) -> None:
            for index, is_prefetch, delay in plan:
                name = names[index % len(names)]
                size = sizes[index % len(names)]
                delays[name] = delay
                check()
                if is_prefetch:
                    cache.prefetch(key(name), size, fetcher(name, size), counters)
                    check()
                    await trio.sleep(delay / 1000)
                else:
                    data = await cache.get(key(name), size, fetcher(name, size), counters)
                    check()
                    assert data == content(name, len(data)) and len(data) >= size

        with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
            async with trio.open_nursery() as nursery:
                await nursery.start(cache.run)
                async with trio.open_nursery() as readers:
                    for plan in plans:
                        readers.start_soon(reader, plan)
                while cache.reserved_bytes:  # let the last read-aheads land
                    await trio.sleep(0.01)
                check()
                assert not active
                assert cache.peak_bytes <= budget
                assert cache.cached_bytes <= budget
                nursery.cancel_scope.cancel()

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
