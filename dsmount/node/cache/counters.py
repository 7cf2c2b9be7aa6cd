"""Per-datastore read counters: what `dsmount status` shows and the metrics endpoint exports.

Plain numbers (and one histogram) written by the one trio thread; nothing here knows about
Prometheus (node/metrics.py translates them at scrape time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dsmount.shared.histogram import Histogram


@dataclass(slots=True)
class ReadCounters:
    """Per-datastore read counters shown by `dsmount status`.

    A read is a hit when all its bytes were cached, a miss when it started a GET of its own
    (a read that only waited for GETs already in flight is neither); `blocks_fetched` counts
    GETs (extents fetched), `readahead_hits` extents fetched ahead that a read then used.
    """

    bytes_read: int = 0
    blocks_fetched: int = 0
    bytes_fetched: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    readahead_hits: int = 0
    readahead_started: int = 0
    readahead_skipped: int = 0
    fetch_errors: int = 0
    reads: int = 0  # FUSE read requests
    # How long reads waited for bytes not in memory (a read served from memory is never
    # observed): a training job's input stall.
    stalls: Histogram = field(default_factory=Histogram)
    readahead_bytes: int = 0  # bytes of read-ahead extents started
    readahead_unread_bytes: int = 0  # ... of those evicted before anyone read them (waste)
    # Files opened with their disk-cache file as the kernel's backing file, and their sizes:
    # the kernel reads them on the readers' cores, so no READ (nor `bytes_read`) counts them.
    passthrough_opens: int = 0
    passthrough_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        total = self.cache_hits + self.cache_misses
        return {
            "bytes_read": self.bytes_read,
            "blocks_fetched": self.blocks_fetched,
            "bytes_fetched": self.bytes_fetched,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "cache_hit_ratio": round(self.cache_hits / total, 4) if total else None,
            "readahead_hits": self.readahead_hits,
            "readahead_started": self.readahead_started,
            "readahead_skipped": self.readahead_skipped,
            "fetch_errors": self.fetch_errors,
            "reads": self.reads,
            "readahead_bytes": self.readahead_bytes,
            "readahead_unread_bytes": self.readahead_unread_bytes,
            "passthrough_opens": self.passthrough_opens,
            "passthrough_bytes": self.passthrough_bytes,
            "read_stall_seconds": self.stalls.as_dict(),
        }
