"""A local directory with the write verbs (core tests of the write path on real files; a test
double, so it lives with the tests).

The mount attaches local datastores read-only (the daemon runs as root: writing there on a
user's behalf is not offered); this class completes the storage interface for a local
directory so the write path is proven on real files too. An upload is a temporary file in the
target's directory (`writes.temp_name`), fsynced and renamed over the target at commit
(`os.replace`, atomic); an append starts the temporary file as a copy of the base (kernel
`copy_file_range`), so only new bytes are written by the caller.
"""

from __future__ import annotations

import os
import shutil
import stat as statmod
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from dsmount.errors import AlreadyExists, Changed, NotFound, from_oserror
from dsmount.storage.base import Capabilities, Entry, Part, Upload, check_tiling
from dsmount.storage.local import LocalBackend, _etag
from dsmount.storage.writes import is_temp_name, temp_name


def _entry(name: str, st: os.stat_result) -> Entry:
    is_dir = statmod.S_ISDIR(st.st_mode)
    return Entry(name, is_dir, 0 if is_dir else st.st_size, st.st_mtime_ns,
                 None if is_dir else _etag(st), st.st_uid, st.st_gid,
                 statmod.S_IMODE(st.st_mode))


class LocalUpload(Upload):
    def __init__(self, backend: WritableLocalBackend, path: str, target: Path, temp: Path,
                 base: Entry | None, kept: int) -> None:
        self.backend = backend
        self.path = path
        self.target = target
        self.temp = temp
        self.base = base
        self.kept = kept
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        self.temp_path = f"{parent}/{temp.name}" if parent else temp.name

    async def put(self, offset: int, data: bytes | bytearray | memoryview) -> Part:
        blob = bytes(data)

        def write() -> None:
            fd = os.open(self.temp, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.pwrite(fd, blob, offset)
            finally:
                os.close(fd)

        await self.backend._do(f"write {self.path!r}", write)
        self.backend.stats.bytes_uploaded += len(blob)
        return Part(offset, len(blob))

    async def commit(self, parts: Sequence[Part], size: int, *, keep: bool = True,
                     md5: bytes | None = None, exclusive: bool = False) -> Entry:
        check_tiling(parts, self.kept if keep else 0, size, f"commit {self.path!r}")

        def commit() -> Entry:
            if keep and self.kept:
                st = os.stat(self.target)
                if self.base is None or _etag(st) != self.base.etag:
                    raise Changed(f"commit {self.path!r}: the base version was replaced")
            fd = os.open(self.temp, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                try:
                    os.link(self.temp, self.target)  # fails if the name exists: nothing clobbered
                except FileExistsError:
                    raise AlreadyExists(f"commit {self.path!r}: the file exists") from None
                os.unlink(self.temp)
            else:
                os.replace(self.temp, self.target)
            return _entry(self.target.name, os.stat(self.target))

        return await self.backend._do(f"commit {self.path!r}", commit)  # type: ignore[no-any-return]

    async def abort(self) -> bool:
        try:
            await self.backend._run(lambda: self.temp.unlink(missing_ok=True))
        except OSError:
            return False
        return True


class WritableLocalBackend(LocalBackend):
    capabilities = Capabilities(writable=True)
    native_dir_rename = True

    async def list(self, path: str) -> AsyncIterator[list[Entry]]:
        async for page in super().list(path):
            yield [e for e in page if not is_temp_name(e.name)]

    def _abs(self, path: str) -> Path:
        """The real path of `path` below the root (core tests only: the write verbs trust
        their callers; the served, read-only face walks paths with `LocalRoot`)."""
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise NotFound(f"{path}: invalid path")
        return self.root.joinpath(*parts)

    async def _do(self, what: str, fn):  # type: ignore[no-untyped-def]
        self.stats.requests += 1
        try:
            return await self._run(fn)
        except OSError as e:
            raise from_oserror(e, what) from None

    async def begin_upload(
        self, path: str, *, base: Entry | None = None, append: bool = False,
        parents: bool = False,
    ) -> Upload:
        target = self._abs(path)
        temp = target.parent / temp_name(target.name)
        kept = base.size if append and base is not None else 0

        def create() -> None:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                if kept:
                    with open(target, "rb") as src:
                        if _etag(os.fstat(src.fileno())) != (base.etag if base else None):
                            raise Changed(f"append {path!r}: the file changed")
                        os.copy_file_range(src.fileno(), fd, kept, 0, 0)
            finally:
                os.close(fd)

        await self._do(f"write {path!r}", create)
        return LocalUpload(self, path.strip("/"), target, temp, base, kept)

    async def delete(self, path: str) -> None:
        target = self._abs(path)

        def delete() -> None:
            if target.is_dir():
                raise IsADirectoryError(21, "is a directory")
            target.unlink()

        await self._do(f"delete {path!r}", delete)

    async def make_dir(self, path: str) -> Entry:
        target = self._abs(path)
        await self._do(f"mkdir {path!r}", lambda: target.mkdir())
        return _entry(target.name, os.stat(target))

    async def remove_dir(self, path: str) -> None:
        target = self._abs(path)
        await self._do(f"rmdir {path!r}", lambda: target.rmdir())

    async def copy(self, src: str, dst: str) -> Entry:
        source, target = self._abs(src), self._abs(dst)
        temp = target.parent / temp_name(target.name)

        def copy() -> Entry:
            if not source.is_file():
                raise NotFound(f"copy {src!r}: no such file")
            shutil.copyfile(source, temp)
            os.replace(temp, target)
            return _entry(target.name, os.stat(target))

        return await self._do(f"copy {src!r}", copy)  # type: ignore[no-any-return]

    async def rename(
        self, src: str, dst: str, *, is_dir: bool = False, max_entries: int = 1000
    ) -> Entry | None:
        source, target = self._abs(src), self._abs(dst)
        await self._do(f"rename {src!r}", lambda: os.replace(source, target))
        return None if is_dir else _entry(target.name, os.stat(target))
