"""`LocalRoot`: a local directory held open, and every path below it opened without leaving it.

Every access to a local datastore (`local.LocalBackend`, for the mount and, with
`local_upload`, for transfers) reaches the disk only through this class, so a symbolic link, a `..`,
or a directory swapped for a symlink after it was listed can never make the daemon (root)
open something outside the datastore's directory.

How:
- The root is opened once (`O_PATH`); every path is opened relative to that descriptor. A
  rename or a symlink put in place of the root's own path later changes nothing served.
- A path is walked without following any symlink: `openat2(RESOLVE_BENEATH |
  RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` in one call where the kernel has it (5.6+),
  else one `openat(O_PATH | O_NOFOLLOW)` per component with a check that each is a directory.
  A symlink met on the way (a directory replaced by one) fails the walk (`ELOOP`).
- A symlink as the last component is a `Found` with `target`: the canonical path it resolves
  to inside the root, relative to the link's directory (only real directories on the way, so
  the kernel resolving it through the mount stays inside the datastore, and every directory's
  own permissions apply on the way). One that resolves outside the root (absolute elsewhere,
  `..` above the root) is not served: `Escapes` (a NotFound), logged once per path. Absolute
  targets inside the root's own real path are accepted.
- Only regular files, directories and such symlinks are served; devices, FIFOs and sockets
  are `NotFound`. A file is opened for reading by re-opening its `O_PATH` descriptor through
  /proc once it is known to be regular, so a device is never even opened.
- Modes: `Found.bits` are the nine permission bits to show, with an access ACL folded in
  conservatively (`local_access.presented_bits`).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import logging
import os
import posixpath
import stat
import threading
from collections.abc import Iterator
from typing import NamedTuple

from dsmount.errors import DsmountError, NotFound, from_oserror
from dsmount.storage.local_access import presented_bits, read_acl

log = logging.getLogger(__name__)

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_SYS_OPENAT2 = 437  # the same number on every architecture with the unified syscall table
MAX_HOPS = 40  # symlinks followed while resolving one target, as the kernel's own limit
_NOTED_MAX = 1024  # escaping paths remembered (logged once each); beyond, one more line


class Escapes(NotFound):
    """A symbolic link resolves outside the datastore's root: it is not served."""


class NotRegular(NotFound):
    """The path names something other than a regular file (a directory, device, FIFO...)."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def _load_openat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                        ctypes.c_size_t]
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE)
    fd = syscall(_SYS_OPENAT2, -100, b".", ctypes.byref(how), ctypes.sizeof(how))  # AT_FDCWD
    if fd < 0:
        return None  # ENOSYS (old kernel), EPERM (a seccomp filter), EINVAL (unknown flags)
    os.close(fd)
    return syscall


_openat2 = _load_openat2()


def openat2_available() -> bool:
    return _openat2 is not None


def _open_beneath_openat2(dirfd: int, path: str, flags: int) -> int:
    assert _openat2 is not None
    how = _OpenHow(flags, 0, _RESOLVE)
    raw = os.fsencode(path)
    for _ in range(3):
        fd = _openat2(_SYS_OPENAT2, dirfd, raw, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return int(fd)
        number = ctypes.get_errno()
        if number != errno.EAGAIN:  # EAGAIN: a concurrent rename; the kernel asks to retry
            break
    raise OSError(number, os.strerror(number), path)


def _open_beneath_walk(dirfd: int, parts: list[str], flags: int) -> int:
    """The same as openat2 above, one component at a time (kernels without openat2)."""
    cur = dirfd
    try:
        for name in parts[:-1]:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            if cur != dirfd:
                os.close(cur)
            cur = fd
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                raise OSError(errno.ELOOP, "a symbolic link on the path", name)
            if not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, "not a directory", name)
        return os.open(parts[-1], flags, dir_fd=cur)
    finally:
        if cur != dirfd:
            os.close(cur)


def split(path: str) -> list[str]:
    """The components of a datastore-relative path. Paths come from the core or a store,
    which never produce "." or ".." components; refuse them anyway so a bug upstream cannot
    reach outside the root."""
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") or "\0" in p for p in parts):
        raise NotFound(f"{path}: invalid path")
    return parts


class Found(NamedTuple):
    """One servable object below the root, as lstat sees it. (A tuple: a listing makes one
    per entry, and a frozen dataclass costs twice as much to build.)"""

    name: str
    st: os.stat_result  # the object's own (a symlink's: the link's)
    bits: int  # permission bits to show (ACL folded in)
    target: str | None = None  # a symlink: where it points, relative to its directory

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


class LocalRoot:
    """A directory held open; see the module docstring."""

    def __init__(self, path: str) -> None:
        try:
            self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ENOTDIR:
                raise NotFound(f"local path {path} is not a directory") from None
            raise from_oserror(e, f"local path {path}") from None
        self.path = path
        try:
            self.real = os.readlink(f"/proc/self/fd/{self.fd}")
        except OSError:
            self.real = os.path.realpath(path)
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)
        self._noted: set[str] = set()
        self._noted_lock = threading.Lock()
        # Operations in flight (worker threads) and whether close() was asked for: the root
        # descriptor is closed only once none uses it, because a number closed under a
        # running openat could be reused by an unrelated open and resolve paths against it.
        self._users = 0
        self._closing = False
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            if self._users == 0 and self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    @contextlib.contextmanager
    def _use(self) -> Iterator[int]:
        with self._lock:
            if self._closing:
                raise NotFound(f"{self.path}: the datastore was detached")
            self._users += 1
        try:
            yield self.fd
        finally:
            with self._lock:
                self._users -= 1
                if self._closing and self._users == 0 and self.fd >= 0:
                    os.close(self.fd)
                    self.fd = -1

    # -- opening without following ------------------------------------------------------------
    def open(self, parts: list[str], flags: int) -> int:
        """A descriptor for `parts` below the root, no symlink followed anywhere. A symlink as
        the last component: with O_PATH the link itself, otherwise ELOOP. A symlink on the way:
        ELOOP."""
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC
        with self._use() as root:  # the only place the root descriptor is used
            if not parts:
                return os.open(".", flags, dir_fd=root)
            if _openat2 is not None:
                return _open_beneath_openat2(root, "/".join(parts), flags)
            return _open_beneath_walk(root, parts, flags)

    def _open_path(self, parts: list[str], what: str) -> int:
        try:
            return self.open(parts, os.O_PATH)
        except OSError as e:
            if e.errno == errno.ELOOP:  # only a symlink on the way: a trailing one is opened
                raise NotFound(f"{what}: a directory on the path is a symbolic link") from None
            raise from_oserror(e, what) from None

    def open_file(self, path: str) -> tuple[int, os.stat_result]:
        """(read-only descriptor, stat) of the regular file at `path`. A symlink there: ELOOP
        (OSError); anything else not regular: NotRegular. The file is re-opened through its
        O_PATH descriptor, so what is opened is exactly what was checked."""
        parts = split(path)
        pfd = self._open_path(parts, path or "/")
        try:
            st = os.fstat(pfd)
            if stat.S_ISLNK(st.st_mode):
                raise OSError(errno.ELOOP, "is a symbolic link", path)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegular(f"{path or '/'}: not a regular file")
            try:
                fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
            except FileNotFoundError:  # no /proc: open it again, never blocking, and recheck
                fd = self.open(parts, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
                again = os.fstat(fd)
                if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
                    os.close(fd)
                    raise NotRegular(f"{path}: replaced while opening") from None
            return fd, st
        finally:
            os.close(pfd)

    def open_dir(self, path: str) -> int:
        """A read-only descriptor of the directory at `path` (to list it)."""
        try:
            return self.open(split(path), os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise NotFound(f"{path or '/'}: not a directory (a symbolic link)") from None
            raise from_oserror(e, path or "/") from None

    # -- what is there --------------------------------------------------------------------------
    def lstat(self, path: str) -> Found:
        """The object at `path`, not following a symlink there. NotFound for what is not
        served (devices, FIFOs, sockets, symlinks that resolve outside or nowhere)."""
        parts = split(path)
        pfd = self._open_path(parts, path or "/")
        try:
            st = os.fstat(pfd)
            name = parts[-1] if parts else ""
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                return Found(name, st, self._bits(st, f"/proc/self/fd/{pfd}", follow=True))
            if stat.S_ISLNK(st.st_mode):
                raw = os.readlink("", dir_fd=pfd)
                return Found(name, st, 0o777, self.link_target(parts[:-1], raw, path))
        except OSError as e:
            raise from_oserror(e, path or "/") from None
        finally:
            os.close(pfd)
        raise NotFound(f"{path}: not a regular file, directory or symbolic link")

    def scan(self, path: str) -> list[Found]:
        """The servable entries of directory `path`; what is not served is skipped."""
        parts = split(path)
        dfd = self.open_dir(path)
        out: list[Found] = []
        try:
            proc = f"/proc/self/fd/{dfd}/"
            with os.scandir(dfd) as it:
                for de in it:
                    try:
                        st = de.stat(follow_symlinks=False)
                        mode = st.st_mode
                        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                            bits = mode & 0o777
                            if bits & 0o077:  # only then could an ACL matter (see _bits)
                                bits = presented_bits(mode, read_acl(proc + de.name,
                                                                     follow=False))
                            out.append(Found(de.name, st, bits))
                        elif stat.S_ISLNK(mode):
                            raw = os.readlink(de.name, dir_fd=dfd)
                            rel = "/".join([*parts, de.name])
                            out.append(Found(de.name, st, 0o777, self.link_target(parts, raw, rel)))
                    except (OSError, DsmountError):
                        continue  # vanished meanwhile, dangling, looping or escaping
        except OSError as e:
            raise from_oserror(e, path or "/") from None
        finally:
            os.close(dfd)
        return out

    @staticmethod
    def _bits(st: os.stat_result, where: str, *, follow: bool) -> int:
        if st.st_mode & 0o077 == 0:
            return st.st_mode & 0o777  # only the owner's bits, which an ACL never widens
        return presented_bits(st.st_mode, read_acl(where, follow=follow))

    # -- symlinks -------------------------------------------------------------------------------
    def resolve(self, parts: list[str], target: str, path: str) -> list[str]:
        """The canonical components (real directories only) of what `target`, a symlink in
        directory `parts`, resolves to inside the root. Escapes if it leaves the root,
        NotFound if it resolves to nothing servable, OSError(ELOOP) after MAX_HOPS links."""
        where = list(parts)
        todo: collections.deque[str] = collections.deque()
        hops = 0

        def push(link: str) -> None:
            nonlocal where
            if link.startswith("/"):
                if link != self.real and not link.startswith(self.real.rstrip("/") + "/"):
                    raise self._escape(path)
                link = link[len(self.real):]
                where = []
            todo.extendleft(reversed(link.split("/")))

        push(target)
        while todo:
            name = todo.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                if not where:
                    raise self._escape(path)
                where.pop()
                continue
            fd = self._open_path([*where, name], path)
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_ISLNK(mode):
                    hops += 1
                    if hops > MAX_HOPS:
                        raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                    push(os.readlink("", dir_fd=fd))
                elif stat.S_ISDIR(mode) or (stat.S_ISREG(mode) and not any(
                        p not in ("", ".") for p in todo)):
                    where.append(name)
                else:
                    raise NotFound(f"{path}: the symbolic link leads to nothing served")
            finally:
                os.close(fd)
        return where

    def link_target(self, parts: list[str], target: str, path: str) -> str:
        """What readlink shows for the symlink `path` (in directory `parts`): the canonical
        target relative to the link's directory."""
        canonical = self.resolve(parts, target, path)
        return posixpath.relpath("/" + "/".join(canonical), "/" + "/".join(parts))

    def _escape(self, path: str) -> Escapes:
        with self._noted_lock:
            first = path not in self._noted and len(self._noted) < _NOTED_MAX
            if first:
                self._noted.add(path)
            elif len(self._noted) == _NOTED_MAX:
                self._noted.add("")  # say once that we stop saying
                log.warning("[%s] more symbolic links leave the datastore; not logging them",
                            self.path)
        if first:
            log.warning("[%s] %s: symbolic link leads outside the datastore; not served",
                        self.path, path)
        return Escapes(f"{path}: symbolic link leads outside the datastore")
