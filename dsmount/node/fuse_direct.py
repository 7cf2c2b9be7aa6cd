"""The direct FUSE transport: dsmount speaks the kernel's protocol on /dev/fuse itself, on
the trio loop, instead of through libfuse and pyfuse3 (`fuse_adapter.py`). Chosen with
`[fs] transport = "direct"`.

Why: measured on the same epoch (docs/multicore.md), a request costs about half of what
pyfuse3's dispatch costs, and only this transport can answer an OPEN with FUSE passthrough
(kernel >= 6.9; libfuse 3.14 and pyfuse3 cannot): a file whose bytes are complete and verified
in the disk cache is opened with its block file as the backing file, so the kernel reads it in
the reader's own thread, on the reader's core, and no READ reaches the daemon.

Invariants:
- Like the pyfuse3 adapter, this module only unpacks a request, calls the core, and packs the
  answer; every handler's failure becomes an errno through `fuse_requests.errno_of`, never an
  exception that ends the loop.
- A backing id is registered per open handle and closed at its RELEASE (or when the session
  closes), so the kernel never holds a block file longer than a reader does. The disk cache
  may evict the block meanwhile: the open file keeps its bytes until the reader closes it.
- Notifications that can wait for a request this loop serves (inval entry, inval inode) are
  written from other threads, never from the trio thread.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import queue
import struct
import threading
from collections.abc import Awaitable, Callable

import trio

from dsmount.node import fuse_wire as w
from dsmount.node.fs.core import Attributes, FileSystem
from dsmount.node.fuse_mount import mount_fuse, unmount_fuse
from dsmount.node.fuse_requests import errno_of, requests

log = logging.getLogger(__name__)

_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_BATCH = 64  # requests read before the loop lets other tasks run
_ENODATA = errno.ENODATA  # getxattr: extended attributes are not stored
# Answered by `_sync`, on the spot; any other opcode without a handler is not supported.
_SYNC_OPS = frozenset({w.STATFS, w.ACCESS, w.GETXATTR, w.LISTXATTR, w.SETXATTR, w.REMOVEXATTR,
                       w.FSYNCDIR, w.LINK, w.SYMLINK, w.MKNOD})


class _Request:
    __slots__ = ("body", "op", "pid", "uid", "unique", "node")

    def __init__(self, raw: bytes) -> None:
        _len, self.op, self.unique, self.node, self.uid, _gid, self.pid, _ext, _pad = (
            w.IN_HEADER.unpack_from(raw))
        self.body = memoryview(raw)[w.IN_HEADER.size:]


class DirectSession:
    """One FUSE connection served on the trio loop (see the module docstring); the same
    surface as `fuse_adapter.FuseSession`: mount, serve, terminate, close, invalidate."""

    def __init__(self, core: FileSystem, *, passthrough: bool = True) -> None:
        self.core = core
        self.want_passthrough = passthrough
        self.passthrough = False  # what INIT settled
        self.fd = -1
        self.mountpoint = ""
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._backing: dict[int, int] = {}  # fh -> backing id
        self._packed: dict[int, tuple[Attributes, bytes]] = {}  # ino -> (attrs, entry_out)
        self._notices: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._notifier: threading.Thread | None = None
        self._handlers: dict[int, Callable[[_Request], Awaitable[bytes | None]]] = {
            w.LOOKUP: self._lookup, w.GETATTR: self._getattr, w.SETATTR: self._setattr,
            w.READLINK: self._readlink, w.MKDIR: self._mkdir, w.UNLINK: self._unlink,
            w.RMDIR: self._rmdir, w.RENAME: self._rename, w.RENAME2: self._rename,
            w.OPEN: self._open, w.READ: self._read, w.WRITE: self._write,
            w.RELEASE: self._release, w.FSYNC: self._fsync, w.FLUSH: self._flush,
            w.OPENDIR: self._opendir, w.READDIR: self._readdir,
            w.READDIRPLUS: self._readdir, w.RELEASEDIR: self._releasedir,
            w.CREATE: self._create,
        }
        # Tried first, on the loop: an answer, or None when the handler must wait for storage.
        self._now: dict[int, Callable[[_Request], bytes | memoryview | None]] = {
            w.LOOKUP: self._lookup_now, w.OPEN: self._open_now, w.READ: self._read_now,
            w.RELEASE: self._release_now}
        self._names = {w.LOOKUP: "lookup", w.GETATTR: "getattr", w.SETATTR: "setattr",
                       w.READLINK: "readlink", w.MKDIR: "mkdir", w.UNLINK: "unlink",
                       w.RMDIR: "rmdir", w.RENAME: "rename", w.RENAME2: "rename",
                       w.OPEN: "open", w.READ: "read", w.WRITE: "write",
                       w.RELEASE: "release", w.FSYNC: "fsync", w.FLUSH: "flush",
                       w.OPENDIR: "opendir", w.READDIR: "readdir", w.READDIRPLUS: "readdir",
                       w.RELEASEDIR: "releasedir", w.CREATE: "create", w.STATFS: "statfs",
                       w.ACCESS: "access", w.GETXATTR: "getxattr", w.LISTXATTR: "listxattr",
                       w.SETXATTR: "setxattr", w.REMOVEXATTR: "removexattr",
                       w.FSYNCDIR: "fsyncdir", w.LINK: "link", w.SYMLINK: "symlink",
                       w.MKNOD: "mknod", 39: "ioctl"}

    # -- the session's life ----------------------------------------------------------------------
    def mount(self, mountpoint: str, options: set[str]) -> None:
        self.mountpoint = mountpoint
        self.fd = mount_fuse(mountpoint, options)
        self._notifier = threading.Thread(target=self._notify_loop, name="fuse notifications",
                                          daemon=True)
        self._notifier.start()

    async def serve(self) -> None:
        """Answer FUSE requests until the session is terminated or unmounted."""
        fd = self.fd
        os.set_blocking(fd, False)
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._loop(fd, nursery)
                finally:
                    nursery.cancel_scope.cancel()

    async def _loop(self, fd: int, nursery: trio.Nursery) -> None:
        while True:
            for _ in range(_BATCH):
                try:
                    raw = os.read(fd, w.BUFFER_SIZE)
                except BlockingIOError:
                    break
                except InterruptedError:
                    continue
                except OSError as e:
                    if e.errno == errno.ENOENT:  # interrupted before we read it
                        continue
                    if e.errno == errno.ENODEV:  # unmounted
                        return
                    raise
                self._dispatch(_Request(raw), nursery)
            else:
                await trio.lowlevel.checkpoint()
                continue
            await trio.lowlevel.wait_readable(fd)

    def describe(self) -> dict[str, object]:
        """For `dsmount status`: the transport, and whether INIT settled on passthrough."""
        return {"transport": "direct", "passthrough": self.passthrough,
                "backing_files_open": len(self._backing)}

    def terminate(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def close(self) -> None:
        for bid in self._backing.values():
            self._backing_close(bid)
        self._backing.clear()
        self._notices.put(None)
        try:
            if self.mountpoint:
                unmount_fuse(self.mountpoint)
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    # -- notifications ---------------------------------------------------------------------------
    def invalidate_entry(self, parent_ino: int, name: str) -> None:
        """Ask the kernel to forget `name` in `parent_ino` (does not block: queued)."""
        self._notices.put(w.notify_inval_entry(parent_ino, os.fsencode(name)))

    def invalidate_inode(self, ino: int) -> None:
        """Ask the kernel to drop the attributes and pages of `ino`. Blocks until the kernel
        answers, which may need a request this loop serves: call it from a thread."""
        self._write_notice(w.notify_inval_inode(ino))

    def _notify_loop(self) -> None:
        while (notice := self._notices.get()) is not None:
            self._write_notice(notice)

    def _write_notice(self, notice: bytes) -> None:
        try:
            os.write(self.fd, notice)
        except OSError as e:  # ENOENT: the kernel no longer knows the inode or name
            log.debug("notification: %s", e)

    # -- dispatch --------------------------------------------------------------------------------
    def _reply(self, unique: int, body: bytes | memoryview = b"", error: int = 0) -> None:
        try:
            if len(body) > 4096:  # no copy of a big READ answer into one buffer
                os.writev(self.fd, (w.header(len(body), unique, error), body))
            else:
                os.write(self.fd, w.header(len(body), unique, error) + body)
        except OSError as e:  # ENOENT: the request was interrupted and is gone
            if e.errno != errno.ENOENT:
                log.warning("FUSE reply: %s", e)

    def _dispatch(self, req: _Request, nursery: trio.Nursery) -> None:
        op = req.op
        handler = self._handlers.get(op)
        if handler is not None:
            requests[self._names[op]] += 1
            now = self._now.get(op)
            if now is not None:
                # Answered on the spot when memory has the answer: a task per request costs
                # ~11 us, a fifth of what an epoch's cached file costs the daemon.
                try:
                    body = now(req)
                except Exception as e:
                    self._reply(req.unique, error=errno_of(self._names[op], e))
                    return
                if body is not None:
                    self._reply(req.unique, body)
                    return
            nursery.start_soon(self._answer, handler, req)
            return
        if op in (w.FORGET, w.BATCH_FORGET):
            self._forget(req)
            return
        if op == w.INTERRUPT:  # the handler runs to its end; its answer is then dropped
            return
        if op == w.INIT:
            self._init(req)
            return
        if op == w.DESTROY:
            self._reply(req.unique)
            return
        name = self._names.get(op)
        requests[name or f"op{op}"] += 1
        if op not in _SYNC_OPS:
            # Unsupported, and normal: Python's open() asks isatty() (an IOCTL; the kernel asks
            # again on every open, whatever the answer), and the kernel remembers ENOSYS for
            # poll, lseek, fallocate, copy_file_range and falls back.
            log.debug("FUSE opcode %d: not supported", op)
            self._reply(req.unique, error=errno.ENOTTY if op == w.IOCTL else errno.ENOSYS)
            return
        try:
            self._reply(req.unique, self._sync(req))
        except Exception as e:
            self._reply(req.unique, error=errno_of(name or f"op{op}", e))

    async def _answer(self, handler: Callable[[_Request], Awaitable[bytes | None]],
                      req: _Request) -> None:
        try:
            body = await handler(req)
        except Exception as e:
            self._reply(req.unique, error=errno_of(self._names[req.op], e))
            return
        self._reply(req.unique, body or b"")

    def _sync(self, req: _Request) -> bytes:
        """The requests answered without waiting for anything."""
        op, core = req.op, self.core
        if op == w.STATFS:
            return w.statfs_out(core.statfs())
        if op == w.ACCESS:
            # Not sent with default_permissions (the kernel checks the modes we report);
            # right without it: W_OK only where a datastore takes writes.
            (mask, _) = w.ACCESS_IN.unpack_from(req.body)
            if mask & os.W_OK and not core.writable(req.node):
                raise PermissionError(errno.EACCES, "not writable")
            return b""
        if op == w.GETXATTR:
            raise OSError(_ENODATA, "no extended attributes")
        if op == w.LISTXATTR:
            (size, _) = w.GETXATTR_IN.unpack_from(req.body)
            return struct.pack("<II", 0, 0) if size == 0 else b""
        if op in (w.SETXATTR, w.REMOVEXATTR):
            core.not_supported(req.node, "an extended attribute", xattr=True)
        if op == w.FSYNCDIR:
            return b""  # a directory change is on storage once its call returned
        if op == w.LINK:
            (_old,) = struct.unpack_from("<Q", req.body)
            core.not_supported(req.node, "a hard link")
        if op == w.SYMLINK:
            core.not_supported(req.node, "a symbolic link")
        if op == w.MKNOD:
            core.not_supported(req.node, "a special file")
        raise OSError(errno.ENOSYS, f"FUSE opcode {op} is not supported")

    def _init(self, req: _Request) -> None:
        major, minor, readahead, flags, flags2 = w.INIT_IN.unpack_from(req.body)
        if major != 7:
            log.error("the kernel speaks FUSE protocol %d.%d; 7.x is required", major, minor)
            self._reply(req.unique, error=errno.EPROTO)
            return
        if not flags & w.INIT_EXT:
            flags2 = 0
        wanted = (w.ASYNC_READ | w.BIG_WRITES | w.DO_READDIRPLUS | w.ASYNC_DIO
                  | w.PARALLEL_DIROPS | w.MAX_PAGES | w.ATOMIC_O_TRUNC | w.INIT_EXT)
        out2 = 0
        if (self.want_passthrough and flags2 & w.PASSTHROUGH
                and minor >= w.PASSTHROUGH_MINOR and os.geteuid() == 0):
            out2 |= w.PASSTHROUGH
        self.passthrough = bool(out2 & w.PASSTHROUGH)
        if self.want_passthrough and not self.passthrough:
            log.info("FUSE passthrough is not available (kernel protocol 7.%d, root %s): "
                     "every read goes through the daemon", minor, os.geteuid() == 0)
        body = w.init_out(minor, readahead, flags & wanted, out2, 1 if self.passthrough else 0)
        self._reply(req.unique, body)

    def _forget(self, req: _Request) -> None:
        if req.op == w.FORGET:
            items = [(req.node, struct.unpack_from("<Q", req.body)[0])]
        else:
            (count,) = struct.unpack_from("<I", req.body)
            items = [w.FORGET_ONE.unpack_from(req.body, 8 + 16 * i) for i in range(count)]
        requests["forget"] += 1
        try:  # forget must never fail: the kernel does not wait for an answer
            self.core.forget(items)
            for ino, _ in items:
                self._packed.pop(ino, None)
        except Exception:
            log.exception("forget")

    def _entry(self, a: Attributes) -> bytes:
        """fuse_entry_out of `a`, packed again only when the core's Attributes object for the
        inode changed (the core reuses one while the entry is unchanged)."""
        cached = self._packed.get(a.ino)
        if cached is not None and cached[0] is a:
            return cached[1]
        out = w.entry(a)
        self._packed[a.ino] = (a, out)
        return out

    # -- handlers --------------------------------------------------------------------------------
    async def _lookup(self, req: _Request) -> bytes:
        name = os.fsdecode(w.name_of(req.body))
        return self._entry(await self.core.lookup(req.node, name, req.uid))

    def _lookup_now(self, req: _Request) -> bytes | None:
        a = self.core.lookup_now(req.node, os.fsdecode(w.name_of(req.body)), req.uid)
        return None if a is None else self._entry(a)

    async def _getattr(self, req: _Request) -> bytes:
        return w.attr_out(await self.core.getattr(req.node))

    async def _setattr(self, req: _Request) -> bytes:
        valid, _, fh, size, *_ = w.SETATTR_IN.unpack_from(req.body)
        a = await self.core.setattr(req.node, size=size if valid & w.FATTR_SIZE else None,
                                    fh=fh if valid & w.FATTR_FH else None)
        return w.attr_out(a)

    async def _readlink(self, req: _Request) -> bytes:
        return os.fsencode(await self.core.readlink(req.node))

    async def _mkdir(self, req: _Request) -> bytes:
        name = os.fsdecode(w.name_of(req.body[w.MKDIR_IN.size:]))
        return self._entry(await self.core.mkdir(req.node, name))

    async def _unlink(self, req: _Request) -> None:
        await self.core.unlink(req.node, os.fsdecode(w.name_of(req.body)))

    async def _rmdir(self, req: _Request) -> None:
        await self.core.rmdir(req.node, os.fsdecode(w.name_of(req.body)))

    async def _rename(self, req: _Request) -> None:
        if req.op == w.RENAME2:
            new_parent, flags, _ = w.RENAME2_IN.unpack_from(req.body)
            names = req.body[w.RENAME2_IN.size:]
        else:
            (new_parent,), flags = w.RENAME_IN.unpack_from(req.body), 0
            names = req.body[w.RENAME_IN.size:]
        old, new = w.two_names(names)
        await self.core.rename(req.node, os.fsdecode(old), new_parent, os.fsdecode(new), flags)

    async def _open(self, req: _Request) -> bytes:
        flags, _ = w.OPEN_IN.unpack_from(req.body)
        fh, keep_cache = await self.core.open(req.node, flags, req.pid, req.uid,
                                              passthrough=self.passthrough)
        return self._opened(fh, keep_cache)

    def _open_now(self, req: _Request) -> bytes | None:
        flags, _ = w.OPEN_IN.unpack_from(req.body)
        done = self.core.open_now(req.node, flags, req.pid, req.uid,
                                  passthrough=self.passthrough)
        return None if done is None else self._opened(*done)

    def _opened(self, fh: int, keep_cache: bool) -> bytes:
        # A reader's close needs no FLUSH: only a writer's commits anything (a fifth of the
        # requests of a small-file epoch).
        noflush = 0 if self.core.is_writer(fh) else w.FOPEN_NOFLUSH
        path = self.core.backing_file(fh) if self.passthrough else None
        if path is not None:
            bid = self._backing_open(path)
            if bid is not None:
                self._backing[fh] = bid
                return w.OPEN_OUT.pack(fh, w.FOPEN_PASSTHROUGH | noflush, bid)
        return w.OPEN_OUT.pack(fh, (w.FOPEN_KEEP_CACHE if keep_cache else 0) | noflush, 0)

    async def _read(self, req: _Request) -> bytes | memoryview:
        fh, offset, size, *_ = w.READ_IN.unpack_from(req.body)
        return await self.core.read(fh, offset, size)

    def _read_now(self, req: _Request) -> bytes | memoryview | None:
        fh, offset, size, *_ = w.READ_IN.unpack_from(req.body)
        return self.core.read_now(fh, offset, size)

    async def _write(self, req: _Request) -> bytes:
        fh, offset, size, *_ = w.WRITE_IN.unpack_from(req.body)
        start = w.WRITE_IN.size
        n = await self.core.write(fh, offset, bytes(req.body[start:start + size]))
        return w.WRITE_OUT.pack(n, 0)

    async def _release(self, req: _Request) -> None:
        (fh,) = w.FH_IN.unpack_from(req.body)
        self._release_backing(fh)
        await self.core.release(fh)

    def _release_now(self, req: _Request) -> bytes | None:
        (fh,) = w.FH_IN.unpack_from(req.body)
        if not self.core.release_now(fh):
            return None
        self._release_backing(fh)
        return b""

    def _release_backing(self, fh: int) -> None:
        bid = self._backing.pop(fh, None)
        if bid is not None:
            self._backing_close(bid)

    async def _fsync(self, req: _Request) -> None:
        await self.core.fsync(w.FH_IN.unpack_from(req.body)[0])

    async def _flush(self, req: _Request) -> None:
        # The errno reaches close(2): the writer learns its upload failed.
        await self.core.flush(w.FH_IN.unpack_from(req.body)[0])

    async def _opendir(self, req: _Request) -> bytes:
        return w.OPEN_OUT.pack(await self.core.opendir(req.node, req.uid), 0, 0)

    async def _releasedir(self, req: _Request) -> None:
        await self.core.releasedir(w.FH_IN.unpack_from(req.body)[0])

    async def _readdir(self, req: _Request) -> bytes:
        fh, pos, size, *_ = w.READ_IN.unpack_from(req.body)
        plus = req.op == w.READDIRPLUS
        out = bytearray()
        core = self.core
        while True:
            batch = await core.readdir(fh, pos)
            if not batch:
                return bytes(out)
            for next_id, name, a in batch:
                raw = os.fsencode(name)
                if plus:
                    record = w.direntplus(self._entry(a), a.ino, next_id, raw, a.mode)
                else:
                    record = w.dirent(a.ino, next_id, raw, a.mode)
                if len(out) + len(record) > size:
                    return bytes(out)
                out += record
                if plus:  # the kernel holds a lookup reference for each entry it was given
                    core.remember(a.ino)
                pos = next_id

    async def _create(self, req: _Request) -> bytes:
        flags, _mode, _umask, _ = w.CREATE_IN.unpack_from(req.body)
        name = os.fsdecode(w.name_of(req.body[w.CREATE_IN.size:]))
        fh, a = await self.core.create(req.node, name, flags)
        return self._entry(a) + w.OPEN_OUT.pack(fh, 0, 0)

    # -- passthrough -----------------------------------------------------------------------------
    def _backing_open(self, path: str) -> int | None:
        """Register `path` as a backing file; its id, or None (then the daemon serves reads).
        Through ctypes: `fcntl.ioctl` drops the ioctl's return value, which is the id."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:  # evicted meanwhile
            log.debug("passthrough: %s", e)
            return None
        try:
            arg = ctypes.create_string_buffer(w.BACKING_MAP.pack(fd, 0, 0))
            bid = _LIBC.ioctl(self.fd, w.DEV_IOC_BACKING_OPEN, arg)
        finally:
            os.close(fd)
        if bid < 0:
            log.info("passthrough refused: %s", os.strerror(ctypes.get_errno()))
            return None
        return int(bid)

    def _backing_close(self, bid: int) -> None:
        try:
            fcntl.ioctl(self.fd, w.DEV_IOC_BACKING_CLOSE, struct.pack("<I", bid))
        except OSError as e:
            log.debug("passthrough close %d: %s", bid, e)

