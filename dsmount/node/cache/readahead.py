"""Read-ahead policy: pure logic, no I/O, no clock.

Design (after mountpoint-s3's prefetcher):
- A file handle's reads are *sequential* while each read starts near where the previous one
  ended. The kernel splits one application read into several FUSE requests that may arrive
  slightly out of order, so "near" means within `seek_tolerance` bytes either side.
- The first read of a stream prefetches nothing: a random reader pays no extra GET and the
  first byte comes back as soon as its own block arrives.
- Once reads are sequential the window starts at `initial` bytes ahead of the read and doubles
  each time the reader has consumed a full window, up to `maximum`. Starting small keeps
  latency low for short files; doubling reaches full bandwidth within a few blocks.
- Any read that is not sequential collapses the window to zero; it regrows from `initial`.

The caller turns a window into block indices with `blocks_to_prefetch` and is free to fetch
fewer (the cache skips prefetch under memory pressure), never more.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReadaheadConfig:
    block_size: int = 8 * 1024**2
    initial: int = 8 * 1024**2  # one block: enough to hide one GET's latency
    maximum: int = 128 * 1024**2  # 16 blocks of 8 MiB: saturates a 2-core client on Azurite
    seek_tolerance: int = 1024**2  # kernel read-ahead requests may overtake each other

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.initial <= 0 or self.maximum < self.initial:
            raise ValueError("need 0 < initial <= maximum and a positive block size")


@dataclass
class ReadaheadState:
    """Per-open-file state of the policy."""

    config: ReadaheadConfig
    next_offset: int | None = None  # where a sequential reader reads next
    window: int = 0  # bytes to keep prefetched beyond the current read
    consumed: int = 0  # sequential bytes read since the window last grew

    def observe(self, offset: int, length: int) -> int:
        """Record a read of `length` bytes at `offset`; return the window (bytes ahead) to keep."""
        cfg = self.config
        end = offset + length
        if self.next_offset is not None and abs(offset - self.next_offset) <= cfg.seek_tolerance:
            if self.window == 0:
                self.window = cfg.initial
                self.consumed = 0
            else:
                self.consumed += max(0, end - self.next_offset)
                while self.consumed >= self.window and self.window < cfg.maximum:
                    self.consumed -= self.window
                    self.window = min(cfg.maximum, self.window * 2)
            self.next_offset = max(self.next_offset, end)
        else:
            self.window = 0
            self.consumed = 0
            self.next_offset = end
        return self.window


def blocks_to_prefetch(
    offset: int, length: int, window: int, block_size: int, file_size: int
) -> range:
    """Indices of the blocks after the read [offset, offset+length) that lie within `window`
    bytes of its end and inside the file."""
    if window <= 0 or length <= 0 or file_size <= 0:
        return range(0)
    last_needed = (min(offset + length, file_size) - 1) // block_size
    horizon = min(offset + length + window, file_size)
    last_ahead = (horizon - 1) // block_size
    return range(last_needed + 1, last_ahead + 1)


def blocks_for_read(offset: int, length: int, block_size: int, file_size: int) -> range:
    """Indices of the blocks a read of [offset, offset+length) needs, clipped to the file."""
    end = min(offset + length, file_size)
    if end <= offset:
        return range(0)
    return range(offset // block_size, (end - 1) // block_size + 1)
