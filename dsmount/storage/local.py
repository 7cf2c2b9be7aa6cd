"""The embedded default backend: a directory on local disk, served read-only by the mount.

It goes through the same async interface as the cloud backends (blocking os calls run in
worker threads), so the filesystem core, cache and read-ahead are exercised exactly as with
Blob storage. The "ETag" of a file is derived from (inode, size, mtime_ns): a replaced or
rewritten file gets a new one, and a read pinned to the old one fails with Changed.

Every access goes through `local_root.LocalRoot` (see there): nothing outside the directory
is ever opened, whatever symlinks or swapped directories it holds. Entries carry the source's
owner, group and permission bits (an ACL folded in conservatively), and symlinks that stay
inside are entries with a `symlink` target; devices, FIFOs and sockets are not served.

Whole files (`storage.files`: transfers, versions, the Python API): `walk` and `file_info`
take a symlink that resolves to a regular file inside the directory for that file (its
`RemoteFile.source`, read as `cp -L` would; symlinks to directories are not descended into,
as `os.walk` does not), while `read` of the link's own path fails as for the mount; a local
file has no stored MD5, so `content_md5` hashes it. Transfers also write here (`uploads`, see
`local_upload`), while the mount's write verbs stay off (`writable` is False).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat as statmod
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from dsmount.errors import Changed, DsmountError, InvalidRequest, NotFound, from_oserror
from dsmount.storage.base import Backend, Capabilities, Entry, RemoteFile, Upload
from dsmount.storage.local_root import Found, LocalRoot, NotRegular
from dsmount.storage.local_upload import begin_local_upload, file_etag
from dsmount.storage.names import clean_path, join

PAGE_SIZE = 1000  # entries per listing page; keeps first-entry latency low for huge dirs


_etag = file_etag


def entry_of(found: Found) -> Entry:
    st = found.st
    is_dir = statmod.S_ISDIR(st.st_mode)
    if found.target is not None:
        return Entry(found.name, False, len(os.fsencode(found.target)), st.st_mtime_ns, None,
                     st.st_uid, st.st_gid, 0o777, found.target)
    return Entry(
        name=found.name,
        is_dir=is_dir,
        size=0 if is_dir else st.st_size,
        mtime_ns=st.st_mtime_ns,
        etag=None if is_dir else _etag(st),
        uid=st.st_uid,
        gid=st.st_gid,
        mode=found.bits,
    )


class LocalBackend(Backend):
    kind = "local"
    # Read-only for the mount (it serves local directories as they are), written by transfers;
    # on disk already and its files change in place, so nothing of it goes to the node's disk
    # cache.
    capabilities = Capabilities(local_directory=True, uploads=True)

    def __init__(self, root: str | Path, *, limiter: trio.CapacityLimiter | None = None,
                 must_exist: bool = True) -> None:
        """`must_exist=False`: the directory may appear later (`create`, or a first upload);
        it is opened at first use."""
        super().__init__()
        if not must_exist and not Path(root).is_absolute():
            raise InvalidRequest(f"local path must be absolute: {root}")
        self._path = str(root)
        self._local: LocalRoot | None = None
        self._open_lock = threading.Lock()
        self.root = Path(root)
        if must_exist or os.path.isdir(root):
            self.root = Path(self.local.real)
        self._limiter = limiter or trio.CapacityLimiter(8)

    @property
    def local(self) -> LocalRoot:
        """The directory, held open (opened at first use when it did not exist at first)."""
        with self._open_lock:
            if self._local is None:
                self._local = LocalRoot(self._path)
            return self._local

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def check(self) -> None:
        self.root_entry = await self.stat("")

    def directory_identity(self) -> tuple[int, int]:
        return self.local.identity

    async def stat(self, path: str) -> Entry:
        self.stats.requests += 1
        return entry_of(await self._run(self.local.lstat, path))

    async def list(self, path: str) -> AsyncIterator[list[Entry]]:
        self.stats.requests += 1
        found = await self._run(self.local.scan, path)
        entries = [entry_of(f) for f in found]
        for i in range(0, len(entries), PAGE_SIZE):
            yield entries[i : i + PAGE_SIZE]

    async def read(self, path: str, offset: int, length: int, etag: str | None = None) -> bytes:
        self.stats.requests += 1
        local = self.local

        def pread() -> bytes:
            try:
                fd, st = local.open_file(path)
            except NotRegular:
                raise Changed(f"{path}: no longer a regular file") from None
            try:
                if etag is not None and _etag(st) != etag:
                    raise Changed(f"{path}: changed since it was opened")
                chunks = []
                want = length
                pos = offset
                while want > 0:
                    b = os.pread(fd, want, pos)
                    if not b:
                        break
                    chunks.append(b)
                    want -= len(b)
                    pos += len(b)
                return b"".join(chunks)
            finally:
                os.close(fd)

        try:
            data = await self._run(pread)
        except OSError as e:
            raise from_oserror(e, path or "/") from None
        self.stats.bytes_fetched += len(data)
        return data

    # -- whole files -------------------------------------------------------------------------
    async def walk(self, prefix: str = "") -> AsyncIterator[list[RemoteFile]]:
        base = clean_path(prefix)
        if not os.path.isdir(self._path) and self._local is None:
            return  # not created yet: nothing in it
        async for files in super().walk(base):
            yield files

    async def directory_files(self, directory: str) -> tuple[list[RemoteFile], list[str]]:
        # One thread hop per directory (not one per listing page), and links to files inside
        # the root are files here.
        try:
            return await self._run(_directory, self.local, directory)
        except NotFound:
            raise
        except DsmountError as e:  # like os.walk: what cannot be listed holds no files
            raise NotFound(str(e)) from e

    async def file_info(self, path: str) -> RemoteFile | None:
        path = clean_path(path)
        return await self._run(_file, self.local, path) if path else None

    async def read_source(self, path: str) -> str:
        f = await self.file_info(path)
        if f is None:
            raise NotFound(f"read {path}: no such file")
        return f.read_path

    async def content_md5(self, path: str) -> bytes | None:
        def digest() -> bytes:
            fd, _ = self.local.open_file(path)
            with os.fdopen(fd, "rb") as src:
                return hashlib.file_digest(src, lambda: hashlib.md5(usedforsecurity=False)
                                           ).digest()

        try:
            return await self._run(digest)  # type: ignore[no-any-return]
        except OSError as e:
            raise from_oserror(e, f"read {path}") from None

    async def create(self) -> bool:
        if os.path.isdir(self._path):
            return False
        try:
            await self._run(lambda: os.makedirs(self._path))
        except FileExistsError:
            return False
        except OSError as e:
            raise from_oserror(e, f"create {self._path}") from None
        return True

    async def begin_upload(
        self, path: str, *, base: Entry | None = None, append: bool = False,
        parents: bool = False,
    ) -> Upload:
        if parents and not os.path.isdir(self._path):
            await self.create()  # like `mkdir -p`: an upload may start a new local datastore
        return await begin_local_upload(self, self._run, self.local, path, parents=parents)

    async def aclose(self) -> None:
        if self._local is not None:
            self._local.close()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self._local.real if self._local else self._path}


def _source(local: LocalRoot, path: str) -> str:
    """Where the symlink at `path` leads inside the root (NotFound if it leads nowhere)."""
    found = local.lstat(path)
    if found.target is None:
        return path
    # The target is canonical and relative to the link's (real) directory: only leading ".."
    # components, so joining and normalising it is exact.
    parent = path.rpartition("/")[0]
    return posixpath.normpath(posixpath.join("/", parent, found.target)).lstrip("/")


def _remote(path: str, st: os.stat_result, source: str | None = None) -> RemoteFile:
    return RemoteFile(path, st.st_size, None, _etag(st), st.st_mtime, md5_known=False,
                      source=source)


def _file(local: LocalRoot, path: str) -> RemoteFile | None:
    """The regular file at `path`, or what a symlink there resolves to inside the root; None
    if there is no servable file."""
    source = None
    try:
        found = local.lstat(path)
        if found.target is not None:
            source = _source(local, path)
            found = local.lstat(source)
    except DsmountError:
        return None
    return _remote(path, found.st, source) if statmod.S_ISREG(found.st.st_mode) else None


def _directory(local: LocalRoot, directory: str) -> tuple[list[RemoteFile], list[str]]:
    """(files, subdirectories) directly in `directory`, in name order."""
    files: list[RemoteFile] = []
    subdirs: list[str] = []
    for found in sorted(local.scan(directory), key=lambda f: f.name):
        path = join(directory, found.name)
        if found.is_dir:
            subdirs.append(path)
        elif found.target is None:
            files.append(_remote(path, found.st))
        elif (linked := _file(local, path)) is not None:
            files.append(linked)
    return files, subdirs

