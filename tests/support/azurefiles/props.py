"""Request-header parsing and response-header emission shared by the emulator's operations:
metadata (`x-ms-meta-*`), SMB properties (`x-ms-file-*`), and byte ranges.

SMB property rules follow the service: on create, times default to `now`, attributes to
`Archive` (files) / `Directory` (directories), the permission to the share's default key
(`inherit`); on set-properties every SMB header defaults to `preserve`.
"""

from __future__ import annotations

import re

from .errors import StorageError, bad_header, missing_header
from .messages import Request, Response
from .store import Directory, Node, SmbTimes, Store, smb_to_ticks, ticks_to_rfc1123, ticks_to_smb

_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


def metadata_from(req: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in req.headers.items:
        if name.lower().startswith("x-ms-meta-"):
            out[name[len("x-ms-meta-") :]] = value
    return out


def add_metadata(resp: Response, metadata: dict[str, str]) -> None:
    for key, value in metadata.items():
        resp.add(f"x-ms-meta-{key}", value)


def _time(req: Request, header: str, current: int, now: int, default: str) -> int:
    value = req.header(header) or default
    if value.lower() == "now":
        return now
    if value.lower() == "preserve":
        return current
    try:
        return smb_to_ticks(value)
    except ValueError:
        raise bad_header(header, value) from None


def apply_smb(
    req: Request, node: Node | None, store: Store, default_key: str, *, is_dir: bool, now: int
) -> tuple[SmbTimes, str, str]:
    """SMB times, attributes and permission key after this request (create when node is None)."""
    creating = node is None
    default = "now" if creating else "preserve"
    cur = node.times if node is not None else SmbTimes(now, now, now, now)
    times = SmbTimes(
        creation=_time(req, "x-ms-file-creation-time", cur.creation, now, default),
        last_write=_time(req, "x-ms-file-last-write-time", cur.last_write, now, default),
        # Any change to a file's properties moves its change time unless told otherwise.
        change=_time(req, "x-ms-file-change-time", cur.change, now, "now"),
        last_access=cur.last_access,
    )
    attributes = req.header("x-ms-file-attributes")
    if attributes is None or attributes.lower() == "preserve":
        attributes = node.attributes if node is not None else ("Directory" if is_dir else "Archive")
    elif attributes.lower() == "none":
        attributes = "Directory" if is_dir else "Normal"
    elif is_dir and "Directory" not in attributes.split("|"):
        attributes = "Directory|" + attributes
    key = req.header("x-ms-file-permission-key")
    permission = req.header("x-ms-file-permission")
    if key is None:
        if permission is None or permission.lower() == "preserve":
            key = node.permission_key if node is not None else default_key
        elif permission.lower() == "inherit":
            key = default_key
        else:
            key = store.new_permission_key()  # an explicit SDDL gets its own key
    return times, attributes, key


def add_smb(resp: Response, node: Node, *, created: bool = False) -> None:
    resp.add("x-ms-file-permission-key", node.permission_key)
    resp.add("x-ms-file-attributes", node.attributes)
    resp.add("x-ms-file-creation-time", ticks_to_smb(node.times.creation))
    resp.add("x-ms-file-last-write-time", ticks_to_smb(node.times.last_write))
    resp.add("x-ms-file-change-time", ticks_to_smb(node.times.change))
    resp.add("x-ms-file-id", node.file_id)
    resp.add("x-ms-file-parent-id", node.parent_id)
    resp.add("x-ms-request-server-encrypted" if created else "x-ms-server-encrypted", "true")


def add_version(resp: Response, node: Node) -> None:
    resp.add("ETag", node.etag)
    resp.add("Last-Modified", ticks_to_rfc1123(node.last_modified))


def request_range(req: Request) -> tuple[str, str] | None:
    """(header name, value) of the byte range: x-ms-range wins over Range, as on the service."""
    for name in ("x-ms-range", "Range"):
        value = req.header(name)
        if value is not None:
            return name, value
    return None


def parse_write_range(req: Request) -> tuple[int, int]:
    """Inclusive (start, end) of a Put Range; both ends are required."""
    found = request_range(req)
    if found is None:
        raise missing_header("Range")
    name, value = found
    m = _RANGE_RE.match(value.strip())
    if m is None or not m.group(2) or int(m.group(2)) < int(m.group(1)):
        raise bad_header(name, value)
    return int(m.group(1)), int(m.group(2))


def parse_read_range(req: Request, size: int) -> tuple[int, int] | None:
    """Inclusive (start, end) clipped to the file, None for the whole file; 416 if unsatisfiable."""
    found = request_range(req)
    if found is None:
        return None
    name, value = found
    m = _RANGE_RE.match(value.strip())
    if m is None or (m.group(2) and int(m.group(2)) < int(m.group(1))):
        raise bad_header(name, value)
    start = int(m.group(1))
    if start >= size:
        raise StorageError(416, "InvalidRange", headers=[("Content-Range", f"bytes */{size}")])
    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    return start, end


def require_dir(node: Node) -> Directory:
    if not isinstance(node, Directory):
        raise StorageError(404, "ResourceNotFound")
    return node
