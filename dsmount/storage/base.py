"""The async interface every datastore backend implements (the mount's face of storage).

A backend sees paths relative to its datastore root, as POSIX strings without leading or
trailing slashes ("" is the root, "train/0001.jpg" a file). It knows nothing about FUSE,
inodes or caches. Every method is trio-async; a backend wrapping a blocking or asyncio SDK
hides that behind these methods.

Errors: backends raise only the typed errors of `dsmount.errors` (NotFound, AuthFailed,
Transient, Changed, IntegrityError, BackendError). `is_transient` decides what is retried.

Capabilities: what differs between kinds is declared, never guessed from `kind`, `isinstance`
or `getattr`. Each backend has a frozen `Capabilities` (`backend.capabilities`):
- `writable`        it implements the write verbs below (the others answer ReadOnly); whether
                    a datastore is *attached* read-write is the node's decision, not the
                    backend's;
- `remote`          its bytes come over a network (worth fetching ahead of the reader);
- `disk_cacheable`  an object version (its ETag) names bytes that never change, so they may
                    be kept in the node's disk cache (not so for a local directory, whose
                    files can change in place and are on disk already);
- `locate`          its files live inside packed objects of another backend: `locate(path)`
                    says where (a version's manifest); `objects` and `content_bytes` name
                    the objects holding them, so a cache keys the objects' bytes;
- `local_directory` it serves one local directory, held open: `directory_identity` names it,
                    so a caller that checked a path can prove the directory served is the one
                    it checked;
- `uploads`         `create` and `begin_upload` work (whole new files, visible at commit),
                    also where the mount's other write verbs do not (a local directory is
                    served read-only, yet transfers write into it).

Whole files: `walk` (every file below a prefix), `file_info`, `content_md5` and `create` serve
the whole-file helpers of `storage.files` (upload, download, versions, the Python API), which
are written once over this interface; blocking callers reach them through `storage.portal`.

Writing: `begin_upload` hands out an `Upload`: one new version of one object being written,
part by part, and made visible all at once by `commit`. Each kind maps the verbs onto what its
service offers (blob: Put Block + Put Block List; file share: a temporary file renamed over
the target; see `azure/`). Invariants of every Upload:
- Nothing `put` does is visible under the object's name before `commit` returns (except the
  documented in-place append of a file share).
- `commit(parts, size)` is given parts that tile `[start, size)` in offset order, where `start`
  is `kept` when `keep=True` and 0 otherwise; the committed object is `size` bytes: the kept
  prefix of the base version, then the parts. A part may be committed only once per commit.
- `abort` makes a best effort to drop what was staged (a blob's uncommitted blocks expire by
  themselves; a file share's temporary file is deleted), never raises, and says whether it
  left nothing behind.
- Every failure is a `dsmount.errors` error; `Changed` means the base version was replaced
  meanwhile (an append or update would otherwise graft onto the wrong object).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsmount.errors import NotFound, ReadOnly
from dsmount.storage.retry import BackendStats

if TYPE_CHECKING:
    from dsmount.storage.manifest import Location

@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do (see the module docstring)."""

    writable: bool = False
    remote: bool = False
    disk_cacheable: bool = False
    locate: bool = False
    local_directory: bool = False
    uploads: bool = False


# The capabilities of the cloud kinds (blob containers, file shares).
REMOTE_WRITABLE = Capabilities(writable=True, remote=True, disk_cacheable=True, uploads=True)


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file as the whole-file helpers see it (`Backend.walk`, `Backend.file_info`)."""

    path: str  # relative to the datastore root
    size: int
    md5: bytes | None = None  # the stored Content-MD5, when the answer carries it
    etag: str | None = None  # pins reads to this version (`Backend.read`'s `etag`)
    mtime: float | None = None  # seconds since the epoch
    md5_known: bool = True  # False: the answer cannot carry MD5s; ask `content_md5`
    # Where the bytes are read from when not `path`: a local symbolic link's target inside the
    # datastore (the link itself is never read, as for the mount).
    source: str | None = None

    @property
    def read_path(self) -> str:
        return self.source if self.source is not None else self.path

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
    """One datastore's objects (see the module docstring)."""

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

    # -- whole files (the verbs `storage.files` is written over) ----------------------------------
    async def walk(self, prefix: str = "") -> AsyncIterator[list[RemoteFile]]:
        """Every file below `prefix` (recursively, depth first, in name order within a
        directory), page by page; just that file if `prefix` names one; nothing if there is
        nothing there."""
        base = prefix.strip("/")
        if base:
            one = await self.file_info(base)
            if one is not None:
                yield [one]
                return
        pending = [base]
        while pending:
            directory = pending.pop()
            try:
                files, subdirs = await self.directory_files(directory)
            except NotFound:
                if directory == base:
                    return
                continue  # removed meanwhile
            files.sort(key=lambda f: f.path)
            if files:
                yield files
            pending.extend(sorted(subdirs, reverse=True))

    async def directory_files(self, directory: str) -> tuple[list[RemoteFile], list[str]]:
        """(files, subdirectory paths) directly in `directory`, for `walk`; NotFound if there
        is nothing to list there. Symbolic links are not files here (a kind that serves them
        overrides this)."""
        files: list[RemoteFile] = []
        subdirs: list[str] = []
        async for page in self.list(directory):
            for e in page:
                path = f"{directory}/{e.name}" if directory else e.name
                if e.is_dir:
                    subdirs.append(path)
                elif e.symlink is None:
                    files.append(_remote_file(path, e))
        return files, subdirs

    async def file_info(self, path: str) -> RemoteFile | None:
        """The file at `path` (with its MD5 where the answer carries it), or None if there is
        no file there."""
        try:
            e = await self.stat(path)
        except NotFound:
            return None
        return None if e.is_dir or e.symlink is not None else _remote_file(path.strip("/"), e)

    async def read_source(self, path: str) -> str:
        """The path whose bytes a whole-file read of `path` reads: `path` itself (no request)
        unless the kind serves links, which resolves them (NotFound if nothing readable is
        there)."""
        return path

    async def content_md5(self, path: str) -> bytes | None:
        """The stored MD5 of file `path` (None if it has none)."""
        f = await self.file_info(path)
        return f.md5 if f is not None else None

    async def create(self) -> bool:
        """Create the container, share or directory if missing (only where
        `capabilities.uploads`); False if it already existed."""
        raise self._read_only("create the datastore")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections. Called once when the datastore is detached."""

    def describe(self) -> dict[str, Any]:
        """What `status`/`list` show about this backend. Never contains a secret."""
        return {"kind": self.kind}

    # -- writing (only where `capabilities.writable`) --------------------------------------------
    @property
    def writable(self) -> bool:
        return self.capabilities.writable

    # Whether `rename` of a directory is one server-side operation (file shares); otherwise it
    # is a copy and a delete per entry, done only up to `max_entries`.
    native_dir_rename: bool = False

    def _read_only(self, what: str) -> ReadOnly:
        return ReadOnly(f"{what}: the {self.kind} backend cannot write")

    async def begin_upload(
        self, path: str, *, base: Entry | None = None, append: bool = False,
        parents: bool = False,
    ) -> Upload:
        """Start writing a new version of file `path`.

        `base` is the version it replaces (None for a new file). With `append`, the new
        version starts with the whole base version, kept server-side where the kind can (the
        Upload's `kept` says how much); a later `commit` fails with Changed if the base was
        replaced meanwhile. With `parents`, missing parent directories are created (as
        `mkdir -p`; whole-file uploads), where the kind has real directories.
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


@dataclass(frozen=True, slots=True)
class Part:
    """One staged part of an upload: where it goes and the backend's name for it."""

    offset: int
    length: int
    token: str = ""  # a blob's block id; unused by kinds that write in place


class Upload(abc.ABC):
    """One new version of `path` being written (see the module docstring)."""

    path: str
    # Bytes of the base version already in place at the start of the new one without being
    # uploaded again (an append); 0 when the caller must put everything.
    kept: int = 0
    # The largest part `put` accepts in one call.
    max_part: int = 4000 * 1024**2
    # A temporary object this upload created under another name (file shares), for the
    # crash journal; None when nothing is staged under a name.
    temp_path: str | None = None

    @abc.abstractmethod
    async def put(self, offset: int, data: bytes | bytearray | memoryview) -> Part:
        """Stage `data` as the bytes at `offset` of the new version. The caller does not
        change `data` until this returns (an upload may send it without a copy)."""

    @abc.abstractmethod
    async def commit(self, parts: Sequence[Part], size: int, *, keep: bool = True,
                     md5: bytes | None = None, exclusive: bool = False) -> Entry:
        """Make the new version visible under `path`; its Entry (new ETag). `md5`: the
        whole object's MD5, stored as its Content-MD5 only once every byte is in place. With
        `exclusive`, AlreadyExists (and nothing visible) if `path` exists by then, atomically
        where the service can say so."""

    async def commit_whole(self, data: bytes, *, md5: bytes | None = None,
                           exclusive: bool = False) -> Entry:
        """The whole new version at once (`kept` ignored): a small file in one request where
        the kind can (a blob's Put Blob)."""
        parts = [await self.put(0, data)] if data else []
        return await self.commit(parts, len(data), keep=False, md5=md5, exclusive=exclusive)

    async def abort(self) -> bool:
        """Drop what was staged; best effort, never raises. False if something staged under
        a name (`temp_path`) may be left behind."""
        return True


def _remote_file(path: str, e: Entry) -> RemoteFile:
    return RemoteFile(path, e.size, None, e.etag, e.mtime_ns / 1e9 if e.mtime_ns else None,
                      md5_known=False)


def check_tiling(parts: Sequence[Part], start: int, size: int, what: str) -> None:
    """Raise ValueError unless `parts` tile [start, size) in order (a bug in the caller)."""
    at = start
    for p in parts:
        if p.offset != at or p.length <= 0:
            raise ValueError(f"{what}: parts do not tile the object (gap or overlap at {at})")
        at += p.length
    if at != size:
        raise ValueError(f"{what}: parts end at {at}, the object is {size} bytes")
