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
indexed query), so per-entry sizes, ETags and names live in sqlite, not in the daemon. And an
inode such a listing hands to the kernel stays *cold* (no Node: its number -> path, and its
count only when not 1; ~180 bytes) until anything asks about it, which promotes it to a Node
with the same number. What is computed from an entry (attributes) is memoised in bounded
caches, never per node.
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
        # datastore id (0: the virtual top) -> path -> its node, or the number of a cold inode.
        # Keyed by the node's own path string, so resolving a path costs no key object.
        self._by_path: dict[int, dict[str, Node | int]] = {}
        # Cold inodes: of a local namespace, handed to the kernel by a listing (readdirplus)
        # and never asked about since; only their path and count are kept, no Node (a `find`
        # of a million-file version makes a million of them). Any use promotes one to a Node.
        self._cold: dict[int, dict[int, str]] = {}  # datastore id -> ino -> path
        self._cold_ds: dict[int, Datastore] = {}
        self._cold_counts: dict[int, int] = {}  # cold inodes whose kernel count is not 1

    def __len__(self) -> int:
        return len(self._by_ino) + sum(len(c) for c in self._cold.values())

    def add_root(self, node: Node) -> None:
        self._by_ino[node.ino] = node

    def get(self, ino: int) -> Node | None:
        node = self._by_ino.get(ino)
        if node is not None:
            return node
        for ds_id, cold in self._cold.items():
            path = cold.pop(ino, None)
            if path is not None:
                return self._promote(ds_id, ino, path)
        return None

    def _promote(self, ds_id: int, ino: int, path: str) -> Node:
        node = Node(ino, self._cold_ds[ds_id], path, None)
        node.lookups = self._cold_counts.pop(ino, 1)
        self._by_ino[ino] = node
        paths = self._by_path.get(ds_id)
        if paths is not None and paths.get(path) == ino:
            paths[path] = node
        return node

    def nodes(self) -> list[Node]:
        """The nodes in the table (not cold inodes: they hold nothing that can go stale)."""
        return list(self._by_ino.values())

    def _paths(self, datastore: Datastore | None) -> dict[str, Node | int]:
        key = datastore.id if datastore else 0
        paths = self._by_path.get(key)
        if paths is None:
            paths = self._by_path[key] = {}
        return paths

    def find(self, datastore: Datastore | None, path: str) -> Node | None:
        paths = self._by_path.get(datastore.id if datastore else 0)
        found = paths.get(path) if paths is not None else None
        return self.get(found) if isinstance(found, int) else found

    def ensure(self, datastore: Datastore | None, path: str, entry: Entry, now: float) -> Node:
        """The node for (datastore, path), created if new; its entry refreshed to `entry`."""
        paths = self._paths(datastore)
        local = datastore is not None and datastore.backend.local_namespace
        found = paths.get(path)
        node = self.get(found) if isinstance(found, int) else found
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

    def listed(self, datastore: Datastore, path: str, entry: Entry, now: float) -> Node:
        """`ensure` for an entry a listing hands to the kernel. Of a local namespace, a new
        one becomes a cold inode and what is returned is a view of it, not kept (the caller
        only needs its number and attributes)."""
        if not datastore.backend.local_namespace:
            return self.ensure(datastore, path, entry, now)
        paths = self._paths(datastore)
        found = paths.get(path)
        if isinstance(found, Node):
            found.entry_time = now
            return found
        if found is None:
            found = next(self._next)
            cold = self._cold.get(datastore.id)
            if cold is None:
                cold = self._cold[datastore.id] = {}
                self._cold_ds[datastore.id] = datastore
            cold[found] = path
            paths[path] = found
            self._cold_counts[found] = 0  # until the kernel takes it (`remember`)
        return Node(found, datastore, path, entry, now)

    def remember(self, ino: int) -> None:
        """One more kernel reference to `ino` (readdirplus)."""
        node = self._by_ino.get(ino)
        if node is not None:
            node.lookups += 1
            return
        for cold in self._cold.values():
            if ino in cold:
                count = self._cold_counts.pop(ino, 1) + 1
                if count != 1:
                    self._cold_counts[ino] = count
                return

    def forget(self, ino: int, count: int) -> bool:
        """Release `count` kernel references; True if the inode is gone from the table."""
        node = self._by_ino.get(ino)
        if node is None:
            return self._forget_cold(ino, count)
        if ino == ROOT_INODE:
            return False
        node.lookups -= count
        if node.lookups > 0:
            return False
        del self._by_ino[ino]
        paths = self._by_path.get(node.datastore.id if node.datastore else 0)
        if paths is not None and paths.get(node.path) is node:
            del paths[node.path]
        return True

    def _forget_cold(self, ino: int, count: int) -> bool:
        for ds_id, cold in self._cold.items():
            if ino not in cold:
                continue
            left = self._cold_counts.pop(ino, 1) - count
            if left > 0:
                if left != 1:
                    self._cold_counts[ino] = left
                return False
            path = cold.pop(ino)
            paths = self._by_path.get(ds_id)
            if paths is not None and paths.get(path) == ino:
                del paths[path]
            return True
        return False

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
        kernel keeps its inode numbers across a rename); what `new` named before is gone.
        (Only read-write datastores rename: their inodes are never cold.)"""
        self.forget_path(datastore, new)
        paths = self._paths(datastore)
        below = old + "/"
        moved = [(p, node) for p, node in paths.items() if p == old or p.startswith(below)]
        for p, _ in moved:
            del paths[p]
        for p, node in moved:
            assert isinstance(node, Node)
            node.path = new + p[len(old):]
            paths[node.path] = node

    def unlink_datastore(self, datastore: Datastore) -> None:
        """Stop resolving paths of a detached datastore; nodes (and cold inodes) live on until
        forgotten."""
        self._by_path.pop(datastore.id, None)
