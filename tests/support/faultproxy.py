"""A fault-injecting TCP proxy for reliability tests and the benchmark.

`FaultProxy` listens on 127.0.0.1 in front of a local HTTP server (Azurite, the Azure Files
emulator) and relays bytes both ways, while the test injects faults through a thread-safe API:
cut connections every N downstream bytes, reset new connections, delay data, add a fixed
latency to every request, answer requests with an Azure-style 503 ServerBusy, refuse
connections ("backend down") or accept them and never answer ("hung backend"). It also counts
the requests it forwards by kind (`forwarded`: "list" for `comp=list`, else the method), so a
test or the benchmark can count LIST/HEAD/GET calls independently of the client.
`tests/support/faultproxy_process.py` runs proxies as a process of their own (the benchmark).

Design and invariants:
- One asyncio event loop in one daemon thread owns every socket and every piece of fault state.
  asyncio (not trio) because the tests using the proxy may run trio themselves; a separate
  thread keeps the two loops apart. Control methods called from other threads hop onto the loop
  (`_call` / `_run`) and return only once the change is in effect, so "down() then connect"
  deterministically fails. Nothing but the loop thread touches state, so no locks are needed.
- Relaying uses the loop's `sock_recv_into` / `sock_sendall` with one 256 KiB buffer per
  direction per connection (so 512 KiB of memory per open connection): per-chunk Python work is
  constant, never per byte.
- Request boundaries in the client->server stream are tracked by `RequestTracker` (I/O-free:
  bytes in, actions out) from the header block and Content-Length only; bodies are counted,
  never scanned. That is what lets `respond_503` answer exactly the next n requests on
  keep-alive connections, and `latency` hold each request (not each chunk) once: the
  `Forward` carrying a request's header block is marked with its parsed head. It assumes
  clients do not pipeline requests (true of the Azure SDKs, urllib3, aiohttp, http.client). A
  request with a chunked body is never answered with a 503 and stops tracking on its
  connection (its head is still marked: it is held and counted, later ones are not).
- A connection is closed exactly once, by its own handler task, after both pump tasks have
  finished (so the loop no longer watches the sockets): gracefully, with FIN (drop), or with RST
  (SO_LINGER 0: reset_next, down, stop, upstream errors).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import socket
import struct
import threading
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from email.utils import formatdate
from enum import Enum
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

CHUNK = 256 * 1024  # relay buffer per direction: large enough that Python overhead is noise
MAX_HEAD = 64 * 1024  # a request header block larger than this stops boundary tracking
MAX_METHOD = 16  # longer "methods" mean the stream is not HTTP
CONTROL_TIMEOUT = 10.0  # seconds a control call waits for the loop thread
LOCAL_NAMES = frozenset({"127.0.0.1", "localhost"})
STAT_KEYS = (
    "connections",  # accepted, including ones reset by reset_next
    "active",  # open right now
    "bytes_down",  # relayed server -> client
    "bytes_up",  # relayed client -> server (swallowed 503 request bodies not included)
    "drops",  # cut by drop_every
    "resets",  # reset by reset_next
    "killed",  # aborted by down() or stop()
    "injected_503",  # requests answered by respond_503
    "requests",  # HTTP requests seen (forwarded or answered with a 503; chunked ones not counted)
)

_T = TypeVar("_T")


# --- request boundary tracking (pure logic) ------------------------------------------------


@dataclass(frozen=True)
class RequestHead:
    """The parts of a request header block that delimit and classify the request."""

    method: bytes
    target: bytes  # the request-target as sent (path and query)
    content_length: int
    chunked: bool
    close: bool

    @property
    def kind(self) -> str:
        """"list" for an Azure listing (`comp=list`), else the method in lower case."""
        query = self.target.partition(b"?")[2]
        if b"comp=list" in query.lower().split(b"&"):
            return "list"
        return self.method.decode("ascii", "replace").lower()


@dataclass(frozen=True)
class Forward:
    """Send these bytes upstream (may be a view into the relay buffer: send before reusing it).

    `request` is set on exactly the Forward that carries a request's header block (so a new
    request starts with it), None on body bytes and on untracked (opaque) bytes."""

    data: bytes | memoryview
    request: RequestHead | None = None


@dataclass(frozen=True)
class Reply503:
    """Answer the request just consumed with a 503 instead of forwarding it."""

    head_only: bool  # HEAD request: headers only, no body
    close: bool  # the client asked for the connection to be closed after this response


class _State(Enum):
    HEAD = "head"  # accumulating a request header block
    BODY = "body"  # forwarding `remaining` body bytes
    DISCARD = "discard"  # swallowing the body of a request that gets a 503
    OPAQUE = "opaque"  # boundaries unknown (chunked body, oversized/malformed head): relay raw
    CLOSED = "closed"  # a 503 with close was issued: ignore everything after it


def _could_be_request(head: bytes) -> bool:
    """False as soon as a (partial) header block cannot be an HTTP/1.x request, so non-HTTP
    streams are relayed at once instead of being held while waiting for a blank line."""
    head = head.lstrip(b"\r\n")
    method, space, _ = head[: MAX_METHOD + 1].partition(b" ")
    if method and not (method.isalpha() and method.isupper()):
        return False
    if not space:
        return len(method) <= MAX_METHOD
    if not method:
        return False
    line, newline, _ = head.partition(b"\n")
    if not newline:
        return True
    parts = line.rstrip(b"\r").split(b" ")
    return len(parts) == 3 and parts[2].startswith(b"HTTP/")


def _parse_head(block: bytes) -> RequestHead | None:
    """Parse the parts of a request header block that delimit the request; None if malformed."""
    lines = block.lstrip(b"\r\n").split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    method, target, version = parts
    content_length, chunked, connection = 0, False, b""
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            if not value.isdigit():
                return None
            content_length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.lower() != b"identity"
        elif name == b"connection":
            connection = value.lower()
    close = b"close" in connection or (version == b"HTTP/1.0" and b"keep-alive" not in connection)
    return RequestHead(method.upper(), target, content_length, chunked, close)


class RequestTracker:
    """Splits a client->server byte stream into requests and decides which get a 503.

    `inject()` is asked once per complete request header block; True means "answer this one
    with a 503": its head and body are swallowed and a `Reply503` is emitted once the body has
    been consumed, so the next request on the connection starts at the right byte.
    """

    def __init__(self, inject: Callable[[], bool]) -> None:
        self._inject = inject
        self._state = _State.HEAD
        self._head = b""
        self._remaining = 0
        self._pending: Reply503 | None = None

    def feed(self, data: memoryview) -> list[Forward | Reply503]:
        out: list[Forward | Reply503] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state is _State.OPAQUE:
                out.append(Forward(data[pos:]))
                break
            if state is _State.CLOSED:
                break
            if state is _State.BODY or state is _State.DISCARD:
                take = min(self._remaining, end - pos)
                if state is _State.BODY:
                    out.append(Forward(data[pos : pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._end_body(out)
                continue
            # HEAD: copy at most what could still belong to the header block.
            chunk = bytes(data[pos : pos + MAX_HEAD - len(self._head)])
            combined = self._head + chunk
            idx = combined.find(b"\r\n\r\n", max(0, len(self._head) - 3))
            if idx < 0:
                pos += len(chunk)
                if len(combined) >= MAX_HEAD or not _could_be_request(combined):
                    out.append(Forward(combined))
                    self._head, self._state = b"", _State.OPAQUE
                else:
                    self._head = combined
                continue
            block = combined[: idx + 4]
            pos += len(block) - len(self._head)
            self._head = b""
            self._start_request(block, out)
        return out

    def _start_request(self, block: bytes, out: list[Forward | Reply503]) -> None:
        head = _parse_head(block)
        if head is None or head.chunked:
            out.append(Forward(block, head))  # a chunked request is still a request
            self._state = _State.OPAQUE
            return
        self._remaining = head.content_length
        if self._inject():
            self._pending = Reply503(head_only=head.method == b"HEAD", close=head.close)
            self._state = _State.DISCARD
        else:
            out.append(Forward(block, head))
            self._state = _State.BODY
        if self._remaining == 0:
            self._end_body(out)

    def _end_body(self, out: list[Forward | Reply503]) -> None:
        self._state = _State.HEAD
        if self._pending is not None:
            out.append(self._pending)
            if self._pending.close:
                self._state = _State.CLOSED
            self._pending = None


def server_busy_response(head_only: bool, close: bool, retry_after: float | None = None) -> bytes:
    """The bytes of an Azure Storage style "503 ServerBusy" response (with a Retry-After
    header, in whole seconds as HTTP has it, when `retry_after` is given)."""
    request_id = str(uuid.uuid4())
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
        "<Message>The server is currently unable to receive requests. Please retry your "
        f"request.\nRequestId:{request_id}\nTime:{formatdate(usegmt=True)}</Message></Error>"
    ).encode()
    headers = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Content-Type: application/xml\r\n"
        "Server: Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0\r\n"
        f"x-ms-request-id: {request_id}\r\n"
        "x-ms-error-code: ServerBusy\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        + (f"Retry-After: {retry_after:g}\r\n" if retry_after is not None else "")
        + f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    ).encode()
    return headers if head_only else headers + body


# --- addresses -----------------------------------------------------------------------------


def redirect_url(url: str, upstream: tuple[str, int], listen: tuple[str, int]) -> str:
    """`url` (pointing at `upstream`, e.g. http://127.0.0.1:UPSTREAM/...) pointed at `listen`
    instead. Raises ValueError for a URL that does not point at `upstream`."""
    parts = urlsplit(url)
    host, port = upstream
    if parts.port != port or parts.hostname not in LOCAL_NAMES | {host}:
        raise ValueError(f"{url!r} does not point at the proxied upstream {host}:{port}")
    return urlunsplit(parts._replace(netloc=f"{listen[0]}:{listen[1]}"))


def redirect_connection_string(
    conn_str: str, upstream: tuple[str, int], listen: tuple[str, int]
) -> str:
    """A storage connection string whose *Endpoint= entries that hit `upstream` point at
    `listen`; other entries are kept as they are."""
    out = []
    for item in conn_str.split(";"):
        key, sep, value = item.partition("=")
        if sep and key.endswith("Endpoint"):
            with contextlib.suppress(ValueError):
                value = redirect_url(value, upstream, listen)
            item = f"{key}={value}"
        out.append(item)
    return ";".join(out)


# --- the proxy -----------------------------------------------------------------------------


class _Close(Enum):
    GRACEFUL = "graceful"  # both directions ended: plain close
    FIN = "fin"  # cut by the proxy: queued data is delivered, then EOF
    RST = "rst"  # aborted: SO_LINGER 0, the peer sees ECONNRESET


class _Dropped(Exception):
    """Raised by a pump to end its connection with the close mode already set."""


_LINGER_RST = struct.pack("ii", 1, 0)


def _close_socket(sock: socket.socket, mode: _Close) -> None:
    with contextlib.suppress(OSError):
        if mode is _Close.RST:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        elif mode is _Close.FIN:
            sock.shutdown(socket.SHUT_WR)
    sock.close()


class _Conn:
    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.mode = _Close.GRACEFUL
        self.task: asyncio.Task[None] | None = None
        self.client_lock = asyncio.Lock()  # the down pump and 503 replies both write to client
        self.closing = False  # its handler is cleaning up: must not be cancelled any more


class FaultProxy:
    """TCP proxy with fault injection; see the module docstring.

    All fault controls are thread-safe and in effect when they return. Controls that only set a
    value (drop_every, reset_next, delay, latency, respond_503) may be called before start().
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listen_host = listen_host
        self.port = listen_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._conns: set[_Conn] = set()
        self._flowing: asyncio.Event | None = None  # cleared while blackholed
        # fault state (loop thread only once started)
        self._drop_every: int | None = None
        self._drop_left = 0
        self._drop_up_every: int | None = None
        self._drop_up_left = 0
        self._drop_up_times: int | None = None
        self._reset_left = 0
        self._delay = 0.0
        self._latency = 0.0
        self._n503 = 0
        self._retry_after: float | None = None
        self._down = False
        self._stats = dict.fromkeys(STAT_KEYS, 0)
        self._forwarded: collections.Counter[str] = collections.Counter()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        self._down = False
        self._listener = self._bind()  # in the caller's thread: errors surface here
        self.port = self._listener.getsockname()[1]
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._flowing = asyncio.Event()
            self._flowing.set()
            self._accept_task = loop.create_task(self._accept_loop())
            loop.call_soon(started.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        if not started.wait(CONTROL_TIMEOUT):
            raise RuntimeError("FaultProxy loop did not start")

    def stop(self) -> None:
        """Abort every connection, close the listener, end the loop thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._run(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CONTROL_TIMEOUT)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses ---------------------------------------------------------------------------

    def endpoint_for(self, url: str) -> str:
        """Rewrite a URL pointing at the upstream (http://127.0.0.1:UPSTREAM/...) to the proxy."""
        return redirect_url(url, self._upstream, (self._listen_host, self.port))

    def connection_string_for(self, conn_str: str) -> str:
        """Rewrite the *Endpoint= entries of a storage connection string that hit the upstream."""
        return redirect_connection_string(conn_str, self._upstream, (self._listen_host, self.port))

    # --- fault controls ----------------------------------------------------------------------

    def drop_every(self, nbytes: int | None) -> None:
        """Cut (FIN both sides) the connection that relays each `nbytes`-th downstream byte,
        counted across all connections from now on; None turns it off."""
        if nbytes is not None and nbytes < 1:
            raise ValueError("nbytes must be >= 1 or None")

        def apply() -> None:
            self._drop_every = nbytes
            self._drop_left = nbytes or 0

        self._call(apply)

    def drop_up_every(self, nbytes: int | None, times: int | None = None) -> None:
        """Cut (FIN both sides) the connection that relays each `nbytes`-th upstream byte (a
        request body being sent: uploads), counted across all connections from now on, at most
        `times` times (None: no limit); None turns it off. Counted in stats["drops"]."""
        if nbytes is not None and nbytes < 1:
            raise ValueError("nbytes must be >= 1 or None")

        def apply() -> None:
            self._drop_up_every = nbytes
            self._drop_up_left = nbytes or 0
            self._drop_up_times = times

        self._call(apply)

    def reset_next(self, n: int) -> None:
        """Reset (RST) the next `n` new connections right after accepting them: the client sees
        ConnectionResetError from connect() (if it checks late) or its first read/write."""
        self._call(setattr, self, "_reset_left", max(0, n))

    def delay(self, seconds: float) -> None:
        """Hold every server->client chunk (so every response) `seconds` before relaying it:
        a bandwidth cap as much as a delay (a 64 MiB response is held once per 256 KiB)."""
        self._call(setattr, self, "_delay", max(0.0, seconds))

    def latency(self, seconds: float) -> None:
        """Hold each request's header block `seconds` before forwarding it: a fixed cost per
        request (what a store's per-request latency is), however large the response. Requests
        on different connections wait concurrently; bytes that are not HTTP are not held."""
        self._call(setattr, self, "_latency", max(0.0, seconds))

    def respond_503(self, n: int, retry_after: float | None = None) -> None:
        """Answer the next `n` HTTP requests (on any connection) with 503 ServerBusy ourselves;
        keep-alive is honoured: the request body is swallowed and the connection stays usable.
        With `retry_after` (seconds) the responses carry a Retry-After header."""

        def apply() -> None:
            self._n503 = max(0, n)
            self._retry_after = retry_after

        self._call(apply)

    def down(self) -> None:
        """Backend fully down: new connects get ECONNREFUSED, existing connections are reset."""
        self._run(self._go_down())

    def blackhole(self) -> None:
        """Hung backend: connections are accepted, nothing is relayed in either direction on new
        or existing connections until up()/clear(); held data then flows again."""

        def apply() -> None:
            assert self._flowing is not None
            self._flowing.clear()

        self._call(apply, need_loop=True)

    def up(self) -> None:
        """Undo down() and blackhole(). Other faults stay as they are."""
        self._run(self._go_up())

    def clear(self) -> None:
        """Remove all faults."""
        self.drop_every(None)
        self.drop_up_every(None)
        self.reset_next(0)
        self.delay(0.0)
        self.latency(0.0)
        self.respond_503(0)
        if self._loop is not None:
            self.up()

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters named in STAT_KEYS."""
        return self._call(dict, self._stats)

    @property
    def forwarded(self) -> dict[str, int]:
        """Requests forwarded upstream so far, by `RequestHead.kind` ("get", "head", "list",
        "put"...); requests answered with a 503 by the proxy never reached the server and are
        not counted here (they are in stats["injected_503"])."""
        return self._call(dict, self._forwarded)

    # --- thread hopping ----------------------------------------------------------------------

    def _call(self, fn: Callable[..., _T], *args: Any, need_loop: bool = False) -> _T:
        loop = self._loop
        if loop is None:
            if need_loop:
                raise RuntimeError("FaultProxy is not started")
            return fn(*args)  # not started: the caller's thread is the only one
        if threading.current_thread() is self._thread:
            return fn(*args)
        fut: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(CONTROL_TIMEOUT)

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("FaultProxy is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CONTROL_TIMEOUT)

    # --- loop side ---------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # up() re-binds the same port while closed connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._listen_host, self.port))
            sock.listen(512)  # SDK connection pools open many connections at once
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _go_down(self) -> None:
        if not self._down:
            self._down = True
            await self._close_listener()
        await self._kill_all(_Close.RST)

    async def _go_up(self) -> None:
        assert self._flowing is not None
        self._flowing.set()
        if self._down:
            self._listener = self._bind()
            self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())
            self._down = False

    async def _shutdown(self) -> None:
        self._down = True
        await self._close_listener()
        await self._kill_all(_Close.RST)

    async def _close_listener(self) -> None:
        task, self._accept_task = self._accept_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._listener is not None:
            # Closing (not just ignoring) the listener is what makes connects get ECONNREFUSED;
            # the kernel also resets connections still waiting in its accept queue.
            self._listener.close()
            self._listener = None

    async def _kill_all(self, mode: _Close) -> None:
        tasks = []
        for conn in list(self._conns):
            if conn.task is None or conn.task.done():
                continue
            tasks.append(conn.task)
            if not conn.closing:  # a cancel would interrupt its cleanup and leak the sockets
                conn.mode = mode
                conn.task.cancel()
                self._stats["killed"] += 1
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        listener = self._listener
        while True:
            try:
                client, _ = await loop.sock_accept(listener)
            except OSError:
                # e.g. EMFILE, or ECONNABORTED for a client that gave up in the queue: a real
                # server keeps accepting, and so do we (after a breath, not in a hot loop).
                await asyncio.sleep(0.01)
                continue
            self._stats["connections"] += 1
            if self._reset_left > 0:
                self._reset_left -= 1
                self._stats["resets"] += 1
                _close_socket(client, _Close.RST)
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client)
            self._conns.add(conn)
            conn.task = loop.create_task(self._serve(conn))

    async def _serve(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        self._stats["active"] += 1
        pumps: list[asyncio.Task[None]] = []
        try:
            await self._gate()  # a blackholed backend never even connects upstream
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.upstream = upstream
            upstream.setblocking(False)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await loop.sock_connect(upstream, self._upstream)
            except OSError:
                conn.mode = _Close.RST  # relay "the server is not there" as a reset
                return
            pumps = [
                loop.create_task(self._pump_up(conn)),
                loop.create_task(self._pump_down(conn)),
            ]
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, _Dropped):
                    conn.mode = _Close.RST  # peer error: pass the abort on
        finally:
            conn.closing = True
            for task in pumps:
                task.cancel()
            # Let the pumps finish so the loop stops watching the fds before they are closed.
            await asyncio.gather(*pumps, return_exceptions=True)
            for sock in (conn.client, conn.upstream):
                if sock is not None:
                    _close_socket(sock, conn.mode)
            self._conns.discard(conn)
            self._stats["active"] -= 1

    async def _gate(self) -> None:
        assert self._flowing is not None
        if not self._flowing.is_set():
            await self._flowing.wait()

    def _take_503(self) -> bool:
        self._stats["requests"] += 1  # asked exactly once per (non-chunked) request
        if self._n503 > 0:
            self._n503 -= 1
            return True
        return False

    def _take_up_cut(self, n: int) -> int | None:
        """How many of the next `n` upstream bytes to send before cutting, or None (reserved
        before awaiting the send, so concurrent connections share one count)."""
        if self._drop_up_every is None or self._drop_up_times == 0:
            return None
        if n < self._drop_up_left:
            self._drop_up_left -= n
            return None
        cut, self._drop_up_left = self._drop_up_left, self._drop_up_every
        if self._drop_up_times is not None:
            self._drop_up_times -= 1
        return cut

    async def _pump_up(self, conn: _Conn) -> None:
        """client -> upstream, with request tracking for 503 injection."""
        loop = asyncio.get_running_loop()
        client, upstream = conn.client, conn.upstream
        assert upstream is not None
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        tracker = RequestTracker(self._take_503)
        while True:
            n = await loop.sock_recv_into(client, buf)
            if n == 0:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)
                return
            await self._gate()
            for action in tracker.feed(view[:n]):
                if isinstance(action, Forward):
                    if action.request is not None:
                        self._forwarded[action.request.kind] += 1
                        if self._latency > 0:
                            # Nothing else is read from this client meanwhile: it does not
                            # pipeline, so the next request cannot overtake this one.
                            await asyncio.sleep(self._latency)
                    cut = self._take_up_cut(len(action.data))
                    data = action.data if cut is None else action.data[:cut]
                    await loop.sock_sendall(upstream, data)
                    self._stats["bytes_up"] += len(data)
                    if cut is not None:
                        self._stats["drops"] += 1
                        conn.mode = _Close.FIN
                        raise _Dropped
                    continue
                if self._delay > 0:
                    await asyncio.sleep(self._delay)
                async with conn.client_lock:
                    await loop.sock_sendall(
                        client,
                        server_busy_response(action.head_only, action.close, self._retry_after),
                    )
                self._stats["injected_503"] += 1
                if action.close:
                    conn.mode = _Close.FIN
                    raise _Dropped

    async def _pump_down(self, conn: _Conn) -> None:
        """upstream -> client, with delay, blackhole and drop_every."""
        loop = asyncio.get_running_loop()
        client, upstream = conn.client, conn.upstream
        assert upstream is not None
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = await loop.sock_recv_into(upstream, buf)
            if n == 0:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_WR)
                return
            await self._gate()
            if self._delay > 0:
                await asyncio.sleep(self._delay)
            # Reserve the bytes before awaiting the send so concurrent connections share one
            # global count and exactly one of them crosses each drop boundary.
            cut = None
            if self._drop_every is not None:
                if n < self._drop_left:
                    self._drop_left -= n
                else:
                    cut, self._drop_left = self._drop_left, self._drop_every
            data = view[:n] if cut is None else view[:cut]
            async with conn.client_lock:
                await loop.sock_sendall(client, data)
            self._stats["bytes_down"] += len(data)
            if cut is not None:
                self._stats["drops"] += 1
                conn.mode = _Close.FIN
                raise _Dropped
