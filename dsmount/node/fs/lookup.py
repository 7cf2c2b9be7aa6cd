"""Lookups: resolving a name in a directory to a node, and what is known about it.

A name inside a datastore is answered, cheapest first, from: a fresh node; a negative entry; a
fresh cached listing of its directory; for object stores, one listing of the directory (one
LIST per directory instead of one HEAD per file, shared by concurrent lookups); else one stat.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace

import cachetools
import trio

from dsmount.errors import DsmountError, NotFound, TimedOut
from dsmount.node.fs.attributes import FsSettings, is_fresh
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import ROOT_INODE, InodeTable, Node
from dsmount.node.fs.metadata import Listing, MetadataCache
from dsmount.node.fs.namespace import NAME_MAX, Namespace
from dsmount.storage.base import Entry

log = logging.getLogger(__name__)


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


async def close_listing(pages: object) -> None:
    """Close an async listing generator, shielded: it may hold a connection."""
    aclose = getattr(pages, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            try:
                await aclose()
            except Exception as e:
                log.debug("closing a listing: %s", e)


class Lookups:
    def __init__(
        self,
        namespace: Namespace,
        inodes: InodeTable,
        metadata: MetadataCache,
        settings: FsSettings,
        clock: Callable[[], float],
        started_ns: int,
    ) -> None:
        self.namespace = namespace
        self.inodes = inodes
        self.metadata = metadata
        self.settings = settings
        self.clock = clock
        self.started_ns = started_ns
        self._listing_for_lookup: dict[tuple[int, str], trio.Event] = {}
        self._big_dirs: cachetools.LRUCache[tuple[int, str], float] = cachetools.LRUCache(4096)

    def node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise NotFound(f"inode {ino} is unknown")
        return node

    # -- the virtual top of the tree ----------------------------------------------------------
    def _virtual_node(self, path: str, mtime_ns: int) -> Node:
        return self.inodes.ensure(None, path, Entry(path.rsplit("/", 1)[-1], True, 0, mtime_ns),
                                  self.clock())

    def datastore_root(self, ds: Datastore) -> Node:
        node = self.inodes.find(ds, "")
        if node is None:
            name = ds.version or ds.name
            known = ds.backend.root_entry
            if known is not None:
                # The source's own root directory (owner, mode), revalidated like any node.
                node = self.inodes.ensure(ds, "", replace(known, name=name), self.clock())
            else:
                entry = Entry(name, True, 0, int(ds.attached_at * 1e9))
                node = self.inodes.ensure(ds, "", entry, math.inf)
        return node

    def visible(self, name: str, uid: int | None) -> Datastore | dict[str, Datastore] | None:
        """The root's entry `name` as a process of `uid` sees it: private datastores of others
        are not there (a NAME of versions, only with the versions it may see)."""
        item = self.namespace.item(name)
        if isinstance(item, dict):
            seen = {v: ds for v, ds in item.items() if ds.visible_to(uid)}
            return seen or None
        if item is not None and not item.visible_to(uid):
            return None
        return item

    def lookup_virtual(self, parent: Node, name: str, uid: int | None = None) -> Node:
        if parent.ino == ROOT_INODE:
            item = self.visible(name, uid)
            if item is None:
                raise NotFound(f"no datastore {name!r} is attached")
            if isinstance(item, dict):
                return self._virtual_node(name, self.started_ns)
            return self.datastore_root(item)
        item = self.visible(parent.path, uid)
        if not isinstance(item, dict) or name not in item:
            raise NotFound(f"{parent.path}/{name} is not attached")
        return self.datastore_root(item[name])

    # -- names inside datastores -------------------------------------------------------------------
    async def lookup(self, parent_ino: int, name: str, uid: int | None = None) -> Node:
        """The node `name` in directory `parent_ino`, for a process of `uid` (None: no
        visibility rule; the core's own callers)."""
        node, ds, path = self._known(parent_ino, name, uid)
        if node is not None:
            return node
        assert ds is not None
        entry = await self.stat(ds, path)
        return self.inodes.ensure(ds, path, entry, self.clock())

    def lookup_now(self, parent_ino: int, name: str, uid: int | None = None) -> Node | None:
        """`lookup` when memory answers it (a fresh entry, a virtual directory); None when
        storage must be asked (then await `lookup`). Errors are the same as `lookup`'s."""
        return self._known(parent_ino, name, uid)[0]

    def _known(self, parent_ino: int, name: str, uid: int | None
               ) -> tuple[Node | None, Datastore | None, str]:
        """(the node if memory has it fresh, its datastore, its path)."""
        parent = self.node(parent_ino)
        if not parent.is_dir:
            raise NotFound("not a directory")
        if name in (".", ".."):
            raise NotFound(name)  # the kernel resolves these itself
        if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise NotFound("name too long")
        ds = parent.datastore
        if ds is None:
            return self.lookup_virtual(parent, name, uid), None, ""
        if ds.detached:
            raise NotFound(f"datastore {ds.key!r} was detached")
        path = join(parent.path, name)
        existing = self.inodes.find(ds, path)
        if existing is not None and is_fresh(existing, self.clock):
            return existing, ds, path
        return None, ds, path

    async def revalidate(self, node: Node) -> None:
        """Refresh a stale node's entry from storage (a type change keeps the old entry: the
        kernel meets the new object under a new inode at its next lookup)."""
        ds = node.datastore
        if ds is None or ds.detached or is_fresh(node, self.clock):
            return
        if node.path:
            entry = await self.stat(ds, node.path)
        elif ds.backend.root_entry is not None:
            entry = replace(await self._stat_root(ds), name=node.entry.name)
        else:
            return
        if entry.kind == node.entry.kind:
            node.entry = entry
            node.entry_time = self.clock()

    async def _stat_root(self, ds: Datastore) -> Entry:
        """The datastore root's own entry again; the one known if that fails (the root of an
        attached datastore always exists; what is below it tells the errors)."""
        with trio.move_on_after(self.settings.request_deadline):
            try:
                return await ds.backend.stat("")
            except DsmountError as e:
                log.debug("[%s] stat of the root: %s", ds.key, e)
        return ds.backend.root_entry or Entry("", True)

    async def stat(self, ds: Datastore, path: str) -> Entry:
        now = self.clock()
        if self.metadata.is_negative(ds.id, path, now):
            raise NotFound(f"{ds.key}/{path}: no such file or directory")
        parent, _, name = path.rpartition("/")
        listing = self.metadata.listing(ds.id, parent, ds.metadata_ttl, now)
        if listing is not None:
            entry = listing.entries.get(name)
            if entry is None:
                raise NotFound(f"{ds.key}/{path}: no such file or directory")
            return entry
        if ds.backend.list_on_lookup:
            listing = await self._list_for_lookup(ds, parent)
            if listing is not None:
                entry = listing.entries.get(name)
                if entry is None:
                    raise NotFound(f"{ds.key}/{path}: no such file or directory")
                return entry
        deadline = self.settings.request_deadline
        try:
            with trio.move_on_after(deadline):
                return await ds.backend.stat(path)
            raise TimedOut(f"{ds.key}/{path}: no answer within {deadline:.0f}s")
        except NotFound:
            self.metadata.put_negative(ds.id, path, ds.negative_ttl, self.clock())
            raise

    async def _list_for_lookup(self, ds: Datastore, parent: str) -> Listing | None:
        """List `parent` to answer a lookup in it, if it fits in one page of the backend.

        A reader that opens files by name in a directory nobody listed (the usual data loader)
        then costs one LIST per directory instead of one HEAD per file. Concurrent lookups in
        the same directory share the one LIST. A directory longer than a page is remembered
        as such for a while and its lookups use stat.
        """
        key = (ds.id, parent)
        now = self.clock()
        if self._big_dirs.get(key, -math.inf) > now:
            return None
        pending = self._listing_for_lookup.get(key)
        if pending is not None:
            await pending.wait()
            return self.metadata.listing(ds.id, parent, ds.metadata_ttl, self.clock())
        done = trio.Event()
        self._listing_for_lookup[key] = done
        pages = ds.backend.list(parent)
        try:
            with trio.move_on_after(self.settings.request_deadline):
                try:
                    first = await pages.__anext__()
                except StopAsyncIteration:
                    first = []
                else:
                    try:
                        await pages.__anext__()
                    except StopAsyncIteration:
                        pass
                    else:
                        self._big_dirs[key] = now + min(ds.metadata_ttl, 300.0)
                        return None
                self.metadata.put_listing(ds.id, parent, {e.name: e for e in first},
                                          self.clock())
                return self.metadata.listing(ds.id, parent, ds.metadata_ttl, self.clock())
            return None
        except DsmountError:
            return None  # stat answers with the precise error
        finally:
            self._listing_for_lookup.pop(key, None)
            done.set()
            await close_listing(pages)
