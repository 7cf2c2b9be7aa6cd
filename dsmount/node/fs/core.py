"""The filesystem core: what every FUSE request means, with no FUSE in sight.

`FileSystem` is the one object the FUSE adapter and the control operations (node/ops.py)
talk to. It composes the parts that hold the logic: `namespace` (which datastores are
attached where), `lookup` (names to nodes, and what is known of them), `attributes` (what
getattr answers), `dirs` (directory handles), `reads` (file handles and the read path, over
`node.cache.fetcher`), `warming` (what a warm job may ask: walk and read through the read
path), `writes` (files open for writing, their uploads and commits) and `mutations` (create,
unlink, mkdir, rmdir, rename, setattr).

Invariants:
- Every method either returns or raises a `dsmount.errors` error (or OSError); the FUSE
  adapter maps those to errno. Nothing here knows errno numbers.
- Only datastores attached read-write change; every change to anything else is ReadOnly.
- Detaching a datastore with open files is refused unless forced; a forced detach is lazy:
  the name disappears at once, open handles keep reading until they are closed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace

import trio

from dsmount.errors import Busy, InvalidRequest, NotFound
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.cache.disk import DiskCache
from dsmount.node.cache.fetcher import Fetcher
from dsmount.node.fs.attributes import (
    AttributeMemo,
    Attributes,
    FsSettings,
    is_fresh,
    mark_stale,
)
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.dirs import DirHandles
from dsmount.node.fs.inodes import ROOT_INODE, InodeTable, Node
from dsmount.node.fs.lookup import Lookups
from dsmount.node.fs.metadata import MetadataCache
from dsmount.node.fs.mutations import Mutations
from dsmount.node.fs.namespace import NAME_MAX, Namespace, check_name
from dsmount.node.fs.reads import FileHandle, ReadPath
from dsmount.node.fs.warming import Warming
from dsmount.node.fs.writes import RELEASE_GRACE, WriteHandle, WritePath, WriteSettings
from dsmount.storage.base import Entry

__all__ = ["Attributes", "FileSystem", "FsSettings", "WriteSettings"]

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
        writes: WriteSettings | None = None,
    ) -> None:
        self.cache = cache
        self.disk = disk
        self.settings = settings or FsSettings()
        self.clock = clock
        self.invalidate_entry = invalidate_entry or (lambda parent, name: None)
        self.invalidate_inode = invalidate_inode or (lambda ino: None)
        self.inodes = InodeTable()
        self.attributes = AttributeMemo(self.settings)
        self.metadata = MetadataCache()
        self.namespace = Namespace()
        started = time.time_ns()
        self.lookups = Lookups(
            self.namespace, self.inodes, self.metadata, self.settings, clock, started
        )
        self.dirs = DirHandles(
            self.namespace, self.lookups, self.inodes, self.metadata, self.attributes,
            self.settings, clock, self._new_fh,
        )
        self.reads = ReadPath(
            Fetcher(cache, disk), self.metadata, self.settings, self._invalidate_inode
        )
        # What the warm jobs (node/warm.py) may ask of the core, and no more.
        self.warming = Warming(self.lookups, self.metadata, self.inodes, self.reads,
                               self.settings, clock, cache, disk)
        self.writes = WritePath(
            cache, writes or WriteSettings(staging_dir="", deadline=self.settings.request_deadline),
            self._on_commit, self._on_abandon,
        )
        self.mutations = Mutations(self.lookups, self.inodes, self.metadata, self.writes, clock,
                                   self._invalidate_inode, self._invalidate_entry)
        # Told of every open for reading (datastore, path, pid, uid): ordered prefetch.
        self.on_open: Callable[[Datastore, str, int | None, int | None], None] | None = None
        self._files: dict[int, FileHandle] = {}
        self._backing: dict[int, str] = {}  # fh -> its backing file, until the transport asks
        self._writers: dict[int, WriteHandle] = {}
        self._next_fh = 1
        self.inodes.add_root(Node(ROOT_INODE, None, "", Entry("", True, 0, started)))

    def _on_commit(self, node: Node, entry: Entry) -> None:
        self.mutations.on_commit(node, entry)

    def _on_abandon(self, node: Node) -> None:
        self.mutations.on_abandon(node)

    def _attributes(self, node: Node) -> Attributes:
        attrs = self.attributes.of(node)
        pending = self.writes.size_of(node) if self.writes.by_node else None
        if pending is not None and pending != attrs.size:
            return replace(attrs, size=pending)  # what a writer here wrote, not yet committed
        return attrs

    def _invalidate_entry(self, parent: int, name: str) -> None:
        self.invalidate_entry(parent, name)  # late-bound, like invalidate_inode

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
            # close(2) does not wait for the kernel's RELEASE: a program that closes its files
            # and then detaches can arrive first. Give releases on their way a moment.
            with trio.move_on_after(RELEASE_GRACE):
                while ds.open_files and not ds.detached:
                    await trio.sleep(0.01)
            ds = self.find(name, version)  # another call may have detached it meanwhile
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
        return [n for n in self.inodes.nodes() if n.datastore is ds]

    # -- lookups and attributes ------------------------------------------------------------------
    async def lookup(self, parent_ino: int, name: str, uid: int | None = None) -> Attributes:
        """Resolve `name` in a directory for a process of `uid` (private datastores of others
        are not found; None: no such rule); counts one kernel lookup reference on success."""
        node = await self.lookups.lookup(parent_ino, name, uid)
        node.lookups += 1
        return self._attributes(node)

    def lookup_now(self, parent_ino: int, name: str, uid: int | None = None
                   ) -> Attributes | None:
        """`lookup` when memory answers it, else None (then await `lookup`): a transport
        answers most lookups of an epoch on the spot, with no task of their own."""
        node = self.lookups.lookup_now(parent_ino, name, uid)
        if node is None:
            return None
        node.lookups += 1
        return self._attributes(node)

    async def getattr(self, ino: int) -> Attributes:
        node = self.lookups.node(ino)
        if not self.writes.writing(node):
            await self.lookups.revalidate(node)
        return self._attributes(node)

    async def readlink(self, ino: int) -> str:
        """Where a symbolic link points: relative, and always inside its datastore."""
        node = self.lookups.node(ino)
        await self.lookups.revalidate(node)
        if node.entry.symlink is None:
            raise InvalidRequest("not a symbolic link")
        return node.entry.symlink

    def remember(self, ino: int) -> None:
        """Count a lookup reference handed to the kernel outside `lookup` (readdirplus)."""
        self.inodes.remember(ino)

    def forget(self, items: list[tuple[int, int]]) -> None:
        for ino, count in items:
            if self.inodes.forget(ino, count):
                self.attributes.forget(ino)

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
    async def open(self, ino: int, flags: int, pid: int | None = None, uid: int | None = None,
                   *, passthrough: bool = False) -> tuple[int, bool]:
        """Open a file (for process `pid` of `uid`, when known). Returns (fh, keep_cache).

        `passthrough`: the transport can hand the kernel a backing file; when the file's bytes
        are complete and verified in the disk cache, `backing_file(fh)` then names it (and no
        read of them is started here: the kernel will read that file itself)."""
        node, ds = self._openable(ino, flags)
        if flags & _WRITE_FLAGS:
            return await self._open_writer(node, ds, flags), False
        if not is_fresh(node, self.clock):
            entry = await self.lookups.stat(ds, node.path)
            if entry.kind != "file":
                raise NotFound(f"{node.path} is now a {'directory' if entry.is_dir else 'link'}")
            node.entry = entry
            node.entry_time = self.clock()
        return self._open_reader(node, ds, pid, uid, passthrough)

    def open_now(self, ino: int, flags: int, pid: int | None = None, uid: int | None = None,
                 *, passthrough: bool = False) -> tuple[int, bool] | None:
        """`open` when nothing must be awaited (a reader of a fresh entry), else None (then
        await `open`). Errors are the same as `open`'s."""
        node, ds = self._openable(ino, flags)
        if flags & _WRITE_FLAGS or not is_fresh(node, self.clock):
            return None
        return self._open_reader(node, ds, pid, uid, passthrough)

    def _openable(self, ino: int, flags: int) -> tuple[Node, Datastore]:
        node = self.lookups.node(ino)
        if flags & _WRITE_FLAGS:
            self.mutations.writable(node)  # ReadOnly unless attached read-write
        if node.is_dir:
            raise InvalidRequest("is a directory")
        if node.is_symlink:  # the kernel follows links before opening; never served as a file
            raise InvalidRequest("is a symbolic link")
        ds = node.datastore
        assert ds is not None
        if ds.detached:
            raise NotFound(f"datastore {ds.key!r} was detached")
        return node, ds

    def _open_reader(self, node: Node, ds: Datastore, pid: int | None, uid: int | None,
                     passthrough: bool) -> tuple[int, bool]:
        etag = node.entry.etag
        # The kernel may keep pages it cached for this inode only if they are of this version.
        seen = etag is not None and etag == node.last_open_etag
        keep_cache = ds.immutable or seen
        node.last_open_etag = etag
        fh = self._new_fh()
        self._files[fh] = h = self.reads.handle(node, ds)
        ds.open_files += 1
        backing = self.reads.backing_file(h) if passthrough else None
        if backing is None:
            self.reads.opened(h, pages_kept=seen)
        else:
            self._backing[fh] = backing
        if self.on_open is not None:  # ordered prefetch (node/hints.py) follows the reader
            self.on_open(ds, node.path, pid, uid)
        return fh, keep_cache

    def backing_file(self, fh: int) -> str | None:
        """The file that holds exactly the bytes of read handle `fh`, when `open` found one
        (asked once per open: the transport registers it with the kernel right away)."""
        return self._backing.pop(fh, None)

    async def _open_writer(self, node: Node, ds: Datastore, flags: int) -> int:
        if not self.writes.writing(node) and not is_fresh(node, self.clock):
            entry = await self.lookups.stat(ds, node.path)
            if entry.is_dir:
                raise NotFound(f"{node.path} is now a directory")
            node.entry, node.entry_time = entry, self.clock()
        await self.writes.room()
        h = self.writes.open(node, ds, flags, created=False)
        try:
            if flags & os.O_TRUNC:
                await self.writes.truncate(h, 0)
        except BaseException:
            await self.writes.release(h)
            raise
        return self._add_writer(h)

    def _add_writer(self, h: WriteHandle) -> int:
        fh = self._new_fh()
        self._writers[fh] = h
        h.ds.open_files += 1
        return fh

    def is_writer(self, fh: int) -> bool:
        """Whether `fh` was opened for writing (its close commits)."""
        return fh in self._writers

    def _writer(self, fh: int) -> WriteHandle:
        h = self._writers.get(fh)
        if h is None:
            raise NotFound("bad file handle (not open for writing)")
        return h

    async def create(self, parent_ino: int, name: str, flags: int) -> tuple[int, Attributes]:
        """Create and open a new file (a FUSE create); counts one kernel lookup reference."""
        node, h = await self.mutations.create(parent_ino, name, flags)
        return self._add_writer(h), self._attributes(node)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        return await self.writes.write(self._writer(fh), offset, data)

    async def flush(self, fh: int) -> None:
        """close(2) of a descriptor: what was written is committed, its error returned."""
        h = self._writers.get(fh)
        if h is not None:
            await self.writes.commit(h)

    async def fsync(self, fh: int) -> None:
        h = self._writers.get(fh)
        if h is not None:
            await self.writes.commit(h)

    async def setattr(self, ino: int, *, size: int | None = None, fh: int | None = None
                      ) -> Attributes:
        """Truncate (`size`); mode, owner and times are accepted and not stored."""
        node = self.lookups.node(ino)
        handle = self._writers.get(fh) if fh is not None else None
        await self.mutations.setattr(node, size=size, handle=handle)
        return self._attributes(node)

    async def unlink(self, parent_ino: int, name: str) -> None:
        await self.mutations.unlink(parent_ino, name)

    async def mkdir(self, parent_ino: int, name: str) -> Attributes:
        """Make a directory; counts one kernel lookup reference."""
        return self._attributes(await self.mutations.mkdir(parent_ino, name))

    async def rmdir(self, parent_ino: int, name: str) -> None:
        await self.mutations.rmdir(parent_ino, name)

    async def rename(self, old_parent: int, old: str, new_parent: int, new: str, flags: int = 0
                     ) -> None:
        await self.mutations.rename(old_parent, old, new_parent, new, flags,
                                    self.writes.settings.dir_rename_limit)

    def not_supported(self, ino: int, what: str, *, xattr: bool = False) -> None:
        """Hard links, symbolic links, special files, extended attributes: ReadOnly on a
        read-only datastore, NotSupported on a read-write one."""
        self.mutations.not_supported(self.lookups.node(ino), what, xattr=xattr)

    def writable(self, ino: int) -> bool:
        node = self.inodes.get(ino)
        ds = node.datastore if node is not None else None
        return ds is not None and ds.read_write and not ds.detached

    async def attached(self, ds: Datastore) -> None:
        """After attaching a read-write datastore: remove what an interrupted run left."""
        if ds.read_write:
            await self.writes.recover(ds)

    def _handle(self, fh: int) -> FileHandle:
        h = self._files.get(fh)
        if h is None:
            raise NotFound("bad file handle")
        return h

    async def read(self, fh: int, offset: int, length: int) -> bytes | memoryview:
        writer = self._writers.get(fh)
        if writer is not None:
            return await self.writes.read(writer, offset, length)
        return await self.reads.read(self._handle(fh), offset, length)

    def read_now(self, fh: int, offset: int, length: int) -> bytes | memoryview | None:
        """`read` of a reader's handle when memory holds the bytes, else None (await `read`)."""
        if fh in self._writers:
            return None
        return self.reads.read_now(self._handle(fh), offset, length)

    async def release(self, fh: int) -> None:
        writer = self._writers.pop(fh, None)
        if writer is not None:
            try:
                await self.writes.release(writer)
            finally:
                await self._closed(writer.ds)
            return
        h = self._files.pop(fh, None)
        if h is None:
            return
        await self._closed(h.datastore)

    def release_now(self, fh: int) -> bool:
        """`release` of a reader's handle when nothing must be awaited; False: await `release`
        (a writer's commits; the last handle of a detached datastore closes its backend)."""
        if fh in self._writers:
            return False
        h = self._files.get(fh)
        if h is not None:
            ds = h.datastore
            if ds.detached and ds.open_files == 1:
                return False
            del self._files[fh]
            ds.open_files -= 1
        return True

    async def _closed(self, ds: Datastore) -> None:
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
        return {"files": len(self._files), "writers": len(self._writers),
                "dirs": len(self.dirs.open), "inodes": len(self.inodes)}
