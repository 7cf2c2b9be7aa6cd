"""What a lookup or getattr answers about a node, and for how long the kernel may trust it.

`FsSettings` are the presentation settings of the tree (owner, modes, block sizes, deadline);
`attributes_of` turns a node into `Attributes`, memoised on the node while its entry is the
same object (a warm listing of a big directory then builds nothing per entry).
"""

from __future__ import annotations

import math
import stat
from collections.abc import Callable
from dataclasses import dataclass

from dsmount.node.fs.inodes import Node

MAX_TIMEOUT = 86400.0  # kernel entry/attr timeout for data that cannot change
VIRTUAL_TIMEOUT = 1.0  # root-level names change on attach/detach; bound how long a stale one lives


@dataclass(frozen=True)
class FsSettings:
    uid: int = 0
    gid: int = 0
    file_mode: int = 0o444
    dir_mode: int = 0o555
    block_size: int = 8 * 1024**2
    # Reads that are not part of a sequential stream fetch this much around themselves rather
    # than a whole block: a random 64 KiB pread must not cost an 8 MiB GET.
    random_block_size: int = 256 * 1024
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


def attributes_of(node: Node, settings: FsSettings) -> Attributes:
    if node.attrs_for is node.entry:
        return node.attrs  # type: ignore[no-any-return]
    node.attrs = attrs = _compute(node, settings)
    node.attrs_for = node.entry
    return attrs


def _compute(node: Node, s: FsSettings) -> Attributes:
    e = node.entry
    if node.datastore is None or node.path == "":
        timeout = VIRTUAL_TIMEOUT
    else:
        timeout = min(node.datastore.metadata_ttl, MAX_TIMEOUT)
    return Attributes(
        ino=node.ino,
        is_dir=e.is_dir,
        size=e.size,
        mtime_ns=e.mtime_ns,
        mode=(stat.S_IFDIR | s.dir_mode | _owner_write(node)) if e.is_dir
        else (stat.S_IFREG | s.file_mode | _owner_write(node)),
        uid=s.uid,
        gid=s.gid,
        timeout=timeout,
    )


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
