"""What a lookup or getattr answers about a node, and for how long the kernel may trust it.

`FsSettings` are the tree's settings (the [fs] owner and modes, block sizes, deadline);
`Presentation` is one datastore's say in who owns what it shows; `AttributeMemo` turns a node
into `Attributes`, memoised per inode while its entry is the same object (a warm listing of
a big directory then builds nothing per entry). The memo is bounded (LRU, `MEMO_ENTRIES`),
never one per node: a million live inodes must not mean a million Attributes in RAM.

Where owner, group and mode come from, first match wins, field by field:
1. a datastore's explicit override (`Presentation.uid/gid/file_mode/dir_mode`: root's
   attach-time `--uid/--gid/--file-mode/--dir-mode`, or a private cloud datastore's owner
   and 0400/0500);
2. the source's own, for kinds that have them (local: `Entry.uid/gid/mode`);
3. the [fs] defaults (cloud kinds; the root and the virtual NAME directories of versions).
A private datastore's root directory is its owner's, mode 0500, whatever else applies, with a
zero timeout so the kernel asks again at every path walk (the core hides it from the others).
The mount has `default_permissions`: the kernel enforces exactly these bits.
"""

from __future__ import annotations

import math
import stat
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from dsmount.node.fs.datastore import PRIVATE_ROOT_MODE
from dsmount.node.fs.inodes import Node
from dsmount.storage.base import Entry

MAX_TIMEOUT = 86400.0  # kernel entry/attr timeout for data that cannot change
VIRTUAL_TIMEOUT = 1.0  # root-level names change on attach/detach; bound how long a stale one lives
# Inodes whose attributes are memoised (LRU): more than the entries of a big directory listed
# warm (20,000 in the benchmark), far fewer than the inodes a `find` of a version makes live.
MEMO_ENTRIES = 32768


@dataclass(frozen=True)
class FsSettings:
    uid: int = 0
    gid: int = 0
    file_mode: int = 0o444
    dir_mode: int = 0o555
    block_size: int = 8 * 1024**2
    # A read that is not part of a sequential stream fetches its own range rounded out to this
    # (see node/cache/readahead.py): a random 64 KiB pread must not cost an 8 MiB GET.
    read_align: int = 4096
    readahead_max: int = 128 * 1024**2
    request_deadline: float = 60.0


@dataclass(frozen=True, slots=True)
class Attributes:
    """What a lookup/getattr answers; the adapter turns it into pyfuse3.EntryAttributes."""

    ino: int
    is_dir: bool
    size: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int
    timeout: float


class AttributeMemo:
    """`Attributes` of nodes, reused while a node's entry is the same object (bounded LRU)."""

    def __init__(self, settings: FsSettings, size: int = MEMO_ENTRIES) -> None:
        self.settings = settings
        self.size = size
        self._memo: OrderedDict[int, tuple[Entry, Attributes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._memo)

    def of(self, node: Node, entry: Entry | None = None) -> Attributes:
        """The attributes of `node`, whose entry is `entry` (the caller's, when it has it in
        hand: a listing's; saves asking a local namespace again)."""
        if entry is None:
            entry = node.entry
        memo = self._memo
        hit = memo.get(node.ino)
        if hit is not None and hit[0] is entry:
            memo.move_to_end(node.ino)
            return hit[1]
        attrs = _compute(node, entry, self.settings)
        memo[node.ino] = (entry, attrs)
        if len(memo) > self.size:
            memo.popitem(last=False)
        return attrs

    def forget(self, ino: int) -> None:
        self._memo.pop(ino, None)


def attributes_of(node: Node, settings: FsSettings) -> Attributes:
    """The attributes of `node`, unmemoised (reader hints check access with them)."""
    return _compute(node, node.entry, settings)


def _first(*values: int | None) -> int:
    for v in values:
        if v is not None:
            return v
    raise AssertionError("the [fs] default is never None")


def _compute(node: Node, e: Entry, s: FsSettings) -> Attributes:
    ds = node.datastore
    if ds is None:
        return Attributes(node.ino, True, 0, e.mtime_ns, stat.S_IFDIR | s.dir_mode, s.uid, s.gid,
                          VIRTUAL_TIMEOUT)
    p = ds.presentation
    timeout = VIRTUAL_TIMEOUT if node.path == "" else min(ds.metadata_ttl, MAX_TIMEOUT)
    uid = _first(p.uid, e.uid, s.uid)
    gid = _first(p.gid, e.gid, s.gid)
    if e.is_dir:
        mode = stat.S_IFDIR | _first(p.dir_mode, e.mode, s.dir_mode)
    elif e.symlink is not None:
        mode = stat.S_IFLNK | 0o777  # never checked by the kernel; the target's bits are
    else:
        mode = stat.S_IFREG | _first(p.file_mode, e.mode, s.file_mode) | _owner_write(node)
    if node.path == "" and p.private_to is not None:
        uid, mode, timeout = p.private_to, stat.S_IFDIR | PRIVATE_ROOT_MODE, 0.0
    if e.is_dir:
        mode |= _owner_write(node)
    return Attributes(node.ino, e.is_dir, e.size, e.mtime_ns, mode, uid, gid, timeout)


def _owner_write(node: Node) -> int:
    """The owner's write bit on a read-write datastore (the kernel checks it)."""
    ds = node.datastore
    return stat.S_IWUSR if ds is not None and ds.read_write else 0


def is_fresh(node: Node, clock: Callable[[], float]) -> bool:
    """Whether what we know of `node` is still within its datastore's metadata TTL."""
    if node.datastore is None:
        return True
    if node.entry_time == -math.inf:  # marked stale (refresh, or changed under a reader)
        return False
    return clock() - node.entry_time <= node.datastore.metadata_ttl


def mark_stale(node: Node) -> None:
    """Stop trusting what we know of `node` (and the pages the kernel kept of it)."""
    node.entry_time = -math.inf
    node.last_open_etag = None
