"""Start and stop a real Azurite Blob service for tests and benchmarks.

`Azurite` runs only the blob service (`azurite-blob`, installed globally by
scripts/install-deps.sh) on 127.0.0.1, either in memory (the default: fast, nothing left on disk)
or persisting under `workdir` (so `restart()` keeps data, for fault tests).

Invariants:
- The process runs in its own process group and `stop()` signals the whole group (SIGTERM, then
  SIGKILL after a grace period), so no node process outlives its owner; an atexit hook does the
  same if the owner forgets to stop it.
- `start()` returns only once the service answers a real SDK call (list containers), and raises
  with the tail of the log if it does not within the deadline.
- Azurite's telemetry is always disabled: nothing here talks to anything but 127.0.0.1.
- Azurite cannot combine `--inMemoryPersistence` with `--location`, so exactly one is passed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from azure.storage.blob import BlobServiceClient

INSTALL_HINT = "run scripts/install-deps.sh (it installs Azurite with npm)"


class AzuriteNotFound(RuntimeError):
    """The `azurite-blob` executable is not on PATH."""


class AzuriteStartError(RuntimeError):
    """Azurite exited early or did not become ready before the deadline."""


def find_azurite_blob() -> str | None:
    """Path of the `azurite-blob` executable (npm global bin), or None if not installed."""
    return shutil.which("azurite-blob")


def _free_port(host: str) -> int:
    # The port is released before Azurite binds it, so another process could take it first;
    # start() retries with a fresh port when Azurite then fails to bind.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Azurite:
    """One Azurite Blob service process; see the module docstring."""

    ACCOUNT = "devstoreaccount1"
    # The well-known, public development-storage key (documented by Microsoft); not a secret.
    KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

    STOP_GRACE_S = 5.0
    _START_ATTEMPTS = 3  # only auto-picked ports are retried (another process may grab them)

    def __init__(
        self,
        workdir: Path,
        *,
        in_memory: bool = True,
        host: str = "127.0.0.1",
        blob_port: int = 0,
        extra_args: Sequence[str] = (),
        debug: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.in_memory = in_memory
        self.host = host
        self._requested_port = blob_port
        self._port = blob_port
        self.extra_args = tuple(extra_args)
        self.debug = debug
        self.log_path = self.workdir / "azurite.log"
        self.debug_log_path = self.workdir / "azurite-debug.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # --- addresses ---------------------------------------------------------------------------

    @property
    def blob_port(self) -> int:
        if not self._port:
            raise RuntimeError("Azurite has no port yet: call start() first")
        return self._port

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.blob_port}/{self.ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.ACCOUNT};"
            f"AccountKey={self.KEY};BlobEndpoint={self.blob_endpoint};"
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def blob_service_client(self, **kwargs: object) -> BlobServiceClient:
        """A sync SDK client for this service; the caller closes it."""
        return BlobServiceClient.from_connection_string(self.connection_string, **kwargs)

    # --- lifecycle ---------------------------------------------------------------------------

    def _command(self, exe: str) -> list[str]:
        cmd = [
            exe,
            "--blobHost",
            self.host,
            "--blobPort",
            str(self._port),
            "--skipApiVersionCheck",
            "--loose",
            "--disableProductStyleUrl",
            "--disableTelemetry",
        ]
        if self.in_memory:
            cmd.append("--inMemoryPersistence")
        else:
            cmd += ["--location", str(self.workdir)]
        if self.debug:
            cmd += ["--debug", str(self.debug_log_path)]
        else:
            cmd.append("--silent")
        cmd += self.extra_args
        return cmd

    def start(self, timeout: float = 30) -> None:
        """Start Azurite and wait until it serves requests; picks a free port if none given."""
        if self._proc is not None:
            raise RuntimeError("Azurite is already running")
        exe = find_azurite_blob()
        if exe is None:
            raise AzuriteNotFound(f"azurite-blob is not on PATH; {INSTALL_HINT}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        attempts = 1 if self._requested_port else self._START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            if not self._requested_port:
                self._port = _free_port(self.host)
            self._spawn(exe)
            try:
                self._wait_ready(deadline)
                return
            except AzuriteStartError:
                exited = self._exit_status() is not None
                self.stop()
                if not exited or attempt == attempts:
                    raise
            except BaseException:  # e.g. KeyboardInterrupt: never leave the process behind
                self.stop()
                raise

    def _spawn(self, exe: str) -> None:
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(exe),
                cwd=self.workdir,  # anything Azurite writes relative to cwd stays in workdir
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() kills every child too
            )
        atexit.register(self.stop)

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        # No SDK retries: the poll loop is the retry, and a hung call must not pass the deadline.
        client = self.blob_service_client(retry_total=0, connection_timeout=2, read_timeout=5)
        last_error: Exception | None = None
        try:
            while time.monotonic() < deadline:
                status = self._exit_status()
                if status is not None:
                    raise AzuriteStartError(
                        f"Azurite exited with status {status}\n{self._log_tail()}"
                    )
                if _tcp_open(self.host, self._port):
                    try:
                        next(iter(client.list_containers(results_per_page=1).by_page()), None)
                        return
                    except Exception as exc:  # not ready yet: keep polling until the deadline
                        last_error = exc
                time.sleep(0.05)
        finally:
            client.close()
        raise AzuriteStartError(
            f"Azurite not ready on {self.host}:{self._port} in time (last error: {last_error!r})"
            f"\n{self._log_tail()}"
        )

    def _exit_status(self) -> int | None:
        """The exit status if the process has exited, else None, WITHOUT reaping it.

        Left unreaped, the zombie keeps its pid (= the process-group id) from being reused, so
        stop() can still signal the group without hitting an unrelated process.
        """
        if self._proc is None:
            return None
        if self._proc.returncode is not None:
            return self._proc.returncode
        try:
            info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # already reaped elsewhere: it has certainly exited
            return self._proc.poll() or 0
        if info is None:
            return None
        return -info.si_status if info.si_code != os.CLD_EXITED else info.si_status

    def _log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        """Terminate the process group; kill it if it has not exited after a grace period."""
        atexit.unregister(self.stop)
        proc = self._proc
        if proc is None:
            return
        # The child leads its own session, so its pid is its process-group id. The leader is
        # reaped only at the end, so that id cannot be reused by another process meanwhile.
        self._signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.STOP_GRACE_S
        while self._exit_status() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # Kill whatever is left: the leader if it ignored SIGTERM, or any child it left behind.
        self._signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        self._proc = None

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def restart(self) -> None:
        """Stop and start again on the same port (data survives only with in_memory=False)."""
        port = self.blob_port
        self.stop()
        saved, self._requested_port = self._requested_port, port
        try:
            self.start()
        finally:
            self._requested_port = saved

    def __enter__(self) -> Azurite:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
