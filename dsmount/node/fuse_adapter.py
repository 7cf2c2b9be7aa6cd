"""The pyfuse3 adapter: unpack a FUSE request, call the core, map errors. Nothing else.

Every handler runs inside `_guard`: its failure becomes FUSEError(errno) through
`fuse_requests.errno_of` (THE errno map; anything unexpected is logged and answered EIO). A
handler that raised anything but FUSEError would end `pyfuse3.main()`, i.e. the mount.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyfuse3

from dsmount.node.fs.attributes import MEMO_ENTRIES
from dsmount.node.fs.core import Attributes, FileSystem
from dsmount.node.fuse_requests import errno_of, requests

log = logging.getLogger(__name__)


@contextmanager
def _guard(what: str) -> Iterator[None]:
    requests[what] += 1
    try:
        yield
    except pyfuse3.FUSEError:
        raise
    except Exception as e:
        raise pyfuse3.FUSEError(errno_of(what, e)) from None


def entry_attributes(a: Attributes) -> pyfuse3.EntryAttributes:
    out = pyfuse3.EntryAttributes()
    out.st_ino = a.ino
    out.generation = 0
    out.entry_timeout = a.timeout
    out.attr_timeout = a.timeout
    out.st_mode = a.mode
    out.st_nlink = 2 if a.is_dir else 1  # a symlink: 1
    out.st_uid = a.uid
    out.st_gid = a.gid
    out.st_rdev = 0
    out.st_size = a.size
    out.st_blksize = 128 * 1024
    out.st_blocks = (a.size + 511) // 512
    out.st_atime_ns = a.mtime_ns
    out.st_mtime_ns = a.mtime_ns
    out.st_ctime_ns = a.mtime_ns
    return out


class _AttributeCache:
    """pyfuse3 EntryAttributes per inode, rebuilt only when the core's Attributes object for it
    changes (the core reuses one while the entry is unchanged): saves ~2 us per entry of every
    warm readdir of a big directory. Bounded (LRU, as the core's memo): ~300 B an entry, so
    not one per live inode (a `find` of a million-file version makes a million live)."""

    def __init__(self, size: int = MEMO_ENTRIES) -> None:
        self.size = size
        self._by_ino: OrderedDict[int, tuple[Attributes, pyfuse3.EntryAttributes]] = (
            OrderedDict())

    def get(self, attrs: Attributes) -> pyfuse3.EntryAttributes:
        by_ino = self._by_ino
        cached = by_ino.get(attrs.ino)
        if cached is not None and cached[0] is attrs:
            by_ino.move_to_end(attrs.ino)
            return cached[1]
        out = entry_attributes(attrs)
        by_ino[attrs.ino] = (attrs, out)
        if len(by_ino) > self.size:
            by_ino.popitem(last=False)
        return out

    def forget(self, ino: int) -> None:
        self._by_ino.pop(ino, None)


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


class FuseOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, core: FileSystem) -> None:
        super().__init__()
        self.core = core
        self.attributes = _AttributeCache()

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        with _guard("lookup"):
            uid = getattr(ctx, "uid", None)  # whose lookup: private datastores are theirs
            return self.attributes.get(await self.core.lookup(parent_inode, _name(name), uid))

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        with _guard("getattr"):
            return self.attributes.get(await self.core.getattr(inode))

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        # forget must never fail: the kernel does not wait for an answer.
        requests["forget"] += 1
        try:
            self.core.forget(inode_list)
            for ino, _ in inode_list:
                self.attributes.forget(ino)
        except Exception:
            log.exception("forget")

    async def opendir(self, inode: int, ctx: Any) -> int:
        with _guard("opendir"):
            return await self.core.opendir(inode, getattr(ctx, "uid", None))

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        with _guard("readlink"):
            return os.fsencode(await self.core.readlink(inode))

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        with _guard("readdir"):
            pos = start_id
            while True:
                batch = await self.core.readdir(fh, pos)
                if not batch:
                    return
                for next_id, name, attrs in batch:
                    if not pyfuse3.readdir_reply(
                        token, os.fsencode(name), self.attributes.get(attrs), next_id
                    ):
                        return
                    self.core.remember(attrs.ino)
                    pos = next_id

    async def releasedir(self, fh: int) -> None:
        with _guard("releasedir"):
            await self.core.releasedir(fh)

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        with _guard("open"):
            fh, keep_cache = await self.core.open(inode, flags, getattr(ctx, "pid", None),
                                                  getattr(ctx, "uid", None))
            return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        with _guard("read"):
            return await self.core.read(fh, off, size)

    async def release(self, fh: int) -> None:
        with _guard("release"):
            await self.core.release(fh)

    async def flush(self, fh: int) -> None:
        # pyfuse3 hands this errno to close(2): the writer learns its upload failed.
        with _guard("flush"):
            await self.core.flush(fh)

    async def fsync(self, fh: int, datasync: bool) -> None:
        with _guard("fsync"):
            await self.core.fsync(fh)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        with _guard("create"):
            fh, attrs = await self.core.create(parent_inode, _name(name), flags)
            return pyfuse3.FileInfo(fh=fh), self.attributes.get(attrs)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        with _guard("write"):
            return await self.core.write(fh, off, buf)

    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any
                      ) -> pyfuse3.EntryAttributes:
        with _guard("setattr"):
            size = attr.st_size if fields.update_size else None
            return self.attributes.get(await self.core.setattr(inode, size=size, fh=fh))

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        with _guard("unlink"):
            await self.core.unlink(parent_inode, _name(name))

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any
                    ) -> pyfuse3.EntryAttributes:
        with _guard("mkdir"):
            return self.attributes.get(await self.core.mkdir(parent_inode, _name(name)))

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        with _guard("rmdir"):
            await self.core.rmdir(parent_inode, _name(name))

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        with _guard("rename"):
            await self.core.rename(parent_inode_old, _name(name_old), parent_inode_new,
                                   _name(name_new), flags)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        with _guard("link"):
            self.core.not_supported(new_parent_inode, "a hard link")

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        with _guard("symlink"):
            self.core.not_supported(parent_inode, "a symbolic link")

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
                    ) -> Any:
        with _guard("mknod"):
            self.core.not_supported(parent_inode, "a special file")

    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        # Not called with default_permissions (the kernel checks the modes we report); kept
        # right for a mount without it: W_OK only where a datastore takes writes.
        requests["access"] += 1
        if not mode & os.W_OK:
            return True
        try:
            return self.core.writable(inode)
        except Exception:
            return False

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        with _guard("statfs"):
            s = self.core.statfs()
            out = pyfuse3.StatvfsData()
            out.f_bsize = s["bsize"]
            out.f_frsize = s["frsize"]
            out.f_blocks = s["blocks"]
            out.f_bfree = s["bfree"]
            out.f_bavail = s["bavail"]
            out.f_files = s["files"]
            out.f_ffree = s["ffree"]
            out.f_favail = s["ffree"]
            out.f_namemax = s["namemax"]
            return out

    # -- extended attributes are not stored ----------------------------------------------------
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        with _guard("setxattr"):
            self.core.not_supported(inode, "an extended attribute", xattr=True)

    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        with _guard("removexattr"):
            self.core.not_supported(inode, "an extended attribute", xattr=True)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        requests["fsyncdir"] += 1
        return None  # a directory change is on storage once its call returned

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        requests["getxattr"] += 1
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        requests["listxattr"] += 1
        return []


class FuseSession:
    """The one FUSE session of this process (pyfuse3 keeps it in module globals): mount, serve,
    notify the kernel, unmount. The daemon drives the session only through this class."""

    def __init__(self, core: FileSystem) -> None:
        self.operations = FuseOperations(core)

    def mount(self, mountpoint: str, options: set[str]) -> None:
        pyfuse3.init(self.operations, mountpoint, options)

    async def serve(self) -> None:
        """Answer FUSE requests until the session is terminated or unmounted."""
        await pyfuse3.main()

    @staticmethod
    def describe() -> dict[str, object]:
        """For `dsmount status`: libfuse 3.14 under pyfuse3 cannot pass through."""
        return {"transport": "pyfuse3", "passthrough": False}

    def terminate(self) -> None:
        pyfuse3.terminate()

    def close(self) -> None:
        pyfuse3.close(unmount=True)

    @staticmethod
    def invalidate_entry(parent_ino: int, name: str) -> None:
        """Ask the kernel to forget `name` in `parent_ino` (does not block: queued)."""
        pyfuse3.invalidate_entry_async(parent_ino, os.fsencode(name))

    @staticmethod
    def invalidate_inode(ino: int) -> None:
        """Ask the kernel to drop the attributes and pages of `ino`. Blocks until the kernel
        answers, which may need a request this process serves: call it from a thread."""
        pyfuse3.invalidate_inode(ino, False)
