"""The directory-order guess (node/cache/dirorder.py): when it starts, how the window grows,
what a wrong guess costs, and that its memory is bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dsmount.node.cache.dirorder import DirOrder, DirOrderConfig

NAMES = tuple(f"f{i:03d}" for i in range(100))
CFG = DirOrderConfig(start_after=2, initial=4, maximum=16, idle_after=30.0, max_streaks=4)


def test_two_successors_start_the_guess_and_each_right_one_doubles_the_window() -> None:
    d = DirOrder(CFG)
    assert d.opened("r", NAMES, 0, 0.0).fetch == []
    assert d.opened("r", NAMES, 1, 0.0).fetch == []  # one successor: not yet
    assert d.opened("r", NAMES, 2, 0.0).fetch == list(NAMES[3:7])  # 4 ahead
    third = d.opened("r", NAMES, 3, 0.0)
    assert third.hit and third.fetch == list(NAMES[7:12])  # 8 ahead of 3
    assert d.opened("r", NAMES, 4, 0.0).fetch == list(NAMES[12:21])  # 16 ahead of 4
    assert d.opened("r", NAMES, 5, 0.0).fetch == [NAMES[21]]  # capped at 16
    assert d.opened("r", NAMES, 6, 0.0).fetch == [NAMES[22]]


def test_a_wrong_guess_abandons_at_most_the_window_and_fetches_nothing_more() -> None:
    d = DirOrder(CFG)
    asked: list[str] = []
    for i in range(10):
        asked += d.opened("r", NAMES, i, 0.0).fetch
    assert asked == list(NAMES[3:26])  # 16 ahead of 9
    wrong = d.opened("r", NAMES, 50, 0.0)
    assert wrong.fetch == [] and not wrong.hit
    assert wrong.abandon == list(NAMES[10:26])
    assert len(wrong.abandon) <= CFG.maximum
    # Reverse order from there: never a successor, never a fetch.
    for i in range(49, 30, -1):
        out = d.opened("r", NAMES, i, 0.0)
        assert out.fetch == [] and out.abandon == []


def test_a_wrong_open_inside_the_window_is_not_abandoned() -> None:
    d = DirOrder(CFG)
    for i in range(4):
        d.opened("r", NAMES, i, 0.0)  # asked up to 11
    out = d.opened("r", NAMES, 6, 0.0)  # skipped 4 and 5
    assert NAMES[6] not in out.abandon
    assert out.abandon == [n for n in NAMES[4:12] if n != NAMES[6]]


def test_readers_and_directories_are_apart_and_idle_ones_expire() -> None:
    d = DirOrder(CFG)
    for i in range(3):
        d.opened("a", NAMES, i, 0.0)
        d.opened("b", NAMES, 10 + 2 * i, 0.0)  # not in order
    assert d.opened("a", NAMES, 3, 1.0).fetch and not d.opened("b", NAMES, 17, 1.0).fetch
    assert d.expire(20.0) == []
    assert d.expire(40.0) == list(NAMES[4:12])  # a's unread guess; b had none
    assert len(d) == 0


def test_a_changed_listing_starts_over() -> None:
    d = DirOrder(CFG)
    for i in range(4):
        d.opened("r", NAMES, i, 0.0)
    other = NAMES[:50] + ("new",) + NAMES[50:]
    out = d.opened("r", other, 4, 0.0)
    assert out.fetch == [] and out.abandon == list(NAMES[4:12])


@given(st.lists(st.integers(0, len(NAMES) - 1), max_size=200))
def test_what_is_asked_for_and_not_opened_never_exceeds_the_window(opens: list[int]) -> None:
    d = DirOrder(CFG)
    outstanding: set[str] = set()
    for n, i in enumerate(opens):
        out = d.opened("r", NAMES, i, float(n))
        outstanding -= set(out.abandon)
        outstanding.discard(NAMES[i])
        outstanding |= set(out.fetch)
        assert len(out.abandon) <= CFG.maximum
        assert len(outstanding) <= CFG.maximum
    assert len(d) <= CFG.max_streaks


def test_streaks_are_bounded_in_number() -> None:
    d = DirOrder(CFG)
    for reader in range(10):
        for i in range(4):
            d.opened(reader, NAMES, i, 0.0)
    assert len(d) == CFG.max_streaks
