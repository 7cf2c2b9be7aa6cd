"""Telling the daemon what will be read next: `hint(paths)` sends an order of files to the
daemon's ordered prefetch (node/hints.py) over the control socket, for the CLI's `dsmount
hint`, the Python API and the DataLoader sampler wrapper (workspace/sampler.py).

A hint belongs to its caller: by default the calling process (its exit ends the hint), or a
`caller` id of its own (then only the daemon's idle timeout ends it, or `pid` names the process
that it lives with). A new hint of the same caller replaces the old one; `hint([])` cancels it.

Invariants:
- One request line stays under the protocol's limit: a long order goes in parts, the first
  replacing the caller's hint and the rest appended to it; if a part is refused the hint is
  cancelled, so a caller never keeps half an order it was told failed.
- Paths are sent as given (absolute, under the mountpoint); the daemon checks every one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from dsmount.control.client import ControlClient
from dsmount.control.protocol import MAX_LINE

PART_BYTES = MAX_LINE // 2  # JSON bytes of paths per request: half the line limit


def _parts(paths: list[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    size = 0
    for p in paths:
        n = len(json.dumps(p)) + 1
        if parts[-1] and size + n > PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(p)
        size += n
    return parts


def hint(paths: Iterable[str | os.PathLike[str]], *, caller: str | None = None,
         pid: int | None = None, idle_timeout: float | None = None,
         socket: str | None = None) -> dict[str, Any]:
    """Tell the daemon the files (absolute paths under its mountpoint) the caller will read,
    in that order; it fetches ahead along them while they are read. Returns at once with what
    the daemon took (`files`, `window_files`, `window_bytes`). Raises the daemon's error
    (NotFound for a path not under an attached datastore, InvalidRequest for one not under
    the mountpoint) and then holds no hint of this caller."""
    ordered = [os.fspath(p) for p in paths]
    client = ControlClient(socket)
    common = {"caller": caller, "pid": pid, "idle_timeout": idle_timeout}
    result: dict[str, Any] = {}
    for n, part in enumerate(_parts(ordered)):
        try:
            result = client.call("hint", paths=part, append=n > 0, **common)
        except Exception:
            if n > 0:
                cancel(caller=caller, socket=socket)
            raise
    return result


def cancel(*, caller: str | None = None, socket: str | None = None) -> None:
    """End the caller's hint (what was fetched ahead and not read becomes the first to go)."""
    ControlClient(socket).call("hint", paths=[], caller=caller)
