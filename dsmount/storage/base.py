"""The async interface every datastore backend implements (the mount's face of storage).

A backend sees paths relative to its datastore root, as POSIX strings without leading or
trailing slashes ("" is the root, "train/0001.jpg" a file). It knows nothing about FUSE,
inodes or caches. Every method is trio-async; a backend wrapping a blocking or asyncio SDK
hides that behind these methods.

Errors: backends raise only the typed errors of `dsmount.errors` (NotFound, AuthFailed,
Transient, Changed, IntegrityError, BackendError). `is_transient` decides what is retried.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from dsmount.storage.retry import BackendStats

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class Entry:
    """One file or directory as the backend sees it."""

    name: str  # last path component ("" for the root)
    is_dir: bool
    size: int = 0
    mtime_ns: int = 0
    # Identity of this version of the object: a read pinned to it fails with Changed if the
    # object was replaced. Directories may have none.
    etag: str | None = None
    # Owner, group and the nine permission bits, for kinds that have them (local): the mount
    # shows them, and the kernel enforces them, unless the datastore overrides them. None:
    # the kind has no owners (cloud storage); the daemon's [fs] defaults apply.
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    # A symbolic link (is_dir False): where it points, relative to its own directory and
    # always inside the datastore (the backend refuses any other).
    symlink: str | None = None

    @property
    def kind(self) -> str:
        """"dir", "file" or "symlink": an inode never changes kind (a new one is made)."""
        return "dir" if self.is_dir else "symlink" if self.symlink is not None else "file"


class Backend(abc.ABC):
    """A read-only view of one datastore's objects."""

    kind: str = "abstract"
    # Answer a lookup in an unlisted directory by listing it (one page) rather than a stat per
    # name: right for object stores, where a LIST costs about what a HEAD does.
    list_on_lookup: bool = False
    # The root directory's own entry, when the kind has owners and modes (local; set by
    # `check`): the core shows the datastore's root with them.
    root_entry: Entry | None = None

    def __init__(self) -> None:
        self.stats = BackendStats()

    @abc.abstractmethod
    async def stat(self, path: str) -> Entry:
        """Attributes of `path`. Raises NotFound if it is neither a file nor a directory."""

    @abc.abstractmethod
    def list(self, path: str) -> AsyncIterator[list[Entry]]:
        """The direct children of directory `path`, page by page, so huge directories stream.

        Raises NotFound (on first iteration) if `path` is not a directory.
        """

    @abc.abstractmethod
    async def read(self, path: str, offset: int, length: int, etag: str | None = None) -> bytes:
        """Up to `length` bytes from `offset` (short only at end of file).

        With `etag`, the read is conditional: if the object is no longer that version, raise
        Changed rather than return bytes of another version.
        """

    async def check(self) -> None:
        """A cheap call proving the datastore is reachable and the credentials work."""
        await self.stat("")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections. Called once when the datastore is detached."""

    def describe(self) -> dict[str, Any]:
        """What `status`/`list` show about this backend. Never contains a secret."""
        return {"kind": self.kind}
