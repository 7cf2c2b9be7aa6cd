"""Property tests of the byte-range index (dsmount/node/cache/extents.py).

Checked against a byte map (which extent, if any, holds each byte) for arbitrary sets of
extents: `find` names the extent holding an offset, `cover` lists the extents and gaps of a
range in order spanning it exactly, `gaps` are exactly the bytes no extent holds, `add` refuses
any overlap and `remove` removes only the very extent given; `split` cuts at unit multiples.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsmount.node.cache.extents import ExtentIndex, split

SPAN = 200


class X:
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end

    def __repr__(self) -> str:
        return f"X({self.start}, {self.end})"


@st.composite
def indexes(draw: st.DrawFn) -> tuple[ExtentIndex[X], list[X | None]]:
    """An index of random non-overlapping extents (added in random order) and its byte map."""
    cuts = sorted(set(draw(st.lists(st.integers(0, SPAN), max_size=20))))
    pairs = list(zip(cuts, cuts[1:], strict=False))
    keep = draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs)))
    extents = [X(a, b) for (a, b), k in zip(pairs, keep, strict=True) if k]
    order = draw(st.permutations(extents))
    index: ExtentIndex[X] = ExtentIndex()
    for x in order:
        index.add(x)
    owner: list[X | None] = [None] * SPAN
    for x in extents:
        for i in range(x.start, x.end):
            owner[i] = x
    return index, owner


@given(built=indexes(), offset=st.integers(0, SPAN - 1))
def test_find_names_the_extent_holding_the_offset(built, offset: int) -> None:
    index, owner = built
    assert index.find(offset) is owner[offset]


@given(built=indexes(), a=st.integers(0, SPAN), b=st.integers(0, SPAN))
def test_cover_spans_the_range_exactly_in_order(built, a: int, b: int) -> None:
    index, owner = built
    start, end = min(a, b), max(a, b)
    parts = index.cover(start, end)
    pos = start
    for part in parts:
        if isinstance(part, tuple):
            gs, ge = part
            assert gs == pos and gs < ge <= end
            assert all(owner[i] is None for i in range(gs, ge))
            pos = ge
        else:
            assert part.start <= pos < part.end  # overlaps the range where the last part ended
            assert all(owner[i] is part for i in range(pos, min(end, part.end)))
            pos = min(end, part.end)
    assert pos == end
    # Gaps are never adjacent to each other: each is as wide as the free space allows.
    kinds = [isinstance(p, tuple) for p in parts]
    assert not any(x and y for x, y in zip(kinds, kinds[1:], strict=False))
    assert index.gaps(start, end) == [p for p in parts if isinstance(p, tuple)]


@given(built=indexes(), a=st.integers(0, SPAN), b=st.integers(0, SPAN))
def test_add_refuses_overlaps_and_remove_takes_only_that_extent(built, a: int, b: int) -> None:
    index, owner = built
    start, end = min(a, b), max(a, b) + 1
    new = X(start, end)
    free = all(owner[i] is None for i in range(start, min(end, SPAN)))
    if free:
        index.add(new)
        assert index.find(start) is new
        assert index.remove(new) and index.find(start) is None
        assert not index.remove(new)
    else:
        with pytest.raises(ValueError):
            index.add(new)
    n = len(index)
    assert not index.remove(X(start, end))  # an equal range, but not an indexed object
    assert len(index) == n


@given(start=st.integers(0, 10_000), length=st.integers(0, 5000), unit=st.integers(1, 700))
def test_split_cuts_at_unit_multiples(start: int, length: int, unit: int) -> None:
    pieces = split(start, start + length, unit)
    pos = start
    for a, b in pieces:
        assert a == pos and a < b
        assert a // unit == (b - 1) // unit  # inside one unit
        assert b == start + length or b % unit == 0
        pos = b
    assert pos == start + length
