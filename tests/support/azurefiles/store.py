"""In-memory state of the emulated account: shares, directories and files.

Invariants:
- All structural reads and changes happen under `Store.lock` (one RLock for the account: the
  emulator is for tests and benchmarks, and each critical section is short — content copies of
  at most one 4 MiB range).
- Directory and file names are case-insensitive and case-preserving, like the SMB-backed
  service: children are keyed by `fold(name)` and keep the name they were created with.
- A file's content is a bytearray that is never resized in place (a memoryview being streamed to
  a client stays valid). Put Range writes in place only while no Get File is streaming it
  (`File.readers == 0`); otherwise it writes into a copy, so every response's bytes match the
  ETag it was sent with, as on the service.
- Every change to a resource gives it a new ETag (strictly increasing .NET-tick based values,
  `"0x8DC..."` like the service's), so clients pinning reads to an ETag see every write.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate

from .errors import StorageError

# .NET ticks (100 ns) between 0001-01-01 and the Unix epoch; the service's ETags and SMB times are
# tick based.
_EPOCH_TICKS = 621_355_968_000_000_000
_ROOT_FILE_ID = 0
# File ids on the service are 64-bit numbers printed in decimal; ours count up from this base.
_FILE_ID_BASE = 13_835_058_055_282_163_712

SHARE_NAME_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# Characters the service rejects in directory and file names.
_BAD_NAME_CHARS = set('"\\/:|<>*?') | {chr(c) for c in range(0x20)}


def fold(name: str) -> str:
    """Case-insensitive key of a name (per-character upper-casing, like Windows' upcase table)."""
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in name)


def now_ticks() -> int:
    return _EPOCH_TICKS + time.time_ns() // 100


def ticks_to_rfc1123(ticks: int) -> str:
    return formatdate((ticks - _EPOCH_TICKS) / 10_000_000, usegmt=True)


def ticks_to_smb(ticks: int) -> str:
    """The service's SMB timestamp format: ISO 8601 with 7 fractional digits, UTC."""
    seconds, frac = divmod(ticks - _EPOCH_TICKS, 10_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:07d}Z"


def smb_to_ticks(value: str) -> int:
    """Parse an SMB timestamp from an x-ms-file-*-time header (fraction optional, <= 7 digits)."""
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,7}))?Z", value)
    if m is None:
        raise ValueError(value)
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    frac = int((m.group(2) or "0").ljust(7, "0"))
    return _EPOCH_TICKS + int(base.timestamp()) * 10_000_000 + frac


def check_item_name(name: str) -> None:
    """Reject directory/file names the service rejects (400 InvalidResourceName)."""
    if not name or len(name) > 255 or any(c in _BAD_NAME_CHARS for c in name):
        raise StorageError(400, "InvalidResourceName")


@dataclass
class SmbTimes:
    """SMB timestamps of a file or directory, in .NET ticks."""

    creation: int
    last_write: int
    change: int
    last_access: int


@dataclass(eq=False)
class Node:
    """Common state of directories and files."""

    name: str
    file_id: int
    parent_id: int
    etag: str
    last_modified: int  # ticks
    times: SmbTimes
    attributes: str
    permission_key: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class Directory(Node):
    children: dict[str, Node] = field(default_factory=dict)


@dataclass(eq=False)
class File(Node):
    data: bytearray = field(default_factory=bytearray)
    content_type: str = "application/octet-stream"
    content_encoding: str | None = None
    content_language: str | None = None
    cache_control: str | None = None
    content_disposition: str | None = None
    content_md5: str | None = None  # base64, as set by the client; never computed by the service
    readers: int = 0  # Get File responses still streaming `data` (see the module docstring)

    def writable(self) -> bytearray:
        """The content to write into: a private copy while readers still stream the old one."""
        if self.readers:
            self.data = bytearray(self.data)
            self.readers = 0  # they hold the old buffer, not this one
        return self.data

    def resize(self, size: int) -> None:
        """Change the length, zero-filling growth; copies so exported memoryviews stay valid."""
        old = self.data
        new = bytearray(size)
        keep = min(size, len(old))
        new[:keep] = memoryview(old)[:keep]
        self.data = new


@dataclass(eq=False)
class Share:
    name: str
    etag: str
    last_modified: int
    quota_gib: int
    metadata: dict[str, str]
    root: Directory
    default_permission_key: str


class Store:
    """The account's shares; see the module docstring for the locking rules."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.shares: dict[str, Share] = {}
        self._last_ticks = 0
        self._next_file_id = _FILE_ID_BASE

    # -- identity and versioning -------------------------------------------------------------

    def new_version(self) -> tuple[str, int]:
        """A fresh (ETag, ticks) pair; ticks strictly increase so ETags never repeat."""
        with self.lock:
            ticks = max(now_ticks(), self._last_ticks + 1)
            self._last_ticks = ticks
        return f'"0x{ticks:X}"', ticks

    def new_file_id(self) -> int:
        with self.lock:
            self._next_file_id += 1
            return self._next_file_id

    @staticmethod
    def new_permission_key() -> str:
        # Same shape as the service's keys ("<19 digits>*<19 digits>").
        return f"{secrets.randbelow(10**19)}*{secrets.randbelow(10**19)}"

    # -- shares ------------------------------------------------------------------------------

    def get_share(self, name: str) -> Share:
        share = self.shares.get(name)
        if share is None:
            raise StorageError(404, "ShareNotFound")
        return share

    def create_share(self, name: str, quota_gib: int, metadata: dict[str, str]) -> Share:
        if name in self.shares:
            raise StorageError(409, "ShareAlreadyExists")
        etag, ticks = self.new_version()
        key = self.new_permission_key()
        root = Directory(
            name="",
            file_id=_ROOT_FILE_ID,
            parent_id=_ROOT_FILE_ID,
            etag=etag,
            last_modified=ticks,
            times=SmbTimes(ticks, ticks, ticks, ticks),
            attributes="Directory",
            permission_key=key,
        )
        share = Share(name, etag, ticks, quota_gib, metadata, root, key)
        self.shares[name] = share
        return share

    # -- path resolution -----------------------------------------------------------------------

    def parent_of(self, share: Share, path: tuple[str, ...]) -> Directory:
        """The directory that holds `path[-1]`; 404 ParentNotFound if any ancestor is missing."""
        node: Node = share.root
        for segment in path[:-1]:
            if not isinstance(node, Directory):
                raise StorageError(404, "ParentNotFound")
            child = node.children.get(fold(segment))
            if child is None:
                raise StorageError(404, "ParentNotFound")
            node = child
        if not isinstance(node, Directory):
            raise StorageError(404, "ParentNotFound")
        return node

    def lookup(self, share: Share, path: tuple[str, ...]) -> Node:
        """The node at `path` (root if empty); 404 ParentNotFound/ResourceNotFound if absent."""
        if not path:
            return share.root
        parent = self.parent_of(share, path)
        node = parent.children.get(fold(path[-1]))
        if node is None:
            raise StorageError(404, "ResourceNotFound")
        return node
