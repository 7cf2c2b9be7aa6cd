"""Control-socket fuzzing: thousands of random and mutated requests over concurrent connections
never stop the daemon, never get an "internal" error, and never disturb a reader; a user who
is not authorized is refused and changes nothing.

The requests come from a seeded generator (DSM_FUZZ_SEED to replay one run): well-formed
requests with random and hostile argument values, then byte-level mutations of them (flips,
truncations, insertions, invalid UTF-8, lone surrogates), pipelined batches, oversized lines
and connections dropped mid-line. Attach requests may name any backend: the daemon runs in a
network namespace of its own (`unshare --net`), so whatever a fuzzed request asks for, nothing
leaves the machine.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import MiB, unique
from tests.support.daemon import NOBODY, DsmountDaemon, as_user, require_fuse
from tests.support.trees import make_tree

pytestmark = pytest.mark.mount

REQUESTS = 12_000
CONNECTIONS = 8
SEED = int(os.environ.get("DSM_FUZZ_SEED", "0")) or random.randrange(1, 2**32)
# What a reply may say. "internal" (an unexpected exception in the daemon) is a bug.
EXPECTED_CODES = {
    "invalid_request",
    "unsupported_version",
    "not_found",
    "already_exists",
    "busy",
    "permission_denied",
    "config_error",
    "auth_failed",
    "transient",
    "timed_out",
    "backend_error",
    "error",
}


class IsolatedDaemon(DsmountDaemon):
    """A daemon without network access: fuzzed attach requests cannot reach anything."""

    def command(self) -> list[str]:
        return ["unshare", "--net", "--", *super().command()]


# -- the generator ----------------------------------------------------------------------------
KNOWN_KEYS = [
    "name",
    "kind",
    "path",
    "version",
    "force",
    "immutable",
    "ttl",
    "container",
    "share",
    "account",
    "endpoint",
    "prefix",
    "auth",
    "paths",
    "job",
    "parallel",
]
HOSTILE_STRINGS = [
    "",
    ".",
    "..",
    "../..",
    "a/b",
    "/",
    "//",
    "x" * 256,
    "x" * 5000,
    "\x00",
    "a\x00b",
    "\n",
    "\u202e\u0645",
    "\udc80",
    "\ud800x",
    "é" * 200,
    "\U0001f600",
    " ",
    "-",
    "--force",
    "NaN",
    "null",
    "$(id)",
    "%s%n",
    "\\\\server\\share",
]


class Generator:
    def __init__(self, seed: int, paths: list[str]) -> None:
        self.r = random.Random(seed)
        self.paths = paths

    def string(self) -> str:
        r = self.r
        roll = r.random()
        if roll < 0.4:
            return r.choice(HOSTILE_STRINGS)
        if roll < 0.7:
            return f"fz-{r.randrange(50)}"  # names that collide: attach/detach really happen
        return "".join(
            chr(r.choice([r.randrange(32, 127), r.randrange(0x80, 0x2FFFF)]))
            for _ in range(r.randrange(0, 40))
        )

    def scalar(self) -> Any:
        r = self.r
        return r.choice(
            [
                None,
                True,
                False,
                0,
                -1,
                2**63,
                -(2**70),
                1e308,
                -0.0,
                float("nan"),
                float("inf"),
                r.randrange(-1000, 1000),
                r.random(),
                self.string(),
                self.string(),
            ]
        )

    def value(self, depth: int = 0) -> Any:
        r = self.r
        roll = r.random()
        if depth < 3 and roll < 0.1:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        if depth < 3 and roll < 0.2:
            return {self.string(): self.value(depth + 1) for _ in range(r.randrange(4))}
        return self.scalar()

    def arg(self, key: str) -> Any:
        r = self.r
        if r.random() < 0.3:
            return self.value()
        plausible: dict[str, list[Any]] = {
            "name": [f"fz-{r.randrange(50)}", self.string()],
            "kind": ["local", "blob", "fileshare", "nfs", "LOCAL"],
            "path": [*self.paths, "/", "/nonexistent", "relative/dir", "/proc/self", ""],
            "version": [str(r.randrange(5)), r.randrange(-2, 5), "..", "a/b", "1.0"],
            "force": [True, False],
            "immutable": [True, False],
            "ttl": [0, 1.5, 3600, -5],
            "container": ["data", "x", "UPPER", "a" * 70],
            "share": ["share", "s", "bad--name"],
            "account": ["devstoreaccount1", "acct", "evil.example.com"],
            "endpoint": [
                "http://127.0.0.1:9/acct",
                "https://acct.blob.core.windows.net",
                "http://[::1]:9/x",
                "file:///etc/passwd",
                "http://h/?sig=abc",
            ],
            "prefix": ["", "a/b", "../..", "/"],
            "auth": [
                {"kind": "account_key", "secret": "a2V5"},
                {"kind": "account_key", "secret": "not base64!"},
                {"kind": "sas_token", "secret": "sv=1&sig=abc"},
                {"kind": "connection_string", "secret": "AccountName=a;AccountKey=a2V5"},
                {"kind": "connection_string", "secret": "garbage"},
                {"kind": "anonymous"},
                {"kind": "azure_ad", "client_id": "x"},
                {"kind": "nope"},
                {"secret": 5},
            ],
        }
        return r.choice(plausible.get(key, [self.value()]))

    def request(self) -> dict[str, Any]:
        r = self.r
        op = (
            r.choice(
                [
                    "ping",
                    "attach",
                    "attach",
                    "detach",
                    "list",
                    "status",
                    "refresh",
                    "warm",
                    "warm_status",
                    "warm_cancel",
                    "nope",
                    "",
                    "ATTACH",
                ]
            )
            if r.random() < 0.95
            else self.value()
        )
        keys = r.sample(KNOWN_KEYS, r.randrange(len(KNOWN_KEYS)))
        args: Any = {k: self.arg(k) for k in keys}
        if r.random() < 0.05:
            args[self.string()] = self.value()
        if r.random() < 0.03:
            args = self.value()
        req: dict[str, Any] = {
            "v": 1 if r.random() < 0.9 else self.scalar(),
            "op": op,
            "args": args,
        }
        if r.random() < 0.5:
            req["id"] = self.value()
        for drop in ("v", "op", "args"):
            if r.random() < 0.03:
                req.pop(drop)
        return req

    def line(self) -> bytes:
        """One request line (no newline inside)."""
        r = self.r
        data = json.dumps(self.request(), ensure_ascii=r.random() < 0.5).encode(
            "utf-8", "surrogatepass"
        )
        if r.random() < 0.4:
            data = self.mutate(data)
        return data.replace(b"\n", b" ")

    def mutate(self, data: bytes) -> bytes:
        r = self.r
        buf = bytearray(data)
        for _ in range(r.randrange(1, 4)):
            kind = r.randrange(6)
            pos = r.randrange(len(buf) + 1)
            if kind == 0 and buf:  # flip a byte
                buf[min(pos, len(buf) - 1)] ^= 1 << r.randrange(8)
            elif kind == 1:  # truncate
                del buf[pos:]
            elif kind == 2:  # insert random bytes (invalid UTF-8 included)
                buf[pos:pos] = r.randbytes(r.randrange(1, 8))
            elif kind == 3:  # duplicate a slice
                buf[pos:pos] = buf[pos : pos + r.randrange(1, 64)]
            elif kind == 4:  # deep nesting
                depth = r.choice([10, 1000, 100_000])
                buf[pos:pos] = b"[" * depth + b"]" * depth
            else:  # a structural character
                buf[pos:pos] = r.choice([b"{", b"}", b'"', b"\\", b",", b":", b"\x00"])
        return bytes(buf)


# -- a client connection ----------------------------------------------------------------------
def read_reply(sock: socket.socket, buf: bytearray) -> dict[str, Any] | None:
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    reply = json.loads(line)
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    return reply


class Session:
    """One fuzzing connection: sends lines, checks every reply, reconnects when closed."""

    def __init__(self, path: str, gen: Generator) -> None:
        self.path, self.gen = path, gen
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.sent = 0
        self.replies: dict[str, int] = {}
        self.bad: list[tuple[bytes, Any]] = []
        self.slowest = 0.0  # seconds of the slowest exchange (a lost reply shows as a stall)

    def connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(60)
            self.sock.connect(self.path)
            self.buf = bytearray()
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def exchange(self, lines: list[bytes]) -> None:
        started = time.monotonic()
        try:
            self._exchange(lines)
        finally:
            self.slowest = max(self.slowest, time.monotonic() - started)

    def _exchange(self, lines: list[bytes]) -> None:
        sock = self.connect()
        try:
            sock.sendall(b"".join(line + b"\n" for line in lines))
            self.sent += len(lines)
            for line in lines:
                if not line.strip():
                    continue  # blank lines get no reply
                reply = read_reply(sock, self.buf)
                if reply is None:  # closed by the daemon (e.g. after an oversized line)
                    self.close()
                    return
                self.note(line, reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close()

    def note(self, line: bytes, reply: dict[str, Any]) -> None:
        code = "ok" if reply["ok"] else reply.get("error", {}).get("code")
        self.replies[code] = self.replies.get(code, 0) + 1
        if code != "ok" and code not in EXPECTED_CODES:
            self.bad.append((line[:300], reply))

    def run(self, n: int) -> None:
        r = self.gen.r
        try:
            while self.sent < n:
                roll = r.random()
                if roll < 0.05:  # pipelined batch, blank lines included
                    self.exchange(
                        [
                            self.gen.line() if r.random() < 0.9 else b""
                            for _ in range(r.randrange(2, 30))
                        ]
                    )
                elif roll < 0.053:  # oversized line: an error reply or a drop, then reconnect
                    self.exchange([b'{"v":1,"op":"ping","pad":"' + b"x" * (2 * MiB) + b'"}'])
                    self.close()
                elif roll < 0.06:  # half a line, then hang up
                    sock = self.connect()
                    sock.sendall(self.gen.line()[: r.randrange(1, 40)])
                    self.sent += 1
                    self.close()
                else:
                    self.exchange([self.gen.line()])
        finally:
            self.close()


class Reader:
    """Reads a file through the mount in a loop, checking every byte."""

    def __init__(self, path: Path, expected: bytes) -> None:
        self.path, self.expected = path, expected
        self.reads = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with open(self.path, "rb", buffering=0) as f:
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                    data = f.read()
            except OSError as e:
                self.failures.append(repr(e))
                continue
            if data != self.expected:
                self.failures.append(f"wrong bytes ({len(data)})")
            self.reads += 1

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the reader hung"


@pytest.fixture
def isolated_daemon(tmp_path: Path) -> Iterator[DsmountDaemon]:
    """A daemon in its own network namespace, with short retry deadlines."""
    config = tmp_path / "dsmount.toml"
    config.write_text("[retry]\nrequest_deadline = 1.0\nattempt_timeout = 0.5\n")
    require_fuse()
    daemon = IsolatedDaemon(config=config)
    try:
        daemon.start()
        yield daemon
    finally:
        try:
            daemon.cleanup(remove_workdir=False)
        finally:
            print(f"--- dsmount daemon log ---\n{daemon.log_tail(100)}")
            daemon.remove_workdir()


def test_fuzzed_control_requests_never_hurt_the_daemon(
    isolated_daemon: DsmountDaemon, tmp_path: Path
) -> None:
    d = isolated_daemon
    src = make_tree(tmp_path / "src", {"f.bin": 256 * 1024 + 11})
    dirs = [str(make_tree(tmp_path / f"d{i}", {"x": b"x"})) for i in range(3)]
    keep = unique("keep")  # the generator never names it
    root = d.attach_local(keep, src)
    expected = (src / "f.bin").read_bytes()
    print(f"fuzz seed {SEED} (DSM_FUZZ_SEED={SEED} replays it)")
    sessions = [Session(str(d.socket), Generator(SEED + i, dirs)) for i in range(CONNECTIONS)]
    started = time.monotonic()
    with Reader(root / "f.bin", expected) as reader, ThreadPoolExecutor(CONNECTIONS) as pool:
        list(pool.map(lambda s: s.run(REQUESTS // CONNECTIONS), sessions))
    elapsed = time.monotonic() - started
    sent = sum(s.sent for s in sessions)
    codes: dict[str, int] = {}
    for s in sessions:
        for code, n in s.replies.items():
            codes[code] = codes.get(code, 0) + n
    print(f"{sent} requests in {elapsed:.1f}s; replies {codes}; {reader.reads} reads meanwhile")
    assert sent >= 10_000
    # Every reply came (a lost one would stall its connection until the idle timeout).
    assert max(s.slowest for s in sessions) < 10, [s.slowest for s in sessions]
    assert [b for s in sessions for b in s.bad] == [], "unexpected error codes"
    assert codes.get("ok", 0) > 100 and codes.get("invalid_request", 0) > 1000, codes
    assert d.alive(), d.log_tail()
    assert d.call("ping")["pid"] == d.pid
    assert reader.failures == [] and reader.reads > 10, (reader.failures[:5], reader.reads)
    assert keep in {ds["path"] for ds in d.call("list")["datastores"]}
    assert (root / "f.bin").read_bytes() == expected
    assert "Traceback" not in d.log_text()


REFUSED_SCRIPT = """
import json, socket, sys
requests = json.loads(sys.stdin.read())
out = []
for line in requests:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    try:
        s.connect(sys.argv[1])
        try:
            s.sendall(line.encode() + b"\\n")
        except OSError:
            pass
        data = b""
        while b"\\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        out.append(data.decode(errors="replace").split("\\n")[0])
    except OSError as e:
        out.append("error " + type(e).__name__)
    finally:
        s.close()
print(json.dumps(out))
"""


def test_unauthorized_user_is_refused_and_changes_nothing(
    make_daemon: Callable[..., DsmountDaemon], tmp_path: Path
) -> None:
    d = make_daemon()
    src = make_tree(tmp_path / "src", {"f.bin": b"precious\n"})
    os.chmod(tmp_path, 0o755)
    keep = unique("keep")
    root = d.attach_local(keep, src)
    before = d.call("list")
    gen = Generator(SEED, [str(src)])
    requests = [
        json.dumps({"v": 1, "op": "detach", "args": {"name": keep, "force": True}}),
        json.dumps(
            {"v": 1, "op": "attach", "args": {"name": "evil", "kind": "local", "path": "/"}}
        ),
        json.dumps({"v": 1, "op": "refresh", "args": {"name": keep}}),
        json.dumps({"v": 1, "op": "status"}),
        json.dumps({"v": 1, "op": "list"}),
        json.dumps({"v": 1, "op": "ping"}),
        *(gen.line().decode(errors="replace") for _ in range(30)),
    ]
    # The socket's mode would already stop the user; open it so the daemon's own check
    # (SO_PEERCRED) is what is tested.
    os.chmod(d.socket, 0o666)
    try:
        out = subprocess.run(
            [*as_user(*NOBODY), sys.executable, "-c", REFUSED_SCRIPT, str(d.socket)],
            input=json.dumps(requests),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.chmod(d.socket, 0o660)
    assert out.returncode == 0, out.stderr
    replies = json.loads(out.stdout)
    assert len(replies) == len(requests)
    for reply in replies:
        if reply.startswith("error"):  # refused before it could even send: also fine
            continue
        parsed = json.loads(reply)
        assert parsed["ok"] is False and parsed["error"]["code"] == "permission_denied", reply
    after = d.call("list")
    assert after == before
    assert (root / "f.bin").read_bytes() == b"precious\n"
    assert "refused uid 65534" in d.log_text()
