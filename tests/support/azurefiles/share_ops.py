"""Service- and share-level operations of the emulator, plus List Directories and Files.

Each function takes a routed `Call`, runs under the store lock and returns a `Response`
(status codes as documented: Create Share 201, Delete Share 202, the rest 200).

Listing: entries are ordered by case-insensitive name; `maxresults` defaults to and is capped at
5000, values <= 0 are a 400; the continuation marker is opaque (base64 of the next entry's
folded name) and names the first entry of the next page, so entries created or deleted between
pages are neither duplicated nor skipped beyond that point.
"""

from __future__ import annotations

import base64
import binascii

from .errors import StorageError, bad_query
from .messages import Call, Response
from .props import add_metadata, metadata_from, require_dir
from .store import SHARE_NAME_RE, Directory, Node, fold, ticks_to_rfc1123
from .xmlbody import ListOptions, list_entries_body, list_shares_body

MAX_RESULTS = 5000
_INCLUDE_FLAGS = {"timestamps", "etag", "attributes", "permissionkey"}


def _max_results(call: Call) -> int:
    raw = call.req.q("maxresults")
    if raw is None:
        return MAX_RESULTS
    try:
        value = int(raw)
    except ValueError:
        raise bad_query("maxresults", raw) from None
    if value <= 0:
        raise bad_query("maxresults", raw, "OutOfRangeQueryParameterValue")
    return min(value, MAX_RESULTS)


def _encode_marker(key: str) -> str:
    return base64.urlsafe_b64encode(("1!" + key).encode("utf-8")).decode("ascii")


def _decode_marker(marker: str) -> str:
    try:
        text = base64.urlsafe_b64decode(marker.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise bad_query("marker", marker) from None
    if not text.startswith("1!"):
        raise bad_query("marker", marker)
    return text[2:]


def _page(items: list[tuple[str, object]], call: Call) -> tuple[list, str]:
    """Slice (key, item) pairs sorted by key at the request's marker; return (page, NextMarker)."""
    marker = call.req.q("marker")
    if marker:
        start_key = _decode_marker(marker)
        items = [(k, v) for k, v in items if k >= start_key]
    limit = _max_results(call)
    page = [v for _, v in items[:limit]]
    next_marker = _encode_marker(items[limit][0]) if len(items) > limit else ""
    return page, next_marker


# -- service -----------------------------------------------------------------------------------


def list_shares(call: Call) -> Response:
    prefix = call.req.q("prefix") or ""
    include = {p.strip().lower() for p in (call.req.q("include") or "").split(",") if p.strip()}
    with call.store.lock:
        shares = sorted(
            (name, share) for name, share in call.store.shares.items() if name.startswith(prefix)
        )
        page, next_marker = _page(shares, call)
    body = list_shares_body(
        call.endpoint,
        page,
        prefix=call.req.q("prefix"),
        marker=call.req.q("marker"),
        max_results=call.req.q("maxresults"),
        next_marker=next_marker,
        include_metadata="metadata" in include,
    )
    return Response(200, [("Content-Type", "application/xml")], body)


# -- shares ------------------------------------------------------------------------------------


def create_share(call: Call) -> Response:
    name = call.share or ""
    if not SHARE_NAME_RE.match(name):
        raise StorageError(400, "InvalidResourceName")
    raw_quota = call.req.header("x-ms-share-quota")
    try:
        quota = int(raw_quota) if raw_quota else 5120
    except ValueError:
        raise StorageError(400, "InvalidHeaderValue") from None
    with call.store.lock:
        share = call.store.create_share(name, quota, metadata_from(call.req))
    resp = Response(201)
    resp.add("ETag", share.etag)
    resp.add("Last-Modified", ticks_to_rfc1123(share.last_modified))
    return resp


def get_share_properties(call: Call) -> Response:
    with call.store.lock:
        share = call.store.get_share(call.share or "")
        resp = Response(200)
        add_metadata(resp, share.metadata)
        resp.add("ETag", share.etag)
        resp.add("Last-Modified", ticks_to_rfc1123(share.last_modified))
        resp.add("x-ms-share-quota", share.quota_gib)
        resp.add("x-ms-access-tier", "TransactionOptimized")
        resp.add("x-ms-lease-status", "unlocked")
        resp.add("x-ms-lease-state", "available")
        resp.add("x-ms-enabled-protocols", "SMB")
    return resp


def set_share_metadata(call: Call) -> Response:
    with call.store.lock:
        share = call.store.get_share(call.share or "")
        share.metadata = metadata_from(call.req)
        share.etag, share.last_modified = call.store.new_version()
        resp = Response(200)
        resp.add("ETag", share.etag)
        resp.add("Last-Modified", ticks_to_rfc1123(share.last_modified))
    return resp


def delete_share(call: Call) -> Response:
    with call.store.lock:
        call.store.get_share(call.share or "")
        del call.store.shares[call.share or ""]
    return Response(202)


# -- listing -----------------------------------------------------------------------------------


def _list_options(call: Call) -> ListOptions:
    raw = call.req.q("include")
    flags = {p.strip().lower() for p in (raw or "").split(",") if p.strip()}
    unknown = flags - _INCLUDE_FLAGS
    if unknown:
        raise bad_query("include", raw or "")
    # Any `include` implies x-ms-file-extended-info: true (documented).
    extended = (call.req.header("x-ms-file-extended-info") or "").lower() == "true"
    return ListOptions(
        timestamps="timestamps" in flags,
        etag="etag" in flags,
        attributes="attributes" in flags,
        permission_key="permissionkey" in flags,
        file_ids=extended or bool(flags),
    )


def list_directories_and_files(call: Call) -> Response:
    opts = _list_options(call)
    prefix = call.req.q("prefix") or ""
    with call.store.lock:
        share = call.store.get_share(call.share or "")
        directory: Directory = require_dir(call.store.lookup(share, call.path))
        folded_prefix = fold(prefix)
        children: list[tuple[str, Node]] = sorted(
            (
                (key, node)
                for key, node in directory.children.items()
                if key.startswith(folded_prefix)
            ),
            key=lambda kv: kv[0],
        )
        page, next_marker = _page(children, call)
        body = list_entries_body(
            call.endpoint,
            share.name,
            "/".join(call.path),
            directory,
            page,
            prefix=call.req.q("prefix"),
            marker=call.req.q("marker"),
            max_results=call.req.q("maxresults"),
            next_marker=next_marker,
            opts=opts,
        )
    return Response(200, [("Content-Type", "application/xml")], body)
