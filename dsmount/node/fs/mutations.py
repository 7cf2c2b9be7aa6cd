"""Namespace changes on read-write datastores: create, unlink, mkdir, rmdir, rename, setattr
(and the errors for what a datastore cannot hold: hard links, symlinks, special files).

Each change is made on storage first; only once it succeeded are this node's caches told,
at once: the inode table (paths re-keyed on rename, forgotten on unlink/rmdir), the cached
listing of the parent (the name added or removed, so `ls` shows it without a new listing),
negative lookups, and the kernel's cached pages and attributes of a replaced object
(`invalidate_inode`). The kernel updates its own dentries for a change made through it.

Semantics (README "Writing"): everything that would change a read-only datastore, a version
or the virtual top of the tree is ReadOnly (EROFS). A file rename replaces the destination
atomically (blob: server-side copy then delete; file share: its own rename); a directory
rename is native on file shares and, on blob containers, a copy and delete per object up to
`dir_rename_limit` objects (CrossDevice = EXDEV beyond it, so `mv` copies by itself). mode,
owner and times are accepted and not stored (the tree shows its configured owner and modes),
so `cp -a`, `tar x` and `rsync -a` work. Writers of a file that is renamed are committed
first (their upload targets the old name); writers of an unlinked file commit nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace

from dsmount.errors import (
    AlreadyExists,
    CrossDevice,
    InvalidRequest,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotSupported,
    ReadOnly,
    XattrNotSupported,
)
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import InodeTable, Node
from dsmount.node.fs.lookup import Lookups, close_listing, join
from dsmount.node.fs.metadata import MetadataCache
from dsmount.node.fs.write_handle import WriteHandle
from dsmount.node.fs.writes import WritePath
from dsmount.storage.base import Entry
from dsmount.storage.names import name_problem

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def _parent_of(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name


class Mutations:
    def __init__(
        self,
        lookups: Lookups,
        inodes: InodeTable,
        metadata: MetadataCache,
        writes: WritePath,
        clock: Callable[[], float],
        invalidate_inode: Callable[[int], None],
        invalidate_entry: Callable[[int, str], None],
    ) -> None:
        self.lookups = lookups
        self.inodes = inodes
        self.metadata = metadata
        self.writes = writes
        self.clock = clock
        self.invalidate_inode = invalidate_inode
        self.invalidate_entry = invalidate_entry

    # -- guards -----------------------------------------------------------------------------------
    @staticmethod
    def writable(node: Node) -> Datastore:
        ds = node.datastore
        if ds is None:
            raise ReadOnly("the top of the datastore tree is read-only")
        if ds.detached:
            raise NotFound(f"datastore {ds.key!r} was detached")
        if not ds.read_write:
            raise ReadOnly(f"datastore {ds.key!r} is attached read-only")
        return ds

    def _dir(self, parent_ino: int, name: str) -> tuple[Node, Datastore, str]:
        parent = self.lookups.node(parent_ino)
        ds = self.writable(parent)
        if not parent.is_dir:
            raise NotADirectory(f"{parent.path}: not a directory")
        problem = name_problem(name)
        if problem:
            raise InvalidRequest(f"invalid name {name!r}: {problem}")
        return parent, ds, join(parent.path, name)

    async def _existing(self, ds: Datastore, path: str) -> Entry | None:
        try:
            node = self.inodes.find(ds, path)
            if node is not None and self.writes.writing(node):
                return node.entry  # written here, perhaps not committed yet
            return await self.lookups.stat(ds, path)
        except NotFound:
            return None

    def _settled(self, ds: Datastore, path: str, entry: Entry) -> Node:
        """Record `entry` as what `path` now is, on this node."""
        parent, name = _parent_of(path)
        entry = replace(entry, name=name, mtime_ns=entry.mtime_ns or time.time_ns())
        node = self.inodes.ensure(ds, path, entry, self.clock())
        node.last_open_etag = None
        self.metadata.put_entry(ds.id, parent, entry)
        return node

    def _gone(self, ds: Datastore, path: str) -> None:
        parent, name = _parent_of(path)
        self.inodes.forget_path(ds, path)
        self.metadata.drop(ds.id, path)  # its listings below, and the parent's
        self.metadata.put_negative(ds.id, path, ds.negative_ttl, self.clock())

    # -- files ------------------------------------------------------------------------------------
    async def create(self, parent_ino: int, name: str, flags: int) -> tuple[Node, WriteHandle]:
        await self.writes.room()  # first: what follows must not be interleaved
        parent, ds, path = self._dir(parent_ino, name)
        existing = self.inodes.find(ds, path)
        if existing is not None and existing.is_dir:
            raise IsADirectory(f"{ds.key}/{path} is a directory")
        node = self._settled(ds, path, Entry(name, False, 0, time.time_ns(), None))
        handle = self.writes.open(node, ds, flags, created=True)
        node.lookups += 1
        return node, handle

    def on_commit(self, node: Node, entry: Entry) -> None:
        """A write handle committed a new version of `node`."""
        ds = node.datastore
        if ds is None or ds.detached or self.inodes.find(ds, node.path) is not node:
            return  # unlinked or replaced meanwhile: the name is someone else's now
        self._settled(ds, node.path, entry)
        self.invalidate_inode(node.ino)

    def on_abandon(self, node: Node) -> None:
        """A new file whose writer failed never reached storage: this node stops showing it."""
        ds = node.datastore
        if ds is None or self.inodes.find(ds, node.path) is not node or node.entry.etag:
            return
        parent, name = _parent_of(node.path)
        self.inodes.forget_path(ds, node.path)
        self.metadata.remove_entry(ds.id, parent, name)
        parent_node = self.inodes.find(ds, parent) if parent else self.lookups.datastore_root(ds)
        if parent_node is not None and node.lookups > 0:
            self.invalidate_entry(parent_node.ino, name)  # the kernel's dentry from create

    async def unlink(self, parent_ino: int, name: str) -> None:
        _, ds, path = self._dir(parent_ino, name)
        node = self.inodes.find(ds, path)
        entry = await self._existing(ds, path)
        if entry is None:
            raise NotFound(f"{ds.key}/{path}: no such file")
        if entry.is_dir:
            raise IsADirectory(f"{ds.key}/{path} is a directory")
        try:
            await ds.backend.delete(path)
        except NotFound:
            if node is None or not self.writes.writing(node):
                raise  # else: a new file never committed; there is nothing to delete
        if node is not None:
            self.writes.orphan(node)
        self._gone(ds, path)

    # -- directories ------------------------------------------------------------------------------
    async def mkdir(self, parent_ino: int, name: str) -> Node:
        _, ds, path = self._dir(parent_ino, name)
        if await self._existing(ds, path) is not None:
            raise AlreadyExists(f"{ds.key}/{path} exists")
        entry = await ds.backend.make_dir(path)
        node = self._settled(ds, path, replace(entry, is_dir=True, size=0))
        self.metadata.put_listing(ds.id, path, {}, self.clock())  # empty, and we know it
        node.lookups += 1
        return node

    async def rmdir(self, parent_ino: int, name: str) -> None:
        _, ds, path = self._dir(parent_ino, name)
        entry = await self._existing(ds, path)
        if entry is None:
            raise NotFound(f"{ds.key}/{path}: no such directory")
        if not entry.is_dir:
            raise NotADirectory(f"{ds.key}/{path} is not a directory")
        if any(self._below(ds, path)):
            raise NotEmpty(f"{ds.key}/{path}: files in it are being written")
        await ds.backend.remove_dir(path)
        self._gone(ds, path)

    def _below(self, ds: Datastore, path: str) -> list[Node]:
        """Nodes with writers open below `path` (their files are not on storage yet)."""
        out = []
        for handles in self.writes.by_node.values():
            for h in handles:
                if h.ds is ds and h.node.path.startswith(path + "/") and not h.orphan:
                    out.append(h.node)
        return out

    async def _empty_dir(self, ds: Datastore, path: str) -> bool:
        pages = ds.backend.list(path)
        try:
            async for page in pages:
                if page:
                    return False
            return True
        finally:
            await close_listing(pages)

    # -- rename -----------------------------------------------------------------------------------
    async def rename(self, old_parent: int, old: str, new_parent: int, new: str,
                     flags: int, dir_rename_limit: int) -> None:
        _, ds, src = self._dir(old_parent, old)
        _, ds2, dst = self._dir(new_parent, new)
        if ds2 is not ds:
            raise CrossDevice("a rename across datastores is a copy: mv does it by itself")
        if flags & RENAME_EXCHANGE:
            raise InvalidRequest("RENAME_EXCHANGE is not supported")
        if src == dst:
            return
        entry = await self._existing(ds, src)
        if entry is None:
            raise NotFound(f"{ds.key}/{src}: no such file or directory")
        target = await self._existing(ds, dst)
        if target is not None and flags & RENAME_NOREPLACE:
            raise AlreadyExists(f"{ds.key}/{dst} exists")
        node = self.inodes.find(ds, src)
        if entry.is_dir:
            await self._rename_dir(ds, src, dst, target, dir_rename_limit)
            moved: Entry | None = replace(entry, name=new)
        else:
            if target is not None and target.is_dir:
                raise IsADirectory(f"{ds.key}/{dst} is a directory")
            if node is not None:
                await self.writes.commit_node(node)  # their upload targets the old name
            moved = await ds.backend.rename(src, dst)
            replaced = self.inodes.find(ds, dst)
            if replaced is not None:
                self.writes.orphan(replaced)
                self.invalidate_inode(replaced.ino)
        self.inodes.move(ds, src, dst)
        self.metadata.drop(ds.id, src)
        self.metadata.drop(ds.id, dst)
        self.metadata.put_negative(ds.id, src, ds.negative_ttl, self.clock())
        if moved is not None:
            after = self._settled(ds, dst, moved)
            for h in self.writes.by_node.get(after.ino, ()):
                if not h.dirty:
                    h.base = after.entry  # the next change starts from the renamed version

    async def _rename_dir(self, ds: Datastore, src: str, dst: str, target: Entry | None,
                          limit: int) -> None:
        if target is not None:
            if not target.is_dir:
                raise NotADirectory(f"{ds.key}/{dst} is not a directory")
            if not await self._empty_dir(ds, dst):
                raise NotEmpty(f"{ds.key}/{dst} is not empty")
        for writer in self._below(ds, src):
            await self.writes.commit_node(writer)
        if target is not None:
            await ds.backend.remove_dir(dst)
        await ds.backend.rename(src, dst, is_dir=True, max_entries=limit)

    # -- attributes -------------------------------------------------------------------------------
    async def setattr(self, node: Node, *, size: int | None, handle: WriteHandle | None) -> None:
        """Change what can be changed: only the size (mode, owner and times are accepted and
        not stored). A truncate without an open handle commits at once."""
        ds = self.writable(node)
        if size is None:
            return
        if node.is_dir:
            raise IsADirectory(f"{ds.key}/{node.path} is a directory")
        if handle is not None:
            await self.writes.truncate(handle, size)
            return
        await self.writes.room()
        h = self.writes.open(node, ds, os.O_WRONLY, created=False)
        try:
            await self.writes.truncate(h, size)
            await self.writes.commit(h)
        finally:
            await self.writes.release(h)

    @staticmethod
    def not_supported(node: Node, what: str, *, xattr: bool = False) -> None:
        Mutations.writable(node)
        error = XattrNotSupported if xattr else NotSupported
        raise error(f"{what} cannot be stored in a datastore")
