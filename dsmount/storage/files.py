"""Whole files of a datastore for blocking callers: upload, download, walk, put, read a range.

Written once, over the one async storage interface (`base.Backend` and its `Upload`), for
every kind; blocking callers (the CLI, notebooks, the Python API, transfer worker threads)
reach the backend through THE portal (`storage.portal`): each call runs as a task of its
loop, so calls from many threads run concurrently there. Local file I/O stays in the calling
thread; only storage calls cross into the loop.

- `upload`: a file of at most `PART` bytes is one `commit_whole` (a blob's Put Blob); a bigger
  one is staged in `PART`-byte parts, `CHUNK_CONCURRENCY` in flight, then committed. The MD5
  given is stored with the commit (once every byte is in place), and `overwrite=False` commits
  exclusively (AlreadyExists if the name appeared meanwhile, atomically where the kind can).
  A failure aborts the upload: nothing half-written is visible under the name.
- `download`: ranged reads pinned to the listed version (`RemoteFile.etag`): the bytes of one
  version or Changed, never a mix; a file of more than `PART` bytes is read `CHUNK_CONCURRENCY`
  parts at a time.
- Writing needs `capabilities.uploads` (ReadOnly otherwise: a version, for instance).

`open_version` gives the files of a version (its manifest fetched to a temporary directory),
read like any other tree of files.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import trio

from dsmount.errors import AlreadyExists, Changed, NotFound, ReadOnly
from dsmount.storage.base import Backend, Part, RemoteFile, Upload
from dsmount.storage.manifest import Manifest
from dsmount.storage.manifest_backend import ManifestBackend, fetch_manifest
from dsmount.storage.portal import Portal, portal
from dsmount.storage.retry import RetryPolicy

Progress = Callable[[int], None]  # called with the number of bytes just moved
PART = 8 * 1024 * 1024  # bytes per request of a big file (one part, one ranged read)
BIG_FILE = 32 * 1024 * 1024  # from this size a file is moved `CHUNK_CONCURRENCY` parts at once
CHUNK_CONCURRENCY = 4

# Transfers move whole files: the overall deadline is generous, and one attempt (one part) may
# take long on a slow link.
TRANSFER_RETRY = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=8.0, attempt_timeout=120.0,
                             deadline=600.0)


def file_md5(path: str | Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).digest()


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


class Files:
    """The whole files of one backend, for blocking callers (see the module docstring)."""

    def __init__(self, backend: Backend, *, via: Portal | None = None, label: str = "",
                 cleanup: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self.kind = backend.kind
        self.capabilities = backend.capabilities
        self._portal = via or portal()
        self._label = label
        self._cleanup = cleanup

    def run(self, afn: Callable[..., Any], *args: Any) -> Any:
        """`await afn(*args)` on the portal's loop (for a caller with its own async step)."""
        return self._portal.run(afn, *args)

    def describe(self) -> str:
        """Where the files are, for messages (never a secret)."""
        d = self.backend.describe()
        where = d.get("path") or "/".join(
            str(x) for x in (d.get("account"), d.get("container") or d.get("share"),
                             d.get("prefix")) if x)
        return f"{where} ({self._label})" if self._label else where

    def check(self) -> None:
        """One cheap call proving the datastore exists and the credentials work."""
        self.run(self.backend.check)

    def create(self) -> bool:
        """Create the container, share or directory if missing; False if it existed."""
        return bool(self.run(self.backend.create))

    # -- reading ------------------------------------------------------------------------------
    def walk(self, prefix: str = "") -> Iterator[RemoteFile]:
        """Every file below `prefix` (recursively); just that file if `prefix` names one."""
        pages = self.backend.walk(prefix)

        async def step() -> list[RemoteFile] | None:
            try:
                return await pages.__anext__()
            except StopAsyncIteration:
                return None

        try:
            while (page := self.run(step)) is not None:
                yield from page
        finally:
            # Left early: close the listing now. (Collected on the portal's own thread, it
            # cannot be: trio's finaliser closes it there instead.)
            with contextlib.suppress(RuntimeError):
                self.run(pages.aclose)  # type: ignore[attr-defined]

    def stat(self, path: str) -> RemoteFile | None:
        """The file at `path`, or None."""
        info: RemoteFile | None = self.run(self.backend.file_info, path)
        return info

    def content_md5(self, f: RemoteFile) -> bytes | None:
        """The file's stored MD5 (a local file's is computed); None if it has none."""
        if f.md5_known:
            return f.md5
        md5: bytes | None = self.run(self.backend.content_md5, f.read_path)
        return md5

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (short only at the end)."""

        async def read() -> bytes:
            return await self.backend.read(await self.backend.read_source(path), offset, length)

        data: bytes = self.run(read)
        return data

    def list_dir(self, path: str) -> tuple[list[str], list[str]]:
        """(file names, directory names) directly inside directory `path`."""

        async def collect() -> tuple[list[str], list[str]]:
            files: list[str] = []
            dirs: list[str] = []
            try:
                async for page in self.backend.list(path):
                    for e in page:
                        if e.is_dir:
                            dirs.append(e.name)
                        elif e.symlink is None or await self.backend.file_info(
                                f"{path.strip('/')}/{e.name}".lstrip("/")) is not None:
                            files.append(e.name)
            except NotFound:
                return [], []
            return sorted(files), sorted(dirs)

        listed: tuple[list[str], list[str]] = self.run(collect)
        return listed

    def download(self, f: RemoteFile, out: IO[bytes], *, progress: Progress) -> None:
        """Write the file's bytes to `out` (positioned at 0), pinned to `f.etag`."""
        if f.size <= PART:
            data = self.run(self._read_parts, f, [(0, max(f.size, 1))])[0]
            if len(data) != f.size:
                raise Changed(f"download {f.path}: {len(data)} bytes, {f.size} listed")
            out.write(data)
            progress(len(data))
            return
        window = PART * (CHUNK_CONCURRENCY if f.size >= BIG_FILE else 1)
        for start in range(0, f.size, window):
            spans = [(o, min(PART, f.size - o)) for o in range(start, min(f.size, start + window),
                                                               PART)]
            for data in self.run(self._read_parts, f, spans):
                out.write(data)
                progress(len(data))

    async def _read_parts(self, f: RemoteFile, spans: list[tuple[int, int]]) -> list[bytes]:
        out: list[bytes] = [b""] * len(spans)

        async def one(i: int, offset: int, length: int) -> None:
            data = await self.backend.read(f.read_path, offset, length, f.etag)
            if len(data) != length and not (f.size == 0 and not data):
                raise Changed(f"download {f.path}: shorter than the {f.size} bytes listed")
            out[i] = data

        await _together([functools.partial(one, i, o, n) for i, (o, n) in enumerate(spans)])
        return out

    # -- writing ------------------------------------------------------------------------------
    def _writable(self, what: str) -> None:
        if not self.capabilities.uploads:
            raise ReadOnly(f"{what}: {self.describe()} cannot be written")

    def upload(
        self, local: Path, path: str, *, size: int, md5: bytes, overwrite: bool, progress: Progress
    ) -> None:
        """Store the local file at `path` (parents created as needed); see the module doc."""
        self._writable(f"upload {path}")
        with open(local, "rb") as src:
            if size <= PART:
                data = src.read(size + 1)
                if len(data) != size:
                    raise Changed(f"upload {local}: changed while it was read")
                self.run(self._put_whole, path, data, md5, not overwrite)
                progress(size)
                return
            if os.fstat(src.fileno()).st_size != size:
                raise Changed(f"upload {local}: changed since it was planned")
            upload: Upload = self.run(self._begin, path)
            try:
                workers = CHUNK_CONCURRENCY if size >= BIG_FILE else 1
                parts = self.run(self._put_file, upload, src.fileno(), size, workers, progress)
                self.run(self._commit, upload, parts, size, md5, not overwrite)
            except BaseException:
                self.run(upload.abort)
                raise

    def put_bytes(self, path: str, data: bytes, *, exclusive: bool = False) -> bool:
        """Store a small object; with `exclusive`, False (and nothing written) if it exists."""
        self._writable(f"write {path}")
        try:
            self.run(self._put_whole, path, data, _md5(data), exclusive)
        except AlreadyExists:
            return False
        return True

    async def _begin(self, path: str) -> Upload:
        return await self.backend.begin_upload(path, parents=True)

    async def _put_whole(self, path: str, data: bytes, md5: bytes, exclusive: bool) -> None:
        upload = await self._begin(path)
        try:
            await upload.commit_whole(data, md5=md5, exclusive=exclusive)
        except BaseException:
            with trio.CancelScope(shield=True):
                await upload.abort()
            raise

    @staticmethod
    async def _put_file(upload: Upload, fd: int, size: int, workers: int, progress: Progress
                        ) -> list[Part]:
        """Every `PART` of the file open as `fd`, `workers` at a time, each worker reading its
        next part (in a thread) as soon as it has sent the last: a steady pipeline."""
        offsets = range(0, size, PART)
        parts: list[Part | None] = [None] * len(offsets)
        todo = iter(enumerate(offsets))

        async def worker() -> None:
            for i, offset in todo:  # shared: each worker takes the next part
                length = min(PART, size - offset)
                data = await trio.to_thread.run_sync(os.pread, fd, length, offset)
                if len(data) != length:
                    raise Changed(f"upload {upload.path}: the file changed while read")
                parts[i] = await upload.put(offset, data)
                progress(length)

        await _together([worker] * max(1, min(workers, len(offsets))))
        return [p for p in parts if p is not None]

    @staticmethod
    async def _commit(upload: Upload, parts: list[Part], size: int, md5: bytes,
                      exclusive: bool) -> None:
        await upload.commit(parts, size, keep=False, md5=md5, exclusive=exclusive)

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Release connections (and a version's fetched manifest)."""
        try:
            self.run(self.backend.aclose)
        finally:
            if self._cleanup is not None:
                self._cleanup()
                self._cleanup = None

    def __enter__(self) -> Files:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _together(calls: list[Callable[[], Awaitable[None]]]) -> None:
    """Run `calls` concurrently; a failure leaves as itself (the first one), not as a group,
    for the blocking caller."""
    if len(calls) == 1:
        await calls[0]()
        return
    try:
        async with trio.open_nursery() as nursery:
            for call in calls:
                nursery.start_soon(call)
    except BaseExceptionGroup as group:
        exc: BaseException = group
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        raise exc from None


def open_version(files: Files, manifest: str) -> Files:
    """The files of the version described by the manifest object `manifest` of `files`
    (read-only). Closing it closes `files` too."""
    tmp = tempfile.TemporaryDirectory(prefix="dsmount-manifest-")
    try:
        path = files.run(fetch_manifest, files.backend, manifest, Path(tmp.name) / "manifest")
        backend = ManifestBackend(files.backend, Manifest(path), name=manifest)
    except BaseException:
        tmp.cleanup()
        raise
    root = backend.manifest.meta.get("root", "")
    return Files(backend, via=files._portal, label=f"version {root}", cleanup=tmp.cleanup)
