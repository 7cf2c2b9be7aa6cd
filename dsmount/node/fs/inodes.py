"""The inode table: numbers for the root, virtual directories and datastore paths.

A node stays in the table while the kernel holds a lookup reference to it (counted by
lookup/readdirplus, released by forget), as in pyfuse3's examples. Inode numbers are never
reused within one daemon run, and a path keeps its number while the kernel references it.

Memory: `find` over readdirplus hands the kernel a reference to every entry it lists, so a
1,000,000-file version means a million live nodes. A node is therefore small: a slotted object
(ino, datastore, path, entry, entry time, lookup count, last ETag opened) in two dicts (by
number; per datastore by path), about 270 bytes with its path and ino. For a datastore whose
namespace is local (`Backend.local_namespace`: a version served from its sqlite manifest) the
node keeps no `Entry` at all: `node.entry` asks the backend (`entry_now`, a small LRU over one
indexed query), so per-entry sizes, ETags and names live in sqlite, not in the daemon. What is
computed from an entry (attributes) is memoised in bounded caches, never per node.
"""

from __future__ import annotations

import itertools

from dsmount.node.fs.datastore import Datastore
from dsmount.storage.base import Entry

ROOT_INODE = 1


class Node:
    """One inode. `entry` is what is known of its object; for a local-namespace datastore it is
    read from the backend on demand (`_entry` None), so a million nodes hold no Entries."""

    __slots__ = ("ino", "datastore", "path", "_entry", "entry_time", "lookups", "last_open_etag")

    def __init__(self, ino: int, datastore: Datastore | None, path: str, entry: Entry | None,
                 entry_time: float = 0.0) -> None:
        self.ino = ino
        self.datastore = datastore  # None: the root or a virtual directory (NAME of versions)
        self.path = path  # path inside the datastore, or the virtual path under the mountpoint
        self._entry = entry
        self.entry_time = entry_time  # monotonic time `entry` was fetched
        self.lookups = 0
        self.last_open_etag: str | None = None  # the ETag seen at the previous open (keep_cache)

    @property
    def entry(self) -> Entry:
        e = self._entry
        if e is not None:
            return e
        assert self.datastore is not None  # only datastore nodes are kept without an entry
        # Raises NotFound if the backend cannot answer (closed after a lazy detach).
        return self.datastore.backend.entry_now(self.path)

    @entry.setter
    def entry(self, entry: Entry) -> None:
        ds = self.datastore
        # A local namespace answers again whenever asked: keeping the Entry would only cost RAM.
        self._entry = None if ds is not None and ds.backend.local_namespace else entry

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
        # datastore id (0: the virtual top) -> path -> node. Keyed by the node's own path
        # string, so resolving a path costs no key object per node.
        self._by_path: dict[int, dict[str, Node]] = {}

    def __len__(self) -> int:
        return len(self._by_ino)

    def add_root(self, node: Node) -> None:
        self._by_ino[node.ino] = node

    def get(self, ino: int) -> Node | None:
        return self._by_ino.get(ino)

    def nodes(self) -> list[Node]:
        return list(self._by_ino.values())

    def _paths(self, datastore: Datastore | None) -> dict[str, Node]:
        key = datastore.id if datastore else 0
        paths = self._by_path.get(key)
        if paths is None:
            paths = self._by_path[key] = {}
        return paths

    def find(self, datastore: Datastore | None, path: str) -> Node | None:
        paths = self._by_path.get(datastore.id if datastore else 0)
        return paths.get(path) if paths is not None else None

    def ensure(self, datastore: Datastore | None, path: str, entry: Entry, now: float) -> Node:
        """The node for (datastore, path), created if new; its entry refreshed to `entry`."""
        paths = self._paths(datastore)
        local = datastore is not None and datastore.backend.local_namespace
        node = paths.get(path)
        if node is not None:
            if local:
                # A local namespace (a manifest) cannot change: nothing to compare or keep.
                node.entry_time = now
                return node
            old = node.entry
            # (Entry.kind, spelled out: this runs for every entry of every warm listing.)
            if old.is_dir != entry.is_dir or (old.symlink is None) != (entry.symlink is None):
                # A file became a directory or a symlink (or back): a new inode, so the kernel
                # never mixes them.
                del paths[path]
            else:
                node._entry = entry
                node.entry_time = now
                return node
        node = Node(next(self._next), datastore, path, None if local else entry, now)
        self._by_ino[node.ino] = node
        paths[path] = node
        return node

    def forget(self, ino: int, count: int) -> bool:
        """Release `count` kernel references; True if the node is gone from the table."""
        node = self._by_ino.get(ino)
        if node is None or ino == ROOT_INODE:
            return False
        node.lookups -= count
        if node.lookups > 0:
            return False
        del self._by_ino[ino]
        paths = self._by_path.get(node.datastore.id if node.datastore else 0)
        if paths is not None and paths.get(node.path) is node:
            del paths[node.path]
        return True

    def forget_path(self, datastore: Datastore, path: str) -> None:
        """`path` (and everything below it) no longer exists: stop resolving it. Its nodes
        live on until the kernel forgets them (open handles keep working)."""
        paths = self._by_path.get(datastore.id)
        if not paths:
            return
        below = path + "/"
        for p in [p for p in paths if p == path or p.startswith(below)]:
            del paths[p]

    def move(self, datastore: Datastore, old: str, new: str) -> None:
        """`old` (and everything below it) is now `new`: the same nodes under new paths (the
        kernel keeps its inode numbers across a rename); what `new` named before is gone."""
        self.forget_path(datastore, new)
        paths = self._paths(datastore)
        below = old + "/"
        moved = [(p, node) for p, node in paths.items() if p == old or p.startswith(below)]
        for p, _ in moved:
            del paths[p]
        for p, node in moved:
            node.path = new + p[len(old):]
            paths[node.path] = node

    def unlink_datastore(self, datastore: Datastore) -> None:
        """Stop resolving paths of a detached datastore; nodes live on until forgotten."""
        self._by_path.pop(datastore.id, None)
