"""Local-disk staging for writes: the files that hold what a writer wrote until it is committed,
under one byte budget, and the journal of temporary objects a commit leaves on storage.

Layout of the staging directory (`[writes] staging_dir`, mode 0700):
- `files/`: one sparse file per write handle that needs one (random writes, updates, and the
  shadow copy a sequential writer keeps so a later seek back can still be served). Every file
  there belongs to a handle of this daemon run: a start empties it (what a killed daemon left
  was never committed, and nothing can resume it).
- `journal/`: one small JSON record per temporary object on a datastore (a file share upload's
  `.dsmount-tmp.*` file), written *before* the object is created and removed once it is renamed
  into place or deleted. A daemon that was killed leaves records behind; `pending` hands them
  to the next attach of the same storage location, which deletes the objects.

Invariants:
- `used <= budget`: bytes are reserved (per part) before they are staged; a reservation that
  does not fit is refused (NoSpace for a writer that needs the disk, a sequential writer just
  drops its shadow copy).
- Blocking file calls run in worker threads (a limiter bounds them); no call here blocks the
  trio loop.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from dsmount.errors import NoSpace, from_oserror

log = logging.getLogger(__name__)


class StagedFile:
    """One sparse staging file. Its share of the byte budget is what its user `account`s for
    (the parts it holds), not its logical size: an update of a big file stages only the parts
    it touches."""

    def __init__(self, staging: Staging, path: Path, fd: int) -> None:
        self.staging = staging
        self.path = path
        self.fd = fd
        self.reserved = 0
        self.closed = False

    def account(self, size: int) -> bool:
        """Reserve `size` more bytes of the budget for this file; False if they do not fit."""
        if not self.staging.reserve(size):
            return False
        self.reserved += size
        return True

    async def pwrite(self, offset: int, data: bytes | memoryview | bytearray) -> None:
        await self.staging.run(os.pwrite, self.fd, data, offset, what="staging write")

    async def pread(self, offset: int, length: int) -> bytes:
        def read() -> bytes:
            buf = bytearray()
            while len(buf) < length:
                got = os.pread(self.fd, length - len(buf), offset + len(buf))
                if not got:
                    break
                buf += got
            # A hole past the last byte written reads as zeros, as the logical size says.
            return bytes(buf) + bytes(length - len(buf))

        data: bytes = await self.staging.run(read, what="staging read")
        return data

    async def truncate(self, size: int) -> None:
        await self.staging.run(os.ftruncate, self.fd, size, what="staging truncate")

    def remove(self) -> None:
        """Close and delete it, giving its reservation back (non-blocking enough to call from
        any handler: one unlink)."""
        if self.closed:
            return
        self.closed = True
        try:
            os.close(self.fd)
            self.path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("staging file %s: %s", self.path, e)
        self.staging.release(self.reserved)
        self.reserved = 0


@dataclass(frozen=True)
class JournalRecord:
    id: str
    location: str  # the datastore's storage location (stable across restarts and names)
    path: str  # the temporary object's path inside the datastore


class Staging:
    def __init__(self, directory: str | Path, budget: int) -> None:
        self.dir = Path(directory) if directory else Path("")
        self.budget = budget
        self.used = 0
        self.peak = 0
        self._limiter = trio.CapacityLimiter(4)
        self._started = False

    @property
    def enabled(self) -> bool:
        return bool(str(self.dir)) and str(self.dir) != "."

    def start(self) -> None:
        """Create the directories and drop what a previous run left in `files/`."""
        if self._started:
            return
        if not self.enabled:
            raise NoSpace("no write staging directory is configured ([writes] staging_dir)")
        files = self.dir / "files"
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.dir, 0o700)
            if files.exists():
                shutil.rmtree(files)
            files.mkdir(mode=0o700)
            (self.dir / "journal").mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise from_oserror(e, f"write staging directory {self.dir}") from None
        self._started = True

    async def run(self, fn: Any, *args: Any, what: str) -> Any:
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except OSError as e:
            raise from_oserror(e, what) from None

    # -- the byte budget ------------------------------------------------------------------------
    def reserve(self, size: int) -> bool:
        if self.used + size > self.budget:
            return False
        self.used += size
        self.peak = max(self.peak, self.used)
        return True

    def release(self, size: int) -> None:
        self.used = max(0, self.used - size)

    # -- files ----------------------------------------------------------------------------------
    async def create(self) -> StagedFile:
        self.start()
        path = self.dir / "files" / uuid.uuid4().hex
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = await self.run(os.open, path, flags, 0o600, what="staging file")
        return StagedFile(self, path, fd)

    # -- the journal of temporary objects ---------------------------------------------------------
    async def record(self, location: str, path: str) -> str | None:
        """Journal a temporary object before it is created; the record's id (None without a
        staging directory: core tests only, the daemon always has one)."""
        if not self.enabled:
            return None
        self.start()
        rid = uuid.uuid4().hex
        body = json.dumps({"location": location, "path": path}).encode()

        def write() -> None:
            target = self.dir / "journal" / f"{rid}.json"
            tmp = target.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)

        await self.run(write, what="write journal")
        return rid

    async def forget(self, rid: str) -> None:
        path = self.dir / "journal" / f"{rid}.json"
        await self.run(lambda: path.unlink(missing_ok=True), what="write journal")

    async def pending(self, location: str) -> list[JournalRecord]:
        """Records a previous run left for `location`."""
        if not self.enabled:
            return []
        self.start()

        def scan() -> list[JournalRecord]:
            out = []
            for p in sorted((self.dir / "journal").glob("*.json")):
                try:
                    data = json.loads(p.read_text())
                except (OSError, ValueError):
                    continue
                if data.get("location") == location and isinstance(data.get("path"), str):
                    out.append(JournalRecord(p.stem, location, data["path"]))
            return out

        records: list[JournalRecord] = await self.run(scan, what="read journal")
        return records

    def as_dict(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "budget_bytes": self.budget, "used_bytes": self.used,
                "peak_bytes": self.peak}
