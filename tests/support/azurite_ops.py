"""Which operations an Azurite served, read from its `--debug` log: a count of requests that
is independent of the code under test (the daemon's own counters could be wrong too).

Azurite logs each request as lines sharing a request id: `Operation=Blob_Download` names the
operation, `Blob=NAME` the blob, `EndMiddleware: End response` marks it answered.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^\S+ (\S+) \w+: (.*)$")
LISTS = frozenset({"Container_ListBlobFlatSegment", "Container_ListBlobHierarchySegment"})
HEADS = frozenset({"Blob_GetProperties"})


@dataclass(frozen=True)
class Op:
    operation: str
    blob: str | None


class OperationLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        """A position: `since(mark)` counts what came after it."""
        self.settle()
        return self.path.stat().st_size if self.path.exists() else 0

    def _parse(self, start: int) -> tuple[list[Op], int]:
        ops: dict[str, str] = {}
        blobs: dict[str, str] = {}
        ended: set[str] = set()
        with open(self.path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
        for line in text.splitlines():
            m = _LINE.match(line)
            if not m:
                continue
            rid, message = m.groups()
            if "Operation=" in message:
                ops[rid] = message.rsplit("Operation=", 1)[1].split()[0]
            elif "Blob=" in message and "Container=" in message:
                blobs[rid] = message.rsplit("Blob=", 1)[1].strip()
            elif "End response" in message:
                ended.add(rid)
        pending = len(set(ops) - ended)
        return [Op(op, blobs.get(rid)) for rid, op in ops.items()], pending

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every request logged so far has been answered (the log is written
        asynchronously)."""
        deadline = time.monotonic() + timeout
        last = -1
        while self.path.exists():
            size = self.path.stat().st_size
            _, pending = self._parse(0)
            # Answered, and nothing more written for a poll interval: the log caught up.
            if (pending == 0 and size == last) or time.monotonic() > deadline:
                return
            last = size
            time.sleep(0.2)

    def since(self, mark: int) -> list[Op]:
        self.settle()
        ops, _ = self._parse(mark)
        return ops
