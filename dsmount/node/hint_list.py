"""What a hint is: the files of one reader's order, each with a one-byte state, and the
settings and counters of ordered prefetch (node/hints.py runs them).

Invariants:
- A position is in `live` exactly while its state is FETCHING or AHEAD; `live` holds the bytes
  it counts against the window and the cache key its bytes are under.
- Positions before `cursor` are not TODO; before `swept` the reader has passed them.
- Memory per file: two list slots and a byte (besides its path): a million-file epoch is a
  few tens of MB.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from dsmount.node.fs.datastore import Datastore
from dsmount.node.hint_access import ProcessWatch
from dsmount.storage.local_access import Reader


@dataclass(frozen=True)
class PrefetchSettings:
    window_bytes: int = 256 * 1024**2
    window_files: int = 64
    idle_timeout: float = 60.0
    per_file: int = 8 * 1024**2  # bytes fetched ahead of one file; its read-ahead does the rest
    gets_in_flight: int = 64
    dir_order: bool = True


@dataclass
class PrefetchStats:
    """What one kind of prefetch (hints, directory order) did."""

    files_prefetched: int = 0
    bytes_prefetched: int = 0
    files_used: int = 0
    bytes_used: int = 0
    files_wasted: int = 0
    bytes_wasted: int = 0
    files_skipped: int = 0  # missing, not a file, or not readable by the caller

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


# The state of each file of a hint (one byte each: a hint of a million files stays small).
TODO, FETCHING, AHEAD, OPENED, SKIPPED, DROPPED = range(6)
Key = tuple[int, str]  # (datastore id, path)


@dataclass(eq=False)
class Hint:
    owner: tuple[Any, ...]
    uid: int
    reader: Reader
    source: str  # "hint" or "dir"
    limit_files: int
    idle_timeout: float
    watch: ProcessWatch | None
    touched: float
    stores: list[Datastore] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    states: bytearray = field(default_factory=bytearray)
    # The files started (FETCHING or AHEAD): position -> (bytes ahead, cache key or None).
    live: dict[int, tuple[int, tuple[int, str, str] | None]] = field(default_factory=dict)
    # Files a reader opened before the hint reached them (the reader is ahead): skipped when
    # reached. Bounded (node/hints.py: EARLY_MAX windows); past that, a file being cached
    # already tells the same.
    early: OrderedDict[Key, None] = field(default_factory=OrderedDict)
    cursor: int = 0  # positions before it are not TODO
    furthest: int = -1  # the furthest position opened
    swept: int = 0  # positions before it the reader has passed (opened, or abandoned)
    ended: str | None = None

    def add(self, ds: Datastore, path: str) -> None:
        self.stores.append(ds)
        self.paths.append(path)
        self.states.append(TODO)

    def key(self, i: int) -> Key:
        return self.stores[i].id, self.paths[i]

    def next_todo(self) -> int | None:
        states, n = self.states, len(self.states)
        while self.cursor < n and states[self.cursor] != TODO:
            self.cursor += 1
        return self.cursor if self.cursor < n else None

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "uid": self.uid, "files": len(self.paths),
                "opened": self.states.count(OPENED), "ahead": len(self.live),
                "position": self.furthest + 1}
