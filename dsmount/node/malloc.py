"""Keep the daemon's resident memory close to what the block cache accounts for.

The cache holds blocks as `bytes` of 256 KiB to 8 MiB, allocated in several threads (the
asyncio loop of the Azure backends, trio's worker threads for local files). glibc serves
allocations above its mmap threshold with mmap and gives them back on free, but the threshold
is dynamic: after the first large free it rises to that size, and from then on blocks come
from per-thread heap arenas that keep freed memory. Measured with 10,000 open files over a
64 MiB budget: the daemon's peak RSS grew by 190-250 MiB with the dynamic threshold, by about
the budget with a fixed one. `pin_mmap_threshold` fixes it (as MALLOC_MMAP_THRESHOLD_ would),
so freed blocks always go back to the system and RSS tracks the one byte budget.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
DEFAULT_THRESHOLD = 64 * 1024  # the smallest block size the config allows


def pin_mmap_threshold(nbytes: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `nbytes` (turning its dynamic adjustment off).

    Returns False where that is not possible (not glibc); the daemon works either way."""
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
    ok = bool(mallopt(M_MMAP_THRESHOLD, nbytes))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; RSS may exceed the cache budget")
    return ok
