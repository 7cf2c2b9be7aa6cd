"""A local directory as a Store.

Uploads are written to a temp name in the destination directory and then renamed (or, without
overwrite, hard-linked: link(2) fails if the name appeared meanwhile, so nothing is clobbered).
A local file has no stored MD5: `content_md5` hashes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dsmount.errors import InvalidRequest, NotFound, PermissionDenied, from_oserror
from dsmount.shared.fileutil import atomic_write, commit, temp_beside
from dsmount.storage.names import clean_path, join
from dsmount.storage.store import Progress, RemoteFile, Store, file_md5


class LocalStore(Store):
    """A local directory."""

    kind = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_absolute():
            raise InvalidRequest(f"local path must be absolute: {root}")

    def describe(self) -> str:
        return str(self.root)

    def _abs(self, path: str) -> Path:
        rel = clean_path(path)
        return self.root / rel if rel else self.root

    def check(self) -> None:
        if not self.root.is_dir():
            raise NotFound(f"local path {self.root} does not exist or is not a directory")
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

    def _file(self, full: Path, rel: str) -> RemoteFile:
        st = full.stat()
        return RemoteFile(
            rel,
            st.st_size,
            None,
            f"{st.st_mtime_ns:x}-{st.st_size:x}",
            st.st_mtime,
            md5_known=False,
        )

    def walk(self, prefix: str = "") -> Iterator[RemoteFile]:
        base = self._abs(prefix)
        rel_base = clean_path(prefix)
        if base.is_file():
            yield self._file(base, rel_base)
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir
            for name in sorted(filenames):
                full = Path(dirpath) / name
                if full.is_file():  # skips sockets, fifos, dangling links
                    yield self._file(full, join(rel_dir, name))

    def stat(self, path: str) -> RemoteFile | None:
        full = self._abs(path)
        return self._file(full, clean_path(path)) if full.is_file() else None

    def content_md5(self, f: RemoteFile) -> bytes | None:
        return file_md5(self._abs(f.path))

    def upload(
        self, local: Path, path: str, *, size: int, md5: bytes, overwrite: bool, progress: Progress
    ) -> None:
        dest = self._abs(path)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with temp_beside(dest, suffix=".part") as (out, tmp):
                with out, open(local, "rb") as src:
                    _copy(src, out, progress)
                    os.fchmod(out.fileno(), 0o644)
                commit(tmp, dest, replace=overwrite)  # without overwrite: never clobbers
        except OSError as e:
            raise from_oserror(e, f"upload {path}") from None

    def download(self, f: RemoteFile, out: IO[bytes], *, progress: Progress) -> None:
        try:
            with open(self._abs(f.path), "rb") as src:
                _copy(src, out, progress)
        except OSError as e:
            raise from_oserror(e, f"download {f.path}") from None

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        try:
            with open(self._abs(path), "rb") as src:
                src.seek(offset)
                return src.read(length)
        except OSError as e:
            raise from_oserror(e, f"read {path}") from None

    def put_bytes(self, path: str, data: bytes, *, exclusive: bool = False) -> bool:
        dest = self._abs(path)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                try:
                    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                return True
            atomic_write(dest, data, 0o644, durable=False)
            return True
        except OSError as e:
            raise from_oserror(e, f"write {path}") from None

    def list_dir(self, path: str) -> tuple[list[str], list[str]]:
        files: list[str] = []
        dirs: list[str] = []
        try:
            with os.scandir(self._abs(path)) as it:
                for entry in it:
                    (dirs if entry.is_dir() else files).append(entry.name)
        except FileNotFoundError:
            return [], []
        except OSError as e:
            raise from_oserror(e, f"list {path or '/'}") from None
        return sorted(files), sorted(dirs)


def _copy(src: IO[bytes], out: IO[bytes], progress: Progress) -> None:
    while chunk := src.read(1024 * 1024):
        out.write(chunk)
        progress(len(chunk))


# -- shared by the Azure stores ---------------------------------------------------------------
