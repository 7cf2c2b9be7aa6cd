"""Property tests of the read-ahead policy (dsmount/node/cache/readahead.py).

The policy is pure logic, so every property is checked against arbitrary configurations and
read streams: the window stays within [0, maximum], a first or non-sequential read prefetches
nothing, a sequential stream's window grows monotonically to `maximum` within a bounded number
of bytes, reordering inside `seek_tolerance` keeps a stream sequential; a read's fetch range
holds the read, is the whole file for a one-block file and the read rounded out to `align` for
a random read; the ranges ahead cover the window in GET-sized pieces inside one block each; and
a model of the cache driven by the policy (fetching only what it lacks) fetches every byte of
any read stream at most once, and a sequential stream in about one GET per block.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dsmount.node.cache.extents import ExtentIndex, split
from dsmount.node.cache.readahead import (
    ReadaheadConfig,
    ReadaheadState,
    fetch_range,
    piece_end,
    ranges_ahead,
)


@st.composite
def configs(draw: st.DrawFn) -> ReadaheadConfig:
    # Small numbers keep byte-by-byte streams cheap; the policy has no size-specific branches.
    initial = draw(st.integers(1, 256))
    return ReadaheadConfig(
        block_size=draw(st.integers(1, 512)),
        initial=initial,
        maximum=draw(st.integers(initial, initial * 40)),
        seek_tolerance=draw(st.integers(0, 1024)),
        align=draw(st.integers(1, 64)),
    )


# A read either continues where the stream is (jitter within +-16 bytes) or jumps anywhere.
reads = st.one_of(
    st.tuples(st.just("next"), st.integers(-16, 16), st.integers(0, 2048)),
    st.tuples(st.just("jump"), st.integers(0, 1 << 20), st.integers(0, 2048)),
)


def bytes_to_reach_maximum(cfg: ReadaheadConfig) -> int:
    """Sequential bytes, after the read that opened the window, until it is at `maximum`:
    the window doubles each time another `initial` bytes have been consumed."""
    total, window = 0, cfg.initial
    while window < cfg.maximum:
        total += cfg.initial
        window = min(cfg.maximum, window * 2)
    return total


def test_config_rejects_nonsense() -> None:
    for kwargs in ({"block_size": 0}, {"initial": 0}, {"initial": 10, "maximum": 5},
                   {"align": 0}):
        with pytest.raises(ValueError):
            ReadaheadConfig(**kwargs)


@given(cfg=configs(), stream=st.lists(reads, max_size=60))
def test_window_always_within_zero_and_maximum(cfg: ReadaheadConfig, stream: list) -> None:
    state = ReadaheadState(cfg)
    for kind, where, length in stream:
        if kind == "next" and state.next_offset is not None:
            offset = max(0, state.next_offset + where)
        else:
            offset = where if kind == "jump" else 0
        window = state.observe(offset, length)
        assert 0 <= window <= cfg.maximum
        assert window == state.window


@given(cfg=configs(), offset=st.integers(0, 1 << 40), length=st.integers(0, 1 << 30))
def test_first_read_prefetches_nothing(cfg: ReadaheadConfig, offset: int, length: int) -> None:
    assert ReadaheadState(cfg).observe(offset, length) == 0


@given(
    cfg=configs(),
    history=st.lists(st.integers(1, 4096), min_size=1, max_size=20),
    distance=st.integers(1, 1 << 30),
    backwards=st.booleans(),
    length=st.integers(0, 4096),
)
def test_non_sequential_read_collapses_window(
    cfg: ReadaheadConfig, history: list[int], distance: int, backwards: bool, length: int
) -> None:
    state = ReadaheadState(cfg)
    offset = 0
    for n in history:  # a sequential history, so the window is usually open
        state.observe(offset, n)
        offset += n
    assert state.next_offset is not None
    jump = cfg.seek_tolerance + distance
    target = state.next_offset - jump if backwards else state.next_offset + jump
    assume(target >= 0)
    assert state.observe(target, length) == 0
    # ...and the stream restarts from the new position: the next contiguous read reopens it.
    assert state.observe(target + length, 1) == cfg.initial


@given(cfg=configs(), n=st.integers(1, 512), gap=st.integers(1, 1 << 12),
       backwards=st.booleans())
def test_reads_more_than_two_reads_apart_are_not_a_stream(
    cfg: ReadaheadConfig, n: int, gap: int, backwards: bool
) -> None:
    # Random reads of n bytes that land near each other, but not within the two requests a
    # kernel reorder can displace a read by, stay random (even inside seek_tolerance).
    state = ReadaheadState(cfg)
    start = 10 * n + gap + 4096
    state.observe(start, n)
    target = start + n + 2 * n + gap if not backwards else start + n - 2 * n - gap
    assert state.observe(target, n) == 0


@settings(max_examples=150)
@given(cfg=configs(), lengths=st.lists(st.integers(1, 600), min_size=1, max_size=30))
def test_sequential_stream_grows_to_maximum(cfg: ReadaheadConfig, lengths: list[int]) -> None:
    state = ReadaheadState(cfg)
    needed = bytes_to_reach_maximum(cfg)
    assert needed < 2 * cfg.maximum  # the bound the design comment promises
    offset, windows, consumed = 0, [], 0
    i = 0
    # Cycle the drawn sizes until the window must have reached the maximum, plus a few more.
    while len(windows) < 2 or consumed < needed or i < len(lengths) + 3:
        n = lengths[i % len(lengths)]
        windows.append(state.observe(offset, n))
        if len(windows) > 2:
            consumed += n  # bytes read after the window opened
        offset += n
        i += 1
        if len(windows) > 2:
            assert (windows[-1] == cfg.maximum) == (consumed >= needed)
    assert windows[0] == 0  # first read
    assert windows[1] == cfg.initial  # second contiguous read opens the window
    assert all(a <= b for a, b in zip(windows, windows[1:], strict=False))
    assert windows[-1] == cfg.maximum


@given(
    cfg=configs(),
    data=st.data(),
    count=st.integers(4, 80),
    swaps=st.lists(st.booleans(), min_size=80, max_size=80),
)
def test_small_reordering_within_tolerance_stays_sequential(
    cfg: ReadaheadConfig, data: st.DataObject, count: int, swaps: list[bool]
) -> None:
    # The kernel splits one big read into requests that may overtake each other by one, so
    # a request lands at most two chunks from where the stream is: within the tolerance.
    assume(cfg.seek_tolerance >= 2)
    chunk = data.draw(st.integers(1, cfg.seek_tolerance // 2), label="chunk")
    order = list(range(count))
    i = 1  # the very first request is never overtaken: the handle was just opened
    while i + 1 < count:
        if swaps[i]:
            order[i], order[i + 1] = order[i + 1], order[i]
            i += 2
        else:
            i += 1
    state = ReadaheadState(cfg)
    windows = [state.observe(k * chunk, chunk) for k in order]
    assert windows[0] == 0
    assert all(w > 0 for w in windows[1:])
    assert all(a <= b for a, b in zip(windows[1:], windows[2:], strict=False))
    # Nothing was double counted or lost: the stream still knows where it ends.
    assert state.next_offset == count * chunk


@given(
    cfg=configs(),
    offset=st.integers(0, 1 << 16),
    length=st.integers(0, 1 << 14),
    window=st.integers(0, 1 << 14),
    file_size=st.integers(0, 1 << 16),
)
def test_fetch_range_holds_the_read_and_no_more_than_the_policy_says(
    cfg: ReadaheadConfig, offset: int, length: int, window: int, file_size: int
) -> None:
    start, stop = fetch_range(offset, length, window, cfg, file_size)
    end = min(offset + length, file_size)
    if end <= offset:
        assert start == stop
        return
    assert 0 <= start <= offset and end <= stop <= file_size
    if file_size <= cfg.block_size:  # a one-block file: the whole file, one GET
        assert (start, stop) == (0, file_size)
        return
    # Rounded out to `align` (or to EOF): a random read fetches less than align more each side.
    assert start % cfg.align == 0 and offset - start < cfg.align
    piece = min(window, cfg.block_size) if window else cfg.align
    assert stop == file_size or any(stop % u == 0 for u in (cfg.align, piece, cfg.block_size))
    if window == 0:
        assert stop - end < cfg.align
    else:  # sequential: up to the end of the piece the read ends in
        assert stop >= min(piece_end(end - 1, window, cfg), file_size)
        assert stop - end < max(cfg.align, min(window, cfg.block_size))


@given(cfg=configs(), pos=st.integers(0, 1 << 20), window=st.integers(1, 1 << 12))
def test_a_piece_ends_at_its_size_or_a_block_boundary(
    cfg: ReadaheadConfig, pos: int, window: int
) -> None:
    stop = piece_end(pos, window, cfg)
    size = min(window, cfg.block_size)
    assert pos < stop <= pos + size
    assert stop % size == 0 or stop % cfg.block_size == 0
    assert pos // cfg.block_size == (stop - 1) // cfg.block_size  # inside one block


@given(
    cfg=configs(),
    frontier=st.integers(0, 1 << 16),
    offset=st.integers(0, 1 << 16),
    length=st.integers(0, 1 << 12),
    window=st.integers(-10, 1 << 14),
    file_size=st.integers(0, 1 << 16),
)
def test_ranges_ahead_cover_the_window_in_pieces(
    cfg: ReadaheadConfig, frontier: int, offset: int, length: int, window: int, file_size: int
) -> None:
    ahead = ranges_ahead(frontier, offset, length, window, cfg, file_size)
    end = min(offset + length, file_size)
    if window <= 0 or end <= offset:
        assert ahead == []
        return
    horizon = min(end + window, file_size)
    pos = max(frontier, end)
    if pos >= horizon:
        assert ahead == []
        return
    assert ahead[0][0] == pos
    for (_, b), (c, _) in zip(ahead, ahead[1:], strict=False):
        assert b == c  # consecutive
    for a, b in ahead:
        assert a < b <= file_size  # never past EOF
        assert b - a <= min(window, cfg.block_size)
        assert a // cfg.block_size == (b - 1) // cfg.block_size  # one block each
    # The window is covered (and not a piece more than needed).
    assert ahead[-1][1] >= horizon and ahead[-1][0] < horizon


class _Held:
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end


class ModelCache:
    """The block cache's fetch rule without I/O, time or a budget: a demand read fetches the
    holes of its fetch range that overlap it, a read-ahead the holes of its range; both cut at
    the block size. Records every GET."""

    def __init__(self, block_size: int) -> None:
        self.index: ExtentIndex[_Held] = ExtentIndex()
        self.block_size = block_size
        self.gets: list[tuple[int, int]] = []

    def _fetch(self, holes: list[tuple[int, int]]) -> None:
        for hole in holes:
            for start, end in split(*hole, self.block_size):
                self.gets.append((start, end))
                self.index.add(_Held(start, end))

    def read(self, offset: int, end: int, want: tuple[int, int]) -> None:
        self._fetch([g for g in self.index.gaps(*want) if g[0] < end and g[1] > offset])
        assert self.index.gaps(offset, end) == []

    def prefetch(self, start: int, end: int) -> None:
        self._fetch(self.index.gaps(start, end))


def drive(cfg: ReadaheadConfig, file_size: int, reads: list[tuple[int, int]]) -> ModelCache:
    """Reads through the policy as node/fs/reads.py does (open, then each read: observe, fetch
    range, read-ahead from the frontier)."""
    cache = ModelCache(cfg.block_size)
    state = ReadaheadState(cfg)
    frontier = 0
    if 0 < file_size <= cfg.block_size:  # the GET started at open
        cache.prefetch(0, file_size)
        frontier = file_size
    for offset, length in reads:
        if offset >= file_size or length <= 0:
            continue
        length = min(length, file_size - offset)
        window = state.observe(offset, length)
        if not window:
            frontier = 0
        cache.read(offset, offset + length, fetch_range(offset, length, window, cfg, file_size))
        for start, end in ranges_ahead(frontier, offset, length, window, cfg, file_size):
            cache.prefetch(start, end)
            frontier = end
    return cache


@settings(max_examples=200)
@given(cfg=configs(), file_size=st.integers(0, 20_000), stream=st.lists(reads, max_size=60))
def test_no_byte_is_fetched_twice_whatever_the_read_pattern(
    cfg: ReadaheadConfig, file_size: int, stream: list
) -> None:
    state_offset, pattern = 0, []
    for kind, where, length in stream:
        offset = max(0, state_offset + where) if kind == "next" else where % (file_size + 1)
        pattern.append((offset, length))
        state_offset = offset + length
    cache = drive(cfg, file_size, pattern)
    seen = [0] * file_size
    for start, end in cache.gets:
        assert 0 <= start < end <= file_size
        assert start // cfg.block_size == (end - 1) // cfg.block_size  # a GET within a block
        for i in range(start, end):
            seen[i] += 1
    assert max(seen, default=0) <= 1
    if 0 < file_size <= cfg.block_size:
        assert cache.gets == [(0, file_size)]  # a one-block file: one GET, whatever is read


@settings(max_examples=150)
@given(
    cfg=configs(),
    blocks=st.integers(1, 40),
    tail=st.integers(0, 511),
    data=st.data(),
    first=st.integers(1, 600),
)
def test_a_sequential_stream_fetches_about_one_get_per_block(
    cfg: ReadaheadConfig, blocks: int, tail: int, data: st.DataObject, first: int
) -> None:
    """A stream after a first read of any size (the "random" read of its first bytes): every
    byte once, and GETs beyond one per block only while the window grows. Reads are at most
    `initial` long, as the kernel's are (at most 1 MiB, the first window)."""
    chunk = data.draw(st.integers(1, cfg.initial), label="chunk")
    file_size = blocks * cfg.block_size + tail % cfg.block_size
    pattern = [(0, first)]
    pos = first
    while pos < file_size:
        pattern.append((pos, chunk))
        pos += chunk
    cache = drive(cfg, file_size, pattern)
    assert sorted(cache.gets) == sorted(set(cache.gets))
    covered = sorted(cache.gets)
    assert covered[0][0] == 0 and covered[-1][1] == file_size
    assert all(b == c for (_, b), (c, _) in zip(covered, covered[1:], strict=False))
    piece = min(cfg.maximum, cfg.block_size)  # the steady GET size
    doublings = (piece // cfg.initial).bit_length()
    steady = -(-file_size // piece)
    # Pieces that do not divide a block are cut at each block boundary once more.
    cuts = 0 if cfg.block_size % piece == 0 else -(-file_size // cfg.block_size)
    # The first read; the rest of its piece; a few pieces per window size while the window
    # grows; then one GET per steady piece.
    assert len(cache.gets) <= steady + cuts + 2 * doublings + 3
