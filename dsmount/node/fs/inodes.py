"""The inode table: numbers for the root, virtual directories and datastore paths.

A node stays in the table while the kernel holds a lookup reference to it (counted by
lookup/readdirplus, released by forget), as in pyfuse3's examples. Inode numbers are never
reused within one daemon run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from dsmount.node.fs.datastore import Datastore
from dsmount.storage.base import Entry

ROOT_INODE = 1


@dataclass(eq=False, slots=True)  # slots: a million-entry version means a million nodes
class Node:
    ino: int
    datastore: Datastore | None  # None: the root or a virtual directory (NAME of versions)
    path: str  # path inside the datastore, or the virtual path under the mountpoint
    entry: Entry
    entry_time: float = 0.0  # monotonic time `entry` was fetched
    lookups: int = 0
    last_open_etag: str | None = None  # the ETag seen at the previous open (keep_cache)
    # The attributes last computed from `entry` (the core's), reused while `entry` is the same
    # object: a warm listing of a big directory then builds nothing per entry.
    attrs: Any = None
    attrs_for: Entry | None = None

    @property
    def is_dir(self) -> bool:
        return self.entry.is_dir

    @property
    def is_symlink(self) -> bool:
        return self.entry.symlink is not None


class InodeTable:
    def __init__(self) -> None:
        self._next = itertools.count(ROOT_INODE + 1)
        self._by_ino: dict[int, Node] = {}
        self._by_key: dict[tuple[int, str], int] = {}  # (datastore id or 0, path) -> ino

    def __len__(self) -> int:
        return len(self._by_ino)

    def add_root(self, node: Node) -> None:
        self._by_ino[node.ino] = node

    def get(self, ino: int) -> Node | None:
        return self._by_ino.get(ino)

    def find(self, datastore: Datastore | None, path: str) -> Node | None:
        ino = self._by_key.get((datastore.id if datastore else 0, path))
        return self._by_ino.get(ino) if ino is not None else None

    def ensure(self, datastore: Datastore | None, path: str, entry: Entry, now: float) -> Node:
        """The node for (datastore, path), created if new; its entry refreshed to `entry`."""
        key = (datastore.id if datastore else 0, path)
        ino = self._by_key.get(key)
        if ino is not None:
            node = self._by_ino[ino]
            old = node.entry
            # (Entry.kind, spelled out: this runs for every entry of every warm listing.)
            if old.is_dir != entry.is_dir or (old.symlink is None) != (entry.symlink is None):
                # A file became a directory or a symlink (or back): a new inode, so the kernel
                # never mixes them.
                self._by_key.pop(key)
            else:
                node.entry = entry
                node.entry_time = now
                return node
        node = Node(next(self._next), datastore, path, entry, now)
        self._by_ino[node.ino] = node
        self._by_key[key] = node.ino
        return node

    def forget(self, ino: int, count: int) -> None:
        node = self._by_ino.get(ino)
        if node is None or ino == ROOT_INODE:
            return
        node.lookups -= count
        if node.lookups <= 0:
            del self._by_ino[ino]
            key = (node.datastore.id if node.datastore else 0, node.path)
            if self._by_key.get(key) == ino:
                del self._by_key[key]

    def forget_path(self, datastore: Datastore, path: str) -> None:
        """`path` (and everything below it) no longer exists: stop resolving it. Its nodes
        live on until the kernel forgets them (open handles keep working)."""
        below = path + "/"
        for key in [k for k in self._by_key
                    if k[0] == datastore.id and (k[1] == path or k[1].startswith(below))]:
            del self._by_key[key]

    def move(self, datastore: Datastore, old: str, new: str) -> None:
        """`old` (and everything below it) is now `new`: the same nodes under new paths (the
        kernel keeps its inode numbers across a rename); what `new` named before is gone."""
        self.forget_path(datastore, new)
        below = old + "/"
        moved = [(k, ino) for k, ino in self._by_key.items()
                 if k[0] == datastore.id and (k[1] == old or k[1].startswith(below))]
        for key, _ in moved:
            del self._by_key[key]
        for key, ino in moved:
            path = new + key[1][len(old):]
            self._by_key[(datastore.id, path)] = ino
            self._by_ino[ino].path = path

    def unlink_datastore(self, datastore: Datastore) -> None:
        """Stop resolving paths of a detached datastore; nodes live on until forgotten."""
        for key in [k for k in self._by_key if k[0] == datastore.id]:
            del self._by_key[key]
