"""The naming rules every storage kind shares: what a POSIX name may be, how datastore paths
are normalised, what marks an empty blob as a directory, how ETags are spelled, and which
content type a stored file is given.

Pure functions, no I/O: the listings, the stat paths and the transfers all call these, so a
name the mount would skip is the same name a download would refuse.
"""

from __future__ import annotations

import mimetypes

from dsmount.errors import InvalidRequest

NAME_MAX = 255  # bytes, Linux's limit for one path component
# The metadata key (lower case) of an empty blob that stands for a directory: the convention of
# the Azure portal, ADLS Gen2 (hns) and blobfuse, so an empty directory can exist in a container.
FOLDER_MARKER_KEY = "hdi_isfolder"


def is_folder_marker(size: int, marker_value: str | None) -> bool:
    """Whether an object of `size` bytes whose `hdi_isfolder` metadata is `marker_value` is a
    directory marker: only an empty object, and only with the value "true" (any case)."""
    return size == 0 and (marker_value or "").strip().lower() == "true"


def content_type(path: str) -> str:
    """The Content-Type a file named `path` is stored with."""
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def strip_etag(etag: str | None) -> str | None:
    """ETags without their HTTP quotes: listings give 0x8D..., headers give "0x8D..."."""
    if etag is None:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"') or None


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a POSIX directory entry name, or None if it can."""
    if not name:
        return "empty path segment"
    if name in (".", ".."):
        return f"{name!r} path segment"
    if "\0" in name:
        return "NUL character"
    if "/" in name:
        return "'/' in name"
    if len(name) > NAME_MAX // 4:  # below this even 4-byte characters fit
        try:
            if len(name.encode("utf-8")) > NAME_MAX:
                return f"segment longer than {NAME_MAX} bytes"
        except UnicodeEncodeError:
            return "not valid UTF-8"
    elif not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return "not valid UTF-8"
    return None


def clean_path(path: str, *, what: str = "path") -> str:
    """`path` normalized to "a/b" (no leading/trailing "/"); refuses ".." and "." parts."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if any(p in (".", "..") or "\0" in p for p in parts):
        raise InvalidRequest(f"invalid {what} {path!r}: '.' and '..' are not allowed")
    return "/".join(parts)


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


