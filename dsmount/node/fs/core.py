"""The filesystem core: what every FUSE request means, with no FUSE in sight.

The tree is: the root (the mountpoint), one directory per attached datastore (NAME), or a
virtual directory NAME holding one directory per attached version (NAME/VERSION), then each
datastore's own tree as its backend lists it. Everything is read-only.

Invariants:
- Every method either returns or raises a `dsmount.errors` error (or OSError); the FUSE
  adapter maps those to errno. Nothing here knows errno numbers.
- An open file handle is pinned to the ETag seen at open: its blocks are cached under that
  ETag and every backend read is conditional on it, so a reader never sees a mix of versions.
- A request never waits longer than `request_deadline`; after it the reader gets an error.
- Detaching a datastore with open files is refused unless forced; a forced detach is lazy:
  the name disappears at once, open handles keep reading until they are closed.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import cachetools
import trio

from dsmount.errors import (
    AlreadyExists,
    Busy,
    Changed,
    DsmountError,
    IntegrityError,
    InvalidRequest,
    NotFound,
    ReadOnly,
    TimedOut,
)
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.cache.disk import DiskCache
from dsmount.node.cache.readahead import (
    ReadaheadConfig,
    ReadaheadState,
    blocks_for_read,
    blocks_to_prefetch,
)
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import ROOT_INODE, InodeTable, Node
from dsmount.node.fs.metadata import Listing, MetadataCache
from dsmount.storage.base import Entry

log = logging.getLogger(__name__)

MAX_TIMEOUT = 86400.0  # kernel entry/attr timeout for data that cannot change
VIRTUAL_TIMEOUT = 1.0  # root-level names change on attach/detach; bound how long a stale one lives
NAME_MAX = 255

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


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


@dataclass(eq=False)
class FileHandle:
    node: Node
    datastore: Datastore
    etag: str | None
    size: int
    readahead: ReadaheadState
    prefetched_to: int = -1  # highest block index read-ahead has asked for


@dataclass(eq=False)
class DirHandle:
    node: Node
    entries: list[Entry] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    pages: AsyncIterator[list[Entry]] | None = None
    complete: bool = False
    lock: trio.Lock = field(default_factory=trio.Lock)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


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
        self._listing_for_lookup: dict[tuple[int, str], trio.Event] = {}
        self._big_dirs: cachetools.LRUCache[tuple[int, str], float] = cachetools.LRUCache(4096)
        self._top: dict[str, Datastore | dict[str, Datastore]] = {}
        self._files: dict[int, FileHandle] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        self._started = time.time_ns()
        self.readahead_config = ReadaheadConfig(
            block_size=self.settings.block_size,
            initial=self.settings.block_size,
            maximum=max(self.settings.block_size, self.settings.readahead_max),
            seek_tolerance=min(self.settings.block_size, 1024**2),
        )
        self.inodes.add_root(Node(ROOT_INODE, None, "", Entry("", True, 0, self._started)))

    # -- namespace (attach / detach) --------------------------------------------------------
    def datastores(self) -> list[Datastore]:
        out: list[Datastore] = []
        for item in self._top.values():
            out.extend(item.values() if isinstance(item, dict) else [item])
        return sorted(out, key=lambda d: d.key)

    def find(self, name: str, version: str | None = None) -> Datastore:
        item = self._top.get(name)
        if isinstance(item, dict):
            if version is None:
                raise NotFound(
                    f"datastore {name!r} is attached by version ({', '.join(sorted(item))}); "
                    "name one"
                )
            ds = item.get(version)
            if ds is None:
                raise NotFound(f"datastore {name!r} version {version} is not attached")
            return ds
        if item is None or version is not None:
            what = f"{name!r} version {version}" if version else repr(name)
            raise NotFound(f"datastore {what} is not attached")
        return item

    @staticmethod
    def check_name(name: str, what: str = "datastore name") -> None:
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise InvalidRequest(f"invalid {what} {name!r}")
        if len(name.encode()) > NAME_MAX:
            raise InvalidRequest(f"{what} longer than {NAME_MAX} bytes")

    def attach(self, ds: Datastore) -> None:
        self.check_name(ds.name)
        if ds.version is not None:
            self.check_name(ds.version, "version")
        item = self._top.get(ds.name)
        if ds.version is None:
            if item is not None:
                raise AlreadyExists(f"a datastore named {ds.name!r} is already attached")
            self._top[ds.name] = ds
        else:
            if isinstance(item, Datastore):
                raise AlreadyExists(
                    f"{ds.name!r} is attached without a version; detach it first"
                )
            versions = self._top.setdefault(ds.name, {})
            assert isinstance(versions, dict)
            if ds.version in versions:
                raise AlreadyExists(f"{ds.name!r} version {ds.version} is already attached")
            versions[ds.version] = ds
        log.info("[%s] attached (%s)", ds.key, ds.backend.kind)

    async def detach(self, name: str, version: str | None = None, *, force: bool = False
                     ) -> Datastore:
        ds = self.find(name, version)
        if ds.open_files and not force:
            raise Busy(
                f"datastore {ds.key!r} has {ds.open_files} open file(s); close them or "
                "detach with --force (lazy: open files stay readable until closed)"
            )
        item = self._top[name]
        # Invalidate only entries the kernel holds: pyfuse3 logs an error for unknown ones.
        root = self.inodes.find(ds, "")
        known = root is not None and root.lookups > 0
        if isinstance(item, dict):
            del item[version]  # type: ignore[arg-type]
            parent = self.inodes.find(None, name)
            if parent is not None and known:
                self.invalidate_entry(parent.ino, version)  # type: ignore[arg-type]
            if not item:
                del self._top[name]
                if parent is not None and parent.lookups > 0:
                    self.invalidate_entry(ROOT_INODE, name)
        else:
            del self._top[name]
            if known:
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
                node.entry_time = -math.inf
                node.last_open_etag = None
                if node.lookups > 0:
                    # The kernel's cached attributes and pages of it are stale too.
                    self.invalidate_inode(node.ino)
        return n

    def _nodes_of(self, ds: Datastore) -> list[Node]:
        return [n for n in list(self.inodes._by_ino.values()) if n.datastore is ds]

    # -- attributes ---------------------------------------------------------------------------
    def _attributes(self, node: Node) -> Attributes:
        if node.attrs_for is node.entry:
            return node.attrs  # type: ignore[no-any-return]
        node.attrs = attrs = self._compute_attributes(node)
        node.attrs_for = node.entry
        return attrs

    def _compute_attributes(self, node: Node) -> Attributes:
        s = self.settings
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
            mode=(stat.S_IFDIR | s.dir_mode) if e.is_dir else (stat.S_IFREG | s.file_mode),
            uid=s.uid,
            gid=s.gid,
            timeout=timeout,
        )

    def _fresh(self, node: Node) -> bool:
        if node.datastore is None:
            return True
        if node.entry_time == -math.inf:  # marked stale (refresh, or changed under a reader)
            return False
        return self.clock() - node.entry_time <= node.datastore.metadata_ttl

    def _node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise NotFound(f"inode {ino} is unknown")
        return node

    def _virtual_node(self, path: str, mtime_ns: int) -> Node:
        return self.inodes.ensure(None, path, Entry(path.rsplit("/", 1)[-1], True, 0, mtime_ns),
                                  self.clock())

    def _datastore_root(self, ds: Datastore) -> Node:
        node = self.inodes.find(ds, "")
        if node is None:
            entry = Entry(ds.version or ds.name, True, 0, int(ds.attached_at * 1e9))
            node = self.inodes.ensure(ds, "", entry, math.inf)
        return node

    async def _stat(self, ds: Datastore, path: str) -> Entry:
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
            aclose = getattr(pages, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    try:
                        await aclose()
                    except Exception as e:
                        log.debug("closing a listing: %s", e)

    async def lookup(self, parent_ino: int, name: str) -> Attributes:
        """Resolve `name` in a directory; counts one kernel lookup reference on success."""
        node = await self._lookup(parent_ino, name)
        node.lookups += 1
        return self._attributes(node)

    async def _lookup(self, parent_ino: int, name: str) -> Node:
        parent = self._node(parent_ino)
        if not parent.is_dir:
            raise NotFound("not a directory")
        if name in (".", ".."):
            raise NotFound(name)  # the kernel resolves these itself
        if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise NotFound("name too long")
        ds = parent.datastore
        if ds is None:
            return self._lookup_virtual(parent, name)
        if ds.detached:
            raise NotFound(f"datastore {ds.key!r} was detached")
        path = _join(parent.path, name)
        existing = self.inodes.find(ds, path)
        if existing is not None and self._fresh(existing):
            return existing
        entry = await self._stat(ds, path)
        return self.inodes.ensure(ds, path, entry, self.clock())

    def _lookup_virtual(self, parent: Node, name: str) -> Node:
        if parent.ino == ROOT_INODE:
            item = self._top.get(name)
            if item is None:
                raise NotFound(f"no datastore {name!r} is attached")
            if isinstance(item, dict):
                return self._virtual_node(name, self._started)
            return self._datastore_root(item)
        item = self._top.get(parent.path)
        if not isinstance(item, dict) or name not in item:
            raise NotFound(f"{parent.path}/{name} is not attached")
        return self._datastore_root(item[name])

    async def getattr(self, ino: int) -> Attributes:
        node = self._node(ino)
        ds = node.datastore
        if ds is not None and node.path and not self._fresh(node) and not ds.detached:
            entry = await self._stat(ds, node.path)
            if entry.is_dir == node.entry.is_dir:
                node.entry = entry
                node.entry_time = self.clock()
        return self._attributes(node)

    def remember(self, ino: int) -> None:
        """Count a lookup reference handed to the kernel outside `lookup` (readdirplus)."""
        node = self.inodes.get(ino)
        if node is not None:
            node.lookups += 1

    def forget(self, items: list[tuple[int, int]]) -> None:
        for ino, count in items:
            self.inodes.forget(ino, count)

    # -- directories --------------------------------------------------------------------------
    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    async def opendir(self, ino: int) -> int:
        node = self._node(ino)
        if not node.is_dir:
            raise NotFound("not a directory")
        handle = DirHandle(node)
        ds = node.datastore
        if ds is None:
            if node.ino == ROOT_INODE:
                names = sorted(self._top)
            else:
                item = self._top.get(node.path)
                names = sorted(item) if isinstance(item, dict) else []
            handle.entries = [Entry(n, True, 0, self._started) for n in names]
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
        fh = self._new_fh()
        self._dirs[fh] = handle
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
                        ds.id, handle.node.path, {e.name: e for e in handle.entries}, self.clock()
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
        """Up to `max_entries` entries from position `start`: (next position, name, attrs).

        Does not count kernel references: the adapter calls `remember` for each entry it
        actually hands to the kernel.
        """
        handle = self._dirs.get(fh)
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
                node = self._lookup_virtual(parent, e.name)
            else:
                node = self.inodes.ensure(parent.datastore, _join(parent.path, e.name), e, now)
            out.append((i + 1, e.name, self._attributes(node)))
        return out

    async def releasedir(self, fh: int) -> None:
        handle = self._dirs.pop(fh, None)
        if handle is not None and handle.pages is not None and not handle.complete:
            aclose = getattr(handle.pages, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    try:
                        await aclose()
                    except Exception as e:
                        log.debug("closing a listing: %s", e)

    # -- files --------------------------------------------------------------------------------
    async def open(self, ino: int, flags: int) -> tuple[int, bool]:
        """Open a file read-only. Returns (fh, keep_cache)."""
        if flags & _WRITE_FLAGS:
            raise ReadOnly("dsmount is read-only")
        node = self._node(ino)
        if node.is_dir:
            raise InvalidRequest("is a directory")
        ds = node.datastore
        assert ds is not None
        if ds.detached:
            raise NotFound(f"datastore {ds.key!r} was detached")
        if not self._fresh(node):
            entry = await self._stat(ds, node.path)
            if entry.is_dir:
                raise NotFound(f"{node.path} is now a directory")
            node.entry = entry
            node.entry_time = self.clock()
        etag = node.entry.etag
        # The kernel may keep pages it cached for this inode only if they are of this version.
        keep_cache = ds.immutable or (etag is not None and etag == node.last_open_etag)
        node.last_open_etag = etag
        fh = self._new_fh()
        self._files[fh] = FileHandle(
            node, ds, etag, node.entry.size, ReadaheadState(self.readahead_config)
        )
        ds.open_files += 1
        return fh, keep_cache

    def _handle(self, fh: int) -> FileHandle:
        h = self._files.get(fh)
        if h is None:
            raise NotFound("bad file handle")
        return h

    async def read(self, fh: int, offset: int, length: int) -> bytes | memoryview:
        h = self._handle(fh)
        size = h.size
        if offset >= size or length <= 0:
            return b""
        length = min(length, size - offset)
        bs = self.settings.block_size
        window = h.readahead.observe(offset, length)
        if window:
            self._prefetch(h, offset, length, window)
        elif h.prefetched_to >= 0:
            h.prefetched_to = -1  # random access: start the window afresh next time
        # Fast path: the whole read lies in one cached block (the common case for streaming
        # readers): no timeout scope, no copy (pyfuse3 takes any buffer).
        idx = offset // bs
        if (offset + length - 1) // bs == idx:
            block = self.cache.peek(self._key(h, idx, bs))
            if block is not None:
                self.cache.count_hit(self._key(h, idx, bs), h.datastore.counters)
                h.datastore.counters.bytes_read += length
                start = offset - idx * bs
                return memoryview(block)[start : start + length]
            small = self.settings.random_block_size
            if not window and length <= small < bs:
                bs = small  # not sequential: fetch only the neighbourhood of this read
        deadline = self.settings.request_deadline
        with trio.move_on_after(deadline) as scope:
            try:
                return await self._read(h, offset, length, bs)
            except (Changed, NotFound):
                # The object was replaced or deleted: stop trusting what we know about it, and
                # make the kernel drop its cached attributes too.
                h.node.entry_time = -math.inf
                h.node.last_open_etag = None
                self.metadata.drop(h.datastore.id, h.node.path)
                self.invalidate_inode(h.node.ino)
                raise
        assert scope.cancelled_caught
        raise TimedOut(f"{h.datastore.key}/{h.node.path}: read took longer than {deadline:.0f}s")

    def _prefetch(self, h: FileHandle, offset: int, length: int, window: int) -> None:
        """Start GETs for the blocks of the read-ahead window not yet asked for."""
        bs = self.settings.block_size
        ahead = blocks_to_prefetch(offset, length, window, bs, h.size)
        first = max(ahead.start, h.prefetched_to + 1)
        for idx in range(first, ahead.stop):
            if not self.cache.prefetch(self._key(h, idx, bs), *self._fetcher(h, idx, bs),
                                       h.datastore.counters):
                return  # no room: read-ahead is the first thing to give way
            h.prefetched_to = idx

    async def _read(self, h: FileHandle, offset: int, length: int, bs: int) -> bytes:
        ds = h.datastore
        needed = blocks_for_read(offset, length, bs, h.size)
        # Start the later blocks of a multi-block read before waiting, so their GETs overlap.
        for idx in list(needed)[1:]:
            self.cache.prefetch(self._key(h, idx, bs), *self._fetcher(h, idx, bs), ds.counters,
                                readahead=False)
        parts = []
        for idx in needed:
            block = await self.cache.get(self._key(h, idx, bs), *self._fetcher(h, idx, bs),
                                         ds.counters)
            start = max(offset - idx * bs, 0)
            end = min(offset + length - idx * bs, len(block))
            parts.append(memoryview(block)[start:end])
        data = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        ds.counters.bytes_read += len(data)
        return data

    def _key(self, h: FileHandle, idx: int, bs: int) -> tuple[int, str, str, int, int]:
        return (h.datastore.id, h.node.path, h.etag or "", bs, idx)

    def _fetcher(self, h: FileHandle, idx: int, bs: int) -> tuple[int, Any]:
        offset = idx * bs
        expected = max(0, min(bs, h.size - offset))
        backend = h.datastore.backend
        path = h.node.path
        etag = h.etag
        disk = self.disk if etag and backend.kind != "local" else None
        disk_key = f"{h.datastore.cache_identity}|{path}|{etag}|{idx}|{bs}"

        async def fetch() -> bytes:
            if disk is not None:
                data = await disk.get(disk_key)
                if data is not None and len(data) == expected:
                    return data
            data = await backend.read(path, offset, expected, etag)
            if len(data) != expected:
                if etag is None:
                    raise Changed(f"{path}: size changed while open")
                raise IntegrityError(
                    f"{path}: block {idx} has {len(data)} bytes, expected {expected}"
                )
            if disk is not None:
                self.cache.spawn(disk.put, disk_key, data)
            return data

        return expected, fetch

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
        return {"files": len(self._files), "dirs": len(self._dirs), "inodes": len(self.inodes)}
