"""Property tests of the read-ahead policy (dsmount/node/cache/readahead.py).

The policy is pure logic, so every property is checked against arbitrary configurations and
read streams: the window stays within [0, maximum], a first or non-sequential read prefetches
nothing, a sequential stream's window grows monotonically to `maximum` within a bounded number
of bytes, reordering inside `seek_tolerance` keeps a stream sequential, and the block helpers
cover exactly the bytes they claim to.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dsmount.node.cache.readahead import (
    ReadaheadConfig,
    ReadaheadState,
    blocks_for_read,
    blocks_to_prefetch,
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
    )


# A read either continues where the stream is (jitter within +-16 bytes) or jumps anywhere.
reads = st.one_of(
    st.tuples(st.just("next"), st.integers(-16, 16), st.integers(0, 2048)),
    st.tuples(st.just("jump"), st.integers(0, 1 << 20), st.integers(0, 2048)),
)


def bytes_to_reach_maximum(cfg: ReadaheadConfig) -> int:
    """Sequential bytes, after the read that opened the window, until it is at `maximum`:
    the window doubles each time a full window has been consumed."""
    total, window = 0, cfg.initial
    while window < cfg.maximum:
        total += window
        window = min(cfg.maximum, window * 2)
    return total


def test_config_rejects_nonsense() -> None:
    for kwargs in ({"block_size": 0}, {"initial": 0}, {"initial": 10, "maximum": 5}):
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


def blocks_touching(start: int, end: int, block_size: int) -> range:
    """Indices of the blocks that hold at least one byte of [start, end), computed from the
    byte ranges each block spans (ranges, not sets: block sizes of 1 byte are allowed)."""
    if end <= start:
        return range(0)
    return range(start // block_size, (end - 1) // block_size + 1)


def same_blocks(a: range, b: range) -> bool:
    return len(a) == len(b) == 0 or (len(a) == len(b) and a.start == b.start and a.step == 1)


@given(
    offset=st.integers(0, 1 << 24),
    length=st.integers(0, 1 << 22),
    block_size=st.integers(1, 1 << 20),
    file_size=st.integers(0, 1 << 24),
)
def test_blocks_for_read_cover_exactly_the_bytes_read(
    offset: int, length: int, block_size: int, file_size: int
) -> None:
    got = blocks_for_read(offset, length, block_size, file_size)
    end = min(offset + length, file_size)
    assert same_blocks(got, blocks_touching(offset, end, block_size))
    if end > offset:  # the first block holds `offset`, the last holds byte end-1, none beyond
        assert got[0] * block_size <= offset < (got[0] + 1) * block_size
        assert got[-1] * block_size <= end - 1 < (got[-1] + 1) * block_size
    else:
        assert len(got) == 0


@given(
    offset=st.integers(0, 1 << 24),
    length=st.integers(0, 1 << 22),
    window=st.integers(-10, 1 << 23),
    block_size=st.integers(1, 1 << 20),
    file_size=st.integers(0, 1 << 24),
)
def test_blocks_to_prefetch_cover_exactly_the_window(
    offset: int, length: int, window: int, block_size: int, file_size: int
) -> None:
    ahead = blocks_to_prefetch(offset, length, window, block_size, file_size)
    needed = blocks_for_read(offset, length, block_size, file_size)
    if len(ahead):
        assert ahead.step == 1
        # Never past EOF.
        assert ahead[-1] * block_size < file_size
        # Never a block the read itself needs: it starts right after the read's last block.
        assert ahead[0] == needed[-1] + 1
    if window <= 0 or length <= 0 or offset >= file_size:
        assert len(ahead) == 0
        return
    # Read + read-ahead together cover exactly [offset, min(end + window, EOF)).
    horizon = min(offset + length + window, file_size)
    together = range(needed.start, ahead.stop if len(ahead) else needed.stop)
    assert same_blocks(together, blocks_touching(offset, horizon, block_size))
