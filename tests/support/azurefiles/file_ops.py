"""Directory and file operations of the emulator (Create/Get Properties/Delete Directory, Create
File, Put Range, Get File, Get File Properties, Set File Properties, Set Metadata, Delete File).

Invariants: every mutation runs under the store lock and gives the resource a new ETag and
Last-Modified; Get File returns a memoryview of the file's bytearray (taken under the lock,
streamed outside it), never a copy of the whole file; writes during that stream go to a copy
(`File.writable`). Files service conditional headers
(If-Match & co.) are not honoured, exactly like the service (clients pin reads to an ETag by
comparing it themselves); a lease id on a file without a lease is a 412, as on the service.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from .errors import StorageError, bad_header, missing_header
from .messages import Call, Response
from .props import (
    add_metadata,
    add_smb,
    add_version,
    apply_smb,
    metadata_from,
    parse_read_range,
    parse_write_range,
    require_dir,
)
from .store import Directory, File, Node, Share, check_item_name, fold, ticks_to_smb

MAX_RANGE_BYTES = 4 * 1024 * 1024  # largest Put Range body
MAX_RANGE_MD5_BYTES = 4 * 1024 * 1024  # largest range for x-ms-range-get-content-md5
MAX_FILE_BYTES = 4 * 1024**4  # 4 TiB
_CONTENT_HEADERS = {
    "content_type": "x-ms-content-type",
    "content_encoding": "x-ms-content-encoding",
    "content_language": "x-ms-content-language",
    "cache_control": "x-ms-cache-control",
    "content_disposition": "x-ms-content-disposition",
    "content_md5": "x-ms-content-md5",
}


def _share(call: Call) -> Share:
    return call.store.get_share(call.share or "")


def _existing_file(call: Call, *, mutating: bool) -> File:
    node = call.store.lookup(_share(call), call.path)
    if not isinstance(node, File):
        if mutating:
            raise StorageError(409, "ResourceTypeMismatch")
        raise StorageError(404, "ResourceNotFound")
    if call.req.header("x-ms-lease-id"):
        raise StorageError(412, "LeaseNotPresentWithFileOperation")
    return node


def _touch(call: Call, node: Node) -> None:
    node.etag, node.last_modified = call.store.new_version()


# -- directories -------------------------------------------------------------------------------


def create_directory(call: Call) -> Response:
    if not call.path:
        raise StorageError(409, "ResourceAlreadyExists")
    check_item_name(call.path[-1])
    with call.store.lock:
        share = _share(call)
        parent = call.store.parent_of(share, call.path)
        if fold(call.path[-1]) in parent.children:
            raise StorageError(409, "ResourceAlreadyExists")
        etag, ticks = call.store.new_version()
        times, attributes, key = apply_smb(
            call.req, None, call.store, share.default_permission_key, is_dir=True, now=ticks
        )
        node = Directory(
            name=call.path[-1],
            file_id=call.store.new_file_id(),
            parent_id=parent.file_id,
            etag=etag,
            last_modified=ticks,
            times=times,
            attributes=attributes,
            permission_key=key,
            metadata=metadata_from(call.req),
        )
        parent.children[fold(node.name)] = node
        resp = Response(201)
        add_version(resp, node)
        add_smb(resp, node, created=True)
    return resp


def get_directory_properties(call: Call) -> Response:
    with call.store.lock:
        node = require_dir(call.store.lookup(_share(call), call.path))
        resp = Response(200)
        add_metadata(resp, node.metadata)
        add_version(resp, node)
        add_smb(resp, node)
    return resp


def delete_directory(call: Call) -> Response:
    if not call.path:
        raise StorageError(400, "InvalidUri")
    with call.store.lock:
        share = _share(call)
        node = call.store.lookup(share, call.path)
        if not isinstance(node, Directory):
            raise StorageError(409, "ResourceTypeMismatch")
        if node.children:
            raise StorageError(409, "DirectoryNotEmpty")
        del call.store.parent_of(share, call.path).children[fold(call.path[-1])]
    return Response(202)


def set_metadata(call: Call) -> Response:
    """Set Directory Metadata / Set File Metadata (`comp=metadata`)."""
    with call.store.lock:
        share = _share(call)
        node = call.store.lookup(share, call.path)
        is_dir_call = (call.req.q("restype") or "").lower() == "directory"
        if is_dir_call != isinstance(node, Directory):
            raise StorageError(409, "ResourceTypeMismatch")
        node.metadata = metadata_from(call.req)
        _touch(call, node)
        resp = Response(200)
        add_version(resp, node)
        resp.add("x-ms-request-server-encrypted", "true")
    return resp


# -- files -------------------------------------------------------------------------------------


def _content_length_header(call: Call, name: str = "x-ms-content-length") -> int | None:
    raw = call.req.header(name)
    if raw is None:
        return None
    try:
        size = int(raw)
    except ValueError:
        raise bad_header(name, raw) from None
    if not 0 <= size <= MAX_FILE_BYTES:
        raise bad_header(name, raw)
    return size


def create_file(call: Call) -> Response:
    if (call.req.header("x-ms-type") or "").lower() != "file":
        raise missing_header("x-ms-type")
    size = _content_length_header(call)
    if size is None:
        raise missing_header("x-ms-content-length")
    check_item_name(call.path[-1])
    body = call.req.body
    if len(body) > size:
        raise StorageError(400, "InvalidInput", "The initial data is larger than the file.")
    with call.store.lock:
        share = _share(call)
        parent = call.store.parent_of(share, call.path)
        existing = parent.children.get(fold(call.path[-1]))
        if isinstance(existing, Directory):
            raise StorageError(409, "ResourceTypeMismatch")
        if existing is None and call.req.header("x-ms-lease-id"):
            raise StorageError(404, "ResourceNotFound")
        if existing is not None and call.req.header("x-ms-lease-id"):
            raise StorageError(412, "LeaseNotPresentWithFileOperation")
        etag, ticks = call.store.new_version()
        times, attributes, key = apply_smb(
            call.req, None, call.store, share.default_permission_key, is_dir=False, now=ticks
        )
        data = bytearray(size)
        data[: len(body)] = body
        node = File(
            name=call.path[-1],
            file_id=existing.file_id if existing is not None else call.store.new_file_id(),
            parent_id=parent.file_id,
            etag=etag,
            last_modified=ticks,
            times=times,
            attributes=attributes,
            permission_key=key,
            metadata=metadata_from(call.req),
            data=data,
        )
        for attr, header in _CONTENT_HEADERS.items():
            value = call.req.header(header)
            if value is not None:
                setattr(node, attr, value)
        parent.children[fold(node.name)] = node
        resp = Response(201)
        add_version(resp, node)
        add_smb(resp, node, created=True)
    return resp


def put_range(call: Call) -> Response:
    mode = (call.req.header("x-ms-write") or "").lower()
    if mode not in ("update", "clear"):
        if call.req.header("x-ms-write") is None:
            raise missing_header("x-ms-write")
        raise bad_header("x-ms-write", call.req.header("x-ms-write") or "")
    start, end = parse_write_range(call.req)
    body = call.req.body
    length = end - start + 1
    if mode == "update":
        if len(body) > MAX_RANGE_BYTES:
            raise StorageError(413, "RequestBodyTooLarge")
        if len(body) != length:
            raise bad_header("Content-Length", str(len(body)))
        digest = base64.b64encode(hashlib.md5(body).digest()).decode("ascii")
        sent_md5 = call.req.header("Content-MD5")
        if sent_md5 is not None and sent_md5 != digest:
            raise StorageError(400, "Md5Mismatch")
    elif body:
        raise bad_header("Content-Length", str(len(body)))
    with call.store.lock:
        node = _existing_file(call, mutating=True)
        if end >= len(node.data):
            raise StorageError(416, "InvalidRange")
        data = node.writable()
        if mode == "update":
            data[start : end + 1] = body
        else:
            zeros = bytes(min(length, MAX_RANGE_BYTES))
            for offset in range(start, end + 1, len(zeros)):
                chunk = min(len(zeros), end + 1 - offset)
                data[offset : offset + chunk] = zeros[:chunk]
        _touch(call, node)
        preserve = (call.req.header("x-ms-file-last-write-time") or "").lower() == "preserve"
        if not preserve:
            node.times.last_write = node.last_modified
        node.times.change = node.last_modified
        resp = Response(201)
        add_version(resp, node)
        if mode == "update":
            resp.add("Content-MD5", digest)
        resp.add("x-ms-request-server-encrypted", "true")
        resp.add("x-ms-file-last-write-time", ticks_to_smb(node.times.last_write))
    return resp


def set_file_properties(call: Call) -> Response:
    """Set File Properties (`comp=properties`): resize, content headers (cleared when omitted,
    as documented), SMB properties (preserved when omitted)."""
    size = _content_length_header(call)
    with call.store.lock:
        share = _share(call)
        node = _existing_file(call, mutating=True)
        etag, ticks = call.store.new_version()
        node.times, node.attributes, node.permission_key = apply_smb(
            call.req, node, call.store, share.default_permission_key, is_dir=False, now=ticks
        )
        if size is not None and size != len(node.data):
            node.resize(size)
        for attr, header in _CONTENT_HEADERS.items():
            value = call.req.header(header)
            if attr == "content_type":
                node.content_type = value or "application/octet-stream"
            else:
                setattr(node, attr, value)
        node.etag, node.last_modified = etag, ticks
        resp = Response(200)
        add_version(resp, node)
        add_smb(resp, node, created=True)
    return resp


def _file_headers(resp: Response, node: File) -> None:
    add_metadata(resp, node.metadata)
    resp.add("x-ms-type", "File")
    resp.add("Content-Type", node.content_type)
    add_version(resp, node)
    resp.add("Content-Encoding", node.content_encoding)
    resp.add("Content-Language", node.content_language)
    resp.add("Cache-Control", node.cache_control)
    resp.add("Content-Disposition", node.content_disposition)
    add_smb(resp, node)
    resp.add("x-ms-lease-state", "available")
    resp.add("x-ms-lease-status", "unlocked")


def get_file_properties(call: Call) -> Response:
    with call.store.lock:
        node = _existing_file(call, mutating=False)
        resp = Response(200, body=memoryview(node.data))
        _file_headers(resp, node)
        resp.add("Content-MD5", node.content_md5)
    return resp


def get_file(call: Call) -> Response:
    want_md5 = (call.req.header("x-ms-range-get-content-md5") or "").lower() == "true"
    with call.store.lock:
        node = _existing_file(call, mutating=False)
        size = len(node.data)
        rng = parse_read_range(call.req, size)
        if want_md5 and rng is None:
            raise bad_header("x-ms-range-get-content-md5", "true")
        start, end = rng if rng is not None else (0, size - 1)
        if want_md5 and end - start + 1 > MAX_RANGE_MD5_BYTES:
            raise StorageError(400, "OutOfRangeInput")
        body = memoryview(node.data)[start : end + 1]
        resp = Response(206 if rng is not None else 200, body=body)
        resp.on_sent = _reader_done(call, node, node.data)
        node.readers += 1
        _file_headers(resp, node)
        resp.add("Accept-Ranges", "bytes")
        if rng is not None:
            resp.add("Content-Range", f"bytes {start}-{end}/{size}")
            resp.add("x-ms-content-md5", node.content_md5)
        else:
            resp.add("Content-MD5", node.content_md5)
    if want_md5:
        resp.add("Content-MD5", base64.b64encode(hashlib.md5(body).digest()).decode("ascii"))
    return resp


def _reader_done(call: Call, node: File, data: bytearray) -> Callable[[], None]:
    def release() -> None:
        with call.store.lock:
            if node.data is data and node.readers:
                node.readers -= 1

    return release


def delete_file(call: Call) -> Response:
    with call.store.lock:
        share = _share(call)
        _existing_file(call, mutating=True)
        del call.store.parent_of(share, call.path).children[fold(call.path[-1])]
    return Response(202)
