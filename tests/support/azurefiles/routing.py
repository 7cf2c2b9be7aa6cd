"""The emulator's protocol core: routes a `Request` to an operation, authenticates it, runs it and
decorates the `Response` with the headers every service response carries.

URLs are path-style, like Azurite's: `/<account>/<share>/<dir>/<file>`. Routing follows the
REST API: `restype=share` / `restype=directory` / `comp=list|range|properties|metadata` and the
HTTP verb select the operation. Invariants:
- Errors are always `StorageError`s turned into the service's XML error body with the
  `x-ms-error-code` header; HEAD responses carry the same headers and no body.
- Every response has `x-ms-request-id` and `x-ms-version` (the version the client asked for),
  and echoes `x-ms-client-request-id`; `Date` and `Server` are added by the HTTP adapter.
- Trailing dots are trimmed from path segments unless `x-ms-allow-trailing-dot: true`, as on
  the service.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import unquote

from . import file_ops, rename_ops, share_ops
from .auth import Access, Credentials, authenticate
from .errors import StorageError
from .messages import Call, Request, Response
from .store import Store
from .xmlbody import error_body

log = logging.getLogger(__name__)

# The API version the emulator answers with when the client names none.
DEFAULT_VERSION = "2026-10-06"

Handler = Callable[[Call], Response]


def _route(req: Request, share: str | None, path: tuple[str, ...]) -> tuple[Handler, Access]:
    """Select the operation for a request (raises StorageError for URLs/verbs we do not serve)."""
    method = req.method
    restype = (req.q("restype") or "").lower()
    comp = (req.q("comp") or "").lower()
    read = method in ("GET", "HEAD")

    def acc(level: str, perms: str, *, share_level: bool = False) -> Access:
        return Access(level, perms, share, path, share_level)

    if share is None:
        if comp == "list" and method == "GET":
            return share_ops.list_shares, acc("s", "l", share_level=True)
        raise StorageError(400, "InvalidQueryParameterValue")
    if restype == "share" and not path:
        if comp == "" and method == "PUT":
            return share_ops.create_share, acc("c", "cw", share_level=True)
        if comp == "" and read:
            return share_ops.get_share_properties, acc("c", "r", share_level=True)
        if comp == "" and method == "DELETE":
            return share_ops.delete_share, acc("c", "d", share_level=True)
        if comp == "metadata" and method == "PUT":
            return share_ops.set_share_metadata, acc("c", "w", share_level=True)
    elif restype == "directory":
        if comp == "list" and method == "GET":
            return share_ops.list_directories_and_files, acc("c", "l")
        if comp == "" and method == "PUT":
            return file_ops.create_directory, acc("o", "cw")
        if comp == "" and read:
            return file_ops.get_directory_properties, acc("o", "r")
        if comp == "" and method == "DELETE":
            return file_ops.delete_directory, acc("o", "d")
        if comp == "metadata" and method == "PUT" and path:
            return file_ops.set_metadata, acc("o", "w")
        if comp == "rename" and method == "PUT" and path:
            return rename_ops.rename_directory, acc("o", "cw")
    elif restype == "" and path:
        if method == "PUT":
            handlers: dict[str, tuple[Handler, str]] = {
                "": (file_ops.create_file, "cw"),
                "range": (file_ops.put_range, "w"),
                "properties": (file_ops.set_file_properties, "w"),
                "metadata": (file_ops.set_metadata, "w"),
                "rename": (rename_ops.rename_file, "cw"),
            }
            if comp in handlers:
                handler, perms = handlers[comp]
                return handler, acc("o", perms)
        elif comp == "" and method == "GET":
            return file_ops.get_file, acc("o", "r")
        elif comp == "" and method == "HEAD":
            return file_ops.get_file_properties, acc("o", "r")
        elif comp == "" and method == "DELETE":
            return file_ops.delete_file, acc("o", "d")
    if method not in ("GET", "HEAD", "PUT", "DELETE"):
        raise StorageError(405, "UnsupportedHttpVerb")
    raise StorageError(400, "InvalidQueryParameterValue")


class FileService:
    """The emulated Files endpoint of one account (thread-safe; all state lives in `store`)."""

    def __init__(self, store: Store, creds: Credentials) -> None:
        self.store = store
        self.creds = creds

    def _split(self, req: Request) -> tuple[str | None, tuple[str, ...]]:
        # Split after decoding: the SDK sends a subdirectory client's path as one segment with
        # %2F separators, and the service treats those as path separators.
        parts = [seg for seg in unquote(req.raw_path).split("/") if seg]
        if not parts or parts[0] != self.creds.account:
            raise StorageError(400, "InvalidUri")
        segments = parts[1:]
        if (req.header("x-ms-allow-trailing-dot") or "").lower() != "true":
            segments = [seg.rstrip(".") or seg for seg in segments]
        if not segments:
            return None, ()
        return segments[0], tuple(segments[1:])

    def endpoint(self, req: Request) -> str:
        host = req.header("Host") or "127.0.0.1"
        return f"{req.scheme}://{host}/{self.creds.account}/"

    def handle(self, req: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            share, path = self._split(req)
            handler, access = _route(req, share, path)
            authenticate(req, access, self.creds, datetime.now(UTC))
            resp = handler(Call(req, self.store, share, path, self.endpoint(req)))
        except StorageError as err:
            resp = self.error_response(err, request_id)
        except Exception:  # a bug in the emulator: answer like the service's 500, keep serving
            log.exception("azurefiles emulator failed on %s %s", req.method, req.raw_path)
            resp = self.error_response(StorageError(500, "InternalError"), request_id)
        self.decorate(resp, req, request_id)
        return resp

    @staticmethod
    def error_response(err: StorageError, request_id: str) -> Response:
        when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
        body = error_body(err.code, err.message, request_id, when, err.details)
        resp = Response(err.status, [("Content-Type", "application/xml")], body)
        resp.headers += err.headers
        resp.add("x-ms-error-code", err.code)
        return resp

    @staticmethod
    def decorate(resp: Response, req: Request, request_id: str) -> None:
        resp.add("x-ms-request-id", request_id)
        resp.add("x-ms-version", req.header("x-ms-version") or DEFAULT_VERSION)
        resp.add("x-ms-client-request-id", req.header("x-ms-client-request-id"))
