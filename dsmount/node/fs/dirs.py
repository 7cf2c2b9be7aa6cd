"""Directory handles: opendir, readdir in pages pulled from storage as the reader advances,
releasedir. A complete listing is cached (`MetadataCache`); a partial one never is."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import trio

from dsmount.errors import NotFound, TimedOut
from dsmount.node.fs.attributes import AttributeMemo, Attributes, FsSettings
from dsmount.node.fs.inodes import ROOT_INODE, InodeTable, Node
from dsmount.node.fs.lookup import Lookups, close_listing, join
from dsmount.node.fs.metadata import MetadataCache
from dsmount.node.fs.namespace import Namespace
from dsmount.storage.base import Entry


@dataclass(eq=False)
class DirHandle:
    node: Node
    entries: list[Entry] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    pages: AsyncIterator[list[Entry]] | None = None
    complete: bool = False
    lock: trio.Lock = field(default_factory=trio.Lock)


class DirHandles:
    def __init__(
        self,
        namespace: Namespace,
        lookups: Lookups,
        inodes: InodeTable,
        metadata: MetadataCache,
        attributes: AttributeMemo,
        settings: FsSettings,
        clock: Callable[[], float],
        new_fh: Callable[[], int],
    ) -> None:
        self.namespace = namespace
        self.lookups = lookups
        self.inodes = inodes
        self.metadata = metadata
        self.attributes = attributes
        self.settings = settings
        self.clock = clock
        self.new_fh = new_fh
        self.open: dict[int, DirHandle] = {}

    async def opendir(self, node: Node, uid: int | None = None) -> int:
        """A handle listing `node` as a process of `uid` sees it (the root's and a NAME of
        versions' entries hide private datastores of others; None: everything)."""
        if not node.is_dir:
            raise NotFound("not a directory")
        handle = DirHandle(node)
        ds = node.datastore
        if ds is None:
            if node.ino == ROOT_INODE:
                names = [n for n in self.namespace.names()
                         if self.lookups.visible(n, uid) is not None]
            else:
                item = self.lookups.visible(node.path, uid)
                names = sorted(item) if isinstance(item, dict) else []
            handle.entries = [Entry(n, True, 0, self.lookups.started_ns) for n in names]
            handle.complete = True
        else:
            if ds.detached:
                raise NotFound(f"datastore {ds.key!r} was detached")
            listing = self.metadata.listing(ds.id, node.path, ds.metadata_ttl, self.clock())
            if listing is not None:
                handle.entries = list(listing.entries.values())
                handle.complete = True
            else:
                handle.pages = ds.backend.list(node.path)
        fh = self.new_fh()
        self.open[fh] = handle
        return fh

    async def _fill(self, handle: DirHandle, upto: int) -> None:
        """Pull pages until `upto` entries are known or the listing is complete."""
        async with handle.lock:
            while not handle.complete and len(handle.entries) < upto:
                assert handle.pages is not None
                try:
                    page = await handle.pages.__anext__()
                except StopAsyncIteration:
                    handle.complete = True
                    ds = handle.node.datastore
                    assert ds is not None
                    self.metadata.put_listing(
                        ds.id, handle.node.path, {e.name: e for e in handle.entries}, self.clock(),
                        local=ds.backend.local_namespace,
                    )
                    break
                except BaseException:
                    # The listing broke off (error, deadline): a later readdir on this handle
                    # starts it afresh (names already returned are skipped), and a partial
                    # listing is never cached as complete.
                    ds = handle.node.datastore
                    assert ds is not None
                    handle.pages = ds.backend.list(handle.node.path)
                    raise
                for e in page:
                    if e.name not in handle.names:
                        handle.names.add(e.name)
                        handle.entries.append(e)

    async def readdir(self, fh: int, start: int, max_entries: int = 512
                      ) -> list[tuple[int, str, Attributes]]:
        """Up to `max_entries` entries from position `start`: (next position, name, attrs)."""
        handle = self.open.get(fh)
        if handle is None:
            raise NotFound("bad directory handle")
        deadline = self.settings.request_deadline
        with trio.move_on_after(deadline) as scope:
            await self._fill(handle, start + max_entries)
        if scope.cancelled_caught:
            raise TimedOut(f"listing took longer than {deadline:.0f}s")
        out = []
        now = self.clock()
        parent = handle.node
        for i in range(start, min(len(handle.entries), start + max_entries)):
            e = handle.entries[i]
            if parent.datastore is None:
                node = self.lookups.lookup_virtual(parent, e.name)
                attrs = self.attributes.of(node)  # the datastore root's own entry
            else:
                node = self.inodes.listed(parent.datastore, join(parent.path, e.name), e, now)
                attrs = self.attributes.of(node, e)
            out.append((i + 1, e.name, attrs))
        return out

    async def releasedir(self, fh: int) -> None:
        handle = self.open.pop(fh, None)
        if handle is not None and handle.pages is not None and not handle.complete:
            await close_listing(handle.pages)
