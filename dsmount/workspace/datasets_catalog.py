"""The catalog of the datasets in one datastore: which name is which dataset, and which
version of it is current.

Layout, in the datastore itself (so it travels with the data):
- `_versions/N/data.<suffix>` and `_versions/N/dataset.json`: one version of one dataset, an
  ordinary immutable datastore version (`dsmount.workspace.versions`), its metadata beside
  its data. Attached as `--version N` it is `MOUNT/<datastore>/N/data.csv`.
- `_datasets/catalog/R.json`: revision R of the catalog, the full list of datasets (each an
  `Entry`: name, description, family id, data type, the version holding its data). Written
  once, never changed.

The commit point: revision R+1 is created with `put_if_absent` (If-None-Match) by a writer
that read revision R. Of two writers that read the same R exactly one creates R+1; the other
reads the new head and either applies its change again on top of it (it touched other
datasets) or stops with `DatasetConflict` (the same dataset changed, or its name was taken).
Readers read the highest revision, so they see a dataset before or after an update, never a
mix; the versions a revision names are committed before it.

Invariants: revision numbers are dense from 1; a revision names each family id and each name
at most once; a name is compared exactly (case-sensitive).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from dsmount.errors import AlreadyExists, BackendError, NotFound
from dsmount.storage.files import Files
from dsmount.workspace import datasets_store as io_

CATALOG_DIR = "_datasets/catalog"
FORMAT = 1
COMMIT_ATTEMPTS = 20  # rebases on other writers' revisions before giving up
_REVISION = re.compile(r"([1-9][0-9]{0,11})\.json")


class DatasetNotFound(NotFound, KeyError, IndexError):
    """No dataset of that name (or index). An IndexError and a KeyError too, as lookups by
    name raised in the Azure ML client."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else "dataset not found"


class DatasetConflict(AlreadyExists):
    """The name is taken, or the dataset changed since it was read: nothing was changed."""


@dataclass(frozen=True)
class Entry:
    """One dataset as the catalog holds it: its current version and its metadata."""

    family_id: str  # the dataset, stable across updates and renames
    id: str  # this version of it: "<family_id>.<version>"
    name: str
    description: str
    data_type_id: str
    created_date: str  # ISO 8601, when this version was made
    size: int  # bytes of the data object
    version: int  # the datastore version holding the data
    object: str  # the data object's path in the datastore: _versions/N/data.<suffix>

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        names = {f.name for f in fields(cls)}
        missing = names - set(d)
        if missing:
            raise BackendError(f"dataset catalog entry without {', '.join(sorted(missing))}")
        return cls(**{k: d[k] for k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Catalog:
    """One revision of the catalog (revision 0: none written yet)."""

    revision: int
    entries: tuple[Entry, ...]

    def by_name(self, name: str) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)

    def by_family(self, family_id: str) -> Entry | None:
        return next((e for e in self.entries if e.family_id == family_id), None)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _path(revision: int) -> str:
    return f"{CATALOG_DIR}/{revision}.json"


def head_revision(store: Files) -> int:
    names = io_.list_files(store, CATALOG_DIR)
    return max((int(m[1]) for n in names if (m := _REVISION.fullmatch(n))), default=0)


def read_revision(store: Files, revision: int) -> Catalog:
    if revision == 0:
        return Catalog(0, ())
    raw = io_.read_object(store, _path(revision))
    try:
        body = json.loads(raw)
        entries = tuple(Entry.from_dict(e) for e in body["datasets"])
    except (ValueError, KeyError, TypeError) as e:
        raise BackendError(f"{_path(revision)} is not a dataset catalog ({e})") from None
    return Catalog(revision, entries)


def load(store: Files) -> Catalog:
    """The newest revision of the catalog."""
    return read_revision(store, head_revision(store))


Change = Callable[[Catalog], tuple[Entry, ...]]


def commit(store: Files, base: Catalog, change: Change) -> Catalog:
    """Write `change(base)` as revision base+1; when another writer took that number, apply
    `change` to the newer head and try again. `change` raises `DatasetConflict` when its
    dataset changed meanwhile. Returns the revision written."""
    current = base
    for _ in range(COMMIT_ATTEMPTS):
        entries = change(current)
        _check_unique(entries)
        body = {
            "format": FORMAT,
            "revision": current.revision + 1,
            "committed": now_iso(),
            "datasets": [e.to_dict() for e in entries],
        }
        data = json.dumps(body, indent=1).encode()
        if io_.put_if_absent(store, _path(current.revision + 1), data):
            return Catalog(current.revision + 1, entries)
        current = load(store)
    raise DatasetConflict(
        f"the dataset catalog changed {COMMIT_ATTEMPTS} times while this change was being "
        "committed; nothing was changed, try again"
    )


def _check_unique(entries: tuple[Entry, ...]) -> None:
    names = [e.name for e in entries]
    families = [e.family_id for e in entries]
    if len(set(names)) != len(names) or len(set(families)) != len(families):
        raise DatasetConflict("a dataset name would be used twice; nothing was changed")


# -- the changes --------------------------------------------------------------------------------
def adding(entry: Entry, datastore: str) -> Change:
    """A change adding a new dataset; a conflict if its name is taken."""

    def change(cat: Catalog) -> tuple[Entry, ...]:
        if cat.by_name(entry.name) is not None:
            raise name_taken(entry.name, datastore)
        return (*cat.entries, entry)

    return change


def replacing(expected_id: str, entry: Entry, datastore: str) -> Change:
    """A change making `entry` the current version of its family, which must still be at
    `expected_id`; a conflict if it moved on (or its new name is another dataset's)."""

    def change(cat: Catalog) -> tuple[Entry, ...]:
        current = cat.by_family(entry.family_id)
        if current is None:
            raise DatasetNotFound(
                f"dataset {entry.name!r} was removed from datastore {datastore!r} meanwhile"
            )
        if current.id != expected_id:
            raise DatasetConflict(
                f"dataset {current.name!r} was updated by someone else since it was read "
                f"(it is now {current.id}, this update was based on {expected_id}); nothing "
                "was changed: read it again and update that"
            )
        other = cat.by_name(entry.name)
        if other is not None and other.family_id != entry.family_id:
            raise name_taken(entry.name, datastore)
        return tuple(entry if e.family_id == entry.family_id else e for e in cat.entries)

    return change


def removing(family_id: str, expected_id: str | None, datastore: str) -> Change:
    def change(cat: Catalog) -> tuple[Entry, ...]:
        current = cat.by_family(family_id)
        if current is None:
            raise DatasetNotFound(f"the dataset was removed from datastore {datastore!r} already")
        if expected_id is not None and current.id != expected_id:
            raise DatasetConflict(
                f"dataset {current.name!r} was updated since it was read; not removed"
            )
        return tuple(e for e in cat.entries if e.family_id != family_id)

    return change


def name_taken(name: str, datastore: str) -> DatasetConflict:
    return DatasetConflict(
        f"a dataset named {name!r} already exists in datastore {datastore!r}; nothing was "
        "written (update that dataset, or choose another name)"
    )

