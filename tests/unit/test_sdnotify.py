"""dsmount.node.sdnotify against a real AF_UNIX datagram socket playing the part of systemd."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from dsmount.node.sdnotify import Notifier, watchdog_loop


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value, **extra}

    def receive(self, timeout: float = 5.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(65536).decode()

    def pending(self) -> list[str]:
        """Every datagram already queued, without waiting."""
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536, socket.MSG_DONTWAIT).decode())
            except BlockingIOError:
                return out


@pytest.fixture
def systemd_path(tmp_path: Path) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        yield FakeSystemd(sock, str(path))
    finally:
        sock.close()


@pytest.fixture
def systemd_abstract() -> Iterator[FakeSystemd]:
    name = f"dsmount-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
        yield FakeSystemd(sock, "@" + name)
    finally:
        sock.close()


def test_messages_arrive_on_a_path_socket(systemd_path: FakeSystemd) -> None:
    n = Notifier(systemd_path.env())
    assert n.enabled
    n.ready("mounted /datastores")
    assert systemd_path.receive() == "READY=1\nSTATUS=mounted /datastores"
    n.status("2 datastores attached")
    assert systemd_path.receive() == "STATUS=2 datastores attached"
    n.stopping()
    assert systemd_path.receive() == "STOPPING=1"
    n.watchdog()
    assert systemd_path.receive() == "WATCHDOG=1"
    n.extend_timeout(1.5)
    assert systemd_path.receive() == "EXTEND_TIMEOUT_USEC=1500000"
    n.ready()
    assert systemd_path.receive() == "READY=1"


def test_messages_arrive_on_an_abstract_socket(systemd_abstract: FakeSystemd) -> None:
    n = Notifier(systemd_abstract.env())
    assert n.enabled
    n.send("READY=1", "STATUS=abstract")
    assert systemd_abstract.receive() == "READY=1\nSTATUS=abstract"


def test_status_is_one_line(systemd_path: FakeSystemd) -> None:
    # A newline would let a status text smuggle in another assignment (e.g. READY=1).
    Notifier(systemd_path.env()).status("line one\nREADY=1\r\nline three")
    assert systemd_path.receive() == "STATUS=line one READY=1 line three"


def test_reads_os_environ_by_default(
    systemd_path: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd_path.env_value)
    Notifier().status("from os.environ")
    assert systemd_path.receive() == "STATUS=from os.environ"


@pytest.mark.parametrize("value", [None, "", "relative/path", "@", "vsock:2:1234"])
def test_disabled_without_a_usable_socket(value: str | None, systemd_path: FakeSystemd) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    n = Notifier(env)
    assert not n.enabled
    assert n.watchdog_interval() is None
    # All no-ops: nothing raises and nothing reaches any socket.
    n.ready("x")
    n.status("x")
    n.stopping()
    n.watchdog()
    assert systemd_path.pending() == []


def test_send_never_raises_when_the_socket_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.close()  # the file remains but nobody listens: ECONNREFUSED
    n = Notifier({"NOTIFY_SOCKET": str(path)})
    n.ready("x")
    path.unlink()  # now not even the file: ENOENT
    n.status("y")
    n.watchdog()
    Notifier({"NOTIFY_SOCKET": "@dsmount-nobody-" + uuid.uuid4().hex}).ready()


def test_send_never_blocks_when_the_queue_is_full(systemd_path: FakeSystemd) -> None:
    # systemd not reading: a blocking sendto would hang the event loop. MSG_DONTWAIT drops
    # the message instead; the loop below finishes only because no send blocks.
    n = Notifier(systemd_path.env())
    for _ in range(5000):
        n.status("x" * 1000)
    queued = systemd_path.pending()
    assert 0 < len(queued) < 5000


@pytest.mark.parametrize(
    ("usec", "expected"),
    [("30000000", 15.0), ("1000000", 0.5), ("200000", 0.1), ("1", 0.0000005)],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    systemd_path: FakeSystemd, usec: str, expected: float
) -> None:
    assert Notifier(systemd_path.env(WATCHDOG_USEC=usec)).watchdog_interval() == pytest.approx(
        expected
    )


def test_watchdog_interval_for_this_pid_only(systemd_path: FakeSystemd) -> None:
    mine = systemd_path.env(WATCHDOG_USEC="4000000", WATCHDOG_PID=str(os.getpid()))
    assert Notifier(mine).watchdog_interval() == pytest.approx(2.0)
    other = systemd_path.env(WATCHDOG_USEC="4000000", WATCHDOG_PID=str(os.getpid() + 1))
    assert Notifier(other).watchdog_interval() is None


@pytest.mark.parametrize("usec", [None, "", "0", "-5", "soon"])
def test_watchdog_interval_none_when_unset_or_invalid(
    systemd_path: FakeSystemd, usec: str | None
) -> None:
    env = systemd_path.env() if usec is None else systemd_path.env(WATCHDOG_USEC=usec)
    assert Notifier(env).watchdog_interval() is None


def test_watchdog_interval_none_for_garbage_pid(systemd_path: FakeSystemd) -> None:
    env = systemd_path.env(WATCHDOG_USEC="4000000", WATCHDOG_PID="init")
    assert Notifier(env).watchdog_interval() is None


async def test_watchdog_loop_pings_on_schedule(systemd_path: FakeSystemd) -> None:
    interval = 0.05
    n = Notifier(systemd_path.env(WATCHDOG_USEC=str(int(interval * 2 * 1_000_000))))
    systemd_path.sock.setblocking(False)
    arrivals: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(watchdog_loop, n)
        with trio.fail_after(5):
            while len(arrivals) < 5:
                await trio.lowlevel.wait_readable(systemd_path.sock)
                assert systemd_path.sock.recv(64) == b"WATCHDOG=1"
                arrivals.append(trio.current_time())
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    # trio.sleep never wakes early; a loaded machine may wake late, but five pings must not
    # take many intervals each.
    assert all(gap >= interval * 0.9 for gap in gaps), gaps
    assert sum(gaps) / len(gaps) < interval * 4, gaps


async def test_watchdog_loop_first_ping_is_immediate(systemd_path: FakeSystemd) -> None:
    n = Notifier(systemd_path.env(WATCHDOG_USEC="600000000"))  # a 5-minute interval
    async with trio.open_nursery() as nursery:
        await nursery.start(watchdog_loop, n)
        assert systemd_path.pending() == ["WATCHDOG=1"]
        nursery.cancel_scope.cancel()


async def test_watchdog_loop_returns_at_once_without_watchdog(
    systemd_path: FakeSystemd,
) -> None:
    n = Notifier(systemd_path.env())  # socket but no WATCHDOG_USEC
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            await nursery.start(watchdog_loop, n)
        # The nursery closed by itself: the task returned instead of looping.
    assert systemd_path.pending() == []
    with trio.fail_after(1):
        await watchdog_loop(Notifier({}))  # not started under systemd at all
