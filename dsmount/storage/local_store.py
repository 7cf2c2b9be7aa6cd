"""A local directory as a Store.

Every path goes through `local_root.LocalRoot`, as for the mount: nothing outside the
directory is ever read or written, whatever symlinks it holds or gets meanwhile.
- Reading (walk, stat, download, read_range, content_md5): regular files, and symlinks that
  resolve to a regular file inside the directory (read as that file, as `cp -L` would);
  symlinks to directories are not descended into (as `os.walk` does not); what leads outside,
  devices, FIFOs and sockets are skipped.
- Writing (upload, put_bytes): the destination's directories are created or entered one by
  one without following symlinks (a symlink there is refused), the bytes go to a temp name in
  that directory and are then renamed (or, without overwrite, hard-linked: link(2) fails if
  the name appeared meanwhile, so nothing is clobbered); a symlink at the destination name is
  replaced, never written through.
A local file has no stored MD5: `content_md5` hashes it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import secrets
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dsmount.errors import (
    DsmountError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    from_oserror,
)
from dsmount.storage.local_root import Found, LocalRoot, split
from dsmount.storage.names import clean_path, join
from dsmount.storage.store import Progress, RemoteFile, Store

_CHUNK = 1024 * 1024


class LocalStore(Store):
    """A local directory."""

    kind = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_absolute():
            raise InvalidRequest(f"local path must be absolute: {root}")
        self._local: LocalRoot | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return str(self.root)

    def _open(self) -> LocalRoot:
        """The directory, opened once (it may not exist before `create`)."""
        with self._lock:
            if self._local is None:
                self._local = LocalRoot(str(self.root))
            return self._local

    def close(self) -> None:
        with self._lock:
            if self._local is not None:
                self._local.close()
                self._local = None

    def check(self) -> None:
        try:
            self._open()
        except NotFound:
            raise NotFound(
                f"local path {self.root} does not exist or is not a directory") from None
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise PermissionDenied(f"local path {self.root}: permission denied")

    def create(self) -> bool:
        if self.root.is_dir():
            return False
        try:
            self.root.mkdir(parents=True)
        except OSError as e:
            raise from_oserror(e, f"create {self.root}") from None
        return True

    # -- reading ----------------------------------------------------------------------------
    def _file(self, rel: str) -> tuple[RemoteFile, str] | None:
        """The file at `rel` and the canonical path its bytes are read from (itself, or what a
        symlink there resolves to inside the root); None if there is no servable file."""
        local = self._open()
        try:
            found = local.lstat(rel)
        except DsmountError:
            return None
        source = rel
        if found.target is not None:
            # The target is canonical and relative to the link's (real) directory: only
            # leading ".." components, so joining and normalising it is exact.
            parent = rel.rpartition("/")[0]
            source = posixpath.normpath(posixpath.join("/", parent, found.target)).lstrip("/")
            try:
                found = local.lstat(source)
            except DsmountError:
                return None
        if not stat.S_ISREG(found.st.st_mode):
            return None
        return _remote(rel, found), source

    def walk(self, prefix: str = "") -> Iterator[RemoteFile]:
        local = self._open()
        base = clean_path(prefix)
        one = self._file(base) if base else None
        if one is not None:
            yield one[0]
            return
        pending = [base]
        while pending:
            rel_dir = pending.pop()
            try:
                entries = sorted(local.scan(rel_dir), key=lambda f: f.name)
            except DsmountError:
                if rel_dir == base:
                    return  # like os.walk: a missing prefix holds no files
                continue  # replaced or removed meanwhile
            subdirs = []
            for found in entries:
                rel = join(rel_dir, found.name)
                if found.is_dir:
                    subdirs.append(rel)
                elif found.target is None:
                    yield _remote(rel, found)
                else:
                    linked = self._file(rel)
                    if linked is not None:
                        yield linked[0]
            pending.extend(reversed(subdirs))  # depth first, in name order

    def stat(self, path: str) -> RemoteFile | None:
        found = self._file(clean_path(path))
        return found[0] if found is not None else None

    @contextlib.contextmanager
    def _reader(self, path: str, what: str) -> Iterator[IO[bytes]]:
        rel = clean_path(path)
        found = self._file(rel)
        if found is None:
            raise NotFound(f"{what} {path}: no such file")
        try:
            fd, _ = self._open().open_file(found[1])
        except OSError as e:
            raise from_oserror(e, f"{what} {path}") from None
        with os.fdopen(fd, "rb") as src:
            yield src

    def content_md5(self, f: RemoteFile) -> bytes | None:
        with self._reader(f.path, "read") as src:
            return hashlib.file_digest(src, lambda: hashlib.md5(usedforsecurity=False)).digest()

    def download(self, f: RemoteFile, out: IO[bytes], *, progress: Progress) -> None:
        try:
            with self._reader(f.path, "download") as src:
                _copy(src, out, progress)
        except OSError as e:
            raise from_oserror(e, f"download {f.path}") from None

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        try:
            with self._reader(path, "read") as src:
                return os.pread(src.fileno(), length, offset) if length > 0 else b""
        except OSError as e:
            raise from_oserror(e, f"read {path}") from None

    def list_dir(self, path: str) -> tuple[list[str], list[str]]:
        rel = clean_path(path)
        try:
            entries = self._open().scan(rel)
        except NotFound:
            return [], []
        files: list[str] = []
        dirs: list[str] = []
        for found in entries:
            if found.is_dir:
                dirs.append(found.name)
            elif found.target is None or self._file(join(rel, found.name)) is not None:
                files.append(found.name)
        return sorted(files), sorted(dirs)

    # -- writing ------------------------------------------------------------------------------
    def _parent(self, path: str) -> tuple[int, str]:
        """(O_PATH descriptor of the destination's directory, created as needed, name)."""
        parts = split(clean_path(path))
        if not parts:
            raise InvalidRequest("a destination path is needed")
        try:
            local = self._open()
        except NotFound:
            self.create()  # like `mkdir -p`: an upload may start a new local datastore
            local = self._open()
        fd = local.open([], os.O_PATH | os.O_DIRECTORY)
        try:
            for name in parts[:-1]:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)  # the umask decides, as mkdir -p
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

    def _write(self, path: str, chunks: Iterator[bytes], *, overwrite: bool) -> bool:
        """Write `chunks` to `path` atomically; False (nothing written) if it exists and not
        `overwrite`."""
        dfd, name = self._parent(path)
        tmp = f".{name[:200]}.{secrets.token_hex(4)}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=dfd)
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in chunks:
                        out.write(chunk)
                    os.fchmod(out.fileno(), 0o644)
                if overwrite:
                    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                else:
                    try:
                        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                    except FileExistsError:
                        return False
                return True
            finally:
                with contextlib.suppress(OSError):  # gone after a rename
                    os.unlink(tmp, dir_fd=dfd)
        finally:
            os.close(dfd)

    def upload(
        self, local: Path, path: str, *, size: int, md5: bytes, overwrite: bool, progress: Progress
    ) -> None:
        def chunks() -> Iterator[bytes]:
            with open(local, "rb") as src:
                while chunk := src.read(_CHUNK):
                    yield chunk
                    progress(len(chunk))

        try:
            if not self._write(path, chunks(), overwrite=overwrite):
                raise FileExistsError(errno.EEXIST, "exists", path)
        except OSError as e:
            raise from_oserror(e, f"upload {path}") from None

    def put_bytes(self, path: str, data: bytes, *, exclusive: bool = False) -> bool:
        try:
            return self._write(path, iter([data]), overwrite=not exclusive)
        except OSError as e:
            raise from_oserror(e, f"write {path}") from None


def _remote(rel: str, found: Found) -> RemoteFile:
    st = found.st
    return RemoteFile(rel, st.st_size, None, f"{st.st_mtime_ns:x}-{st.st_size:x}", st.st_mtime,
                      md5_known=False)


def _copy(src: IO[bytes], out: IO[bytes], progress: Progress) -> None:
    while chunk := src.read(_CHUNK):
        out.write(chunk)
        progress(len(chunk))
