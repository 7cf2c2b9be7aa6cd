"""Routing a parsed request to the handler of its operation, and every outcome to a Response.

The table of handlers is given by whoever serves the socket (the node's `NodeOps`), so this
package knows no operation's meaning: adding an operation is one entry in that table (and its
name in `protocol.OPERATIONS`, which the parser checks first).

Invariant: a handler's failure never escapes. A `DsmountError` becomes its typed error reply;
anything else is logged and answered as "internal", so one request cannot stop the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dsmount.control.peer import Peer
from dsmount.control.protocol import Request, Response
from dsmount.errors import DsmountError

log = logging.getLogger(__name__)

# One operation: its arguments and who asks in, its result (plain JSON data) out.
Handler = Callable[[dict[str, Any], Peer], Awaitable[Any]]
# What the server calls for each request: the Dispatcher below, or any equivalent.
RequestHandler = Callable[[Request, Peer], Awaitable[Response]]


class Dispatcher:
    """Calls the handler of `request.op` (see the module docstring)."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self.handlers = dict(handlers)

    async def __call__(self, request: Request, peer: Peer) -> Response:
        handler = self.handlers.get(request.op)
        if handler is None:
            return Response.failure("invalid_request",
                                    f"operation {request.op!r} is not served here", request.id)
        try:
            result = await handler(request.args, peer)
        except DsmountError as e:
            return Response.from_error(e, request.id)
        except Exception as e:  # never let one request take the daemon down
            log.exception("control %s failed", request.op)
            return Response.failure("internal", f"internal error: {type(e).__name__}", request.id)
        return Response.success(result, request.id)
