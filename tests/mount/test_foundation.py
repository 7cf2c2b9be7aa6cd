"""The foundation, end to end: a real daemon, a real FUSE mount, the real CLI.

Everything is checked through the mountpoint with plain file APIs (open/read, os.scandir,
os.stat, os.walk), the way a training script or a Jupyter user sees it. Read-only checks share
one module-scoped daemon and use unique datastore names; tests that stop, kill, abuse or
reconfigure a daemon get their own.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dsmount.errors import DsmountError
from tests.support.daemon import (
    FSTYPE,
    NOBODY,
    DaemonStartError,
    DsmountDaemon,
    as_user,
    mount_entries,
    mount_entry,
    wait_until,
)
from tests.support.trees import MiB, describe_tree, make_tree, sha256_file

pytestmark = pytest.mark.mount

SMALL_TREE = {
    "hello.txt": b"hello\n",
    "sub/data.bin": 200 * 1024 + 3,
    "sub/empty": b"",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def expect_errno(number: int, fn: Callable[..., Any], *args: Any) -> None:
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno == number, (
        f"{getattr(fn, '__name__', fn)}{args}: expected {errno.errorcode[number]}, got "
        f"{errno.errorcode.get(info.value.errno or 0, info.value.errno)} ({info.value})"
    )


def read_all(path: str | Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI failed with exactly one line on stderr (no traceback); that line."""
    assert result.returncode != 0, f"expected failure, got: {result.stdout}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def daemon(shared_dsmount_daemon: DsmountDaemon) -> DsmountDaemon:
    return shared_dsmount_daemon


@pytest.fixture(scope="module")
def tree_mount(daemon: DsmountDaemon, source_tree: Path) -> Path:
    """The standard dataset attached once on the shared daemon."""
    return daemon.attach_local(unique("tree"), source_tree)


@pytest.fixture
def small_src(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "small", SMALL_TREE)


@pytest.fixture(autouse=True)
def _shared_daemon_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test did to the shared daemon, it must still be alive and answering."""
    yield
    if "daemon" in request.fixturenames:
        shared: DsmountDaemon = request.getfixturevalue("daemon")
        assert shared.alive(), f"the shared daemon died:\n{shared.log_tail()}"
        assert shared.call("ping", timeout=10)["pong"] is True


# -- data and metadata through the mount ------------------------------------------------------
def test_every_file_reads_back_identical(daemon: DsmountDaemon, source_tree: Path) -> None:
    files = sorted(p for p, n in describe_tree(source_tree).items() if n.kind == "file")
    assert len(files) > 1000
    expected = {rel: sha256_file(source_tree / rel) for rel in files}
    # Two fresh attachments, so both passes are cold: one read file after file, one from 8
    # threads (many requests in flight at once).
    one = daemon.attach_local(unique("seq"), source_tree)
    two = daemon.attach_local(unique("par"), source_tree)
    sequential = {rel: sha256_file(one / rel) for rel in files}
    with ThreadPoolExecutor(8) as pool:
        hashes = pool.map(lambda rel: sha256_file(two / rel), files)
        parallel = dict(zip(files, hashes, strict=True))
    assert [rel for rel in files if sequential[rel] != expected[rel]] == []
    assert [rel for rel in files if parallel[rel] != expected[rel]] == []


def test_one_file_read_by_8_threads_at_once(daemon: DsmountDaemon, source_tree: Path) -> None:
    rel = "data/random-5MiB.bin"
    source = (source_tree / rel).read_bytes()
    root = daemon.attach_local(unique("same"), source_tree)
    barrier = threading.Barrier(8)
    chunk = 256 * 1024

    def read(i: int) -> bytes:
        # Each thread starts at a different offset and wraps around, so the threads ask for
        # different blocks and for the same blocks at the same time.
        with open(root / rel, "rb", buffering=0) as f:
            barrier.wait(10)
            start = (i * len(source) // 8) // chunk * chunk
            parts = {}
            for offset in [*range(start, len(source), chunk), *range(0, start, chunk)]:
                parts[offset] = os.pread(f.fileno(), chunk, offset)
            return b"".join(parts[o] for o in sorted(parts))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(read, range(8)))
    assert all(r == source for r in results)


def test_reads_at_unaligned_offsets_match_source(daemon: DsmountDaemon, source_tree: Path) -> None:
    # A fresh attachment: nothing of it is cached yet, so the reads reach the backend.
    root = daemon.attach_local(unique("offsets"), source_tree)
    rel = "data/random-5MiB.bin"
    source = (source_tree / rel).read_bytes()
    fd = os.open(root / rel, os.O_RDONLY)
    try:
        for offset, length in [
            (MiB - 7, 14),
            (3 * MiB + 1, 2 * MiB),
            (len(source) - 10, 100),
            (0, 1),
            (2 * MiB, MiB),
            (len(source), 10),
            (len(source) + 5, 1),
        ]:
            assert os.pread(fd, length, offset) == source[offset : offset + length], (
                offset,
                length,
            )
    finally:
        os.close(fd)


def test_walk_lists_exactly_the_source_tree(tree_mount: Path, source_tree: Path) -> None:
    want = describe_tree(source_tree)
    got = describe_tree(tree_mount)
    assert sorted(got) == sorted(want)  # names, including unicode, spaces and the deep path
    assert {p: (n.kind, n.size) for p, n in got.items()} == {
        p: (n.kind, n.size) for p, n in want.items()
    }
    off = {
        p: (got[p].mtime, want[p].mtime) for p in want if abs(got[p].mtime - want[p].mtime) >= 1.0
    }
    assert off == {}
    # scandir's d_type agrees with stat.
    with os.scandir(tree_mount) as it:
        kinds = {e.name: e.is_dir() for e in it}
    assert kinds == {p: n.kind == "dir" for p, n in want.items() if "/" not in p}


def test_default_modes_and_owner(tree_mount: Path, daemon: DsmountDaemon,
                                 source_tree: Path) -> None:
    # The mount's own directory: the [fs] defaults.
    st = os.stat(daemon.mountpoint)
    assert (st.st_mode, st.st_uid, st.st_gid) == (stat.S_IFDIR | 0o555, 0, 0)
    # A local datastore: exactly the source's owners and modes (the kernel enforces them).
    for path in [tree_mount, *tree_mount.rglob("*")]:
        st = os.stat(path)
        src = os.stat(source_tree / path.relative_to(tree_mount))
        want = (stat.S_IFMT(src.st_mode) | (src.st_mode & 0o777), src.st_uid,
                src.st_gid)
        assert (st.st_mode, st.st_uid, st.st_gid) == want, path


def test_config_sets_owner_and_modes(
    make_daemon: Callable[..., DsmountDaemon], small_src: Path
) -> None:
    d = make_daemon(
        config_text='[fs]\nuid = 4321\ngid = 8765\nfile_mode = "0640"\ndir_mode = "0750"\n'
    )
    # [fs] is what the mount's own directories (and cloud datastores) show...
    st = os.stat(d.mountpoint)
    assert (st.st_mode, st.st_uid, st.st_gid) == (stat.S_IFDIR | 0o750, 4321, 8765)
    # ...and root's attach-time override is what a local datastore shows instead of its source.
    d.cli("attach", "cfg", "--local", str(small_src), "--uid", "4321", "--gid", "8765",
          "--file-mode", "0640", "--dir-mode", "0750")
    root = d.mountpoint / "cfg"
    for path in [root, root / "sub", root / "hello.txt", root / "sub" / "data.bin"]:
        st = os.stat(path)
        want = stat.S_IFDIR | 0o750 if path.is_dir() else stat.S_IFREG | 0o640
        assert (st.st_mode, st.st_uid, st.st_gid) == (want, 4321, 8765), path
    # default_permissions: the kernel enforces those modes for everyone else.
    denied = subprocess.run(
        [*as_user(*NOBODY), "cat", str(root / "hello.txt")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert denied.returncode != 0
    assert "Permission denied" in denied.stderr


# -- attach / detach --------------------------------------------------------------------------
def test_attach_then_detach_without_remount(daemon: DsmountDaemon, small_src: Path) -> None:
    name = unique("ad")
    before = mount_entry(daemon.mountpoint)
    assert name not in os.listdir(daemon.mountpoint)
    out = daemon.cli("attach", name, "--local", str(small_src)).stdout
    assert name in out
    assert name in os.listdir(daemon.mountpoint)
    assert read_all(daemon.mountpoint / name / "hello.txt") == b"hello\n"

    daemon.cli("detach", name)
    wait_until(lambda: name not in os.listdir(daemon.mountpoint), 5, "the name to disappear")
    expect_errno(errno.ENOENT, os.stat, daemon.mountpoint / name)
    expect_errno(errno.ENOENT, os.stat, daemon.mountpoint / name / "hello.txt")
    assert mount_entry(daemon.mountpoint) == before  # same mount: nothing was remounted


def test_two_datastores_side_by_side(daemon: DsmountDaemon, tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", {"f.txt": b"from a\n", "only-a": b"a"})
    b = make_tree(tmp_path / "b", {"f.txt": b"from b\n", "only-b/x": b"b"})
    na, nb = unique("left"), unique("right")
    daemon.cli("attach", na, "--local", str(a))
    daemon.cli("attach", nb, "--local", str(b))
    try:
        assert {na, nb} <= set(os.listdir(daemon.mountpoint))
        assert read_all(daemon.mountpoint / na / "f.txt") == b"from a\n"
        assert read_all(daemon.mountpoint / nb / "f.txt") == b"from b\n"
        assert sorted(os.listdir(daemon.mountpoint / na)) == ["f.txt", "only-a"]
        assert sorted(os.listdir(daemon.mountpoint / nb)) == ["f.txt", "only-b"]
        daemon.cli("detach", na)
        wait_until(lambda: na not in os.listdir(daemon.mountpoint), 5, f"{na} to disappear")
        assert read_all(daemon.mountpoint / nb / "f.txt") == b"from b\n"  # untouched
    finally:
        for n in (na, nb):
            daemon.cli("detach", n, check=False)


def test_attach_by_version(daemon: DsmountDaemon, tmp_path: Path) -> None:
    one = make_tree(tmp_path / "v1", {"labels.csv": b"version one\n"})
    two = make_tree(tmp_path / "v2", {"labels.csv": b"version two!\n", "extra.txt": b"+"})
    name = unique("cats")
    daemon.cli("attach", name, "--version", "1", "--local", str(one))
    daemon.cli("attach", name, "--version", "2", "--local", str(two))
    top = daemon.mountpoint / name
    assert sorted(os.listdir(top)) == ["1", "2"]
    assert read_all(top / "1" / "labels.csv") == b"version one\n"
    assert read_all(top / "2" / "labels.csv") == b"version two!\n"
    assert sorted(os.listdir(top / "1")) == ["labels.csv"]
    assert sorted(os.listdir(top / "2")) == ["extra.txt", "labels.csv"]

    again = daemon.cli("attach", name, "--version", "1", "--local", str(two), check=False)
    assert "already attached" in one_error_line(again)
    assert read_all(top / "1" / "labels.csv") == b"version one\n"  # still the first one
    unversioned = daemon.cli("attach", name, "--local", str(one), check=False)
    one_error_line(unversioned)

    daemon.cli("detach", name, "--version", "1")
    wait_until(lambda: os.listdir(top) == ["2"], 5, "version 1 to disappear")
    assert read_all(top / "2" / "labels.csv") == b"version two!\n"
    daemon.cli("detach", name, "--version", "2")
    wait_until(lambda: name not in os.listdir(daemon.mountpoint), 5, f"{name} to disappear")


def test_detach_of_a_never_visited_datastore_logs_no_error(
    daemon: DsmountDaemon, small_src: Path
) -> None:
    before = len(daemon.log_text())
    name = unique("unseen")
    daemon.attach_local(name, small_src)
    daemon.call("detach", name=name)
    daemon.attach_local(name, small_src, version="1")
    daemon.call("detach", name=name, version="1")
    assert daemon.call("ping")["pong"] is True  # the log is written by now
    new = daemon.log_text()[before:]
    assert "ERROR" not in new and "Traceback" not in new, new


def test_detach_with_open_file_refused_then_forced_lazily(
    daemon: DsmountDaemon, small_src: Path
) -> None:
    name = unique("busy")
    root = daemon.attach_local(name, small_src)
    want = (small_src / "sub" / "data.bin").read_bytes()
    fd = os.open(root / "sub" / "data.bin", os.O_RDONLY)
    try:
        refused = daemon.cli("detach", name, check=False)
        assert "open file" in one_error_line(refused)
        assert name in os.listdir(daemon.mountpoint)

        forced = daemon.cli("detach", name, "--force")
        assert "lazily" in forced.stdout
        wait_until(lambda: name not in os.listdir(daemon.mountpoint), 5, f"{name} to go")
        expect_errno(errno.ENOENT, os.stat, daemon.mountpoint / name)
        # The open descriptor still reads the right bytes (nothing was read before detach,
        # so these come through the daemon, not the page cache).
        assert os.pread(fd, len(want) + 10, 0) == want
        assert os.pread(fd, 1000, 100_000) == want[100_000:101_000]

        # The name is free again: a new attachment of it serves the new source, while the
        # old descriptor keeps reading the old one.
        other = make_tree(small_src.parent / "other", {"sub/data.bin": b"new data"})
        daemon.attach_local(name, other)
        assert read_all(daemon.mountpoint / name / "sub" / "data.bin") == b"new data"
        assert os.pread(fd, 64, 0) == want[:64]
    finally:
        os.close(fd)

    def open_files() -> int:
        return {d["path"]: d for d in daemon.call("list")["datastores"]}[name]["open_files"]

    # close(2) of a reader does not wait for the kernel's RELEASE (no FLUSH is asked for).
    wait_until(lambda: open_files() == 0, 10, "the descriptor's release")
    daemon.cli("detach", name)


# -- the control socket under abuse -----------------------------------------------------------
def exchange(path: Path, payload: bytes, timeout: float = 10.0) -> dict[str, Any] | None:
    """Send raw bytes; the first reply line parsed, or None if the daemon dropped us."""
    buf = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        # It may close on us mid-send (an oversized line) and still have replied.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(payload)
        try:
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except ConnectionResetError:
            pass
    if not buf:
        return None
    reply = json.loads(buf.split(b"\n", 1)[0])
    assert isinstance(reply, dict) and reply.get("v") == 1, reply
    return reply


class BackgroundReader:
    """Keeps listing a directory and reading a file through the mount in a thread.

    The file's pages are dropped from the page cache after each read (POSIX_FADV_DONTNEED),
    so every read really goes to the daemon.
    """

    def __init__(self, path: Path, expected: bytes) -> None:
        self.path = path
        self.expected = expected
        self.reads = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reader", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                assert self.path.name in os.listdir(self.path.parent)
                with open(self.path, "rb", buffering=0) as f:
                    data = f.read()
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                if data != self.expected:
                    self.failures.append(f"read {len(data)} bytes, not the expected ones")
            except Exception as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            self.reads += 1

    def __enter__(self) -> BackgroundReader:
        self._thread.start()
        wait_until(lambda: self.reads >= 3 or self.failures, 15, "the reader to get going")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the reader hung"


MALFORMED = [
    b"this is not json\n",
    b"\xff\xfe\x00garbage\n",
    b"[1, 2, 3]\n",
    b'"a string"\n',
    b'{"v": 1, "op": "format_disk", "args": {}}\n',
    b'{"v": 1, "args": {}}\n',
    b'{"op": "ping"}\n',
    b'{"v": 2, "op": "ping"}\n',
    b'{"v": 1, "op": "attach", "args": {}}\n',
    b'{"v": 1, "op": "attach", "args": {"name": "x"}}\n',
    b'{"v": 1, "op": "attach", "args": {"name": "x", "kind": "local"}}\n',
    b'{"v": 1, "op": "attach", "args": {"name": "x", "kind": "nfs"}}\n',
    b'{"v": 1, "op": "attach", "args": []}\n',
    b'{"v": 1, "op": "attach", "args": {"name": 5, "kind": "local", "path": "/tmp"}}\n',
    b'{"v": 1, "op": "attach", "args": {"name": "../etc", "kind": "local", "path": "/"}}\n',
    b'{"v": 1, "op": "attach", "args": {"name": "x", "kind": "local", "path": "rel/dir"}}\n',
    b'{"v": 1, "op": "attach", "args": {"name": "x", "kind": "local", "path": 7}}\n',
    b'{"v": 1, "op": "detach", "args": {}}\n',
    b'{"v": 1, "op": "detach", "args": {"name": "nope", "force": "yes"}}\n',
    b'{"v": 1, "op": "refresh", "args": {"name": 5}}\n',
    b'{"v": 1, "op": "refresh", "args": {"name": "nope", "path": "../.."}}\n',
    b'{"v": 1, "op": "ping", "args": "not an object"}\n',
    b"\n\n" + b'{"v": 1, "op": "nope"}\n',  # blank lines are skipped, the request answered
]


def test_bad_control_input_never_kills_the_daemon(
    make_daemon: Callable[..., DsmountDaemon], tmp_path: Path
) -> None:
    d = make_daemon()
    src = make_tree(tmp_path / "src", {"f.bin": 300 * 1024 + 5})
    name = unique("abuse")
    root = d.attach_local(name, src)
    before = {s["path"]: s["bytes_read"] for s in d.call("status")["datastores"]}[name]
    hangers: list[socket.socket] = []
    try:
        with BackgroundReader(root / "f.bin", (src / "f.bin").read_bytes()) as reader:
            for payload in MALFORMED:
                reply = exchange(d.socket, payload)
                assert reply is not None, f"dropped without a reply: {payload!r}"
                assert reply["ok"] is False, (payload, reply)
                assert reply["error"]["code"] in (
                    "invalid_request",
                    "unsupported_version",
                    "not_found",
                ), (payload, reply)
            # Oversized line (> 1 MiB): an error reply, or the connection is dropped.
            reply = exchange(
                d.socket, b'{"v": 1, "op": "ping", "pad": "' + b"x" * (2 * MiB) + b'"}\n'
            )
            assert reply is None or reply["ok"] is False
            # Nested far beyond Python's recursion limit: a reply or a drop, never a crash.
            reply = exchange(d.socket, b"[" * 100_000 + b"]" * 100_000 + b"\n")
            assert reply is None or reply["ok"] is False

            # Clients that connect and hang: silent, half a line, or never reading replies.
            for payload in (b"", b'{"v": 1, "op": "pi', b'{"v":1,"op":"status"}\n' * 5000):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                hangers.append(s)
                s.connect(str(d.socket))
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):  # buffer full: the client we want
                    s.sendall(payload)
            assert d.call("ping", timeout=5)["pong"] is True

            # 50 clients at once: each gets a reply or is dropped.
            barrier = threading.Barrier(50)

            def client(_: int) -> dict[str, Any] | None:
                barrier.wait(10)
                try:
                    return exchange(d.socket, b'{"v": 1, "id": 1, "op": "ping"}\n', 20)
                except (ConnectionRefusedError, ConnectionResetError):
                    return None

            with ThreadPoolExecutor(50) as pool:
                replies = list(pool.map(client, range(50)))
            for r in replies:
                assert r is None or r["ok"] or r["error"]["code"] == "busy", r
            assert sum(1 for r in replies if r and r["ok"]) > 0
    finally:
        for s in hangers:
            s.close()
    assert reader.failures == []
    assert reader.reads > 3
    assert d.alive(), d.log_tail()
    assert d.call("ping")["pid"] == d.pid
    after = {s["path"]: s["bytes_read"] for s in d.call("status")["datastores"]}[name]
    assert after - before >= reader.reads * len(reader.expected) // 2  # reads hit the daemon
    assert read_all(root / "f.bin") == (src / "f.bin").read_bytes()


def test_deeply_nested_json_gets_an_error_reply(daemon: DsmountDaemon) -> None:
    reply = exchange(daemon.socket, b"[" * 100_000 + b"]" * 100_000 + b"\n")
    assert reply is not None and reply["error"]["code"] == "invalid_request"


WRONG_TYPES = [
    pytest.param({"immutable": "yes"}, id="immutable-string"),
    pytest.param(
        {"ttl": "soon"},
        id="ttl-string",
    ),
    pytest.param(
        {"version": {"a": 1}},
        id="version-object",
    ),
    pytest.param(
        {"version": [1]},
        id="version-list",
    ),
    pytest.param(
        {"version": True},
        id="version-bool",
    ),
]


@pytest.mark.parametrize("bad", WRONG_TYPES)
def test_attach_with_wrongly_typed_field_is_refused(
    daemon: DsmountDaemon, small_src: Path, bad: dict[str, Any]
) -> None:
    name = unique("types")
    request = {
        "v": 1,
        "op": "attach",
        "args": {"name": name, "kind": "local", "path": str(small_src), **bad},
    }
    try:
        reply = exchange(daemon.socket, json.dumps(request).encode() + b"\n")
        assert reply is not None
        assert reply["ok"] is False and reply["error"]["code"] == "invalid_request", reply
    finally:
        for ds in daemon.call("list")["datastores"]:
            if ds["name"] == name:
                daemon.call("detach", name=name, version=ds["version"], force=True)


# -- read-only, missing paths, backend failures -----------------------------------------------
def test_writes_get_erofs(tree_mount: Path, source_tree: Path, daemon: DsmountDaemon) -> None:
    f, d = tree_mount / "README.txt", tree_mount / "data"
    before = sha256_file(source_tree / "README.txt")
    attempts: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (os.open, (tree_mount / "new.txt", os.O_WRONLY | os.O_CREAT, 0o644)),
        (os.open, (f, os.O_WRONLY)),
        (os.open, (f, os.O_RDWR)),
        (os.open, (f, os.O_WRONLY | os.O_APPEND)),
        (os.open, (f, os.O_RDONLY | os.O_TRUNC)),
        (os.mkdir, (d / "newdir",)),
        (os.mkdir, (daemon.mountpoint / unique("top"),)),
        (os.unlink, (f,)),
        (os.rmdir, (tree_mount / "empty-dir",)),
        (os.rename, (f, tree_mount / "renamed.txt")),
        (os.rename, (d / "small.csv", d / "nested" / "small.csv")),
        (os.truncate, (f, 0)),
        (os.chmod, (f, 0o777)),
        (os.chown, (f, 1, 1)),
        (os.utime, (f, (0, 0))),
        (os.symlink, ("README.txt", tree_mount / "link")),
        (os.link, (f, tree_mount / "hardlink")),
        (os.mkfifo, (tree_mount / "fifo",)),
        (os.setxattr, (f, "user.test", b"1")),
    ]
    for fn, args in attempts:
        expect_errno(errno.EROFS, fn, *args)
    assert sha256_file(source_tree / "README.txt") == before
    assert read_all(f) == (source_tree / "README.txt").read_bytes()


def test_missing_paths_get_enoent(tree_mount: Path, daemon: DsmountDaemon) -> None:
    expect_errno(errno.ENOENT, os.stat, tree_mount / "no-such-file")
    expect_errno(errno.ENOENT, os.stat, daemon.mountpoint / unique("no-such-datastore"))
    expect_errno(errno.ENOENT, os.open, tree_mount / "data" / "nope.bin", os.O_RDONLY)
    expect_errno(errno.ENOENT, os.listdir, tree_mount / "no-such-dir")
    expect_errno(errno.ENOENT, os.stat, tree_mount / "deep" / "level00" / "nope" / "x")


def test_file_deleted_after_listing_reads_enoent(daemon: DsmountDaemon, small_src: Path) -> None:
    root = daemon.attach_local(unique("gone"), small_src)
    assert "hello.txt" in os.listdir(root)  # the listing (with its attributes) is cached now
    os.unlink(small_src / "hello.txt")
    expect_errno(errno.ENOENT, read_all, root / "hello.txt")  # the read reaches the backend
    assert read_all(root / "sub" / "empty") == b""  # the rest is fine


def test_file_replaced_while_open_reads_estale(daemon: DsmountDaemon, small_src: Path) -> None:
    root = daemon.attach_local(unique("swap"), small_src)
    target = small_src / "sub" / "data.bin"
    with open(root / "sub" / "data.bin", "rb") as f:
        tmp = small_src / "sub" / ".new"
        tmp.write_bytes(b"a different version")
        os.replace(tmp, target)
        expect_errno(errno.ESTALE, f.read)
    # A new open sees the new version once cached metadata is dropped.
    daemon.cli("refresh", root.name)
    assert read_all(root / "sub" / "data.bin") == b"a different version"


def test_file_truncated_while_open_reads_estale(daemon: DsmountDaemon, small_src: Path) -> None:
    root = daemon.attach_local(unique("trunc"), small_src)
    with open(root / "sub" / "data.bin", "rb") as f:
        os.truncate(small_src / "sub" / "data.bin", 1000)
        expect_errno(errno.ESTALE, f.read)


def test_symlink_loop_in_backend_gives_eio(daemon: DsmountDaemon, small_src: Path) -> None:
    os.symlink("loop", small_src / "loop")
    root = daemon.attach_local(unique("loop"), small_src)
    expect_errno(errno.EIO, os.stat, root / "loop")  # ELOOP in the backend: a backend error
    # A file that becomes a symlink loop while open: the read's own open fails the same way.
    with open(root / "hello.txt", "rb") as f:
        os.unlink(small_src / "hello.txt")
        os.symlink("hello.txt", small_src / "hello.txt")
        expect_errno(errno.EIO, f.read)
    assert "loop" not in os.listdir(root)  # listings skip what cannot be stat'ed


def test_backing_directory_removed_after_attach(daemon: DsmountDaemon, small_src: Path) -> None:
    name = unique("rmdir")
    root = daemon.attach_local(name, small_src)
    shutil.rmtree(small_src)
    # The backend's listing fails with ENOENT; glibc's readdir reports ENOENT from getdents
    # as the end of a removed directory, so it lists as empty.
    with contextlib.suppress(FileNotFoundError):
        assert os.listdir(root) == []
    expect_errno(errno.ENOENT, os.stat, root / "hello.txt")
    assert name in os.listdir(daemon.mountpoint)  # the datastore itself is still attached
    daemon.cli("detach", name)


def test_file_replaced_by_fifo_fails_fast(daemon: DsmountDaemon, small_src: Path) -> None:
    root = daemon.attach_local(unique("fifo"), small_src)
    fifo = small_src / "hello.txt"
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(read_all(root / "hello.txt"))
        except BaseException as e:
            outcome.append(e)

    assert "hello.txt" in os.listdir(root)  # known as a regular file from now on
    os.unlink(fifo)
    os.mkfifo(fifo)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        reader.join(3)
        assert outcome, "the read through the mount hangs on a FIFO in the backend"
        assert isinstance(outcome[0], OSError), outcome
        assert outcome[0].errno in (errno.ESTALE, errno.ENOENT, errno.EIO), outcome
    finally:
        # Release a daemon thread stuck in open(): a writer unblocks it.
        deadline = time.monotonic() + 10
        while reader.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # ENXIO: no reader has it open (yet or now)
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(0.1)


# -- lifecycle --------------------------------------------------------------------------------
def test_sigterm_leaves_no_mount_and_no_socket(
    make_daemon: Callable[..., DsmountDaemon], small_src: Path
) -> None:
    d = make_daemon()
    root = d.attach_local("demo", small_src)
    assert read_all(root / "hello.txt") == b"hello\n"
    assert d.stop() == 0, d.log_tail()
    assert mount_entries(d.mountpoint) == []
    assert not os.path.lexists(d.socket)
    assert "Traceback" not in d.log_text()


def test_sigterm_with_a_file_open_still_unmounts(
    make_daemon: Callable[..., DsmountDaemon], small_src: Path
) -> None:
    d = make_daemon()
    root = d.attach_local("demo", small_src)
    fd = os.open(root / "sub" / "data.bin", os.O_RDONLY)
    cwd_holder = subprocess.Popen(["sleep", "60"], cwd=root / "sub")  # a shell cd'ed inside
    try:
        os.read(fd, 10)
        started = time.monotonic()
        assert d.stop() == 0, d.log_tail()
        assert time.monotonic() - started < 10
        assert mount_entries(d.mountpoint) == []
        assert not os.path.lexists(d.socket)
    finally:
        with contextlib.suppress(OSError):  # ENOTCONN: its filesystem is gone
            os.close(fd)
        cwd_holder.kill()
        cwd_holder.wait()


def test_kill9_stale_mount_is_cleaned_and_state_restored(
    make_daemon: Callable[..., DsmountDaemon], tmp_path: Path
) -> None:
    d = make_daemon()
    a = make_tree(tmp_path / "a", SMALL_TREE)
    b = make_tree(tmp_path / "b", {"v.txt": b"versioned\n"})
    d.cli("attach", "alpha", "--local", str(a))
    d.cli("attach", "beta", "--version", "3", "--local", str(b))
    want = {
        "alpha/sub/data.bin": sha256_file(a / "sub" / "data.bin"),
        "beta/3/v.txt": sha256_file(b / "v.txt"),
    }
    assert {p: sha256_file(d.mountpoint / p) for p in want} == want

    d.kill9()
    stale = mount_entry(d.mountpoint)
    assert stale is not None and stale["fstype"] == FSTYPE  # left behind, dead
    expect_errno(errno.ENOTCONN, os.listdir, d.mountpoint)
    assert "not running" in one_error_line(d.cli("ping", check=False))  # stale socket file
    # Until the kernel's cached attributes of the mount root expire, stat() still succeeds on
    # the dead mount (the daemon uses statvfs, which is not fooled; a regression test covers it).
    wait_until(lambda: stat_errno(d.mountpoint) == errno.ENOTCONN, 5, "root attributes to expire")

    d.start()
    assert len(mount_entries(d.mountpoint)) == 1  # the stale one is gone, not stacked under
    assert sorted(os.listdir(d.mountpoint)) == ["alpha", "beta"]
    assert {p: sha256_file(d.mountpoint / p) for p in want} == want
    assert "stale" in d.log_text()

    # A detach is persisted too: after a clean restart only beta comes back.
    d.cli("detach", "alpha")
    d.restart()
    assert os.listdir(d.mountpoint) == ["beta"]
    assert sha256_file(d.mountpoint / "beta/3/v.txt") == want["beta/3/v.txt"]


def stat_errno(path: Path) -> int | None:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno
    return None


def test_stale_mount_is_seen_dead_right_after_kill9(
    make_daemon: Callable[..., DsmountDaemon],
) -> None:
    from dsmount.node.mountpoint import is_dead

    d = make_daemon()
    os.stat(d.mountpoint)  # the kernel now caches the root's attributes (for 1 s)
    d.kill9()
    assert mount_entry(d.mountpoint) is not None
    assert is_dead(str(d.mountpoint))


def test_bad_config_stops_the_daemon_with_one_clear_line() -> None:
    d = DsmountDaemon(config_text='[cache]\nblock_size = "lots"\n')
    try:
        with pytest.raises(DaemonStartError, match="block_size"):
            d.start()
        assert d.exit_status() not in (None, 0)
        assert mount_entries(d.mountpoint) == []
        lines = [line for line in d.log_text().splitlines() if not line.startswith("===")]
        assert len(lines) == 1 and lines[0].startswith("dsmount: "), lines
    finally:
        d.cleanup()


def test_second_daemon_on_the_same_mountpoint_is_refused(daemon: DsmountDaemon) -> None:
    second = DsmountDaemon(mountpoint=daemon.mountpoint)
    try:
        second.start(wait=False)
        status = second.wait_exit(20)
        assert status not in (None, 0), second.log_tail()
        assert "already served by a running dsmount daemon" in second.log_text()
    finally:
        second.cleanup()
    assert len(mount_entries(daemon.mountpoint)) == 1  # nothing stacked on the live mount
    assert daemon.is_mounted()
    os.listdir(daemon.mountpoint)


def test_second_daemon_on_the_same_socket_is_refused(daemon: DsmountDaemon) -> None:
    second = DsmountDaemon(socket=daemon.socket)
    try:
        second.start(wait=False)
        status = second.wait_exit(20)
        assert status not in (None, 0), second.log_tail()
        assert "another daemon is listening" in second.log_text()
        assert mount_entries(second.mountpoint) == []  # it undid its own mount on the way out
    finally:
        second.cleanup()
    assert daemon.socket.exists()  # and left the running daemon's socket alone
    assert daemon.call("ping")["pid"] == daemon.pid


def test_daemon_startup_error_is_one_clear_line(daemon: DsmountDaemon) -> None:
    second = DsmountDaemon(mountpoint=daemon.mountpoint)
    try:
        second.start(wait=False)
        assert second.wait_exit(20) == 1
    finally:
        second.cleanup(remove_workdir=False)
    log = second.log_text()
    second.remove_workdir()
    assert "Traceback" not in log and "ExceptionGroup" not in log
    assert "already served" in log.strip().splitlines()[-1]


# -- the CLI ----------------------------------------------------------------------------------
def test_cli_without_daemon_says_so(tmp_path: Path) -> None:
    nowhere = DsmountDaemon(tmp_path / "none")  # never started
    line = one_error_line(nowhere.cli("ping", check=False))
    assert "not running" in line
    line = one_error_line(nowhere.cli("list", check=False))
    assert "not running" in line


@pytest.mark.parametrize("kind", ["under-a-file", "too-long"])
def test_cli_with_unusable_socket_path_says_so(tmp_path: Path, kind: str) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "sock" if kind == "under-a-file" else tmp_path / ("s" * 120)
    result = subprocess.run(
        [sys.executable, "-m", "dsmount", "--socket", str(path), "ping"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    one_error_line(result)


def test_cli_errors_are_one_clear_line(
    daemon: DsmountDaemon, small_src: Path, tmp_path: Path
) -> None:
    name = unique("dup")
    daemon.cli("attach", name, "--local", str(small_src))
    try:
        dup = daemon.cli("attach", name, "--local", str(small_src), check=False)
        assert "already attached" in one_error_line(dup)
    finally:
        daemon.cli("detach", name)
    unknown = daemon.cli("detach", unique("unknown"), check=False)
    assert "not attached" in one_error_line(unknown)
    missing = daemon.cli(
        "attach", unique("missing"), "--local", str(tmp_path / "nope"), check=False
    )
    assert "does not exist" in one_error_line(missing)
    bad_name = daemon.cli("attach", "..", "--local", str(small_src), check=False)
    assert "invalid" in one_error_line(bad_name)


def test_non_root_user_is_refused_by_the_socket_mode(daemon: DsmountDaemon) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(daemon.workdir).st_mode) == 0o755  # the path is traversable
    refused = daemon.cli("ping", check=False, user=NOBODY)
    assert "permission denied" in one_error_line(refused).lower()


@contextlib.contextmanager
def socket_open_to_all(daemon: DsmountDaemon) -> Iterator[None]:
    """Open up the socket's file mode so only the daemon's SO_PEERCRED check stands."""
    os.chmod(daemon.socket, 0o666)
    try:
        yield
    finally:
        os.chmod(daemon.socket, 0o660)


def test_non_root_user_is_refused_by_the_daemon(daemon: DsmountDaemon, small_src: Path) -> None:
    name = unique("sneaky")
    with socket_open_to_all(daemon):
        for args in (["ping"], ["list"], ["attach", name, "--local", str(small_src)]):
            one_error_line(daemon.cli(*args, check=False, user=NOBODY))
    assert name not in os.listdir(daemon.mountpoint)
    assert name not in {d["path"] for d in daemon.call("list")["datastores"]}
    assert "refused uid 65534" in daemon.log_text()  # the refusal came from the daemon


def test_refused_client_gets_the_daemons_reason(daemon: DsmountDaemon) -> None:
    # A request bigger than the socket buffer: the daemon refuses without reading it and
    # closes, so the client's send fails every time (with a small request only sometimes).
    code = (
        "import sys\n"
        "from dsmount.control.client import ControlClient\n"
        "try:\n"
        f"    ControlClient({str(daemon.socket)!r}).call('ping', pad='x' * 4_000_000)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    with socket_open_to_all(daemon):
        out = subprocess.run(
            [*as_user(*NOBODY), sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=daemon.workdir.parent,
        )
    assert out.stdout.startswith("PermissionDenied"), out.stdout + out.stderr
    assert "may not use" in out.stdout


def test_list_and_status_json_and_tables(daemon: DsmountDaemon, small_src: Path) -> None:
    name = unique("shown")
    daemon.cli("attach", name, "--local", str(small_src))
    try:
        read_all(daemon.mountpoint / name / "hello.txt")
        listed = json.loads(daemon.cli("list", "--json").stdout)
        entry = {d["path"]: d for d in listed["datastores"]}[name]
        assert entry["kind"] == "local" and entry["backend"]["path"] == str(small_src)
        status = json.loads(daemon.cli("status", "--json").stdout)
        assert status["pid"] == daemon.pid
        st = {d["path"]: d for d in status["datastores"]}[name]
        assert st["bytes_read"] >= len(b"hello\n")

        table = daemon.cli("list").stdout.splitlines()
        assert table[0].split() == ["NAME", "KIND", "OWNER", "IMMUTABLE", "MODE", "OPEN", "SOURCE"]
        row = next(line.split() for line in table[1:] if line.split()[0] == name)
        assert row == [name, "local", "root", "no", "ro", "0", str(small_src)]
        assert (entry["owner"], entry["owner_name"], entry["shared"]) == (0, "root", True)
        human = daemon.cli("status").stdout
        assert f"daemon pid {daemon.pid}" in human
        assert any(line.split()[:2] == [name, "ok"] for line in human.splitlines())
    finally:
        daemon.cli("detach", name)


# -- the mount as the system sees it ----------------------------------------------------------
def test_mount_table_shows_dsmount(daemon: DsmountDaemon) -> None:
    with open("/proc/mounts") as f:
        lines = [line.split() for line in f if line.split()[1] == str(daemon.mountpoint)]
    assert len(lines) == 1
    fsname, _, fstype, options = lines[0][:4]
    assert (fsname, fstype) == ("dsmount", "fuse.dsmount")
    # "ro" unless [writes] enabled (tests/mount/test_writes.py mounts without it).
    assert {"allow_other", "default_permissions", "ro"} <= set(options.split(","))
    shown = subprocess.run(["mount"], capture_output=True, text=True, timeout=30).stdout
    assert f"dsmount on {daemon.mountpoint} type fuse.dsmount" in shown


def test_non_root_user_reads_through_the_mount(tree_mount: Path, source_tree: Path) -> None:
    rel = "unicode/h\u00e9llo w\u00f6rld \u2713.txt"
    cat = subprocess.run(
        [*as_user(*NOBODY), "cat", str(tree_mount / rel)], capture_output=True, timeout=30
    )
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout == (source_tree / rel).read_bytes()
    big = "data/random-300KiB.bin"
    digest = subprocess.run(
        [*as_user(*NOBODY), "sha256sum", str(tree_mount / big)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert digest.stdout.split()[0] == sha256_file(source_tree / big)
    ls = subprocess.run(
        [*as_user(*NOBODY), "ls", str(tree_mount / "data")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sorted(ls.stdout.split("\n")[:-1]) == sorted(os.listdir(source_tree / "data"))
    touch = subprocess.run(
        [*as_user(*NOBODY), "touch", str(tree_mount / "x")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert touch.returncode != 0


def test_control_client_raises_typed_errors(daemon: DsmountDaemon) -> None:
    with pytest.raises(DsmountError, match="not attached"):
        daemon.call("detach", name=unique("nothing"))
