"""Keep the daemon's resident memory close to what the block cache accounts for.

The cache holds extents as `bytes` of 4 KiB to 8 MiB, allocated in several threads (the
asyncio loop of the Azure backends, trio's worker threads for local files). glibc's mmap
threshold is dynamic: after the first large free it rises to that size, and blocks come from
per-thread heap arenas that each keep their freed memory. Measured with 10,000 open files over
a 64 MiB budget: the daemon's peak RSS grew by 190-250 MiB with the dynamic threshold and
glibc's many arenas. `pin_mmap_threshold` fixes the threshold (as MALLOC_MMAP_THRESHOLD_
would) and `limit_arenas` keeps one arena, so the heap is one pool whose peak is the peak of
what the cache holds: RSS tracks the one byte budget.

Allocations below the threshold (extents of a few pages: random reads, small files, the first
bytes of a stream) come from the arena of the thread that made them, and each thread that ever
allocated (trio's workers, the asyncio loop) keeps its own arena's freed memory. Python holds
the GIL around nearly every malloc, so several arenas buy no concurrency; `limit_arenas` keeps
one. Measured with 10,000 files each read as 16 KiB then the rest of its first block (extents
of 16, 48 and 64 KiB) over a 64 MiB budget: peak RSS +76..85 MiB over the open files with
glibc's default arenas, +71 MiB with one, as with 64 KiB extents only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers
M_ARENA_MAX = -8
# Above it, allocations are mmap'd (page-faulted in fresh on every use, unmapped on free);
# below it they are reused from the heap. 32 MiB (glibc's largest): every block (8 MiB by
# default) comes from the heap, so a streamed GET reuses the pages the evicted block had
# instead of faulting 2,048 fresh ones in: kernel time is what these VMs pay most for.
# Measured streaming 1 GiB cold (the asyncio SDK, 8 x 8 MiB ranged GETs, as the reference in
# the same run): daemon CPU 1.65 s/GiB (sys 0.72) and 460 MB/s, against 2.16 s/GiB (sys
# 1.28) and 383 MB/s with a 1 MiB threshold; peak RSS 390 MB against 382 MB. The heap does
# not outgrow the budget: freed blocks are reused for the next ones (one arena, see
# limit_arenas), and tests/faults/test_memory.py holds its margin.
DEFAULT_THRESHOLD = 32 * 1024 * 1024


def _mallopt(param: int, value: int) -> bool:
    """glibc's mallopt(param, value); False where there is none (not glibc) or it refused."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(param, value))


def limit_arenas(n: int = 1) -> bool:
    """Let glibc use at most `n` malloc arenas (see the module docstring). Call it before
    threads start. Returns False where that is not possible; the daemon works either way."""
    return _mallopt(M_ARENA_MAX, n)


def pin_mmap_threshold(nbytes: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `nbytes` (turning its dynamic adjustment off).

    Returns False where that is not possible (not glibc); the daemon works either way."""
    ok = _mallopt(M_MMAP_THRESHOLD, nbytes)
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; RSS may exceed the cache budget")
    return ok
