"""Local-file helpers for writing a file so that no reader ever sees half of it.

The one pattern: write to a temp file in the destination's own directory (same file system, so
the rename is atomic), then rename it over the destination - or hard-link it there when an
existing name must not be clobbered (link(2) fails if the name appeared meanwhile). The temp
file is removed on every way out, also when it was never renamed.

Used by the registry and state files, local-store uploads and downloads
(`dsmount.workspace.transfer`); the disk block cache has its own batched writer.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def temp_beside(
    path: Path, *, prefix: str | None = None, suffix: str = "", mode: str = "wb"
) -> Iterator[tuple[IO[bytes], Path]]:
    """(open file, its path): a new temp file next to `path` (named `.NAME.XXXX` + `suffix`
    unless `prefix` is given). The caller may close the file early; on exit it is closed and,
    unless it was renamed away, removed."""
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}." if prefix is None else prefix, suffix=suffix
    )
    tmp = Path(name)
    try:
        with os.fdopen(fd, mode) as f:
            yield f, tmp  # type: ignore[misc]
    finally:
        # After a successful rename the name is gone; a failed cleanup must not hide the
        # caller's own error.
        with contextlib.suppress(OSError):
            tmp.unlink()


def commit(tmp: Path, dest: Path, *, replace: bool) -> None:
    """Move the finished temp file `tmp` to `dest`: renamed over it with `replace`, else
    hard-linked (FileExistsError if `dest` appeared meanwhile: never clobbers)."""
    if replace:
        os.replace(tmp, dest)
    else:
        os.link(tmp, dest)


def atomic_write(
    path: Path,
    data: bytes | Iterable[bytes],
    mode: int,
    *,
    durable: bool = True,
    prefix: str | None = None,
) -> None:
    """Replace `path` with `data` (bytes or chunks) atomically, with permissions `mode`.

    `durable`: fsync before the rename, so a crash leaves the old or the new file, never an
    empty one (the registry and state files want it; a cache can do without).
    """
    with temp_beside(path, prefix=prefix) as (f, tmp):
        os.fchmod(f.fileno(), mode)
        for chunk in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
            f.write(chunk)
        f.flush()
        if durable:
            os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
