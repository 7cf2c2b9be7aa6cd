"""Run a real `dsmount daemon --foreground` for mount tests, and always clean up after it.

`DsmountDaemon` starts the daemon exactly as a user would (`python -m dsmount --socket S daemon
--foreground --mountpoint M --state-dir D --config F`), drives it through the real CLI (`cli`)
or the control client (`call`), and can stop, kill -9 and restart it.

Invariants:
- Everything lives in one short working directory under /tmp (a Unix socket path must stay
  under 108 bytes, pytest's tmp_path may not). It is mode 0755 so an unprivileged user
  (setpriv) can reach the mountpoint and the socket; the socket's own 0660 still guards it.
- The daemon always gets a config file (an empty one unless the test gives its own), and
  DSMOUNT_CONFIG / DSMOUNT_SOCKET are removed from its environment: a developer's
  /etc/dsmount/dsmount.toml or shell never changes what a test sees.
- `start()` returns only when `ping` answers AND the mountpoint is a `fuse.dsmount` mount in
  /proc/self/mountinfo; if the process exits or the deadline passes it raises with the log.
- The daemon runs in its own process group. `cleanup()` (called by every fixture, whatever
  happened) sends SIGTERM, waits, SIGKILLs the group if needed, and lazily unmounts
  (`fusermount3 -u -z`) a mount left behind, then removes the working directory. The leader is
  reaped only after the group was signalled, so its pid (the group id) is never reused
  meanwhile.
- Mountinfo is read, never stat(): a stat on a dead FUSE mount fails and on a hung one blocks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from dsmount.control.client import ControlClient

REPO_ROOT = Path(__file__).resolve().parents[2]
FSTYPE = "fuse.dsmount"
# The FUSE transport every test daemon runs on ("pyfuse3", "direct"); unset: the default.
TRANSPORT = os.environ.get("DSMOUNT_TEST_TRANSPORT", "")
NOBODY = (65534, 65534)  # uid, gid of the unprivileged user CLI calls can run as


class DaemonStartError(RuntimeError):
    """The daemon exited, or did not answer ping with its mount in place, before the deadline."""


def fuse_required() -> bool:
    """True when missing FUSE support must fail the mount tests instead of skipping them."""
    return bool(os.environ.get("CI")) or bool(os.environ.get("DSMOUNT_REQUIRE_FUSE"))


def require_fuse() -> None:
    """Skip the current test (fail it in CI / with DSMOUNT_REQUIRE_FUSE) without real FUSE."""
    missing = []
    if not os.path.exists("/dev/fuse"):
        missing.append("/dev/fuse")
    if shutil.which("fusermount3") is None:
        missing.append("fusermount3 (apt-get install fuse3)")
    if os.geteuid() != 0:
        missing.append("root (the daemon mounts with allow_other; tests switch users)")
    if missing:
        message = "real-mount tests need " + ", ".join(missing)
        if fuse_required():
            pytest.fail(message)
        pytest.skip(message)


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02
) -> Any:
    """Poll `predicate` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def _unescape(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_entries(mountpoint: str | Path) -> list[dict[str, str]]:
    """Every mount at `mountpoint` in /proc/self/mountinfo, bottom first.

    Keys: mount_id, fstype, source (the fsname), mount_options, super_options.
    """
    target = os.path.abspath(mountpoint)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            parts, rparts = left.split(), right.split()
            if len(parts) >= 6 and _unescape(parts[4]) == target and len(rparts) >= 3:
                found.append(
                    {
                        "mount_id": parts[0],
                        "fstype": rparts[0],
                        "source": _unescape(rparts[1]),
                        "mount_options": parts[5],
                        "super_options": rparts[2],
                    }
                )
    return found


def mount_entry(mountpoint: str | Path) -> dict[str, str] | None:
    """The topmost mount at `mountpoint` (see `mount_entries`), or None."""
    entries = mount_entries(mountpoint)
    return entries[-1] if entries else None


def lazy_unmount(mountpoint: str | Path) -> None:
    subprocess.run(
        ["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True, timeout=30, check=False
    )


def as_user(uid: int, gid: int) -> list[str]:
    """A command prefix running the rest as `uid`:`gid` with no supplementary groups."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]


# dsmount's own variables, and Azure's (the CLI reads them when no auth flag is given): a
# developer's shell never changes what a test sees.
_HOST_ONLY = ("DSMOUNT_SOCKET", "DSMOUNT_CONFIG", "AZURE_STORAGE_CONNECTION_STRING",
              "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
              "AZURE_STORAGE_AUTH_MODE")


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for dsmount processes: ours minus dsmount's and Azure's own variables,
    plus `env`."""
    out = {k: v for k, v in os.environ.items() if k not in _HOST_ONLY}
    out.update(env or {})
    return out


class DsmountDaemon:
    """One `dsmount daemon --foreground` process; see the module docstring."""

    START_TIMEOUT = 20.0
    STOP_TIMEOUT = 15.0

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        config: str | Path | None = None,
        config_text: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        mountpoint: str | Path | None = None,
        socket: str | Path | None = None,
    ) -> None:
        self._owns_workdir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="dsm-", dir="/tmp")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        # A mountpoint given by the caller (e.g. another daemon's) is never unmounted by us.
        self._owns_mountpoint = mountpoint is None
        self.mountpoint = Path(mountpoint) if mountpoint else self.workdir / "mnt"
        self.socket = Path(socket) if socket else self.workdir / "control.sock"
        self.state_dir = self.workdir / "state"
        self.log_path = self.workdir / "daemon.log"
        if config is None:
            config = self.workdir / "dsmount.toml"
            Path(config).write_text(config_text or "")
        elif config_text is not None:
            raise ValueError("give config or config_text, not both")
        self.config = Path(config)
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.starts = 0
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- inspection -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "dsmount",
            "--socket",
            str(self.socket),
            "daemon",
            "--foreground",
            "--mountpoint",
            str(self.mountpoint),
            "--state-dir",
            str(self.state_dir),
            "--config",
            str(self.config),
            # The whole suite can run on either FUSE transport (scripts/test.sh --transport).
            *(["--transport", TRANSPORT] if TRANSPORT else []),
            *self.extra_args,
        ]

    def is_mounted(self) -> bool:
        entry = mount_entry(self.mountpoint)
        return entry is not None and entry["fstype"] == FSTYPE

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def exit_status(self) -> int | None:
        """The exit status if the daemon has exited, else None, without reaping it."""
        proc = self._proc
        if proc is None:
            return self.returncode
        if proc.returncode is not None:
            return proc.returncode
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return proc.poll() or 0
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def alive(self) -> bool:
        return self._proc is not None and self.exit_status() is None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Start the daemon and wait until it answers ping with its mount in place.

        `wait=False` only spawns it: for daemons expected to refuse to start (`wait_exit`).
        """
        if self.alive():
            raise RuntimeError("the daemon is already running")
        self._reap()
        self.starts += 1
        self.returncode = None
        with open(self.log_path, "ab") as log:
            log.write(f"=== start {self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=clean_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait:
            return
        try:
            self._wait_ready(timeout or self.START_TIMEOUT)
        except BaseException:
            self.cleanup(remove_workdir=False)
            raise

    def _ping(self) -> bool:
        try:
            ControlClient(str(self.socket), timeout=2.0).call("ping")
        except Exception:
            return False
        return True

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.exit_status()
            if status is not None:
                raise DaemonStartError(
                    f"dsmount daemon exited with status {status} while starting:\n{self.log_tail()}"
                )
            if self.socket.exists() and self._ping() and self.is_mounted():
                return
            time.sleep(0.02)
        raise DaemonStartError(
            f"dsmount daemon not ready within {timeout:.0f}s (ping + mount "
            f"at {self.mountpoint}):\n{self.log_tail()}"
        )

    def wait_exit(self, timeout: float) -> int | None:
        """Wait up to `timeout` for the daemon to exit; its status, or None if still running."""
        deadline = time.monotonic() + timeout
        while self.exit_status() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.exit_status()

    def _signal_group(self, signum: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signum)

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.returncode = self._proc.wait(timeout=5)
            self._proc = None

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the daemon and wait for it; returns its exit status (None if it hung and had
        to be killed: that is a bug the caller should see)."""
        if self._proc is None:
            return self.returncode
        if self.exit_status() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGTERM)
        status = self.wait_exit(timeout or self.STOP_TIMEOUT)
        self._signal_group(signal.SIGKILL)  # whatever is left of the group (or a hung leader)
        self._reap()
        return status

    def kill9(self) -> None:
        """SIGKILL the daemon's whole group, leaving its mount (now dead) and socket behind."""
        if self._proc is None:
            raise RuntimeError("the daemon is not running")
        self._signal_group(signal.SIGKILL)
        self.wait_exit(10)
        self._reap()

    def restart(self, timeout: float | None = None) -> None:
        """Stop (if running) and start again with the same mountpoint, socket and state."""
        if self.alive():
            self.stop()
        self._reap()
        self.start(timeout)

    def cleanup(self, remove_workdir: bool = True) -> None:
        """Release everything, whatever state the daemon is in. Safe to call twice."""
        try:
            self.stop(timeout=10)
        finally:
            for _ in range(5):  # a killed daemon's mount may lie under a newer one
                if not self._owns_mountpoint or mount_entry(self.mountpoint) is None:
                    break
                lazy_unmount(self.mountpoint)
            if remove_workdir:
                self.remove_workdir()

    def remove_workdir(self) -> None:
        """Delete the working directory if we created it and nothing is mounted in it."""
        mounted = self._owns_mountpoint and mount_entry(self.mountpoint) is not None
        if self._owns_workdir and not self.alive() and not mounted:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- talking to it --------------------------------------------------------------------------
    def cli(
        self,
        *args: str,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        user: tuple[int, int] | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI (`python -m dsmount --socket S ARGS`), optionally as another user."""
        cmd = [sys.executable, "-m", "dsmount", "--socket", str(self.socket), *args]
        if user is not None:
            cmd = as_user(*user) + cmd
        result = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"dsmount {' '.join(args)} failed ({result.returncode}):\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}\ndaemon log:\n"
                f"{self.log_tail()}"
            )
        return result

    def call(self, op: str, timeout: float = 30.0, **args: Any) -> Any:
        """One control request through `dsmount.control.client.ControlClient`."""
        return ControlClient(str(self.socket), timeout=timeout).call(op, **args)

    def attach_local(self, name: str, path: str | Path, **args: Any) -> Path:
        """Attach a local directory; returns its path under the mountpoint."""
        result = self.call("attach", name=name, kind="local", path=str(path), **args)
        return self.mountpoint / result["path"]


@contextlib.contextmanager
def running_daemon(**kwargs: Any) -> Iterator[DsmountDaemon]:
    """A started DsmountDaemon, cleaned up on exit whatever happened."""
    daemon = DsmountDaemon(**kwargs)
    try:
        daemon.start()
        yield daemon
    finally:
        try:
            daemon.cleanup(remove_workdir=False)
        finally:
            # Shown by pytest only when the test failed: the daemon's side of the story.
            print(f"--- dsmount daemon log ({daemon.log_path}) ---\n{daemon.log_tail(200)}")
            daemon.remove_workdir()
