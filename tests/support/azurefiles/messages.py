"""Plain request/response values passed between the emulator's HTTP adapter and its protocol logic.

The protocol code (operations.py, auth.py) sees only these dataclasses, never sockets, so it can
be reasoned about (and tested) without I/O. Invariants:
- `Request.raw_path` is the path exactly as it arrived on the wire (still percent-encoded): the
  SharedKey canonicalized resource is computed from it, as the service does.
- `Request.query` keeps the parameters in arrival order with names as sent and values
  percent-decoded; `+` is NOT turned into a space (the SDK signs with `unquote`, not
  `unquote_plus`).
- `Response.body` may be a memoryview into a file's bytearray, so large reads are never copied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    from .store import Store


class Headers:
    """Case-insensitive view of request headers; repeated headers are joined with a comma."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self.items: list[tuple[str, str]] = list(items)
        self._by_lower: dict[str, str] = {}
        for name, value in self.items:
            key = name.lower()
            if key in self._by_lower:
                self._by_lower[key] = self._by_lower[key] + "," + value
            else:
                self._by_lower[key] = value

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._by_lower.get(name.lower(), default)

    def lower_items(self) -> Iterable[tuple[str, str]]:
        """(lower-cased name, joined value) pairs."""
        return self._by_lower.items()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_lower


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Split a raw query string into (name, value) pairs, percent-decoding both."""
    pairs: list[tuple[str, str]] = []
    if not raw_query:
        return pairs
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


@dataclass
class Request:
    """One HTTP request as the protocol logic sees it."""

    method: str
    raw_path: str
    query: list[tuple[str, str]]
    headers: Headers
    body: bytes = b""
    scheme: str = "http"
    client_ip: str = "127.0.0.1"
    _query_lower: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._query_lower = {}
        for name, value in self.query:
            self._query_lower.setdefault(name.lower(), value)

    def q(self, name: str) -> str | None:
        """First value of a query parameter (names are case-insensitive on the service)."""
        return self._query_lower.get(name.lower())

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Response:
    """One HTTP response. For HEAD, `body` is still set so Content-Length is right, never sent."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | memoryview = b""
    # Called by the HTTP adapter once the body has been sent (or the send failed).
    on_sent: Callable[[], None] | None = None

    def add(self, name: str, value: str | int | None) -> None:
        """Append a header unless the value is None (the service omits unset properties)."""
        if value is not None:
            self.headers.append((name, str(value)))


@dataclass
class Call:
    """One routed operation: the request plus what routing found in its URL."""

    req: Request
    store: Store
    share: str | None
    path: tuple[str, ...]  # decoded segments inside the share
    endpoint: str  # the account's service endpoint as clients address it, ending with "/"
