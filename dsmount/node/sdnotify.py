"""sd_notify(3) for the daemon: readiness, status lines, stopping and watchdog pings to systemd.

systemd (Type=notify) passes an AF_UNIX datagram socket in $NOTIFY_SOCKET: a path, or an abstract
socket written with a leading '@'. Each datagram holds newline-separated KEY=VALUE assignments.
With WatchdogSec= set, systemd also passes $WATCHDOG_USEC (and $WATCHDOG_PID, the process meant
to ping) and kills the service if no WATCHDOG=1 arrives within that time.

Invariants:
- Without $NOTIFY_SOCKET every method is a silent no-op, so the daemon runs the same under
  systemd, in a terminal and in tests.
- Nothing here raises: a notify failure (socket gone, queue full) is logged at debug level and
  dropped. Losing a status line must never take the mount down with it.
- `send` never blocks the event loop (MSG_DONTWAIT); a full queue drops the message.
- The watchdog is pinged from a trio task, so a ping proves the event loop still runs: if a
  blocking call stalls the loop, the pings stop and systemd restarts the daemon.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

import trio

log = logging.getLogger(__name__)


def _socket_address(raw: str) -> str | None:
    """The address to sendto() for a $NOTIFY_SOCKET value, or None if unusable."""
    if raw.startswith("@") and len(raw) > 1:
        # Abstract namespace: the name starts with a NUL byte instead of '@'.
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    # Empty, or a kind we do not speak (newer systemd also allows vsock:...): stay disabled.
    return None


class Notifier:
    """Sends notifications to the service manager named by $NOTIFY_SOCKET (if any)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw)
        if raw and self._address is None:
            log.debug("ignoring unsupported NOTIFY_SOCKET=%r", raw)
        self.enabled: bool = self._address is not None
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")

    def send(self, *lines: str) -> None:
        """Send KEY=VALUE lines in one datagram. Never raises; a no-op when disabled."""
        if self._address is None or not lines:
            return
        # A newline inside a value would start a new assignment: flatten it.
        payload = "\n".join(_one_line(line) for line in lines).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", payload[:80], exc)

    def ready(self, status: str | None = None) -> None:
        """Tell systemd start-up is complete (Type=notify units become 'active')."""
        if status is None:
            self.send("READY=1")
        else:
            self.send("READY=1", "STATUS=" + status)

    def status(self, text: str) -> None:
        """A one-line human-readable status, shown by `systemctl status`."""
        self.send("STATUS=" + text)

    def stopping(self) -> None:
        """Tell systemd we are shutting down (unmounting) on our own."""
        self.send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for `seconds` more before a start or stop timeout fires (slow restore/unmount)."""
        self.send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog(self) -> None:
        """One keep-alive ping."""
        self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises), or
        None when no watchdog is configured for this process or there is nowhere to send to."""
        if not self.enabled or not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            # Checked at call time: after a fork the child is not the process systemd watches.
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            log.debug("ignoring invalid WATCHDOG_USEC=%r", self._watchdog_usec)
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


async def watchdog_loop(
    notifier: Notifier, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Ping the watchdog every `watchdog_interval()` seconds until cancelled. Returns at once
    when no watchdog is configured. Start it with `nursery.start(watchdog_loop, notifier)`."""
    interval = notifier.watchdog_interval()
    if interval is None:
        task_status.started()
        return
    log.debug("watchdog: pinging every %.3fs", interval)
    notifier.watchdog()  # the first ping is sent by the time start() returns
    task_status.started()
    while True:
        await trio.sleep(interval)
        notifier.watchdog()
