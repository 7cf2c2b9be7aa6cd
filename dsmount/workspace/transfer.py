"""Upload a directory (or a list of files) to a datastore and download a prefix from one.

Used by `dsmount upload/download`, `dsmount datastore create` (versions), `dsmount run` and the
Python API alike; it works on any `dsmount.storage.files.Files` (local directory, blob container,
file share). Each transfer is planned first, then executed by a pool of worker threads (one
file per worker; big files additionally in parallel chunks, see `dsmount.storage.files`).

Skip-if-same: a destination file counts as the same as its source when the sizes are equal
and the MD5s are equal. Every file we upload gets its Content-MD5 stored (for blob and file
share uploads too), so a second run transfers nothing. A remote file without a stored MD5
(uploaded by another tool as a block list) is compared, on download, through what we recorded
when we downloaded it last: the extended attribute `user.dsmount.source` on the local file
holds "<etag> <size> <mtime_ns>" of the download; while the remote ETag and the local file are
unchanged it is the same. Without a stored MD5 and without that record, it is "different".

Invariants:
- Without `overwrite`, nothing is ever replaced: if any destination file exists with other
  content, the transfer fails before moving a single byte, with an error listing the
  conflicts (`Conflict`). Identical files are skipped, not conflicts.
- Downloads are written to a temp name (".NAME.XXXX.dsmount-part") in the destination
  directory, checked (size, and MD5 when the store has one) and renamed into place: an
  interrupted or failed download never leaves a half-written file under the real name; the
  temp file is removed on any failure, Ctrl-C included.
- Remote names that cannot be a local path (".." components, a name that is both a file and
  a directory) are never written outside the destination: they are skipped and reported.
- Progress (files, bytes, rate, ETA) goes to stderr, only when stdout and stderr are terminals
  (or in a Jupyter kernel) and not `quiet`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dsmount.errors import AlreadyExists, DsmountError, IntegrityError, InvalidRequest, NotFound
from dsmount.shared.fileutil import commit, temp_beside
from dsmount.shared.sizes import format_size
from dsmount.storage.base import RemoteFile
from dsmount.storage.files import Files, file_md5
from dsmount.storage.names import clean_path, join
from dsmount.workspace.progress import ProgressBar, progress_enabled

log = logging.getLogger(__name__)
T = TypeVar("T")

WORKERS = 8  # files in flight; measured on Azurite, more only adds contention
XATTR = "user.dsmount.source"
MAX_LISTED = 10  # conflicts named in an error message


class Conflict(AlreadyExists):
    """Destination files exist with different content and overwrite was not asked for."""

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


class Cancelled(DsmountError):
    """The transfer was stopped (another file failed, or Ctrl-C)."""

    code = "cancelled"


@dataclass
class TransferSummary:
    """What a transfer did."""

    direction: str  # "upload" or "download"
    files_transferred: int = 0
    files_skipped: int = 0  # identical at the destination
    bytes_transferred: int = 0
    bytes_skipped: int = 0
    transferred: list[str] = field(default_factory=list)  # destination-relative paths
    invalid: list[str] = field(default_factory=list)  # remote names that cannot be local paths

    def __str__(self) -> str:
        verb = "uploaded" if self.direction == "upload" else "downloaded"
        text = (
            f"{verb} {self.files_transferred} file(s), {format_size(self.bytes_transferred)}; "
            f"{self.files_skipped} unchanged file(s) skipped"
        )
        if self.invalid:
            text += f"; {len(self.invalid)} remote name(s) not valid locally, skipped"
        return text


def _run_parallel(
    items: Sequence[Any], fn: Callable[[Any], None], workers: int, cancel: threading.Event
) -> None:
    """`fn(item)` for every item in a thread pool. The first failure (or Ctrl-C) sets
    `cancel`, drops what has not started and waits for the rest; then it is raised."""
    if not items:
        return
    with ThreadPoolExecutor(
        max(1, min(workers, len(items))), thread_name_prefix="dsmount-transfer"
    ) as pool:
        futures: list[Future[None]] = [pool.submit(fn, item) for item in items]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # KeyboardInterrupt: workers stop at their next chunk
            cancel.set()
            for f in futures:
                f.cancel()
            raise
        failed = [f for f in done if not f.cancelled() and f.exception() is not None]
        if failed:
            cancel.set()
            for f in futures:
                f.cancel()
    if failed:
        # Prefer the root cause over the Cancelled errors it triggered in other workers.
        errors = [f.exception() for f in futures if not f.cancelled() and f.exception()]
        first = next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
        assert first is not None
        raise first


def _map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _checked_progress(bar: ProgressBar, cancel: threading.Event) -> Callable[[int], None]:
    def progress(n: int) -> None:
        if cancel.is_set():
            raise Cancelled("transfer cancelled")
        bar.add(n)

    return progress


def _transfer_all(
    summary: TransferSummary,
    todo: Sequence[T],
    move: Callable[[T, Callable[[int], None]], tuple[int, str]],
    *,
    size: Callable[[T], int],
    desc: str,
    quiet: bool,
    workers: int,
    failed: str,
) -> None:
    """Move every item of `todo` in parallel under one progress bar, recording each in
    `summary`: `move(item, progress)` does one and returns (bytes moved, name to record).
    `failed` starts the message of an error ("upload to X")."""
    cancel = threading.Event()
    bar = ProgressBar(desc, sum(size(i) for i in todo), len(todo), progress_enabled(quiet))
    progress = _checked_progress(bar, cancel)
    lock = threading.Lock()

    def one(item: T) -> None:
        if cancel.is_set():
            raise Cancelled("transfer cancelled")
        moved, name = move(item, progress)
        bar.file_done()
        with lock:
            summary.files_transferred += 1
            summary.bytes_transferred += moved
            summary.transferred.append(name)

    try:
        _run_parallel(todo, one, workers, cancel)
    except DsmountError as e:
        raise _rewrap(
            e, f"{failed} failed after {summary.files_transferred} of {len(todo)} file(s): {e}"
        ) from None
    finally:
        bar.close()


def _rewrap(e: DsmountError, message: str) -> DsmountError:
    """The same kind of error with more context (the type carries the error code)."""
    try:
        return type(e)(message)
    except TypeError:
        return DsmountError(message)


def _conflict_error(where: str, conflicts: list[str]) -> Conflict:
    shown = ", ".join(conflicts[:MAX_LISTED])
    more = f" and {len(conflicts) - MAX_LISTED} more" if len(conflicts) > MAX_LISTED else ""
    return Conflict(
        f"{len(conflicts)} file(s) already exist in {where} with different content: "
        f"{shown}{more}; nothing was transferred (use --overwrite / overwrite=True to replace)",
        conflicts,
    )


# -- upload -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalFile:
    path: Path  # absolute
    rel: str  # destination path relative to the target
    size: int


def local_tree(src_dir: str | Path) -> list[LocalFile]:
    """Every regular file below `src_dir` (symlinks to files followed, to directories not)."""
    root = Path(src_dir).absolute()
    if not root.exists():
        raise NotFound(f"local path {src_dir} does not exist")
    if not root.is_dir():
        raise InvalidRequest(f"{src_dir} is not a directory")
    out: list[LocalFile] = []

    def fail(e: OSError) -> None:
        raise e

    try:
        for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if p.is_file():
                    rel = p.relative_to(root).as_posix()
                    out.append(LocalFile(p, rel, p.stat().st_size))
    except OSError as e:
        raise InvalidRequest(f"cannot read {e.filename}: {e.strerror}") from None
    return out


def local_files(
    files: Iterable[str | Path], relative_root: str | Path | None = None
) -> list[LocalFile]:
    """The given files, named by their path below `relative_root` (default: their basename)."""
    out: list[LocalFile] = []
    seen: dict[str, Path] = {}
    root = Path(relative_root).absolute() if relative_root is not None else None
    for f in files:
        p = Path(f).absolute()
        if not p.exists():
            raise NotFound(f"local path {f} does not exist")
        if not p.is_file():
            raise InvalidRequest(f"{f} is not a file (upload a directory on its own)")
        if root is not None:
            try:
                rel = p.relative_to(root).as_posix()
            except ValueError:
                raise InvalidRequest(f"{f} is not below relative_root {relative_root}") from None
        else:
            rel = p.name
        if rel in seen and seen[rel] != p:
            raise InvalidRequest(f"two files would be stored as {rel!r}: {seen[rel]} and {p}")
        seen[rel] = p
        out.append(LocalFile(p, rel, p.stat().st_size))
    return out


def upload(
    store: Files,
    sources: Sequence[LocalFile],
    target_path: str = "",
    *,
    overwrite: bool = False,
    quiet: bool = False,
    workers: int = WORKERS,
    desc: str = "upload",
) -> TransferSummary:
    """Upload `sources` below `target_path` of `store`; see the module docstring."""
    target = clean_path(target_path, what="target path")
    summary = TransferSummary("upload")
    existing = {f.path: f for f in store.walk(target)} if sources else {}
    md5s: list[bytes] = _map(lambda s: file_md5(s.path), list(sources), workers)

    def same(src: LocalFile, md5: bytes, remote: RemoteFile) -> bool:
        if remote.size != src.size:
            return False
        return store.content_md5(remote) == md5

    todo: list[tuple[LocalFile, bytes, bool]] = []
    conflicts: list[str] = []
    checks = [(s, m, existing.get(join(target, s.rel))) for s, m in zip(sources, md5s, strict=True)]
    verdicts = _map(lambda c: c[2] is not None and same(c[0], c[1], c[2]), checks, workers)
    for (src, md5, remote), is_same in zip(checks, verdicts, strict=True):
        if remote is None:
            todo.append((src, md5, False))
        elif is_same:
            summary.files_skipped += 1
            summary.bytes_skipped += src.size
        elif overwrite:
            todo.append((src, md5, True))
        else:
            conflicts.append(join(target, src.rel))
    if conflicts:
        raise _conflict_error(store.describe(), conflicts)

    def one(
        item: tuple[LocalFile, bytes, bool], progress: Callable[[int], None]
    ) -> tuple[int, str]:
        src, md5, replace = item
        dest = join(target, src.rel)
        try:
            store.upload(
                src.path, dest, size=src.size, md5=md5, overwrite=replace, progress=progress
            )
        except OSError as e:
            raise InvalidRequest(f"cannot read {src.path}: {e.strerror}") from None
        return src.size, dest

    _transfer_all(
        summary,
        todo,
        one,
        size=lambda item: item[0].size,
        desc=desc,
        quiet=quiet,
        workers=workers,
        failed=f"upload to {store.describe()}",
    )
    return summary


def upload_path(
    store: Files, local: str | Path, target_path: str = "", **kwargs: Any
) -> TransferSummary:
    """A directory's contents, or one file, below `target_path`."""
    p = Path(local)
    if p.is_dir():
        return upload(store, local_tree(p), target_path, **kwargs)
    if not p.exists():
        raise NotFound(f"local path {local} does not exist")
    return upload(store, local_files([p]), target_path, **kwargs)


# -- download ---------------------------------------------------------------------------------
def _recorded(path: Path) -> str | None:
    try:
        return os.getxattr(path, XATTR).decode()
    except (OSError, AttributeError):  # no xattr support here, or never recorded
        return None


def _record(path: Path, f: RemoteFile) -> None:
    if not f.etag:
        return
    st = path.stat()
    with contextlib.suppress(OSError, AttributeError):
        os.setxattr(path, XATTR, f"{f.etag} {st.st_size} {st.st_mtime_ns}".encode())


def _same_local(store: Files, f: RemoteFile, local: Path) -> bool:
    st = local.stat()
    if st.st_size != f.size:
        return False
    remote_md5 = store.content_md5(f)
    if remote_md5 is not None:
        return file_md5(local) == remote_md5
    record = _recorded(local)
    return bool(f.etag) and record == f"{f.etag} {st.st_size} {st.st_mtime_ns}"


def _local_plan(
    files: list[RemoteFile], prefix: str, invalid: list[str]
) -> list[tuple[RemoteFile, str]]:
    """(remote file, local relative path) pairs; unusable names go to `invalid`."""
    if len(files) == 1 and files[0].path == prefix and prefix:
        return [(files[0], prefix.rsplit("/", 1)[-1])]  # the prefix names one file
    pairs: list[tuple[RemoteFile, str]] = []
    for f in files:
        rel = f.path[len(prefix) :].lstrip("/") if prefix else f.path
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") or len(p.encode()) > 255 for p in parts):
            invalid.append(f.path)
            continue
        pairs.append((f, rel))
    # A name that is a file and also a directory (blob "a" and "a/b") cannot exist locally.
    dirs = {"/".join(rel.split("/")[:i]) for _, rel in pairs for i in range(1, rel.count("/") + 1)}
    clash = [f.path for f, rel in pairs if rel in dirs]
    invalid.extend(clash)
    return [(f, rel) for f, rel in pairs if rel not in dirs]


def download(
    store: Files,
    dest: str | Path,
    prefix: str = "",
    *,
    overwrite: bool = False,
    quiet: bool = False,
    workers: int = WORKERS,
    desc: str = "download",
) -> TransferSummary:
    """Download every file below `prefix` of `store` into directory `dest` (created if
    missing); a prefix naming one file downloads it as `dest/<its name>`."""
    prefix = clean_path(prefix, what="prefix")
    root = Path(dest).absolute()
    if root.exists() and not root.is_dir():
        raise InvalidRequest(f"destination {dest} exists and is not a directory")
    summary = TransferSummary("download")
    files = list(store.walk(prefix))
    if not files:
        raise NotFound(f"nothing to download: {store.describe()}/{prefix} holds no files")
    pairs = _local_plan(files, prefix, summary.invalid)
    for name in summary.invalid:
        log.warning("skipping %r: not a valid local path", name)

    def verdict(pair: tuple[RemoteFile, str]) -> str:
        f, rel = pair
        local = root / rel
        # A directory where the file goes, or a file where one of its directories goes.
        parents = [p for p in local.parents if root in p.parents]
        if local.is_dir() or any(p.exists() and not p.is_dir() for p in parents):
            return "blocked"
        if not local.exists():
            return "new"
        return "same" if _same_local(store, f, local) else "differs"

    verdicts = _map(verdict, pairs, workers)
    blocked = [
        str(root / rel) for (_, rel), v in zip(pairs, verdicts, strict=True) if v == "blocked"
    ]
    if blocked:
        raise Conflict(
            f"cannot download over {len(blocked)} local path(s) of another kind "
            f"(a directory where a file goes, or the reverse): "
            f"{', '.join(blocked[:MAX_LISTED])}; nothing was transferred",
            blocked,
        )
    conflicts = [rel for (_, rel), v in zip(pairs, verdicts, strict=True) if v == "differs"]
    if conflicts and not overwrite:
        raise _conflict_error(str(root), conflicts)
    todo = [
        (f, rel) for (f, rel), v in zip(pairs, verdicts, strict=True) if v in ("new", "differs")
    ]
    for (f, _), v in zip(pairs, verdicts, strict=True):
        if v == "same":
            summary.files_skipped += 1
            summary.bytes_skipped += f.size

    umask = _umask()

    def one(item: tuple[RemoteFile, str], progress: Callable[[int], None]) -> tuple[int, str]:
        f, rel = item
        local = root / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        _fetch(store, f, local, progress, replace=overwrite, mode=0o666 & ~umask)
        return f.size, rel

    try:
        _transfer_all(
            summary,
            todo,
            one,
            size=lambda item: item[0].size,
            desc=desc,
            quiet=quiet,
            workers=workers,
            failed=f"download from {store.describe()}",
        )
    except OSError as e:
        raise InvalidRequest(f"download failed: {e.filename or ''}: {e.strerror}") from None
    return summary


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fetch(
    store: Files,
    f: RemoteFile,
    local: Path,
    progress: Callable[[int], None],
    *,
    replace: bool,
    mode: int,
) -> None:
    """Download one file to a temp name next to `local`, verify it, rename it into place."""
    with temp_beside(local, suffix=".dsmount-part", mode="w+b") as (out, tmp):
        with out:
            store.download(f, out, progress=progress)
            out.flush()
            # Not tell(): parallel chunk writers seek, the last one written need not be last.
            size = os.fstat(out.fileno()).st_size
            os.fchmod(out.fileno(), mode)
        if size != f.size:
            raise IntegrityError(f"{f.path}: got {size} bytes, expected {f.size}")
        if f.md5 is not None and file_md5(tmp) != f.md5:
            raise IntegrityError(f"{f.path}: MD5 of the downloaded bytes does not match")
        if f.mtime is not None:
            os.utime(tmp, (f.mtime, f.mtime))
        _record(tmp, f)
        try:
            commit(tmp, local, replace=replace)
        except FileExistsError:
            raise AlreadyExists(f"{local} appeared meanwhile; not overwritten") from None
