"""The upload object of a local directory: what transfers write into a local datastore.

The mount serves local directories read-only; `LocalBackend.begin_upload` exists for whole-file
writes (`storage.files`: upload, put_bytes), declared by the `uploads` capability.

Invariants (every step through `local_root.LocalRoot`, nothing outside the directory touched):
- The destination's directories are entered one by one without following symlinks (a symlink
  there is refused); with `parents` missing ones are created, as `mkdir -p` (the umask
  decides their mode).
- The bytes go to a temporary name in that directory, made visible at commit by a rename (or,
  with `exclusive`, a hard link: link(2) fails if the name appeared meanwhile, so nothing is
  clobbered); a symlink at the destination name is replaced, never written through.
- A local file has no stored MD5: `commit` ignores `md5`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dsmount.errors import AlreadyExists, InvalidRequest, from_oserror
from dsmount.storage.base import Backend, Entry, Part, Upload, check_tiling
from dsmount.storage.local_root import LocalRoot, split
from dsmount.storage.names import clean_path

# Runs a blocking function in a worker thread (the backend's, under its limiter).
Run = Callable[..., Awaitable[Any]]


def file_etag(st: os.stat_result) -> str:
    """A local file's version: a replaced or rewritten file gets a new one."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


def entry_of_stat(name: str, st: os.stat_result) -> Entry:
    """The Entry of a regular file just written."""
    return Entry(name, False, st.st_size, st.st_mtime_ns, file_etag(st), st.st_uid, st.st_gid,
                 stat.S_IMODE(st.st_mode))


def _parent(local: LocalRoot, path: str, parents: bool) -> tuple[int, str]:
    """(O_PATH descriptor of the destination's directory, the file's name)."""
    parts = split(clean_path(path))
    if not parts:
        raise InvalidRequest("a destination path is needed")
    fd = local.open([], os.O_PATH | os.O_DIRECTORY)
    try:
        for name in parts[:-1]:
            if parents:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)
            try:
                nxt = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise InvalidRequest(
                        f"{path}: {name!r} is not a directory (symbolic links are not "
                        "followed when writing)") from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]


class LocalUpload(Upload):
    """A temporary file next to the destination (see the module docstring)."""

    def __init__(self, backend: Backend, run: Run, path: str, dfd: int, name: str, temp: str,
                 fd: int) -> None:
        self.backend = backend
        self._run = run
        self.path = path
        self._dfd = dfd
        self._name = name
        self._temp = temp
        self._fd = fd
        parent = path.rpartition("/")[0]
        self.temp_path = f"{parent}/{temp}" if parent else temp

    async def put(self, offset: int, data: bytes | bytearray | memoryview) -> Part:
        length = len(data)
        try:
            await self._run(os.pwrite, self._fd, data, offset)
        except OSError as e:
            raise from_oserror(e, f"write {self.path}") from None
        self.backend.stats.bytes_uploaded += length
        return Part(offset, length)

    async def commit(self, parts: Sequence[Part], size: int, *, keep: bool = True,
                     md5: bytes | None = None, exclusive: bool = False) -> Entry:
        check_tiling(parts, 0, size, f"commit {self.path!r}")

        def commit() -> Entry:
            os.ftruncate(self._fd, size)
            os.fchmod(self._fd, 0o644)
            st = os.fstat(self._fd)
            if exclusive:
                try:
                    os.link(self._temp, self._name, src_dir_fd=self._dfd, dst_dir_fd=self._dfd,
                            follow_symlinks=False)
                except FileExistsError:
                    raise AlreadyExists(
                        f"{self.path!r} appeared meanwhile; not overwritten") from None
            else:
                os.replace(self._temp, self._name, src_dir_fd=self._dfd, dst_dir_fd=self._dfd)
            return entry_of_stat(self._name, st)

        try:
            return await self._run(commit)  # type: ignore[no-any-return]
        except OSError as e:
            raise from_oserror(e, f"write {self.path}") from None
        finally:
            await self.abort()

    async def abort(self) -> bool:
        def drop() -> bool:
            if self._fd < 0:
                return True
            os.close(self._fd)
            self._fd = -1
            try:
                os.unlink(self._temp, dir_fd=self._dfd)
            except FileNotFoundError:
                pass  # renamed: committed
            except OSError:
                return False
            finally:
                os.close(self._dfd)
            return True

        return await self._run(drop)  # type: ignore[no-any-return]


async def begin_local_upload(backend: Backend, run: Run, local: LocalRoot, path: str, *,
                             parents: bool) -> LocalUpload:
    def begin() -> LocalUpload:
        dfd, name = _parent(local, path, parents)
        temp = f".{name[:200]}.{secrets.token_hex(4)}.part"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=dfd)
        except BaseException:
            os.close(dfd)
            raise
        return LocalUpload(backend, run, clean_path(path), dfd, name, temp, fd)

    try:
        return await run(begin)  # type: ignore[no-any-return]
    except OSError as e:
        raise from_oserror(e, f"upload {path}") from None
