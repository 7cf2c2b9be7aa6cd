"""`dsmount warm`: prefetch a datastore, a version or some paths of it into the cache, in the
background, as jobs the CLI starts, polls and cancels over the control socket.

How a job warms: a walker lists the paths (using fresh cached listings, and leaving the
listings it made in the metadata cache, so later lookups through the mount need no backend),
and `parallel` workers read each file front to back through the very read path FUSE reads
take, so the blocks land under the keys a reader will look up, in the disk cache too when one
is configured. Both go through the core's warming facade (`FileSystem.warming`,
node/fs/warming.py): warming does not show as FUSE reads or stalls, and the job knows how many
bytes it downloaded (what was cached already is skipped at no cost: a cached block is never
fetched again).

Where the bytes go: the disk cache when there is one (up to its budget), else the memory
cache while they fit (three quarters of its budget: readers need room too); files past that
are not warmed, and the job says so.

Invariants:
- Cancelling (Ctrl-C in the CLI, `warm_cancel`) leaves nothing half-done: the cache only ever
  holds whole blocks, and fetches already in flight finish in the cache's own nursery.
- A job whose progress nobody polled for `abandon_after` seconds (the CLI that started it was
  killed) is cancelled.
- One file that cannot be read is reported and skipped; `MAX_CONSECUTIVE_FAILURES` in a row
  (the backend is down) fail the job instead of waiting a deadline per file.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from dsmount.errors import Busy, DsmountError, InvalidRequest, NotFound
from dsmount.node.fs.core import FileSystem
from dsmount.node.fs.datastore import Datastore
from dsmount.shared.sizes import format_size
from dsmount.storage.base import Entry
from dsmount.storage.names import clean_path, join

log = logging.getLogger(__name__)

MEMORY_SHARE = 0.75  # of the memory budget a warm may fill
DISK_SHARE = 0.95  # of the disk budget (block files carry a small header)
MAX_CONSECUTIVE_FAILURES = 8
MAX_RUNNING = 8  # jobs at once: each may have `parallel` reads in flight
WALK_AHEAD = 20_000  # files listed but not yet warmed, at most
MAX_ERRORS_KEPT = 5
_ids = itertools.count(1)


@dataclass
class WarmProgress:
    files_total: int = 0  # planned: found and fitting
    files_done: int = 0
    files_cached: int = 0  # done without a byte downloaded: already cached
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_fetched: int = 0  # downloaded from the backend by this job
    files_not_fitting: int = 0
    bytes_not_fitting: int = 0
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)
    listing: bool = True  # still walking: totals may grow


@dataclass(eq=False)
class WarmJob:
    id: str
    datastore: Datastore
    paths: list[str]
    target: str  # "disk" or "memory"
    capacity: int  # bytes the target may take from this job
    parallel: int
    started_by: int = 0  # uid of the peer that started it (who may see and cancel it)
    progress: WarmProgress = field(default_factory=WarmProgress)
    state: str = "running"  # running, done, cancelled, failed
    message: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    last_poll: float = field(default_factory=time.monotonic)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    planned: int = 0
    consecutive_failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        p = self.progress
        elapsed = (self.finished or time.monotonic()) - self.started
        rate = p.bytes_done / elapsed if elapsed > 0 else 0.0
        left = p.bytes_total - p.bytes_done
        eta = None if p.listing or rate <= 0 else round(left / rate, 1)
        out: dict[str, Any] = {
            "job": self.id, "datastore": self.datastore.key, "paths": self.paths[:20],
            "paths_count": len(self.paths),
            "state": self.state, "target": self.target, "capacity_bytes": self.capacity,
            "parallel": self.parallel, "elapsed": round(elapsed, 3),
            "rate_bytes_per_s": round(rate, 1), "eta_s": eta,
            "files_total": p.files_total, "files_done": p.files_done,
            "files_cached": p.files_cached, "bytes_total": p.bytes_total,
            "bytes_done": p.bytes_done, "bytes_fetched": p.bytes_fetched,
            "files_not_fitting": p.files_not_fitting, "bytes_not_fitting": p.bytes_not_fitting,
            "errors": p.errors, "error_messages": list(p.error_messages),
            "listing": p.listing, "message": self.message,
        }
        return out


class Warmer:
    """Runs warm jobs in its own nursery (start it with `nursery.start(warmer.run)`)."""

    def __init__(self, core: FileSystem, *, parallel: int = 16, abandon_after: float = 30.0,
                 keep: int = 16) -> None:
        self.fs = core.warming
        self.parallel = parallel
        self.abandon_after = abandon_after
        self.keep = keep
        self.jobs: OrderedDict[str, WarmJob] = OrderedDict()
        self.bytes_fetched = 0  # by every job, for the metrics
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._reap_abandoned)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # -- the control operations ------------------------------------------------------------------
    def start(self, ds: Datastore, paths: list[str], parallel: int | None = None,
              *, started_by: int = 0) -> WarmJob:
        if self._nursery is None:
            raise DsmountError("warming is not available (the daemon is stopping)")
        running = sum(1 for j in self.jobs.values() if j.state == "running")
        if running >= MAX_RUNNING:
            raise Busy(f"{running} warm jobs are running; wait for one or cancel it")
        cleaned: list[str] = []
        for path in sorted({clean_path(p, what="path") for p in paths}) or [""]:
            # A path inside another one given is warmed with it (sorted: parents come first).
            if not any(q == "" or path.startswith(q + "/") for q in cleaned):
                cleaned.append(path)
        target, budget = self.fs.room()
        capacity = int(budget * (DISK_SHARE if target == "disk" else MEMORY_SHARE))
        n = parallel or self.parallel
        if not 1 <= n <= 256:
            raise InvalidRequest("parallel must be between 1 and 256")
        job = WarmJob(f"w{next(_ids)}", ds, cleaned, target, capacity, n, started_by)
        self.jobs[job.id] = job
        while len(self.jobs) > self.keep:  # forget the oldest finished jobs
            oldest = next((j for j in self.jobs.values() if j.state != "running"), None)
            if oldest is None:
                break
            del self.jobs[oldest.id]
        self._nursery.start_soon(self._run_job, job)
        shown = ", ".join(repr(p) for p in cleaned[:5]) + (", ..." if len(cleaned) > 5 else "")
        log.info("[%s] warm %s started (%s; into %s)", ds.key, job.id, shown, target)
        return job

    def job(self, job_id: str) -> WarmJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no warm job {job_id!r}")
        job.last_poll = time.monotonic()
        return job

    def cancel(self, job_id: str) -> WarmJob:
        job = self.job(job_id)
        if job.state == "running":
            job.scope.cancel()
        return job

    def summary(self, visible: Callable[[WarmJob], bool] = lambda job: True) -> dict[str, Any]:
        """Jobs running and bytes fetched (all jobs), and the `visible` jobs themselves."""
        running = sum(1 for j in self.jobs.values() if j.state == "running")
        return {"running": running, "bytes_fetched": self.bytes_fetched,
                "jobs": [j.as_dict() for j in self.jobs.values() if visible(j)]}

    # -- running a job ---------------------------------------------------------------------------
    async def _reap_abandoned(self) -> None:
        while True:
            await trio.sleep(min(5.0, self.abandon_after / 2))
            now = time.monotonic()
            for job in list(self.jobs.values()):
                if job.state == "running" and now - job.last_poll > self.abandon_after:
                    job.message = "cancelled: nobody asked for its progress (client gone)"
                    job.scope.cancel()

    async def _run_job(self, job: WarmJob) -> None:
        ds = job.datastore
        with job.scope:
            try:
                async with trio.open_nursery() as nursery:
                    # The walker may run this far ahead (a few MB), so the totals - and the
                    # progress bar's ETA - are known early; a huge tree still streams.
                    send, receive = trio.open_memory_channel[tuple[str, Entry]](WALK_AHEAD)
                    nursery.start_soon(self._walk, job, send)
                    async with receive:
                        for _ in range(job.parallel):
                            nursery.start_soon(self._worker, job, receive.clone())
                await self.fs.flushed()
                job.state = "done"
                job.message = job.message or self._fit_note(job)
            except* DsmountError as group:
                job.state = "failed"
                job.message = str(_first(group))
            except* Exception as group:  # a bug must fail the job, never the daemon
                log.error("[%s] warm %s failed", ds.key, job.id, exc_info=_first(group))
                job.state = "failed"
                job.message = f"internal error: {type(_first(group)).__name__}"
        if job.scope.cancelled_caught:
            job.state = "cancelled"
            job.message = job.message or "cancelled"
        job.finished = time.monotonic()
        p = job.progress
        log.info("[%s] warm %s %s: %d/%d files, %s fetched%s", ds.key, job.id, job.state,
                 p.files_done, p.files_total, format_size(p.bytes_fetched),
                 f" ({job.message})" if job.message else "")

    @staticmethod
    def _fit_note(job: WarmJob) -> str | None:
        p = job.progress
        if not p.files_not_fitting:
            return None
        where = ("the disk cache budget" if job.target == "disk" else
                 "three quarters of the memory budget (set [cache] disk_dir to warm more)")
        return (f"{p.files_not_fitting} file(s), {format_size(p.bytes_not_fitting)}, not "
                f"warmed: they do not fit {where}, {format_size(job.capacity)}")

    async def _walk(self, job: WarmJob, send: trio.MemorySendChannel[tuple[str, Entry]]) -> None:
        ds = job.datastore
        async with send:
            for path in job.paths:
                entry = (Entry("", True) if not path
                         else await self.fs.stat(ds, path))
                if not entry.is_dir:
                    await self._plan(job, path, entry, send)
                    continue
                todo = [path]
                while todo:
                    directory = todo.pop()
                    entries = await self.fs.listing(ds, directory)
                    for name in sorted(entries, reverse=True):
                        child = entries[name]
                        if child.is_dir:
                            todo.append(join(directory, name))
                    for name in sorted(entries):
                        if not entries[name].is_dir:
                            await self._plan(job, join(directory, name), entries[name], send)
            job.progress.listing = False

    async def _plan(self, job: WarmJob, path: str, entry: Entry,
                    send: trio.MemorySendChannel[tuple[str, Entry]]) -> None:
        p = job.progress
        if job.planned + entry.size > job.capacity:
            p.files_not_fitting += 1
            p.bytes_not_fitting += entry.size
            return
        job.planned += entry.size
        p.files_total += 1
        p.bytes_total += entry.size
        await send.send((path, entry))

    async def _worker(self, job: WarmJob,
                      receive: trio.MemoryReceiveChannel[tuple[str, Entry]]) -> None:
        async with receive:
            async for path, entry in receive:
                if job.datastore.detached:
                    raise NotFound(f"datastore {job.datastore.key!r} was detached")
                try:
                    fetched = await self._warm_file(job, path, entry)
                except DsmountError as e:
                    self._failed(job, path, e)
                    continue
                job.consecutive_failures = 0
                p = job.progress
                p.files_done += 1
                p.bytes_fetched += fetched
                self.bytes_fetched += fetched
                if fetched == 0:
                    p.files_cached += 1

    def _failed(self, job: WarmJob, path: str, error: DsmountError) -> None:
        p = job.progress
        p.errors += 1
        if len(p.error_messages) < MAX_ERRORS_KEPT:
            p.error_messages.append(f"{path}: {error}")
        job.consecutive_failures += 1
        if job.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            raise DsmountError(f"giving up after {job.consecutive_failures} files in a row "
                               f"could not be read; last: {path}: {error}")

    async def _warm_file(self, job: WarmJob, path: str, entry: Entry) -> int:
        """Read one file through the read path; the bytes this downloaded."""
        done = 0

        def progress(n: int) -> None:
            nonlocal done
            done += n
            job.progress.bytes_done += n

        try:
            return await self.fs.read_file(job.datastore, path, entry, progress)
        except BaseException:
            job.progress.bytes_done -= done  # a file counts once it is whole
            raise


def warm_capacity_note(job: WarmJob) -> str:
    """Where a job's bytes go, for the CLI's first line."""
    if job.target == "disk":
        return f"into the disk cache (up to {format_size(job.capacity)})"
    return (f"into memory (no disk cache configured; up to {format_size(job.capacity)}, "
            "and later reads of other data may evict it)")


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf exception of a (nested) exception group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
