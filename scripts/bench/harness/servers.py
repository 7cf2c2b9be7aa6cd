"""The servers a benchmark measures against, each released on any exit: in-memory Azurite
(tests/support/azurite.py's launcher), the Azure Files emulator (tests/support/azurefiles, as
a process of its own) and the latency proxy (tests/support/faultproxy_process.py).

Invariants:
- Every server is its own process, so its CPU is no client's and no client shares its GIL.
- A server is registered for cleanup (`on_exit`) the moment its process exists.
- Uploads go straight to the servers; with the proxy, `ProxyProcess.store` / `share` give the
  addresses every client uses instead, so its delay and its request counts apply to all.
"""

from __future__ import annotations

import collections
import contextlib
import json
import select
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scripts.bench.harness.cleanup import check, log, on_exit, stop_process, tail
from tests.support.azurite import Azurite
from tests.support.faultproxy import redirect_connection_string, redirect_url

REPO_ROOT = Path(__file__).resolve().parents[3]
EMULATOR_WAIT_S = 30.0
PROXY_WAIT_S = 30.0


def start_azurite(workdir: Path, in_memory: bool = True) -> Azurite:
    """One Azurite process, started and registered for cleanup."""
    azurite = Azurite(workdir, in_memory=in_memory)
    on_exit(azurite.stop)
    azurite.start(timeout=120)
    log(f"Azurite on {azurite.blob_endpoint} (pid {azurite.pid})")
    return azurite


@dataclass(frozen=True)
class Store:
    """One Azurite instance and the container a benchmark uses in it."""

    conn_str: str
    endpoint: str
    container: str
    sas_url: str  # container SAS URL, for rclone
    pid: int | None


def container_sas_url(
    endpoint: str, container: str, account: str, key: str, writable: bool = False
) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    w = writable  # the write rows' rclone mount creates, writes and deletes
    token = generate_container_sas(
        account, container, account_key=key,
        permission=ContainerSasPermissions(read=True, list=True, write=w, create=w, add=w,
                                           delete=w),
        expiry=datetime.now(UTC) + timedelta(hours=6),
    )  # fmt: skip
    return f"{endpoint}/{container}?{token}"


def start_store(workdir: Path, container: str, writable: bool = False) -> Store:
    """An in-memory Azurite of its own for `container` (`writable`: a SAS URL rclone may
    write through).

    Why one instance per container: Azurite's in-memory metadata store (LokiJS) finds a blob
    by scanning every blob of the account, so each request costs O(blobs); with 25,000 blobs
    in one instance every GET took ~30 ms and the figures measured Azurite, not the clients.
    """
    azurite = start_azurite(workdir)
    sas = container_sas_url(azurite.blob_endpoint, container, Azurite.ACCOUNT, Azurite.KEY,
                            writable)
    return Store(azurite.connection_string, azurite.blob_endpoint, container, sas, azurite.pid)


@dataclass(frozen=True)
class ShareStore:
    """The Azure Files emulator process and the share a benchmark uses in it."""

    conn_str: str
    endpoint: str  # account URL, path-style: http://127.0.0.1:PORT/<account>
    account: str
    key: str
    share: str
    pid: int
    n_tiny: int  # tiny files actually written (`--fs-tiny` may make it fewer than the scale's)


def _first_line(proc: subprocess.Popen[bytes], wait_s: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], wait_s)
    return proc.stdout.readline().decode().strip() if ready else ""


def start_share_emulator(workdir: Path, share: str) -> ShareStore:
    """`python -m tests.support.azurefiles` as its own process; it prints its connection
    string once listening."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "azurefiles.log"
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.azurefiles", "--port", "0"],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
            start_new_session=True,
        )  # fmt: skip
    on_exit(lambda: stop_process(proc))
    line = _first_line(proc, EMULATOR_WAIT_S)
    if not line:
        raise RuntimeError(f"Azure Files emulator did not start: {tail(log_path)}")
    parts = dict(kv.split("=", 1) for kv in line.split(";") if kv)
    store = ShareStore(conn_str=line, endpoint=parts["FileEndpoint"].rstrip("/"),
                       account=parts["AccountName"], key=parts["AccountKey"], share=share,
                       pid=proc.pid, n_tiny=0)  # fmt: skip
    log(f"Azure Files emulator on {store.endpoint} (pid {proc.pid})")
    return store


def url_port(url: str) -> int:
    port = urlsplit(url).port
    check(port is not None, f"{url} names no port")
    assert port is not None
    return port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProxyProcess:
    """tests/support/faultproxy_process.py: one FaultProxy per upstream in a process of its
    own, with a fixed per-request latency, counting what it forwards."""

    def __init__(self, workdir: Path, upstream_urls: list[str], latency_ms: float) -> None:
        self.latency_ms = latency_ms
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "faultproxy.log"
        cmd = [sys.executable, "-m", "tests.support.faultproxy_process",
               "--latency-ms", str(latency_ms)]  # fmt: skip
        for port in sorted({url_port(u) for u in upstream_urls}):
            cmd += ["--upstream", f"127.0.0.1:{port}"]
        with open(log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                start_new_session=True,
            )  # fmt: skip
        on_exit(self.stop)
        self._lock = threading.Lock()
        line = _first_line(self.proc, PROXY_WAIT_S)
        if not line:
            raise RuntimeError(f"fault proxy did not start: {tail(log_path)}")
        self.ports = {int(up): int(p) for up, p in json.loads(line)["ports"].items()}
        self.pid = self.proc.pid
        log(f"fault proxy (pid {self.pid}, {latency_ms:g} ms per request): {self.ports}")

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # end of input: it stops every proxy and exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def _ask(self, command: str) -> dict[str, Any]:
        with self._lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            check(self.proc.poll() is None, f"fault proxy exited with {self.proc.returncode}")
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    def forwarded(self) -> collections.Counter[str]:
        """Requests forwarded to the stores so far, summed over every upstream, by kind."""
        total: collections.Counter[str] = collections.Counter()
        for counts in self._ask("stats").values():
            total.update(counts["forwarded"])
        return total

    def requests(self) -> int:
        return sum(self.forwarded().values())

    def _redirect(self, url: str) -> tuple[tuple[str, int], tuple[str, int]]:
        up = url_port(url)
        check(up in self.ports, f"{url} is not behind the fault proxy")
        return ("127.0.0.1", up), ("127.0.0.1", self.ports[up])

    def url(self, url: str) -> str:
        return redirect_url(url, *self._redirect(url))

    def store(self, store: Store) -> Store:
        """`store` as the clients see it through the proxy."""
        conn = redirect_connection_string(store.conn_str, *self._redirect(store.endpoint))
        return replace(store, conn_str=conn, endpoint=self.url(store.endpoint),
                       sas_url=self.url(store.sas_url))

    def share(self, store: ShareStore) -> ShareStore:
        conn = redirect_connection_string(store.conn_str, *self._redirect(store.endpoint))
        return replace(store, conn_str=conn, endpoint=self.url(store.endpoint))
