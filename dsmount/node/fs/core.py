"""The filesystem core: what every FUSE request means, with no FUSE in sight.

`FileSystem` is the one object the FUSE adapter and the control service talk to. It composes
the parts that hold the logic: `namespace` (which datastores are attached where), `lookup`
(names to nodes, and what is known of them), `attributes` (what getattr answers), `dirs`
(directory handles) and `reads` (file handles and the read path, over `node.cache.fetcher`).

Invariants:
- Every method either returns or raises a `dsmount.errors` error (or OSError); the FUSE
  adapter maps those to errno. Nothing here knows errno numbers.
- Everything is read-only.
- Detaching a datastore with open files is refused unless forced; a forced detach is lazy:
  the name disappears at once, open handles keep reading until they are closed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from dsmount.errors import Busy, InvalidRequest, NotFound, ReadOnly
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.cache.disk import DiskCache
from dsmount.node.cache.fetcher import Fetcher
from dsmount.node.fs.attributes import Attributes, FsSettings, attributes_of, is_fresh, mark_stale
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.dirs import DirHandles
from dsmount.node.fs.inodes import ROOT_INODE, InodeTable, Node
from dsmount.node.fs.lookup import Lookups
from dsmount.node.fs.metadata import MetadataCache
from dsmount.node.fs.namespace import NAME_MAX, Namespace, check_name
from dsmount.node.fs.reads import FileHandle, ReadPath
from dsmount.storage.base import Entry

__all__ = ["Attributes", "FileSystem", "FsSettings"]

log = logging.getLogger(__name__)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


class FileSystem:
    def __init__(
        self,
        cache: BlockCache,
        settings: FsSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        invalidate_entry: Callable[[int, str], None] | None = None,
        invalidate_inode: Callable[[int], None] | None = None,
        disk: DiskCache | None = None,
    ) -> None:
        self.cache = cache
        self.disk = disk
        self.settings = settings or FsSettings()
        self.clock = clock
        self.invalidate_entry = invalidate_entry or (lambda parent, name: None)
        self.invalidate_inode = invalidate_inode or (lambda ino: None)
        self.inodes = InodeTable()
        self.metadata = MetadataCache()
        self.namespace = Namespace()
        started = time.time_ns()
        self.lookups = Lookups(
            self.namespace, self.inodes, self.metadata, self.settings, clock, started
        )
        self.dirs = DirHandles(
            self.namespace, self.lookups, self.inodes, self.metadata, self.settings, clock,
            self._new_fh,
        )
        self.reads = ReadPath(
            Fetcher(cache, disk, self.settings.block_size), self.metadata, self.settings,
            self._invalidate_inode,
        )
        self._files: dict[int, FileHandle] = {}
        self._next_fh = 1
        self.inodes.add_root(Node(ROOT_INODE, None, "", Entry("", True, 0, started)))

    def _invalidate_inode(self, ino: int) -> None:
        self.invalidate_inode(ino)  # late-bound: the daemon may set the hook after building us

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    # -- namespace (attach / detach) --------------------------------------------------------
    check_name = staticmethod(check_name)

    def datastores(self) -> list[Datastore]:
        return self.namespace.datastores()

    def find(self, name: str, version: str | None = None) -> Datastore:
        return self.namespace.find(name, version)

    def attach(self, ds: Datastore) -> None:
        self.namespace.add(ds)

    async def detach(self, name: str, version: str | None = None, *, force: bool = False
                     ) -> Datastore:
        ds = self.find(name, version)
        if ds.open_files and not force:
            raise Busy(
                f"datastore {ds.key!r} has {ds.open_files} open file(s); close them or "
                "detach with --force (lazy: open files stay readable until closed)"
            )
        # Invalidate only entries the kernel holds: pyfuse3 logs an error for unknown ones.
        root = self.inodes.find(ds, "")
        known = root is not None and root.lookups > 0
        name_gone = self.namespace.remove(ds)
        if version is not None:
            parent = self.inodes.find(None, name)
            if parent is not None and known:
                self.invalidate_entry(parent.ino, version)
            if name_gone and parent is not None and parent.lookups > 0:
                self.invalidate_entry(ROOT_INODE, name)
        elif known:
            self.invalidate_entry(ROOT_INODE, name)
        ds.detached = True
        self.inodes.unlink_datastore(ds)
        self.metadata.drop(ds.id)
        self.cache.drop(ds.id)
        if ds.open_files == 0:
            await self._close_backend(ds)
        log.info("[%s] detached%s", ds.key, " (lazily)" if ds.open_files else "")
        return ds

    async def _close_backend(self, ds: Datastore) -> None:
        try:
            await ds.backend.aclose()
        except Exception as e:
            log.warning("[%s] closing backend: %s", ds.key, e)

    def refresh(self, name: str, version: str | None = None, path: str = "") -> int:
        """Drop cached metadata (and, for a path, its blocks) so the next access re-reads it."""
        ds = self.find(name, version)
        path = path.strip("/")
        n = self.metadata.drop(ds.id, path or None)
        for node in self._nodes_of(ds):
            if not path or node.path == path or node.path.startswith(path + "/"):
                mark_stale(node)
                if node.lookups > 0:
                    # The kernel's cached attributes and pages of it are stale too.
                    self.invalidate_inode(node.ino)
        return n

    def _nodes_of(self, ds: Datastore) -> list[Node]:
        return [n for n in list(self.inodes._by_ino.values()) if n.datastore is ds]

    # -- lookups and attributes ------------------------------------------------------------------
    async def lookup(self, parent_ino: int, name: str, uid: int | None = None) -> Attributes:
        """Resolve `name` in a directory for a process of `uid` (private datastores of others
        are not found; None: no such rule); counts one kernel lookup reference on success."""
        node = await self.lookups.lookup(parent_ino, name, uid)
        node.lookups += 1
        return attributes_of(node, self.settings)

    async def getattr(self, ino: int) -> Attributes:
        node = self.lookups.node(ino)
        await self.lookups.revalidate(node)
        return attributes_of(node, self.settings)

    async def readlink(self, ino: int) -> str:
        """Where a symbolic link points: relative, and always inside its datastore."""
        node = self.lookups.node(ino)
        await self.lookups.revalidate(node)
        if node.entry.symlink is None:
            raise InvalidRequest("not a symbolic link")
        return node.entry.symlink

    def remember(self, ino: int) -> None:
        """Count a lookup reference handed to the kernel outside `lookup` (readdirplus)."""
        node = self.inodes.get(ino)
        if node is not None:
            node.lookups += 1

    def forget(self, items: list[tuple[int, int]]) -> None:
        for ino, count in items:
            self.inodes.forget(ino, count)

    # -- directories --------------------------------------------------------------------------
    async def opendir(self, ino: int, uid: int | None = None) -> int:
        return await self.dirs.opendir(self.lookups.node(ino), uid)

    async def readdir(self, fh: int, start: int, max_entries: int = 512
                      ) -> list[tuple[int, str, Attributes]]:
        """Up to `max_entries` entries from position `start`: (next position, name, attrs).

        Does not count kernel references: the adapter calls `remember` for each entry it
        actually hands to the kernel.
        """
        return await self.dirs.readdir(fh, start, max_entries)

    async def releasedir(self, fh: int) -> None:
        await self.dirs.releasedir(fh)

    # -- files --------------------------------------------------------------------------------
    async def open(self, ino: int, flags: int) -> tuple[int, bool]:
        """Open a file read-only. Returns (fh, keep_cache)."""
        if flags & _WRITE_FLAGS:
            raise ReadOnly("dsmount is read-only")
        node = self.lookups.node(ino)
        if node.is_dir:
            raise InvalidRequest("is a directory")
        if node.is_symlink:  # the kernel follows links before opening; never served as a file
            raise InvalidRequest("is a symbolic link")
        ds = node.datastore
        assert ds is not None
        if ds.detached:
            raise NotFound(f"datastore {ds.key!r} was detached")
        if not is_fresh(node, self.clock):
            entry = await self.lookups.stat(ds, node.path)
            if entry.kind != "file":
                raise NotFound(f"{node.path} is now a {'directory' if entry.is_dir else 'link'}")
            node.entry = entry
            node.entry_time = self.clock()
        etag = node.entry.etag
        # The kernel may keep pages it cached for this inode only if they are of this version.
        keep_cache = ds.immutable or (etag is not None and etag == node.last_open_etag)
        node.last_open_etag = etag
        fh = self._new_fh()
        self._files[fh] = self.reads.handle(node, ds)
        ds.open_files += 1
        return fh, keep_cache

    def _handle(self, fh: int) -> FileHandle:
        h = self._files.get(fh)
        if h is None:
            raise NotFound("bad file handle")
        return h

    async def read(self, fh: int, offset: int, length: int) -> bytes | memoryview:
        return await self.reads.read(self._handle(fh), offset, length)

    async def release(self, fh: int) -> None:
        h = self._files.pop(fh, None)
        if h is None:
            return
        ds = h.datastore
        ds.open_files -= 1
        if ds.detached and ds.open_files == 0:
            await self._close_backend(ds)

    # -- misc ---------------------------------------------------------------------------------
    def statfs(self) -> dict[str, int]:
        return {
            "bsize": self.settings.block_size,
            "frsize": 4096,
            "blocks": 0,
            "bfree": 0,
            "bavail": 0,
            "files": len(self.inodes),
            "ffree": 0,
            "namemax": NAME_MAX,
        }

    def open_counts(self) -> dict[str, int]:
        return {"files": len(self._files), "dirs": len(self.dirs.open), "inodes": len(self.inodes)}
