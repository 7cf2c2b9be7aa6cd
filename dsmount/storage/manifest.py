"""Manifests: the complete, immutable table of contents of a version, in one sqlite file.

A manifest lists every path of a version with its size, mtime and MD5, and where its bytes
are: an object of its own (`<root>/<path>`, pinned to the ETag recorded when the version was
made) or a byte range of a pack object (many small files concatenated in path order). With it a
version is mounted, listed and stat'ed with no LIST or HEAD call at all, and a shuffled read of
small files can be served from a few large pack reads.

Why sqlite (stdlib): a 10-million-entry version must not live in RAM; sqlite answers a lookup or
a page of a listing from disk through its own small page cache, and the file is usable as
downloaded (no parsing step at attach).

Schema (format 1):
- `meta(key, value)`: format, root (the object prefix of unpacked files, relative to the
  datastore root), kind ("version" | "snapshot"), created, files, bytes.
- `dirs(id, path)`: every directory; the root is id 0, path "".
- `packs(id, name, size, etag)`: pack objects (names relative to the datastore root).
- `entries(dir, name, is_dir, size, mtime_ns, md5, etag, pack, offset)`, primary key
  (dir, name), WITHOUT ROWID so a directory's entries are stored together and in name order.
  `pack` NULL: the bytes are the object `<root>/<path>` (pinned to `etag` when known);
  else bytes [offset, offset+size) of that pack.

Invariants: names are valid POSIX names (`names.name_problem`); a directory appears once in
`dirs` and once in its parent's `entries`; every parent of an entry exists; a manifest is written
to a temporary file and renamed into place, and opened read-only (`immutable=1`) afterwards.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dsmount.errors import IntegrityError, InvalidRequest, NotFound
from dsmount.storage.names import join, name_problem

FORMAT = "1"
PAGE = 1000  # entries per listing page

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE dirs(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE);
CREATE TABLE packs(id INTEGER PRIMARY KEY, name TEXT NOT NULL, size INTEGER, etag TEXT);
CREATE TABLE entries(
    dir INTEGER NOT NULL, name TEXT NOT NULL, is_dir INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, md5 BLOB, etag TEXT, pack INTEGER, "offset" INTEGER,
    PRIMARY KEY (dir, name)) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One file as a manifest records it."""

    path: str
    size: int
    mtime_ns: int
    md5: bytes | None = None
    etag: str | None = None  # of its own object (unpacked), when known
    pack: str | None = None  # the pack object's name, when packed
    offset: int = 0  # in the pack


@dataclass(frozen=True, slots=True)
class Row:
    """One entry of a directory, as read back."""

    name: str
    is_dir: bool
    size: int
    mtime_ns: int
    md5: bytes | None
    etag: str | None
    pack: int | None
    offset: int


@dataclass(frozen=True, slots=True)
class Location:
    """Where the bytes of a file are: `length` bytes of `object` from `offset`, pinned to
    `etag` when known."""

    object: str
    offset: int
    length: int
    etag: str | None
    object_size: int  # the whole object's size (a pack's, or the file's own)


def write_manifest(
    path: Path,
    files: Iterable[FileRecord],
    *,
    root: str,
    kind: str,
    packs: Iterable[tuple[str, int, str | None]] = (),
    created: str = "",
    dir_mtime_ns: int = 0,
) -> dict[str, int]:
    """Write a manifest of `files` to `path` (atomically); `packs` are (name, size, etag).
    Returns {"files": n, "bytes": total}. Raises InvalidRequest for a path that cannot be a
    POSIX path or that is both a file and a directory."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + _SCHEMA)
        pack_ids: dict[str, int] = {}
        for i, (name, size, etag) in enumerate(packs, start=1):
            pack_ids[name] = i
            db.execute("INSERT INTO packs VALUES (?,?,?,?)", (i, name, size, etag))
        dir_ids: dict[str, int] = {"": 0}
        db.execute("INSERT INTO dirs VALUES (0, '')")
        count = total = 0

        def dir_id(d: str) -> int:
            found = dir_ids.get(d)
            if found is not None:
                return found
            parent, _, leaf = d.rpartition("/")
            pid = dir_id(parent)
            new = dir_ids[d] = len(dir_ids)
            db.execute("INSERT INTO dirs VALUES (?,?)", (new, d))
            db.execute(
                "INSERT INTO entries VALUES (?,?,1,0,?,NULL,NULL,NULL,0)",
                (pid, leaf, dir_mtime_ns),
            )
            return new

        rows = []
        for f in files:
            parts = f.path.split("/")
            for part in parts:
                problem = name_problem(part)
                if problem:
                    raise InvalidRequest(f"{f.path!r} cannot be a path in a manifest ({problem})")
            parent = "/".join(parts[:-1])
            pack = pack_ids[f.pack] if f.pack is not None else None
            rows.append(
                (dir_id(parent), parts[-1], f.size, f.mtime_ns, f.md5, f.etag, pack, f.offset)
            )
            count += 1
            total += f.size
            if len(rows) >= 10_000:
                _insert_files(db, rows)
                rows.clear()
        _insert_files(db, rows)
        meta = {"format": FORMAT, "root": root, "kind": kind, "created": created,
                "files": str(count), "bytes": str(total)}
        db.executemany("INSERT INTO meta VALUES (?,?)", meta.items())
        db.commit()
    except sqlite3.IntegrityError as e:
        raise InvalidRequest(f"a path is listed twice, or is both a file and a directory ({e})"
                             ) from None
    finally:
        db.close()
    os.replace(tmp, path)
    return {"files": count, "bytes": total}


def _insert_files(db: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    db.executemany("INSERT INTO entries VALUES (?,?,0,?,?,?,?,?,?)", rows)


class Manifest:
    """A manifest opened read-only. Every method is a local sqlite query (microseconds)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True,
                                       check_same_thread=False)
            self.meta = dict(self._db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as e:
            raise IntegrityError(f"{path.name}: not a dsmount manifest ({e})") from None
        if self.meta.get("format") != FORMAT:
            raise IntegrityError(f"{path.name}: manifest format {self.meta.get('format')!r} "
                                 f"is not {FORMAT!r}; upgrade dsmount")
        self.root = self.meta.get("root", "")
        self._packs = {i: (name, etag, size or 0) for i, name, etag, size in
                       self._db.execute("SELECT id, name, etag, size FROM packs")}

    def close(self) -> None:
        self._db.close()

    @property
    def files(self) -> int:
        return int(self.meta.get("files", 0))

    @property
    def total_bytes(self) -> int:
        return int(self.meta.get("bytes", 0))

    def _dir_id(self, path: str) -> int | None:
        row = self._db.execute("SELECT id FROM dirs WHERE path = ?", (path,)).fetchone()
        return None if row is None else int(row[0])

    def row(self, path: str) -> Row | None:
        """The entry at `path` ("" is the root, a directory)."""
        if path == "":
            return Row("", True, 0, 0, None, None, None, 0)
        parent, _, name = path.rpartition("/")
        pid = self._dir_id(parent)
        if pid is None:
            return None
        found = self._db.execute(
            'SELECT name, is_dir, size, mtime_ns, md5, etag, pack, "offset" FROM entries'
            " WHERE dir = ? AND name = ?", (pid, name)).fetchone()
        return None if found is None else Row(found[0], bool(found[1]), *found[2:])

    def pages(self, path: str, page: int = PAGE) -> Iterator[list[Row]]:
        """The entries of directory `path`, in name order, `page` at a time (keyset paging)."""
        did = self._dir_id(path)
        if did is None:
            raise NotFound(f"{path or '/'}: no such directory in the manifest")
        last = ""
        first = True
        while True:
            found = self._db.execute(
                'SELECT name, is_dir, size, mtime_ns, md5, etag, pack, "offset" FROM entries'
                " WHERE dir = ? AND name > ? ORDER BY name LIMIT ?",
                (did, last, page)).fetchall()
            if found or first:
                yield [Row(r[0], bool(r[1]), *r[2:]) for r in found]
            first = False
            if len(found) < page:
                return
            last = found[-1][0]

    def location(self, path: str, row: Row) -> Location:
        if row.pack is None:
            return Location(join(self.root, path), 0, row.size, row.etag, row.size)
        name, etag, size = self._packs[row.pack]
        return Location(name, row.offset, row.size, etag, max(size, row.offset + row.size))

    def walk(self, prefix: str = "") -> Iterator[tuple[str, Row]]:
        """Every file at or below `prefix`, as (path, row), in path order."""
        row = self.row(prefix)
        if row is None:
            return
        if not row.is_dir:
            yield prefix, row
            return
        stack = [prefix]
        while stack:
            d = stack.pop()
            subdirs = []
            for page in self.pages(d):
                for r in page:
                    p = join(d, r.name)
                    if r.is_dir:
                        subdirs.append(p)
                    else:
                        yield p, r
            stack.extend(reversed(subdirs))
