"""The block cache's eviction order (dsmount/node/cache/residency.py), on plain extents."""

from __future__ import annotations

from dataclasses import dataclass

from dsmount.node.cache.residency import Residency


@dataclass(eq=False)
class X:
    start: int
    end: int
    touched: float = 0.0


def test_pending_until_a_read_reaches_the_end_then_least_recently_used_first() -> None:
    r: Residency[X, str] = Residency(stale_after=30)
    a, b, c = X(0, 10), X(10, 20), X(20, 30)
    for x, key in ((a, "a"), (b, "b"), (c, "c")):
        r.landed(x, key, now=1)
    assert len(r) == 3 and r.read_bytes == 0
    # Nothing was read to its end: read-ahead may take nothing, a demand read the oldest.
    assert r.victim(readahead=True) is None
    r.used(a, 5, now=2)  # half of a: still pending, and now the most recently touched
    r.used(b, 20, now=2)  # b read to its end
    assert r.read_bytes == 10
    assert r.victim(readahead=True) == (b, "b") and r.read_bytes == 0
    assert r.victim(readahead=True) is None
    assert r.victim(readahead=False) == (c, "c")  # c was touched least recently
    assert r.victim(readahead=False) == (a, "a")
    assert r.victim(readahead=False) is None and len(r) == 0


def test_a_read_holds_what_it_is_about_to_copy_and_stale_pending_goes_first() -> None:
    r: Residency[X, str] = Residency(stale_after=30)
    a, b = X(0, 10), X(10, 20)
    r.landed(a, "a", now=0)
    r.used(a, 10, now=0)  # read: evictable by read-ahead
    r.landed(b, "b", now=0)
    r.hold(a, now=5)  # a read is about to copy bytes of a again: pending
    assert r.read_bytes == 0 and r.victim(readahead=True) is None
    r.used(a, 10, now=5)
    assert r.read_bytes == 10
    assert r.stale(now=29) is None
    assert r.stale(now=31) == (b, "b")  # untouched since 0: its reader is gone
    assert r.stale(now=31) is None  # a was read: never "stale", just least recently used
    assert r.victim(readahead=True) == (a, "a")


def test_remove_all_by_key_keeps_the_byte_count() -> None:
    r: Residency[X, str] = Residency(stale_after=30)
    xs = [X(i * 10, i * 10 + 10) for i in range(4)]
    for i, x in enumerate(xs):
        r.landed(x, "p" if i % 2 else "q", now=0)
        if i < 2:
            r.used(x, x.end, now=0)
    assert r.read_bytes == 20
    gone = r.remove_all(lambda key: key == "p")
    assert sorted(x.start for x, _ in gone) == [10, 30] and len(r) == 2
    assert r.read_bytes == 10
