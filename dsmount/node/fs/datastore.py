"""An attached datastore: a backend plus what the core needs to serve it.

Each attachment gets a fresh `id`, so inodes, cached metadata and cached blocks of a detached
datastore can never be confused with a later one of the same name.

Ownership: `owner` is the uid that attached it (0 for root and the config). A datastore that
is not `shared` is private to its owner: the core shows it (in the root listing, to lookups)
only to its owner and root, and its root directory is theirs alone (see attributes).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import pwd
import time
from dataclasses import dataclass, field
from typing import Any

from dsmount.node.cache.blocks import ReadCounters
from dsmount.storage.base import Backend

_ids = itertools.count(1)

PRIVATE_ROOT_MODE = 0o500  # a private datastore's root: its owner may list and enter it
PRIVATE_FILE_MODE = 0o400  # a private cloud datastore's files and directories: the owner's
PRIVATE_DIR_MODE = 0o500


@dataclass(frozen=True)
class Presentation:
    """One datastore's owner and modes where they override the source's or the [fs]
    defaults (None: not overridden); `private_to`: the uid whose private datastore it is.
    See `attributes` for the order in which they apply."""

    uid: int | None = None
    gid: int | None = None
    file_mode: int | None = None
    dir_mode: int | None = None
    private_to: int | None = None


def user_name(uid: int) -> str:
    """The login name of `uid`, or the number if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclass(slots=True)
class WriteCounters:
    """Per-datastore write counters shown by `dsmount status`."""

    bytes_written: int = 0  # accepted from writers (write(2))
    commits: int = 0  # new versions made visible (close, fsync)
    failed_commits: int = 0  # closes/fsyncs that reported an error; nothing was committed
    writers_open: int = 0  # files open for writing now

    def as_dict(self) -> dict[str, Any]:
        return {
            "bytes_written": self.bytes_written,
            "commits": self.commits,
            "failed_commits": self.failed_commits,
            "writers_open": self.writers_open,
        }


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
    attached_at: float = field(default_factory=time.time)
    open_files: int = 0
    detached: bool = False
    read_write: bool = False  # attached with --read-write (and its backend can write)
    writes: WriteCounters = field(default_factory=WriteCounters)
    owner: int = 0
    shared: bool = True
    presentation: Presentation = field(default_factory=Presentation)

    def visible_to(self, uid: int | None) -> bool:
        """Whether a process of `uid` may see this datastore (None: the core itself)."""
        return self.shared or uid is None or uid in (0, self.owner)

    @property
    def key(self) -> str:
        """Its path under the mountpoint: NAME or NAME/VERSION."""
        return f"{self.name}/{self.version}" if self.version else self.name

    @functools.cached_property
    def cache_identity(self) -> str:
        """Names the storage location (stable across restarts), for the disk cache's keys.
        Computed once: every open of a remote file needs it, and the backend's description
        does not change while attached."""
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
            "read_write": self.read_write,
            "open_files": self.open_files,
            "owner": self.owner,
            "owner_name": user_name(self.owner),
            "shared": self.shared,
            "backend": self.backend.describe(),
        }

    def status(self) -> dict[str, Any]:
        s = self.describe()
        s.update(self.counters.as_dict())
        s.update(self.writes.as_dict())
        s.update({f"backend_{k}": v for k, v in self.backend.stats.as_dict().items()})
        s["state"] = "degraded" if self.backend.stats.degraded else "ok"
        return s
