"""What an Azurite started with `debug=True` says it served: one `Request` per HTTP request.

Azurite's debug log names every request's method and URL (BlobStorageContextMiddleware), its
operation (`DispatchMiddleware: Operation=Blob_Download`) and, for a download, the byte range
it served (`NormalizedDownloadRange=bytes=A-B`), each line tagged with the request's id. This
is the server's own account, independent of the code under test: tests count GETs and bytes
with it.

The log is written while requests are handled, so `settled_requests` first sends a marker
request of its own and waits until the log shows it: every request that started before it
is then in the log too.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.support.azurite import Azurite
from tests.support.daemon import wait_until

_LINE = re.compile(r"^\S+ (?P<id>[0-9a-f-]{36}) \w+: (?P<msg>.*)$")
_URL = re.compile(r"RequestMethod=(?P<method>\S+) RequestURL=(?P<url>\S+)")
_OPERATION = re.compile(r"DispatchMiddleware: Operation=(?P<op>\w+)")
_RANGE = re.compile(r"NormalizedDownloadRange=bytes=(?P<first>\d+)-(?P<last>\d+)")


@dataclass
class Request:
    id: str
    method: str = ""
    path: str = ""  # /account/container/blob, unquoted, without the query
    operation: str = ""
    first: int | None = None  # the download range served, inclusive
    last: int | None = None

    @property
    def blob(self) -> str:
        """The blob name (after /account/container/)."""
        return self.path.split("/", 3)[3] if self.path.count("/") >= 3 else ""

    @property
    def container(self) -> str:
        parts = self.path.split("/")
        return parts[2] if len(parts) > 2 else ""


def requests(log: Path) -> list[Request]:
    """Every request in the log, in the order they started."""
    by_id: dict[str, Request] = {}
    for line in log.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        req = by_id.setdefault(m["id"], Request(m["id"]))
        msg = m["msg"]
        if (u := _URL.search(msg)) is not None:
            req.method = u["method"]
            req.path = unquote(urlsplit(u["url"]).path)
        elif (o := _OPERATION.search(msg)) is not None:
            req.operation = o["op"]
        elif (r := _RANGE.search(msg)) is not None:
            req.first, req.last = int(r["first"]), int(r["last"])
    return list(by_id.values())


def settled_requests(azurite: Azurite, timeout: float = 30.0) -> list[Request]:
    """All requests so far, once a marker request sent now shows in the log."""
    if not azurite.debug:
        raise RuntimeError("start Azurite with debug=True to count its requests")
    marker = f"log-marker-{uuid.uuid4().hex}"
    service = azurite.blob_service_client()
    try:
        assert not service.get_container_client(marker).exists()
    finally:
        service.close()
    wait_until(
        lambda: any(r.container == marker for r in requests(azurite.debug_log_path)),
        timeout,
        "Azurite's debug log to show the marker request",
    )
    return requests(azurite.debug_log_path)


def downloads(reqs: list[Request], container: str) -> list[Request]:
    """The Blob_Download requests (GETs of blob bytes) in one container."""
    return [r for r in reqs if r.operation == "Blob_Download" and r.container == container]
