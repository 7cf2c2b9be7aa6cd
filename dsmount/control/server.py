"""The control socket server: a thin adapter from a Unix socket to a request handler.

The handler (`dispatch.Dispatcher` over the node's operations) is given by the daemon, so this
package never imports the node: it is the floor both the node and the CLI stand on.

Per connection: the peer's credentials are checked first (SO_PEERCRED, and SO_PEERGROUPS for
its groups, both as of connect: root, the daemon's own user, or a member of the configured
group); lines longer than MAX_LINE are refused; a
connection idle for `idle_timeout` is closed; at most `max_connections` are served at once and
the rest get a "busy" reply. None of this can stop the daemon: every failure ends only the
connection it happened on.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import socket

import trio

from dsmount.control.dispatch import RequestHandler
from dsmount.control.peer import Peer, groups_of, peer_of
from dsmount.control.protocol import MAX_LINE, Response, parse_request
from dsmount.errors import ConfigError, DsmountError

log = logging.getLogger(__name__)


class ControlServer:
    def __init__(
        self,
        handler: RequestHandler,
        path: str,
        *,
        group: str = "",
        max_connections: int = 64,
        idle_timeout: float = 30.0,
        request_timeout: float = 120.0,
    ) -> None:
        self.handler = handler
        self.path = path
        self.group_gid: int | None = None
        if group:
            try:
                self.group_gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ConfigError(f"socket group {group!r} does not exist") from None
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.active = 0
        self._sock: trio.socket.SocketType | None = None

    def authorized(self, peer: Peer) -> bool:
        """Who may talk to the socket at all; what each may then do is the handler's rule."""
        if peer.uid in (0, os.getuid()):
            return True
        return self.group_gid is not None and self.group_gid in groups_of(peer)

    async def bind(self) -> None:
        parent = os.path.dirname(self.path) or "."
        os.makedirs(parent, mode=0o755, exist_ok=True)
        if os.path.exists(self.path) or os.path.islink(self.path):
            if await self._alive():
                raise ConfigError(f"another daemon is listening on {self.path}")
            os.unlink(self.path)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Created with umask so it is never briefly world-accessible, then set to 0660.
        old = os.umask(0o117)
        try:
            await sock.bind(self.path)
        finally:
            os.umask(old)
        if self.group_gid is not None:
            os.chown(self.path, -1, self.group_gid)
        os.chmod(self.path, 0o660)
        sock.listen(128)
        self._sock = sock

    async def _alive(self) -> bool:
        probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with trio.move_on_after(1):
                await probe.connect(self.path)
                return True
        except OSError:
            return False
        finally:
            probe.close()
        return False

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        if self._sock is None:
            await self.bind()
        assert self._sock is not None
        listener = trio.SocketListener(self._sock)
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as e:  # EMFILE and friends: back off, keep serving
                        log.warning("control socket accept: %s", e)
                        await trio.sleep(0.1)
                        continue
                    nursery.start_soon(self._connection, stream)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            listener.socket.close()

    async def _send(self, stream: trio.SocketStream, response: Response) -> None:
        with trio.move_on_after(5):
            await stream.send_all(response.encode())
            return
        # A client that does not read its replies: end the connection rather than go on
        # without this reply (the client would wait for it forever, out of step).
        raise trio.BrokenResourceError("control client does not read its replies")

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                await self._converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:
            log.exception("control connection failed")

    async def _converse(self, stream: trio.SocketStream) -> None:
        if self.active >= self.max_connections:
            await self._send(stream, Response.failure("busy", "too many control connections"))
            return
        self.active += 1
        try:
            peer = peer_of(stream.socket)
            if not self.authorized(peer):
                log.warning("control: refused uid %d (pid %d)", peer.uid, peer.pid)
                await self._send(stream, Response.failure(
                    "permission_denied",
                    f"uid {peer.uid} may not use the dsmount control socket "
                    "(root, the daemon's user or the socket group only)",
                ))
                return
            buffer = bytearray()
            while True:
                newline = buffer.find(b"\n")
                if newline < 0:
                    if len(buffer) > MAX_LINE:
                        await self._send(stream, Response.failure(
                            "invalid_request", f"request larger than {MAX_LINE} bytes"))
                        return
                    chunk = b""
                    with trio.move_on_after(self.idle_timeout):
                        chunk = await stream.receive_some(65536)
                    if not chunk:
                        return  # closed by the peer, or idle too long
                    buffer += chunk
                    continue
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                if not line.strip():
                    continue
                await self._send(stream, await self._answer(line, peer))
        finally:
            self.active -= 1

    async def _answer(self, line: bytes, peer: Peer) -> Response:
        try:
            request = parse_request(line)
        except DsmountError as e:
            return Response.from_error(e)
        with trio.move_on_after(self.request_timeout):
            return await self.handler(request, peer)
        return Response.failure("timed_out", f"{request.op} took longer than "
                                f"{self.request_timeout:.0f}s", request.id)
