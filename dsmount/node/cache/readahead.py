"""Read policy: how much to fetch for a read, and what to fetch ahead. Pure: no I/O, no clock.

Design (after mountpoint-s3's prefetcher):
- A file handle's reads are *sequential* while each read starts near where the previous one
  ended. The kernel splits one application read into several FUSE requests that may arrive
  slightly out of order, a request overtaking its neighbour, so "near" means within two
  requests' length (the longer of this read and the last), at most `seek_tolerance` bytes,
  either side. Scaled to the reads, so random 64 KiB reads of a file are taken for a stream
  only when they really are within a read or two of each other.
- A file that fits in one block is fetched whole, in one GET, whatever is read of it (the
  caller starts that GET at open, so it overlaps the FUSE round trips of open and read).
- A read that is not sequential (the first one of a handle, or after a jump) fetches its own
  range rounded out to `align` bytes: a random 64 KiB pread costs a ~64 KiB GET, not a block.
- Once reads are sequential the window starts at `initial` bytes ahead of the read and doubles
  each time the reader has consumed another `initial` bytes, up to `maximum`. Starting small
  means two random reads that happen to be neighbours cost little; doubling per `initial`
  consumed reaches full bandwidth within a few MiB. (Doubling only once a whole window was
  consumed took ~127 MiB to open a 128 MiB window: a 128 MiB file was read at 0.5x the
  asyncio SDK's rate, all of it in the ramp.) GETs ahead are `min(window, block_size)` long,
  cut at multiples of that size and of the block size, so a steady stream fetches whole
  blocks.
- Any read that is not sequential collapses the window to zero; it regrows from `initial`.

The block cache fetches only what it does not hold already, so these ranges say what a read
*may* fetch; the caller is free to fetch less (the cache skips read-ahead under memory
pressure), never more.
"""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[int, int]


@dataclass(frozen=True)
class ReadaheadConfig:
    block_size: int = 8 * 1024**2  # the largest GET: amortises a GET's latency
    initial: int = 1024**2  # first window: small, so neighbouring random reads cost little
    maximum: int = 128 * 1024**2  # 16 blocks of 8 MiB: saturates a 2-core client on Azurite
    seek_tolerance: int = 1024**2  # kernel read-ahead requests may overtake each other
    # A random read's range is rounded out to this: the kernel asks for whole pages already,
    # and more would only fetch bytes nobody asked for (bytes fetched <= ~1.1x bytes read).
    align: int = 4096

    def __post_init__(self) -> None:
        if (self.block_size <= 0 or self.initial <= 0 or self.maximum < self.initial
                or self.align <= 0):
            raise ValueError("need 0 < initial <= maximum and positive block size and align")


@dataclass
class ReadaheadState:
    """Per-open-file state of the policy."""

    config: ReadaheadConfig
    next_offset: int | None = None  # where a sequential reader reads next
    window: int = 0  # bytes to keep prefetched beyond the current read
    consumed: int = 0  # sequential bytes read since the window last grew
    last_length: int = 0  # of the previous read

    def observe(self, offset: int, length: int) -> int:
        """Record a read of `length` bytes at `offset`; return the window (bytes ahead) to keep."""
        cfg = self.config
        end = offset + length
        tolerance = min(cfg.seek_tolerance, 2 * max(length, self.last_length))
        self.last_length = length
        if self.next_offset is not None and abs(offset - self.next_offset) <= tolerance:
            if self.window == 0:
                self.window = cfg.initial
                self.consumed = 0
            else:
                self.consumed += max(0, end - self.next_offset)
                while self.consumed >= cfg.initial and self.window < cfg.maximum:
                    self.consumed -= cfg.initial
                    self.window = min(cfg.maximum, self.window * 2)
            self.next_offset = max(self.next_offset, end)
        else:
            self.window = 0
            self.consumed = 0
            self.next_offset = end
        return self.window


def _next_multiple(pos: int, unit: int) -> int:
    """The smallest multiple of `unit` strictly greater than `pos`."""
    return (pos // unit + 1) * unit


def piece_end(pos: int, window: int, cfg: ReadaheadConfig) -> int:
    """Where a sequential GET starting at `pos` ends: the next multiple of its size
    `min(window, block_size)` or of the block size, whichever comes first."""
    return min(_next_multiple(pos, max(1, min(window, cfg.block_size))),
               _next_multiple(pos, cfg.block_size))


def fetch_range(offset: int, length: int, window: int, cfg: ReadaheadConfig, file_size: int
                ) -> Range:
    """The range a read of [offset, offset+length) may fetch (the cache fetches only the parts
    of it it lacks that overlap the read): the whole file if it fits in one block; else the
    read rounded out to `align`, and for a sequential read (`window` > 0) up to the end of the
    GET-sized piece its last byte is in."""
    end = min(offset + length, file_size)
    if end <= offset:
        return (offset, offset)
    if file_size <= cfg.block_size:
        return (0, file_size)
    start = offset - offset % cfg.align
    stop = _next_multiple(end - 1, cfg.align)
    if window > 0:
        stop = max(stop, piece_end(end - 1, window, cfg))
    return (start, min(stop, file_size))


def ranges_ahead(frontier: int, offset: int, length: int, window: int, cfg: ReadaheadConfig,
                 file_size: int) -> list[Range]:
    """The GETs to start ahead of a read of [offset, offset+length) with `window` bytes of
    read-ahead: consecutive pieces (see `piece_end`) from max(frontier, end of the read) until
    the window is covered, none past EOF. `frontier` is where read-ahead asked up to before."""
    end = min(offset + length, file_size)
    if window <= 0 or end <= offset:
        return []
    horizon = min(end + window, file_size)
    pos = max(frontier, end)
    out: list[Range] = []
    while pos < horizon:
        stop = min(piece_end(pos, window, cfg), file_size)
        out.append((pos, stop))
        pos = stop
    return out
