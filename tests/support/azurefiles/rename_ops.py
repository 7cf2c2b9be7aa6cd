"""Rename File and Rename Directory (`PUT <destination>?comp=rename`, with
`restype=directory` for a directory), as the Files REST API documents them.

- The source is named by `x-ms-file-rename-source`: a URL (or a path) of a file or directory in
  the same share; its path segments are percent-decoded, and their trailing dots kept only with
  `x-ms-source-allow-trailing-dot: true`, like the destination's with x-ms-allow-trailing-dot.
- A missing source is 404 ResourceNotFound (ShareNotFound/ParentNotFound as for any lookup); a
  missing destination parent 404 ParentNotFound; a source of the other type than the request
  (a directory named by Rename File) 409 ResourceTypeMismatch; a source in another share 400
  InvalidInput.
- An existing destination: a file is replaced only with
  `x-ms-file-rename-replace-if-exists: true` (else 409 ResourceAlreadyExists); a directory is
  never replaced (409 ResourceAlreadyExists), nor is a file replaced by a directory.
- The renamed item keeps its file id and content; it gets a new ETag and change time (a rename
  changes its properties), and its children move with a directory.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .errors import StorageError, missing_header
from .messages import Call, Response
from .props import add_smb, add_version
from .store import Directory, File, Node, check_item_name, fold


def _source_path(call: Call) -> tuple[str, ...]:
    raw = call.req.header("x-ms-file-rename-source")
    if not raw:
        raise missing_header("x-ms-file-rename-source")
    path = urlsplit(raw).path if "://" in raw else raw.partition("?")[0]
    segments = [unquote(s) for s in path.split("/") if s]
    # A URL names /<account>/<share>/... (path-style, as this emulator serves); a path may
    # name the share first or be relative to it.
    account = urlsplit(call.endpoint).path.strip("/")
    if segments and segments[0] == account:
        segments = segments[1:]
    if not segments or segments[0] != call.share:
        raise StorageError(400, "InvalidInput", "The source must be in the same share.")
    segments = segments[1:]
    if (call.req.header("x-ms-source-allow-trailing-dot") or "").lower() != "true":
        segments = [s.rstrip(".") or s for s in segments]
    if not segments:
        raise StorageError(400, "InvalidInput", "The share root cannot be renamed.")
    return tuple(segments)


def _rename(call: Call, *, directory: bool) -> Response:
    if not call.path:
        raise StorageError(400, "InvalidUri")
    check_item_name(call.path[-1])
    source = _source_path(call)
    replace = (call.req.header("x-ms-file-rename-replace-if-exists") or "").lower() == "true"
    with call.store.lock:
        share = call.store.get_share(call.share or "")
        node: Node = call.store.lookup(share, source)
        if isinstance(node, Directory) != directory:
            raise StorageError(409, "ResourceTypeMismatch")
        old_parent = call.store.parent_of(share, source)
        new_parent = call.store.parent_of(share, call.path)
        if directory and _contains(node, new_parent):
            raise StorageError(400, "InvalidInput", "A directory cannot move into itself.")
        key = fold(call.path[-1])
        existing = new_parent.children.get(key)
        if existing is not None and existing is not node:
            if isinstance(existing, Directory) or directory or not replace:
                raise StorageError(409, "ResourceAlreadyExists")
            if isinstance(existing, File) and existing.readers:
                existing.readers = 0  # streams keep their buffer; the name now means another
        del old_parent.children[fold(source[-1])]
        node.name = call.path[-1]
        node.parent_id = new_parent.file_id
        new_parent.children[key] = node
        node.etag, node.last_modified = call.store.new_version()
        node.times.change = node.last_modified
        resp = Response(200)
        add_version(resp, node)
        add_smb(resp, node)
    return resp


def _contains(node: Node, target: Node) -> bool:
    """Whether `target` is `node` or lies below it."""
    todo = [node]
    while todo:
        current = todo.pop()
        if current is target:
            return True
        if isinstance(current, Directory):
            todo.extend(current.children.values())
    return False


def rename_file(call: Call) -> Response:
    return _rename(call, directory=False)


def rename_directory(call: Call) -> Response:
    return _rename(call, directory=True)
