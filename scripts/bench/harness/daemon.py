"""A dsmount daemon for a benchmark: started as a user starts it (tests/support/daemon.py's
launcher: `python -m dsmount daemon --foreground`, its own socket, state and config), driven
through the real CLI, measured from /proc, and released on any exit.

Invariants:
- Registered for cleanup (`on_exit`) before it starts: a daemon that fails half-way through
  its start is still stopped and its mount removed.
- Secrets reach the daemon and the CLI only through the environment (`env`), never `argv`.
- `fuse_requests()` is None when the daemon does not report FUSE requests by kind (an older
  daemon): the rows that use it then say "n/a" instead of failing.
"""

from __future__ import annotations

import collections
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scripts.bench.harness import meters
from scripts.bench.harness.cleanup import on_exit
from tests.support.daemon import DsmountDaemon

MOUNT_WAIT_S = 60.0


class BenchDaemon:
    def __init__(self, workdir: Path, *, config_text: str = "", cache_budget: str | None = None,
                 env: Mapping[str, str] | None = None, extra_args: tuple[str, ...] = ()) -> None:
        args = [*extra_args, *(["--cache-budget", cache_budget] if cache_budget else [])]
        self.env = dict(env or {})
        self.proc = DsmountDaemon(workdir, extra_args=args, env=self.env,
                                  config_text=config_text or "# defaults and flags only\n")
        self.mountpoint = self.proc.mountpoint
        self.stop = on_exit(lambda: self.proc.cleanup(remove_workdir=False))

    def start(self) -> BenchDaemon:
        self.proc.start(timeout=MOUNT_WAIT_S)
        return self

    @property
    def pid(self) -> int:
        pid = self.proc.pid
        if pid is None:
            raise RuntimeError("the daemon is not running")
        return pid

    def cli(self, *args: str, timeout: float = 60.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.proc.cli(*args, env=self.env, timeout=timeout, check=check)

    def attach(self, rel: str, *args: str, timeout: float = 120.0) -> Path:
        """`dsmount attach ARGS...`, then wait until MOUNTPOINT/REL is a directory."""
        self.cli("attach", *args, timeout=timeout)
        path = self.mountpoint / rel
        deadline = time.monotonic() + timeout
        while not path.is_dir():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} did not appear after attach")
            time.sleep(0.05)
        return path

    def call(self, op: str, timeout: float = 30.0, **args: Any) -> Any:
        return self.proc.call(op, timeout=timeout, **args)

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def counter(self, key: str) -> int:
        """`key` (e.g. backend_requests) summed over the attached datastores."""
        return sum(int(d.get(key) or 0) for d in self.status()["datastores"])

    def fuse_requests(self) -> collections.Counter[str] | None:
        """FUSE requests answered so far, by kind; None if the daemon does not count them."""
        counts = self.status().get("fuse_requests")
        return None if counts is None else collections.Counter(counts)

    def cpu_seconds(self) -> float:
        """CPU seconds of the daemon so far: every thread, every process it started."""
        return meters.cpu_seconds([self.pid])

    def log_tail(self, n: int = 20) -> str:
        return self.proc.log_tail(n)


def blob_attach_args(name: str, container: str, endpoint: str | None, env_var: str,
                     *more: str) -> list[str]:
    """`dsmount attach` arguments for a blob container whose connection string is in
    `env_var`."""
    args = [name, "--blob", "--container", container, "--connection-string-env", env_var]
    return [*args, *(["--endpoint", endpoint] if endpoint else []), *more]
