"""Tests for tests/support/faultproxy.py against tiny local upstreams on 127.0.0.1.

Two upstreams, each owned by a module fixture that closes its listener, its live connections
and joins its threads: a keep-alive HTTP/1.1 server serving a known 64 MiB payload from memory
(and accepting uploads, answering with their SHA-256), and a raw TCP server speaking a line
protocol (`echo\\n` echoes until EOF; `send N\\n` sends the first N bytes of the payload,
cycled, then closes) so byte counts can be checked exactly. The process wrapper
(tests/support/faultproxy_process.py) is tested as a real subprocess against the same upstream.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import random
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psutil
import pytest

from tests.support.daemon import REPO_ROOT
from tests.support.faultproxy import FaultProxy, Forward, Reply503, RequestHead, RequestTracker

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20
PAYLOAD = random.Random(20240601).randbytes(64 * MiB)
IO_TIMEOUT = 10.0  # a broken proxy fails a test instead of hanging it


def payload_prefix(n: int) -> bytes:
    """The first n bytes of the payload repeated forever (what `send N` produces)."""
    reps, rest = divmod(n, len(PAYLOAD))
    return PAYLOAD * reps + PAYLOAD[:rest]


# --- upstream servers -------------------------------------------------------------------------


class _TrackingServer(socketserver.ThreadingMixIn):
    """Remembers live connections so teardown can end handler threads blocked on them."""

    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread
    request_queue_size = 256  # the proxy may connect 50 times at once

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.live: set[socket.socket] = set()
        self.live_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.live_lock:
            self.live.add(request)
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            with self.live_lock:
                self.live.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connections cut by the proxy are the point of these tests, not errors

    def close_live(self) -> None:
        with self.live_lock:
            for sock in self.live:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class HTTPUpstream(_TrackingServer, http.server.HTTPServer):
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), _HTTPHandler)


class _HTTPHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Azurite
    server: HTTPUpstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body_for_path(self) -> memoryview:
        path = self.path.partition("?")[0]  # a query (e.g. comp=list) does not change the body
        n = len(PAYLOAD) if path == "/payload" else int(path.rsplit("/", 1)[1])
        return memoryview(PAYLOAD)[:n]

    def _log(self) -> None:
        with self.server.live_lock:
            self.server.requests.append((self.command, self.path))

    def do_GET(self) -> None:
        self._log()
        body = self._body_for_path()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def do_PUT(self) -> None:
        self._log()
        digest = hashlib.sha256(self.rfile.read(int(self.headers["Content-Length"])))
        answer = digest.hexdigest().encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


class RawUpstream(_TrackingServer, socketserver.TCPServer):
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RawHandler)


class _RawHandler(socketserver.StreamRequestHandler):
    rbufsize = 0  # unbuffered: bytes after the command line stay in the socket for echo

    def handle(self) -> None:
        sock: socket.socket = self.request
        command = self.rfile.readline().split()
        if command == [b"echo"]:
            while data := sock.recv(CHUNK_ECHO):
                sock.sendall(data)
        elif command[:1] == [b"send"]:
            left = int(command[1])
            view = memoryview(PAYLOAD)
            while left:
                n = min(left, len(view))
                sock.sendall(view[:n])
                left -= n
            sock.shutdown(socket.SHUT_WR)


CHUNK_ECHO = 64 * 1024
_Upstream = TypeVar("_Upstream", HTTPUpstream, RawUpstream)


def _serve(server: _Upstream) -> Iterator[_Upstream]:
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="upstream", daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.close_live()
        server.server_close()
        thread.join(IO_TIMEOUT)


@pytest.fixture(scope="module")
def http_upstream() -> Iterator[HTTPUpstream]:
    yield from _serve(HTTPUpstream())


@pytest.fixture(scope="module")
def raw_upstream() -> Iterator[RawUpstream]:
    yield from _serve(RawUpstream())


@pytest.fixture
def http_proxy(http_upstream: HTTPUpstream) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", http_upstream.server_address[1]) as proxy:
        yield proxy


@pytest.fixture
def raw_proxy(raw_upstream: RawUpstream) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", raw_upstream.server_address[1]) as proxy:
        yield proxy


# --- client helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def connect(port: int, timeout: float = IO_TIMEOUT) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


@contextlib.contextmanager
def http_conn(port: int, timeout: float = IO_TIMEOUT) -> Iterator[http.client.HTTPConnection]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        yield conn
    finally:
        conn.close()


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 * MiB):
        chunks.append(data)
    return b"".join(chunks)


def raw_send(port: int, n: int) -> bytes:
    with connect(port) as sock:
        sock.sendall(b"send %d\n" % n)
        return read_to_eof(sock)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        assert chunk, "connection closed early"
        got += chunk
    return got


def echo_once(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return recv_exact(sock, len(data))


def get(port: int, path: str) -> tuple[int, bytes]:
    with http_conn(port) as conn:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()


# --- request tracking (pure logic) ------------------------------------------------------------


def _requests() -> list[bytes]:
    return [
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /b HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
        b"HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /d HTTP/1.1\r\ncontent-length: 5\r\n\r\n\r\n\r\nx",  # body looks like a terminator
    ]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 40, 10_000])
def test_tracker_splits_requests_at_any_chunking(chunk: int) -> None:
    reqs = _requests()
    decisions = iter([False, True, True, False])
    tracker = RequestTracker(lambda: next(decisions))
    stream = memoryview(b"".join(reqs))
    actions = []
    for pos in range(0, len(stream), chunk):
        actions += tracker.feed(stream[pos : pos + chunk])
    forwarded = b"".join(bytes(a.data) for a in actions if isinstance(a, Forward))
    assert forwarded == reqs[0] + reqs[3]
    assert [a for a in actions if isinstance(a, Reply503)] == [
        Reply503(head_only=False, close=False),
        Reply503(head_only=True, close=False),
    ]


@pytest.mark.parametrize("chunk", [1, 5, 40, 10_000])
def test_tracker_marks_exactly_the_forward_carrying_each_header_block(chunk: int) -> None:
    reqs = _requests()
    decisions = iter([False, True, True, False])
    tracker = RequestTracker(lambda: next(decisions))
    stream = memoryview(b"".join(reqs))
    actions = []
    for pos in range(0, len(stream), chunk):
        actions += tracker.feed(stream[pos : pos + chunk])
    forwards = [a for a in actions if isinstance(a, Forward)]
    marked = [a for a in forwards if a.request is not None]
    # Only forwarded requests are marked (the two answered with a 503 never reach upstream),
    # each once, on the whole header block; body bytes are never marked.
    heads = [r.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" for r in (reqs[0], reqs[3])]
    assert [bytes(a.data) for a in marked] == heads
    assert [(a.request.method, a.request.target, a.request.content_length) for a in marked
            if a.request is not None] == [(b"GET", b"/a", 0), (b"PUT", b"/d", 5)]
    assert b"".join(bytes(a.data) for a in forwards if a.request is None) == b"\r\n\r\nx"


def test_request_kind_names_listings_and_methods() -> None:
    def kind(method: bytes, target: bytes) -> str:
        return RequestHead(method, target, 0, False, False).kind

    assert kind(b"GET", b"/acct/c?restype=container&comp=list&prefix=a") == "list"
    assert kind(b"GET", b"/acct/share/dir?restype=directory&COMP=LIST") == "list"
    assert kind(b"GET", b"/acct/c/blob") == "get"
    assert kind(b"GET", b"/acct/c/comp=list") == "get"  # in the path, not the query
    assert kind(b"GET", b"/acct/c?comp=listing") == "get"
    assert kind(b"HEAD", b"/acct/c/blob") == "head"
    assert kind(b"PUT", b"/acct/c/blob?comp=block&blockid=x") == "put"


def test_tracker_chunked_body_is_never_injected_and_relayed_raw() -> None:
    tracker = RequestTracker(lambda: True)
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    actions = tracker.feed(memoryview(data))
    forwards = [a for a in actions if isinstance(a, Forward)]
    assert forwards == actions
    assert b"".join(bytes(a.data) for a in forwards) == data


def test_endpoint_rewriting(http_proxy: FaultProxy, http_upstream: HTTPUpstream) -> None:
    up = http_upstream.server_address[1]
    url = f"http://127.0.0.1:{up}/devstoreaccount1?comp=list"
    assert http_proxy.endpoint_for(url) == (
        f"http://127.0.0.1:{http_proxy.port}/devstoreaccount1?comp=list"
    )
    with pytest.raises(ValueError):
        http_proxy.endpoint_for(f"http://127.0.0.1:{up + 1}/x")
    conn_str = (
        f"AccountName=a;BlobEndpoint=http://127.0.0.1:{up}/a;QueueEndpoint=http://127.0.0.1:1/a"
    )
    assert http_proxy.connection_string_for(conn_str) == (
        f"AccountName=a;BlobEndpoint=http://127.0.0.1:{http_proxy.port}/a;"
        "QueueEndpoint=http://127.0.0.1:1/a"
    )


# --- relaying ---------------------------------------------------------------------------------


def test_pass_through_is_byte_exact(http_proxy: FaultProxy, raw_proxy: FaultProxy) -> None:
    status, body = get(http_proxy.port, "/payload")
    assert status == 200
    assert body == PAYLOAD
    # Half-close is relayed: the echo server sees our EOF and its own close reaches us.
    data = PAYLOAD[: 3 * MiB]
    with connect(raw_proxy.port) as sock:

        def send_then_eof() -> None:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

        sock.sendall(b"echo\n")
        sender = threading.Thread(target=send_then_eof)
        sender.start()
        echoed = read_to_eof(sock)
        sender.join()
    assert echoed == data
    stats = raw_proxy.stats
    assert stats["bytes_up"] == len(data) + len(b"echo\n")
    assert stats["bytes_down"] == len(data)


def test_many_concurrent_connections(http_proxy: FaultProxy) -> None:
    sizes = [MiB + 4099 * i for i in range(50)]
    barrier = threading.Barrier(len(sizes), timeout=IO_TIMEOUT)

    def fetch(n: int) -> bool:
        with http_conn(http_proxy.port) as conn:
            conn.connect()
            barrier.wait()  # all 50 connections are open at the same time
            conn.request("GET", f"/bytes/{n}")
            resp = conn.getresponse()
            return resp.status == 200 and resp.read() == PAYLOAD[:n]

    with ThreadPoolExecutor(len(sizes)) as pool:
        results = list(pool.map(fetch, sizes))
    assert all(results)
    assert http_proxy.stats["connections"] == len(sizes)


def test_throughput_256mib(raw_proxy: FaultProxy, raw_upstream: RawUpstream) -> None:
    """Measures (prints) direct and proxied throughput; run with -s to see the numbers."""
    total = 256 * MiB
    buf = bytearray(1 * MiB)
    rates = {}
    for name, port in (("direct", raw_upstream.server_address[1]), ("proxied", raw_proxy.port)):
        with connect(port) as sock:
            start = time.perf_counter()
            sock.sendall(b"send %d\n" % total)
            got = 0
            while n := sock.recv_into(buf):
                got += n
            rates[name] = got / MiB / (time.perf_counter() - start)
        assert got == total
    assert raw_proxy.stats["bytes_down"] == total
    print(f"\n256 MiB: direct {rates['direct']:.0f} MiB/s, proxied {rates['proxied']:.0f} MiB/s")


# --- faults -----------------------------------------------------------------------------------


def test_drop_every_counts_bytes_globally(raw_proxy: FaultProxy) -> None:
    every = 1_500_000
    raw_proxy.drop_every(every)
    assert raw_send(raw_proxy.port, 700_000) == payload_prefix(700_000)  # under the budget
    # The budget is global: this connection is cut after the 800_000 bytes that remained.
    assert raw_send(raw_proxy.port, 2_000_000) == payload_prefix(every - 700_000)
    assert raw_send(raw_proxy.port, 4_000_000) == payload_prefix(every)
    assert raw_proxy.stats["drops"] == 2
    raw_proxy.drop_every(None)
    assert raw_send(raw_proxy.port, 4_000_000) == payload_prefix(4_000_000)


def test_drop_every_cuts_http_body(http_proxy: FaultProxy) -> None:
    http_proxy.drop_every(10 * MiB)
    with http_conn(http_proxy.port) as conn:
        conn.request("GET", "/payload")
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
    partial = info.value.partial
    assert 9 * MiB < len(partial) < 10 * MiB  # 10 MiB minus the response head
    assert partial == PAYLOAD[: len(partial)]
    stats = http_proxy.stats
    assert (stats["drops"], stats["bytes_down"]) == (1, 10 * MiB)


def test_reset_next_resets_new_connections(raw_proxy: FaultProxy) -> None:
    def connect_and_read() -> bytes:
        # The RST may already be there when a timeout-mode connect() reads SO_ERROR.
        with connect(raw_proxy.port) as sock:
            return sock.recv(1)

    raw_proxy.reset_next(2)
    for _ in range(2):
        with pytest.raises(ConnectionResetError):
            connect_and_read()
    with connect(raw_proxy.port) as sock:
        sock.sendall(b"echo\n")
        assert echo_once(sock, b"alive") == b"alive"
    stats = raw_proxy.stats
    assert (stats["resets"], stats["connections"]) == (2, 3)


def test_respond_503_then_normal_on_one_keepalive_connection(
    http_proxy: FaultProxy, http_upstream: HTTPUpstream
) -> None:
    upload = PAYLOAD[: 3 * MiB]
    http_upstream.requests.clear()
    http_proxy.respond_503(3)
    with http_conn(http_proxy.port) as conn:
        conn.request("GET", "/bytes/100")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 503
        assert resp.getheader("x-ms-error-code") == "ServerBusy"
        assert b"<Code>ServerBusy</Code>" in body
        assert int(resp.getheader("Content-Length")) == len(body)

        conn.request("PUT", "/upload", body=upload)  # its body must be swallowed exactly
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("x-ms-error-code")) == (503, "ServerBusy")
        resp.read()

        conn.request("HEAD", "/bytes/100")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (503, b"")

        conn.request("GET", "/bytes/1000")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, PAYLOAD[:1000])

        conn.request("PUT", "/upload", body=upload)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (201, hashlib.sha256(upload).hexdigest().encode())
    assert http_upstream.requests == [("GET", "/bytes/1000"), ("PUT", "/upload")]
    stats = http_proxy.stats
    assert (stats["injected_503"], stats["connections"]) == (3, 1)


def test_down_refuses_and_kills_then_up_recovers(raw_proxy: FaultProxy) -> None:
    port = raw_proxy.port
    with connect(port) as existing:
        existing.sendall(b"echo\n")
        assert echo_once(existing, b"before") == b"before"
        raw_proxy.down()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT).close()
        with pytest.raises(ConnectionResetError):
            existing.recv(1)
    raw_proxy.up()
    assert raw_proxy.port == port
    with connect(port) as sock:
        sock.sendall(b"echo\n")
        assert echo_once(sock, b"after") == b"after"
    assert raw_proxy.stats["killed"] == 1


def test_blackhole_times_out_then_up_resumes(
    http_proxy: FaultProxy, raw_upstream: RawUpstream
) -> None:
    http_proxy.blackhole()
    with http_conn(http_proxy.port, timeout=0.5) as conn:
        start = time.monotonic()
        conn.request("GET", "/bytes/10")
        with pytest.raises(TimeoutError):
            conn.getresponse()
        assert time.monotonic() - start < 3
    # Held data flows again after up(): a raw connection opened while hung gets its echo.
    with (
        FaultProxy("127.0.0.1", raw_upstream.server_address[1]) as raw_proxy,
        connect(raw_proxy.port, timeout=0.5) as sock,
    ):
        raw_proxy.blackhole()
        sock.sendall(b"echo\nheld")
        with pytest.raises(TimeoutError):
            sock.recv(4)
        raw_proxy.up()
        sock.settimeout(IO_TIMEOUT)
        assert recv_exact(sock, 4) == b"held"
    http_proxy.up()
    assert get(http_proxy.port, "/bytes/10") == (200, PAYLOAD[:10])


def test_delay_holds_responses(raw_proxy: FaultProxy) -> None:
    delay = 0.4
    with connect(raw_proxy.port) as sock:
        sock.sendall(b"echo\n")
        raw_proxy.delay(delay)
        start = time.monotonic()
        assert echo_once(sock, b"slow") == b"slow"
        assert time.monotonic() - start >= delay
        raw_proxy.clear()
        start = time.monotonic()
        assert echo_once(sock, b"fast") == b"fast"
        assert time.monotonic() - start < delay


def _timed_get(conn: http.client.HTTPConnection, path: str) -> tuple[float, int, bytes]:
    start = time.monotonic()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    return time.monotonic() - start, resp.status, body


def test_latency_holds_each_request_once_not_each_chunk(http_proxy: FaultProxy) -> None:
    latency = 0.25
    http_proxy.latency(latency)
    with http_conn(http_proxy.port) as conn:
        for _ in range(3):  # every request on a keep-alive connection pays it
            secs, status, body = _timed_get(conn, "/bytes/100")
            assert (status, body) == (200, PAYLOAD[:100])
            assert secs >= latency
        # 32 MiB is 128 relay chunks: held per chunk (delay) it would take 32 s.
        secs, status, body = _timed_get(conn, f"/bytes/{32 * MiB}")
        assert (status, body) == (200, PAYLOAD[: 32 * MiB])
        assert latency <= secs < latency + 8
        http_proxy.clear()
        secs, status, _ = _timed_get(conn, "/bytes/100")
        assert status == 200 and secs < latency


def test_latency_is_paid_concurrently_by_concurrent_connections(http_proxy: FaultProxy) -> None:
    latency, n = 0.5, 8
    http_proxy.latency(latency)
    barrier = threading.Barrier(n, timeout=IO_TIMEOUT)

    def fetch(i: int) -> tuple[float, int]:
        with http_conn(http_proxy.port) as conn:
            conn.connect()
            barrier.wait()
            secs, status, body = _timed_get(conn, f"/bytes/{1000 + i}")
            assert body == PAYLOAD[: 1000 + i]
            return secs, status

    start = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(fetch, range(n)))
    elapsed = time.monotonic() - start
    assert all(status == 200 and secs >= latency for secs, status in results)
    assert elapsed < n * latency / 2  # not one after the other (that would be 4 s)


def test_latency_does_not_hold_bytes_that_are_not_http(raw_proxy: FaultProxy) -> None:
    raw_proxy.latency(1.0)
    with connect(raw_proxy.port) as sock:
        start = time.monotonic()
        sock.sendall(b"echo\n")
        assert echo_once(sock, b"quick") == b"quick"
        assert time.monotonic() - start < 1.0


def test_forwarded_counts_requests_by_kind(
    http_proxy: FaultProxy, http_upstream: HTTPUpstream
) -> None:
    http_upstream.requests.clear()
    http_proxy.respond_503(1)
    with http_conn(http_proxy.port) as conn:
        for method, path, body in [
            ("GET", "/bytes/10", None),  # answered by the proxy with a 503: not forwarded
            ("GET", "/bytes/10", None),
            ("GET", "/bytes/20?restype=container&comp=list", None),
            ("HEAD", "/bytes/10", None),
            ("PUT", "/upload", b"data"),
            ("GET", "/bytes/30?comp=list", None),
        ]:
            conn.request(method, path, body=body)
            conn.getresponse().read()
    assert http_proxy.forwarded == {"get": 1, "list": 2, "head": 1, "put": 1}
    assert sum(http_proxy.forwarded.values()) == len(http_upstream.requests) == 5
    stats = http_proxy.stats
    assert (stats["requests"], stats["injected_503"]) == (6, 1)


def test_proxy_process_serves_counts_and_stops_on_end_of_input(
    http_upstream: HTTPUpstream,
) -> None:
    up = http_upstream.server_address[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.faultproxy_process",
         "--upstream", f"127.0.0.1:{up}", "--latency-ms", "300"],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None

    def ask(command: str) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    try:
        port = json.loads(proc.stdout.readline())["ports"][str(up)]
        with http_conn(port) as conn:
            secs, status, body = _timed_get(conn, "/bytes/64")
            assert (status, body) == (200, PAYLOAD[:64])
            assert secs >= 0.3
            assert ask("latency 0") == {"ok": True}
            secs, status, _ = _timed_get(conn, "/bytes/64?comp=list")
            assert status == 200 and secs < 0.3
        counts = ask("stats")[str(up)]
        assert counts["forwarded"] == {"get": 1, "list": 1}
        assert counts["stats"]["connections"] == 1
        assert "error" in ask("bogus")
        assert "error" in ask("latency soon")
        proc.stdin.close()
        assert proc.wait(timeout=IO_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert port not in _listening_ports()


def _listening_ports() -> set[int]:
    conns = psutil.Process().net_connections(kind="tcp")
    return {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}


def test_stop_leaves_no_thread_and_no_listener(raw_upstream: RawUpstream) -> None:
    proxy = FaultProxy("127.0.0.1", raw_upstream.server_address[1])
    proxy.start()
    port = proxy.port
    try:
        assert port in _listening_ports()
        with connect(port) as sock:
            sock.sendall(b"echo\n")
            assert echo_once(sock, b"x") == b"x"
            proxy.stop()
            with pytest.raises(ConnectionResetError):
                sock.recv(1)
    finally:
        proxy.stop()
    proxy.stop()  # idempotent
    assert not [t for t in threading.enumerate() if t.name == f"faultproxy-{port}"]
    assert port not in _listening_ports()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT).close()
