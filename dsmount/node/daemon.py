"""The daemon: one trio nursery running the FUSE loop, the control server and the cache.

Start-up order matters for readiness: clean a stale mount, mount, start the FUSE loop, restore
saved datastores, bind the control socket, and only then report READY (sd_notify) or release
a parent waiting in `dsmount daemon` without --foreground. SIGTERM/SIGINT: stop serving,
unmount, remove the socket, exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from dsmount.control.server import ControlServer
from dsmount.errors import DsmountError
from dsmount.node import fuse_requests
from dsmount.node import mountpoint as mp
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.cache.disk import DiskCache
from dsmount.node.config import Config, parse_address
from dsmount.node.fs.core import FileSystem, FsSettings, WriteSettings
from dsmount.node.fuse_adapter import FuseSession
from dsmount.node.fuse_direct import DirectSession
from dsmount.node.hints import Prefetcher, PrefetchSettings
from dsmount.node.malloc import limit_arenas, pin_mmap_threshold
from dsmount.node.memory_limit import choose_budget, effective_limit
from dsmount.node.metrics import MetricsServer
from dsmount.node.ops import NodeOps
from dsmount.node.sdnotify import Notifier, watchdog_loop
from dsmount.node.state import StateStore
from dsmount.node.warm import Warmer
from dsmount.shared.secretref import resolve
from dsmount.shared.sizes import format_size
from dsmount.storage.retry import RetryPolicy

log = logging.getLogger(__name__)


def mount_options(writable: bool = False) -> set[str]:
    options = {
        f"fsname={mp.FSNAME}",
        f"subtype={mp.FSNAME}",
        "allow_other",  # a Jupyter user must read a mount owned by root
        "default_permissions",  # the kernel enforces the modes we report
        "noatime",
    }
    # Writable ([writes] enabled): no "ro", so a datastore attached --read-write takes writes
    # and every other one answers each write with EROFS from the core. Read-only otherwise:
    # measured, the kernel's read path of a writable FUSE mount is a third slower here.
    return options if writable else options | {"ro"}


def _config_spec(entry: dict[str, Any]) -> dict[str, Any]:
    """A [[datastore]] config entry as an attach spec: secret references resolved."""
    spec = dict(entry)
    auth = spec.get("auth")
    if isinstance(auth, dict) and ("env" in auth or "file" in auth):
        auth = dict(auth)
        auth["secret"] = resolve({k: auth.pop(k) for k in ("env", "file") if k in auth})
        spec["auth"] = auth
    return spec


def write_settings(c: Config) -> WriteSettings:
    """The write path's settings; staging below the cache directory, else the state one."""
    w = c.writes
    staging = w.staging_dir or os.path.join(c.cache.disk_dir or c.daemon.state_dir, "staging")
    return WriteSettings(
        part_size=w.part_size, parts_in_flight=w.parts_in_flight,
        max_open_files=w.max_open_files, staging_dir=os.path.abspath(staging),
        staging_budget=w.staging_budget, shadow=w.shadow, dir_rename_limit=w.dir_rename_limit,
        deadline=c.retry.request_deadline,
    )


@dataclass
class Daemon:
    config: Config

    def __post_init__(self) -> None:
        c = self.config
        self.mountpoint = os.path.abspath(c.daemon.mountpoint)
        self.retry = RetryPolicy(
            max_attempts=c.retry.max_attempts,
            attempt_timeout=c.retry.attempt_timeout,
            deadline=c.retry.request_deadline,
        )
        self.memory = choose_budget(c.cache.memory_budget, c.cache.block_size,
                                    effective_limit())
        self.cache = BlockCache(self.memory.budget,
                                max_concurrent_gets=c.cache.max_concurrent_gets)
        self.core = FileSystem(
            self.cache,
            FsSettings(
                uid=c.fs.uid, gid=c.fs.gid, file_mode=c.fs.file_mode, dir_mode=c.fs.dir_mode,
                block_size=c.cache.block_size, readahead_max=c.cache.readahead_max,
                request_deadline=c.retry.request_deadline,
            ),
            invalidate_entry=self._invalidate_entry,
            invalidate_inode=self._invalidate_inode,
            disk=DiskCache(c.cache.disk_dir, c.cache.disk_budget) if c.cache.disk_dir else None,
            writes=write_settings(c),
        )
        self.state = StateStore(c.daemon.state_dir)
        self.warmer = Warmer(self.core, parallel=c.cache.max_concurrent_gets)
        p = c.prefetch
        self.prefetcher = Prefetcher(self.core, PrefetchSettings(
            window_bytes=p.window_bytes, window_files=p.window_files,
            idle_timeout=p.idle_timeout, per_file=c.cache.block_size, dir_order=p.dir_order,
            gets_in_flight=p.gets_in_flight,
        ), mountpoint=self.mountpoint)
        self.core.on_open = self.prefetcher.opened
        self.ops = NodeOps(
            self.core, retry=self.retry, ttl=c.metadata.ttl, negative_ttl=c.metadata.negative_ttl,
            allow_shared=c.daemon.allow_shared, on_change=self._changed,
            status_extra=self._status_extra,
            manifest_dir=Path(c.daemon.state_dir) / "manifests",
            writes_enabled=c.writes.enabled, warmer=self.warmer, prefetcher=self.prefetcher,
        )
        self.server = ControlServer(self.ops.handle, c.daemon.socket, group=c.daemon.socket_group)
        self.metrics: MetricsServer | None = None
        if c.metrics.address:
            host, port = parse_address(c.metrics.address)
            self.metrics = MetricsServer(host, port, self.ops.status)
        self.notifier = Notifier()
        self._mounted = False
        self._restoring = False
        self._nursery: trio.Nursery | None = None
        self._inval_limiter = trio.CapacityLimiter(2)

    # -- hooks ----------------------------------------------------------------------------------
    def _invalidate_entry(self, parent_ino: int, name: str) -> None:
        if self._mounted:
            try:
                self.session.invalidate_entry(parent_ino, name)
            except Exception as e:  # the kernel may already have forgotten it
                log.debug("invalidate %s: %s", name, e)

    def _invalidate_inode(self, ino: int) -> None:
        if self._mounted and self._nursery is not None:
            self._nursery.start_soon(self._invalidate_inode_now, ino)

    async def _invalidate_inode_now(self, ino: int) -> None:
        # From a worker thread: the kernel may wait for a request this loop is serving.
        try:
            await trio.to_thread.run_sync(self.session.invalidate_inode, ino,
                                          limiter=self._inval_limiter)
        except Exception as e:  # the kernel may already have forgotten it
            log.debug("invalidate inode %d: %s", ino, e)

    def _changed(self) -> None:
        if not self._restoring:
            self.state.save(self.ops.specs)
        self.notifier.status(self.summary())

    def _status_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"mountpoint": self.mountpoint,
                                 "socket": self.config.daemon.socket,
                                 "state_dir": os.path.abspath(self.config.daemon.state_dir),
                                 "writes_enabled": self.config.writes.enabled,
                                 "config": self.config.source}
        if self.core.disk is not None:
            extra["disk_cache"] = self.core.disk.as_dict()
        extra["memory"] = self.memory.describe()
        if self.metrics is not None:
            extra["metrics"] = {"address": self.metrics.address, "scrapes": self.metrics.scrapes}
        extra["staging"] = self.core.writes.staging.as_dict()
        extra["fuse_requests"] = dict(fuse_requests.requests)
        extra["fuse"] = self.session.describe() if self._mounted else {}
        extra["prefetch"] = self.prefetcher.status()
        return extra

    def summary(self) -> str:
        n = len(self.core.datastores())
        failed = len(self.ops.failed)
        text = (f"{n} datastore(s) attached, cache {format_size(self.cache.used_bytes)} of "
                f"{format_size(self.cache.budget)}")
        return text + (f", {failed} failed" if failed else "")

    # -- running --------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        mp.prepare(self.mountpoint)
        session = self.session = self._session()
        session.mount(self.mountpoint, mount_options(self.config.writes.enabled))
        self._mounted = True
        log.info("mounted %s", self.mountpoint)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.cache.run)
                await nursery.start(self.warmer.run)
                await nursery.start(self.prefetcher.run)
                await nursery.start(self.core.writes.run)
                nursery.start_soon(self._fuse_main, nursery)
                await self._tune_after_init()
                await self._attach_initial()
                await nursery.start(self.server.serve)
                if self.metrics is not None:
                    await nursery.start(self.metrics.serve)
                nursery.start_soon(self._signals, nursery)
                nursery.start_soon(watchdog_loop, self.notifier)
                self.notifier.ready(self.summary())
                log.info("ready: %s; control socket %s", self.summary(),
                         self.config.daemon.socket)
                task_status.started()
        finally:
            self.notifier.stopping()
            self._mounted = False
            with trio.CancelScope(shield=True):
                for ds in self.core.datastores():
                    try:
                        await ds.backend.aclose()
                    except Exception as e:
                        log.debug("[%s] close: %s", ds.key, e)
            try:
                session.close()
            except Exception as e:
                log.warning("unmount: %s", e)
            if mp.find_mount(self.mountpoint) is not None:
                try:
                    mp.lazy_unmount(self.mountpoint)
                except DsmountError as e:
                    log.error("%s", e)
            log.info("unmounted %s", self.mountpoint)

    def _session(self) -> FuseSession | DirectSession:
        fs = self.config.fs
        if fs.transport == "direct":
            return DirectSession(self.core, passthrough=fs.passthrough)
        return FuseSession(self.core)

    async def _tune_after_init(self) -> None:
        # The kernel sets the mount's read-ahead from the FUSE INIT reply, so tune it only once
        # a stat through the mount proves INIT is done (from a thread: our loop answers it).
        with trio.move_on_after(10):
            await trio.to_thread.run_sync(os.stat, self.mountpoint, abandon_on_cancel=True)
            if not mp.tune_readahead(self.mountpoint):
                log.info("could not raise the kernel read-ahead of %s (not root?)",
                         self.mountpoint)

    async def _fuse_main(self, nursery: trio.Nursery) -> None:
        try:
            await self.session.serve()
        finally:
            # The FUSE session ended (terminated, or unmounted from outside): stop everything.
            nursery.cancel_scope.cancel()

    async def _signals(self, nursery: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: %s", self.summary())
                    continue
                log.info("%s received: shutting down", signal.Signals(signum).name)
                self.notifier.stopping()
                self.session.terminate()
                nursery.cancel_scope.cancel()
                return

    async def _attach_initial(self) -> None:
        self._restoring = True
        try:
            saved = self.state.load()
            saved_keys = {
                f"{s.get('name')}/{s['version']}" if s.get("version") is not None
                else str(s.get("name")) for s in saved
            }
            from_config = []
            for entry in self.config.datastores:
                key = (f"{entry['name']}/{entry['version']}" if entry.get("version") is not None
                       else str(entry["name"]))
                if key in saved_keys:
                    continue
                try:
                    from_config.append(_config_spec(entry))
                except DsmountError as e:
                    log.error("[%s] config entry: %s", key, e)
                    self.ops.failed[key] = {"name": entry["name"], "path": key,
                                                "state": "failed", "error": str(e)}
            await self.ops.restore(saved + from_config)
        finally:
            self._restoring = False
        self.state.save(self.ops.specs)


def run_daemon(config: Config, ready_fd: int | None = None) -> int:
    """Run until signalled. Returns the process exit code."""
    pin_mmap_threshold()  # cache blocks reuse the heap's pages: RSS tracks the budget
    limit_arenas()  # and small extents freed in worker threads are reused, not kept per thread
    # Relative paths in the config were resolved by Daemon; "/" so we never pin a directory
    # (and fusermount never resolves our fsname against the cwd).
    try:
        daemon = Daemon(config)
    except DsmountError as e:  # a refused config (e.g. a budget above the memory limit)
        log.error("%s", e)
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, f"error: {e}\n".encode())
        return 1
    os.chdir("/")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            if ready_fd is not None:
                os.write(ready_fd, b"ok\n")
                os.close(ready_fd)

    try:
        trio.run(main)
    except BaseException as e:
        error = _startup_error(e)
        if error is None:
            raise
        log.error("%s", error)
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, f"error: {error}\n".encode())
        return 1
    return 0


def _startup_error(exc: BaseException) -> str | None:
    """A one-line message for an expected start-up failure (possibly inside an exception
    group), or None for anything else."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            message = _startup_error(inner)
            if message is not None:
                return message
        return None
    if isinstance(exc, DsmountError):
        return str(exc)
    if isinstance(exc, RuntimeError | OSError):  # pyfuse3.init: /dev/fuse missing, mount refused
        return f"cannot mount: {exc}"
    return None


def daemonize_and_run(config: Config, log_file: str | None) -> int:
    """Fork; the child runs the daemon detached, the parent returns once it is ready."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_file \
            else devnull
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        code = run_daemon(config, ready_fd=w)
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode(errors="replace").strip()
    if message == "ok":
        print(f"dsmount daemon running (pid {pid}), serving {config.daemon.mountpoint}")
        return 0
    print(f"dsmount: daemon failed to start: {message or 'see its log'}", file=sys.stderr)
    return 1
