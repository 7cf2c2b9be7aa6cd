"""An attached datastore: a backend plus what the core needs to serve it.

Each attachment gets a fresh `id`, so inodes, cached metadata and cached blocks of a detached
datastore can never be confused with a later one of the same name.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from dsmount.node.cache.blocks import ReadCounters
from dsmount.shared.histogram import Histogram
from dsmount.storage.base import Backend

_ids = itertools.count(1)


@dataclass(eq=False)
class Datastore:
    name: str
    backend: Backend
    version: str | None = None
    immutable: bool = False
    ttl: float = 60.0  # how long attributes and listings are trusted
    negative_ttl: float = 5.0
    options: dict[str, Any] = field(default_factory=dict)  # redacted, as attached (for status)
    id: int = field(default_factory=lambda: next(_ids))
    counters: ReadCounters = field(default_factory=ReadCounters)
    # How long FUSE reads waited for bytes that were not in memory (reads served from the
    # cache are not observed): a training job's input stall.
    stalls: Histogram = field(default_factory=Histogram)
    attached_at: float = field(default_factory=time.time)
    open_files: int = 0
    detached: bool = False

    @property
    def key(self) -> str:
        """Its path under the mountpoint: NAME or NAME/VERSION."""
        return f"{self.name}/{self.version}" if self.version else self.name

    @property
    def cache_identity(self) -> str:
        """Names the storage location (stable across restarts), for the disk cache's keys."""
        return json.dumps(self.backend.describe(), sort_keys=True)

    @property
    def metadata_ttl(self) -> float:
        return math.inf if self.immutable else self.ttl

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "path": self.key,
            "kind": self.backend.kind,
            "immutable": self.immutable,
            "open_files": self.open_files,
            "backend": self.backend.describe(),
        }

    def status(self) -> dict[str, Any]:
        s = self.describe()
        s.update(self.counters.as_dict())
        s.update({f"backend_{k}": v for k, v in self.backend.stats.as_dict().items()})
        s["state"] = "degraded" if self.backend.stats.degraded else "ok"
        s["read_stall_seconds"] = self.stalls.as_dict()
        return s
