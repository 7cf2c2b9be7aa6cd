"""The daemon as a systemd service: sd_notify protocol with the unit's own ExecStart, and a
kill -9 + restart that restores the attached datastores."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.daemon import (
    REPO_ROOT,
    DsmountDaemon,
    clean_env,
    lazy_unmount,
    mount_entry,
    require_fuse,
    wait_until,
)

UNIT = REPO_ROOT / "systemd" / "dsmount.service"


def unit_exec_start() -> list[str]:
    for line in UNIT.read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise AssertionError("no ExecStart= in the unit")


class NotifyListener:
    """Plays systemd's side of sd_notify: a datagram socket recording (time, message)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self.on_ready: list[dict[str, bool]] = []
        self.mountpoint: Path | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            text = data.decode()
            if "READY=1" in text.split("\n") and self.mountpoint is not None:
                # What a unit ordered After=dsmount.service would find at this very moment.
                entry = mount_entry(self.mountpoint)
                try:
                    os.statvfs(self.mountpoint)
                    answers = True
                except OSError:
                    answers = False
                self.on_ready.append({"mounted": entry is not None, "answers": answers})
            self.messages.append((now, text))

    def times(self, field: str) -> list[float]:
        return [t for t, text in self.messages if field in text.split("\n")]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def test_sd_notify_ready_watchdog_stopping_with_the_units_exec_start(tmp_path: Path) -> None:
    require_fuse()
    work = Path(f"/tmp/dsm-notify-{os.getpid()}")
    work.mkdir(mode=0o755, exist_ok=True)
    mountpoint, sock = work / "mnt", work / "control.sock"
    config = work / "dsmount.toml"
    config.write_text(
        f'[daemon]\nmountpoint = "{mountpoint}"\nsocket = "{sock}"\n'
        f'state_dir = "{work / "state"}"\n'
    )
    argv = unit_exec_start()
    assert Path(argv[0]).name == "dsmount" and "--foreground" in argv and "--config" in argv
    # The unit's own command line; only the installed binary and the config path differ.
    argv = [sys.executable, "-m", "dsmount", *argv[1:]]
    argv[argv.index("--config") + 1] = str(config)
    listener = NotifyListener(tmp_path / "notify.sock")
    listener.mountpoint = mountpoint
    env = clean_env({"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000"})
    log = open(work / "daemon.log", "wb")  # noqa: SIM115 - closed in finally
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_until(lambda: listener.times("READY=1"), 20, "READY=1")
        assert listener.on_ready == [{"mounted": True, "answers": True}], listener.messages
        ready_at = listener.times("READY=1")[0]
        assert ready_at >= started
        status_lines = [t for _, t in listener.messages if "STATUS=" in t]
        assert status_lines and "datastore" in status_lines[0]
        # WATCHDOG=1 every 0.2 s (half of WATCHDOG_USEC): wait for at least 5 of them.
        pings = wait_until(
            lambda: (p := [t for t in listener.times("WATCHDOG=1") if t >= ready_at])
            and len(p) >= 5 and p, 10, "5 watchdog pings")
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert max(gaps) < 0.6, gaps
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert listener.times("STOPPING=1"), listener.messages
        assert mount_entry(mountpoint) is None
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        listener.close()
        if mount_entry(mountpoint) is not None:
            lazy_unmount(mountpoint)
        subprocess.run(["rm", "-rf", str(work)], check=False)


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_kill9_and_restart_restores_attachments_and_reports_the_one_that_failed(
    make_daemon, tmp_path: Path
) -> None:
    daemon: DsmountDaemon = make_daemon()
    one = _tree(tmp_path / "one", {"a.txt": b"alpha\n", "d/b.bin": os.urandom(300_000)})
    two = _tree(tmp_path / "two", {"c.txt": b"gamma\n"})
    three = _tree(tmp_path / "three", {"x.txt": b"doomed\n"})
    daemon.cli("attach", "one", "--local", str(one))
    daemon.cli("attach", "two", "--local", str(two), "--version", "7")
    daemon.cli("attach", "three", "--local", str(three))
    m = daemon.mountpoint
    before = {
        "one/a.txt": (m / "one/a.txt").read_bytes(),
        "one/d/b.bin": (m / "one/d/b.bin").read_bytes(),
        "two/7/c.txt": (m / "two/7/c.txt").read_bytes(),
    }
    daemon.kill9()
    subprocess.run(["rm", "-rf", str(three)], check=True)
    daemon.start()
    for rel, data in before.items():
        assert (m / rel).read_bytes() == data, rel
    assert (m / "one/d/b.bin").read_bytes() == (one / "d/b.bin").read_bytes()
    assert sorted(os.listdir(m)) == ["one", "two"]
    status = daemon.call("status")
    assert sorted(d["path"] for d in status["datastores"]) == ["one", "two/7"]
    (failed,) = status["failed"]
    assert failed["path"] == "three" and failed["state"] == "failed"
    assert "does not exist" in failed["error"]
    human = daemon.cli("status").stdout
    assert "three" in human and "failed" in human
    # A failed one can be detached (forgotten) like any other.
    daemon.cli("detach", "three")
    assert daemon.call("status")["failed"] == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(make_daemon, signum: int) -> None:
    daemon: DsmountDaemon = make_daemon()
    os.kill(daemon.pid, signum)
    assert daemon.wait_exit(20) == 0
    assert not daemon.is_mounted()
    assert not daemon.socket.exists()
