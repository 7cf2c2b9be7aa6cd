"""XML response bodies of the Azure Files emulator, in the shapes the service documents.

- Error: `<Error><Code/><Message/>[details]</Error>`; the message ends with the service's
  `RequestId:` / `Time:` lines.
- List Shares: `<EnumerationResults ServiceEndpoint=...>` with Prefix/Marker/MaxResults echoed
  only when the request had them, `<Shares><Share><Name/><Properties/>[<Metadata/>]</Share>`,
  and `<NextMarker/>` (empty when the listing is complete).
- List Directories and Files: `<EnumerationResults ServiceEndpoint ShareName DirectoryPath>`,
  `<Entries>` of `<Directory>`/`<File>` with `<Properties>` (Content-Length for files; timestamps,
  Last-Modified and Etag only when `include` asked for them), `FileId` with extended info,
  `Attributes`/`PermissionKey` when included. Names that cannot appear in XML 1.0 are sent
  percent-encoded with `Encoded="true"`, as the service does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from .store import Directory, File, Node, Share, ticks_to_rfc1123, ticks_to_smb

_PROLOG = '<?xml version="1.0" encoding="utf-8"?>'
# Characters not allowed in XML 1.0 documents.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _el(tag: str, value: object | None) -> str:
    if value is None:
        return ""
    text = escape(str(value))
    return f"<{tag}>{text}</{tag}>" if text else f"<{tag} />"


def _name_el(name: str) -> str:
    if _XML_INVALID.search(name):
        return f'<Name Encoded="true">{escape(quote(name, safe=""))}</Name>'
    return _el("Name", name)


def error_body(code: str, message: str, request_id: str, when: str, details: list) -> bytes:
    extra = "".join(_el(tag, value) for tag, value in details)
    full = f"{message}\nRequestId:{request_id}\nTime:{when}"
    return (f"{_PROLOG}<Error>{_el('Code', code)}{_el('Message', full)}{extra}</Error>").encode()


def list_shares_body(
    endpoint: str,
    shares: list[Share],
    *,
    prefix: str | None,
    marker: str | None,
    max_results: str | None,
    next_marker: str,
    include_metadata: bool,
) -> bytes:
    parts = [f"{_PROLOG}<EnumerationResults ServiceEndpoint={quoteattr(endpoint)}>"]
    parts += [_el("Prefix", prefix), _el("Marker", marker), _el("MaxResults", max_results)]
    parts.append("<Shares>")
    for share in shares:
        parts.append(f"<Share>{_el('Name', share.name)}<Properties>")
        parts.append(_el("Last-Modified", ticks_to_rfc1123(share.last_modified)))
        parts.append(_el("Etag", share.etag))
        parts.append(_el("Quota", share.quota_gib))
        parts.append(_el("AccessTier", "TransactionOptimized"))
        parts.append(_el("LeaseStatus", "unlocked") + _el("LeaseState", "available"))
        parts.append("</Properties>")
        if include_metadata:
            meta = "".join(_el(k, v) for k, v in share.metadata.items())
            parts.append(f"<Metadata>{meta}</Metadata>")
        parts.append("</Share>")
    parts.append("</Shares>")
    parts.append(_el("NextMarker", next_marker))
    parts.append("</EnumerationResults>")
    return "".join(parts).encode()


@dataclass(frozen=True)
class ListOptions:
    """What the List Directories and Files request asked to include."""

    timestamps: bool
    etag: bool
    attributes: bool
    permission_key: bool
    file_ids: bool


def _entry(node: Node, opts: ListOptions) -> str:
    tag = "Directory" if isinstance(node, Directory) else "File"
    parts = [f"<{tag}>"]
    if opts.file_ids:
        parts.append(_el("FileId", node.file_id))
    parts.append(_name_el(node.name))
    props: list[str] = []
    if isinstance(node, File):
        props.append(_el("Content-Length", len(node.data)))
    if opts.timestamps:
        props.append(_el("CreationTime", ticks_to_smb(node.times.creation)))
        props.append(_el("LastAccessTime", ticks_to_smb(node.times.last_access)))
        props.append(_el("LastWriteTime", ticks_to_smb(node.times.last_write)))
        props.append(_el("ChangeTime", ticks_to_smb(node.times.change)))
        props.append(_el("Last-Modified", ticks_to_rfc1123(node.last_modified)))
    if opts.etag:
        props.append(_el("Etag", node.etag))
    parts.append(f"<Properties>{''.join(props)}</Properties>" if props else "<Properties />")
    if opts.attributes:
        parts.append(_el("Attributes", node.attributes))
    if opts.permission_key:
        parts.append(_el("PermissionKey", node.permission_key))
    parts.append(f"</{tag}>")
    return "".join(parts)


def list_entries_body(
    endpoint: str,
    share: str,
    directory_path: str,
    directory: Directory,
    entries: list[Node],
    *,
    prefix: str | None,
    marker: str | None,
    max_results: str | None,
    next_marker: str,
    opts: ListOptions,
) -> bytes:
    attrs = (
        f"ServiceEndpoint={quoteattr(endpoint)} ShareName={quoteattr(share)} "
        f"DirectoryPath={quoteattr(directory_path)}"
    )
    parts = [f"{_PROLOG}<EnumerationResults {attrs}>"]
    parts += [_el("Marker", marker), _el("Prefix", prefix), _el("MaxResults", max_results)]
    if opts.file_ids:
        parts.append(_el("DirectoryId", directory.file_id))
    parts.append("<Entries>")
    parts += [_entry(node, opts) for node in entries]
    parts.append("</Entries>")
    parts.append(_el("NextMarker", next_marker))
    parts.append("</EnumerationResults>")
    return "".join(parts).encode()
