"""The async interface every datastore backend implements (the mount's face of storage).

A backend sees paths relative to its datastore root, as POSIX strings without leading or
trailing slashes ("" is the root, "train/0001.jpg" a file). It knows nothing about FUSE,
inodes or caches. Every method is trio-async; a backend wrapping a blocking or asyncio SDK
hides that behind these methods.

Errors: backends raise only the typed errors of `dsmount.errors` (NotFound, AuthFailed,
Transient, Changed, IntegrityError, BackendError). `is_transient` decides what is retried.

What differs between kinds is declared, never guessed: `capabilities` (a `Capabilities`) says
whether a kind is remote, worth the disk cache, locates files inside larger objects, or serves
one local directory, and each enables the methods named beside it. The node asks these, never
`kind`, `isinstance` or `getattr`.

Writing: a backend with `writable = True` implements the write verbs below (uploads are
`dsmount.storage.writes.Upload`s); the others answer every one with ReadOnly. Whether a
datastore is *attached* read-write is the node's decision, not the backend's.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsmount.errors import ReadOnly
from dsmount.storage.retry import BackendStats

if TYPE_CHECKING:
    from dsmount.storage.manifest import Location
    from dsmount.storage.writes import Upload

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


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do beyond the verbs every backend has (see the module docstring).
    The defaults describe a remote object store."""

    # Bytes come over a network: a small file's GET is worth starting at open, to overlap the
    # FUSE round trips. False: a read is a local pread (microseconds, nothing to overlap), and
    # a file replaced between open and read must still fail that read.
    remote: bool = True
    # Whole blocks are worth keeping in the disk cache. False: the bytes are on a local disk
    # already.
    disk_cacheable: bool = True
    # Files are byte ranges of larger objects (a version's packs): `locate`, `objects` and
    # `content_bytes` answer, so a cache can key the objects' bytes rather than each file's.
    locate: bool = False
    # Serves one local directory, held open: `directory_identity` names it, so a caller that
    # checked a path can prove the directory served is the one it checked.
    local_directory: bool = False


class Backend(abc.ABC):
    """A read-only view of one datastore's objects."""

    kind: str = "abstract"
    capabilities: Capabilities = Capabilities()
    # Answer a lookup in an unlisted directory by listing it (one page) rather than a stat per
    # name: right for object stores, where a LIST costs about what a HEAD does.
    list_on_lookup: bool = False
    # The root directory's own entry, when the kind has owners and modes (local; set by
    # `check`): the core shows the datastore's root with them.
    root_entry: Entry | None = None
    # The namespace is answered locally and cannot change (a version's sqlite manifest):
    # `entry_now` answers at once, so the mount keeps no Entry per inode and caches listings
    # only within a small budget (a million-file version must not live in the daemon's RAM).
    local_namespace: bool = False

    def __init__(self) -> None:
        self.stats = BackendStats()

    def entry_now(self, path: str) -> Entry:
        """`stat`, answered synchronously; only where `local_namespace`. Raises NotFound."""
        raise NotImplementedError(f"{self.kind}: no local namespace")

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

    # -- what `capabilities` enables ------------------------------------------------------------
    def locate(self, path: str) -> Location:
        """Where the bytes of file `path` are: a range of one of `objects()`'s objects (only
        where `capabilities.locate`)."""
        raise NotImplementedError(f"{self.kind}: files are not located inside objects")

    def objects(self) -> Backend:
        """The backend holding the objects `locate` names (only where `capabilities.locate`)."""
        raise NotImplementedError(f"{self.kind}: files are not located inside objects")

    def content_bytes(self) -> int:
        """The bytes of every file `locate` answers for (only where `capabilities.locate`)."""
        raise NotImplementedError(f"{self.kind}: files are not located inside objects")

    def directory_identity(self) -> tuple[int, int]:
        """(st_dev, st_ino) of the directory served (only where
        `capabilities.local_directory`)."""
        raise NotImplementedError(f"{self.kind}: serves no local directory")

    async def check(self) -> None:
        """A cheap call proving the datastore is reachable and the credentials work."""
        await self.stat("")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections. Called once when the datastore is detached."""

    def describe(self) -> dict[str, Any]:
        """What `status`/`list` show about this backend. Never contains a secret."""
        return {"kind": self.kind}

    # -- writing (only where `writable`) ---------------------------------------------------------
    writable: bool = False
    # Whether `rename` of a directory is one server-side operation (file shares); otherwise it
    # is a copy and a delete per entry, done only up to `max_entries`.
    native_dir_rename: bool = False

    def _read_only(self, what: str) -> ReadOnly:
        return ReadOnly(f"{what}: the {self.kind} backend cannot write")

    async def begin_upload(
        self, path: str, *, base: Entry | None = None, append: bool = False
    ) -> Upload:
        """Start writing a new version of file `path`.

        `base` is the version it replaces (None for a new file). With `append`, the new
        version starts with the whole base version, kept server-side where the kind can (the
        Upload's `kept` says how much); a later `commit` fails with Changed if the base was
        replaced meanwhile.
        """
        raise self._read_only(f"write {path!r}")

    async def delete(self, path: str) -> None:
        """Delete file `path` (NotFound if there is none)."""
        raise self._read_only(f"delete {path!r}")

    async def make_dir(self, path: str) -> Entry:
        """Create directory `path` (its parent exists); AlreadyExists if the name is taken.
        On object stores, an empty marker object with metadata hdi_isfolder=true."""
        raise self._read_only(f"mkdir {path!r}")

    async def remove_dir(self, path: str) -> None:
        """Remove the empty directory `path` (NotEmpty if it has entries)."""
        raise self._read_only(f"rmdir {path!r}")

    async def copy(self, src: str, dst: str) -> Entry:
        """Server-side copy of file `src` to `dst`, replacing `dst` atomically."""
        raise self._read_only(f"copy {src!r}")

    async def rename(
        self, src: str, dst: str, *, is_dir: bool = False, max_entries: int = 1000
    ) -> Entry | None:
        """Rename file (or, with `is_dir`, directory) `src` to `dst`, replacing a file `dst`
        (the caller checks that a directory `dst` does not exist or is empty). Without a
        native directory rename, a directory with more than `max_entries` objects below it is
        refused with CrossDevice before anything changes. Returns the renamed file's new Entry
        where the service gives one."""
        raise self._read_only(f"rename {src!r}")
