"""A small blocking client for the control socket, used by the CLI and tests."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
from typing import Any

from dsmount.control.protocol import DEFAULT_SOCKET, MAX_LINE, Request, parse_response
from dsmount.errors import DsmountError, PermissionDenied

_ids = itertools.count(1)


class DaemonNotRunning(DsmountError):
    """No daemon answers on the control socket."""

    code = "daemon_not_running"


def default_socket() -> str:
    return os.environ.get("DSMOUNT_SOCKET") or DEFAULT_SOCKET


class ControlClient:
    def __init__(self, path: str | None = None, timeout: float = 180.0) -> None:
        self.path = path or default_socket()
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> Any:
        """Send one request; return its result or raise the daemon's typed error."""
        request = Request(op=op, args={k: v for k, v in args.items() if v is not None},
                          id=next(_ids))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.path)
            except FileNotFoundError:
                raise DaemonNotRunning(
                    f"dsmount daemon is not running (no control socket at {self.path})"
                ) from None
            except ConnectionRefusedError:
                raise DaemonNotRunning(
                    f"dsmount daemon is not running (nothing listens on {self.path})"
                ) from None
            except PermissionError:
                raise PermissionDenied(
                    f"permission denied on {self.path} (root or the socket group only)"
                ) from None
            except OSError as e:
                raise DaemonNotRunning(
                    f"cannot reach the daemon at {self.path}: {e.strerror or e}"
                ) from None
            # If the daemon refused us, its reply (why) may still be readable after a broken send.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(request.encode())
            line = self._read_line(sock)
        except TimeoutError:
            raise DsmountError(f"the daemon did not answer within {self.timeout:.0f}s") from None
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE):
                raise DsmountError("the daemon closed the connection") from None
            raise
        finally:
            sock.close()
        return parse_response(line).raise_for_error()

    @staticmethod
    def _read_line(sock: socket.socket) -> bytes:
        buf = bytearray()
        while b"\n" not in buf:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if not buf:
                    raise DsmountError("the daemon closed the connection without an answer")
                break
            buf += chunk
            if len(buf) > 64 * MAX_LINE:
                raise DsmountError("the daemon's answer is too large")
        return bytes(buf.split(b"\n", 1)[0])
