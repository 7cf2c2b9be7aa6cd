"""What both FUSE transports share: the count of requests answered by kind, and how a
handler's failure becomes the errno the kernel gets (logged at a bounded rate).

A handler that raised anything but an errno would end the FUSE loop, i.e. the mount, so every
handler of either transport ends in `errno_of`: a `dsmount.errors` error or OSError maps
through THE errno map (`errors.to_errno`); anything unexpected is logged and answered EIO.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import Counter

from dsmount.errors import DsmountError, to_errno

log = logging.getLogger("dsmount.node.fuse")

# FUSE requests answered, by kind (`dsmount status`'s `fuse_requests`): what a workload costs in
# kernel round trips. One FUSE session per process, so one counter per process.
requests: Counter[str] = Counter()


class LogLimiter:
    """At most `burst` lines per `period` seconds: an outage fails many requests a second, and
    the journal should show the failure, not drown in it."""

    def __init__(self, burst: int = 10, period: float = 10.0) -> None:
        self.burst = burst
        self.period = period
        self.window_start = 0.0
        self.count = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self.window_start > self.period:
            if self.suppressed:
                log.info("(%d similar failures not logged)", self.suppressed)
            self.window_start, self.count, self.suppressed = now, 0, 0
        self.count += 1
        if self.count <= self.burst:
            return True
        self.suppressed += 1
        return False


_failures = LogLimiter()


def errno_of(what: str, e: BaseException) -> int:
    """The errno answering request `what` that failed with `e` (see the module docstring)."""
    if isinstance(e, (DsmountError, OSError)):
        number = to_errno(e)
        if number not in (errno.ENOENT, errno.EROFS) and _failures.allow():
            log.info("%s: %s", what, e)
        return number
    log.error("%s: unexpected error, answering EIO", what, exc_info=e)
    return errno.EIO
