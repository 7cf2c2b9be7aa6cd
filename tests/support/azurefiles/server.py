"""HTTP adapter and public entry point of the Azure Files emulator (`AzureFilesEmulator`).

A `ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive: one thread per connection, which is
what the SDK's connection pools expect. The adapter only moves bytes: it parses the request
into a `messages.Request`, applies injected faults (faults.py), asks `routing.FileService` for a
`Response` and writes it, streaming memoryview bodies without copying them.

Invariants:
- Every response has Content-Length (keep-alive depends on it) plus `Date` and `Server`.
- `stop()` shuts down the listener and every open connection, then joins the handler threads,
  so a stopped emulator holds no sockets or threads (fixtures can rely on it).
- With `tls=True` the emulator serves HTTPS with a throw-away self-signed certificate
  (`ca_cert_path`); the TLS handshake happens in the connection's thread, never in the
  accept loop.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import ssl
import tempfile
import threading
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .auth import Credentials
from .errors import StorageError
from .faults import Faults
from .messages import Headers, Request, Response, parse_query
from .routing import FileService
from .store import Store

log = logging.getLogger(__name__)

# The well-known development-storage key (the same one Azurite uses).
DEVSTORE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
SERVER_HEADER = "Windows-Azure-File/1.0 Microsoft-HTTPAPI/2.0"
_WRITE_CHUNK = 1024 * 1024
_MAX_BODY = 64 * 1024 * 1024  # refuse absurd request bodies instead of buffering them


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    # Idle keep-alive connections are closed after this long (the SDK reconnects transparently).
    timeout = 120

    def version_string(self) -> str:
        return SERVER_HEADER

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve()

    do_PUT = do_HEAD = do_DELETE = do_POST = do_OPTIONS = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise StorageError(413, "RequestBodyTooLarge")
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        emulator = self.server.emulator
        target = urlsplit(self.path)
        try:
            body = self._read_body()
        except StorageError as err:
            self.close_connection = True
            resp = FileService.error_response(err, str(uuid.uuid4()))
            self._write(resp, head=False, drop=False)
            return
        req = Request(
            method=self.command,
            raw_path=target.path,
            query=parse_query(target.query),
            headers=Headers(self.headers.items()),
            body=body,
            scheme="https" if emulator.tls else "http",
            client_ip=self.client_address[0],
        )
        decision = emulator.faults.decide(self.command)
        if decision.delay and emulator.stopping.wait(decision.delay):
            self.close_connection = True
            return
        if decision.fail_status is not None:
            err = StorageError(decision.fail_status, decision.fail_code or "InternalError")
            request_id = str(uuid.uuid4())
            resp = FileService.error_response(err, request_id)
            emulator.service.decorate(resp, req, request_id)
        else:
            resp = emulator.service.handle(req)
        emulator.count_request()
        try:
            self._write(
                resp, head=self.command == "HEAD", drop=decision.drop, corrupt=decision.corrupt
            )
        finally:
            if resp.on_sent is not None:
                resp.on_sent()

    def _write(self, resp: Response, *, head: bool, drop: bool, corrupt: bool = False) -> None:
        lines = [f"HTTP/1.1 {resp.status} {self.responses.get(resp.status, ('',))[0]}"]
        lines += [f"{name}: {value}" for name, value in resp.headers]
        lines.append(f"Content-Length: {len(resp.body)}")
        lines.append(f"Date: {formatdate(usegmt=True)}")
        lines.append(f"Server: {SERVER_HEADER}")
        if self.close_connection:
            lines.append("Connection: close")
        header_block = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        body = b"" if head else resp.body
        if corrupt and body:
            damaged = bytearray(body)
            damaged[len(damaged) // 2] ^= 0x01
            body = bytes(damaged)
        if drop:
            # Lost response: cut it off (half the body, or half the headers when there is no
            # body) and reset the connection.
            if body:
                self.wfile.write(header_block)
                self.wfile.write(body[: len(body) // 2])
            else:
                self.wfile.write(header_block[: len(header_block) // 2])
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(header_block)
        view = memoryview(body)
        for offset in range(0, len(view), _WRITE_CHUNK):
            self.wfile.write(view[offset : offset + _WRITE_CHUNK])


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: AzureFilesEmulator) -> None:
        self.emulator = emulator
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock = request
        context = self.emulator.ssl_context
        if context is not None:
            request.settimeout(_Handler.timeout)
            try:
                sock = context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        with self._open_lock:
            self._open.add(sock)
        try:
            if not self.emulator.stopping.is_set():
                self.RequestHandlerClass(sock, client_address, self)
        finally:
            with self._open_lock:
                self._open.discard(sock)
            if sock is not request:
                sock.close()

    def close_connections(self) -> None:
        with self._open_lock:
            socks = list(self._open)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (or our own injected drops) are routine here, not errors.
        log.debug("connection from %s ended abruptly", client_address, exc_info=True)


class AzureFilesEmulator:
    """An in-process Azure Files endpoint on 127.0.0.1 for tests and benchmarks.

    Use as a context manager or call start()/stop(). `connection_string` works with
    `ShareServiceClient.from_connection_string`; `endpoint` is the account URL
    (path-style, `http://127.0.0.1:PORT/<account>`).
    """

    def __init__(
        self,
        *,
        account: str = "devstoreaccount1",
        key: str = DEVSTORE_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        bearer_token: str | None = None,
        tls: bool = False,
    ) -> None:
        self.account = account
        self.key = key
        self.host = host
        self.tls = tls
        self.bearer_token = bearer_token
        self.faults = Faults()
        self.store = Store()
        self.service = FileService(self.store, Credentials(account, key, bearer_token))
        self.stopping = threading.Event()
        self.ssl_context: ssl.SSLContext | None = None
        self.ca_cert_path: Path | None = None
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: Path | None = None
        self._count_lock = threading.Lock()
        self.request_count = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving in a background thread; returns once the socket is listening."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self.stopping.clear()
        if self.tls:
            from .tls import write_self_signed

            self._tmpdir = Path(tempfile.mkdtemp(prefix="azurefiles-tls-"))
            cert, key = write_self_signed(self._tmpdir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.ssl_context, self.ca_cert_path = context, cert
        try:
            self._server = _Server((self.host, self._requested_port), self)
        except BaseException:
            self._cleanup_tls()
            raise
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"azurefiles-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close every connection and join all threads (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()  # joins the connection threads
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._cleanup_tls()

    def _cleanup_tls(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> AzureFilesEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Account URL, e.g. http://127.0.0.1:PORT/devstoreaccount1 (always via loopback)."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/{self.account}"

    @property
    def connection_string(self) -> str:
        scheme = "https" if self.tls else "http"
        return (
            f"DefaultEndpointsProtocol={scheme};AccountName={self.account};"
            f"AccountKey={self.key};FileEndpoint={self.endpoint};"
        )

    def count_request(self) -> None:
        with self._count_lock:
            self.request_count += 1
