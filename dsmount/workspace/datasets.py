"""Named datasets, as the Azure ML Python client has them: enumerate, read, create, update.

    from dsmount.api import Workspace, DataTypeIds
    ws = Workspace()
    for ds in ws.datasets: print(ds.name)          # user datasets, then the examples
    ds = ws.datasets["my dataset"]                 # or ws.datasets[0]; unknown: DatasetNotFound
    frame = ds.to_dataframe(); ds.read_as_text(); ds.read_as_binary()
    with ds.open() as f: f.read(1000)              # one ranged GET of 1000 bytes
    ws.datasets.add_from_dataframe(frame, DataTypeIds.GenericCSV, "new", "about it")
    ds.update_from_dataframe(frame2, name="new v2")  # omitted fields keep their values

A user dataset lives in a datastore (the registry's default unless one is named): each of its
versions is an immutable datastore version holding `data.<suffix>` and `dataset.json`, and the
catalog (`dsmount.workspace.datasets_catalog`) says which version of which dataset is current
under which name. Example datasets ship in the package (`examples/`) and read the same way,
offline; they cannot be changed.

This module is the one implementation: the Python API (`Workspace.datasets`) and the CLI
(`dsmount dataset ...`) both call it.

Invariants:
- Nothing is written before every check that can fail on the caller's input has passed: the
  data type, the DataFrame's fit to it, the name (free, or this dataset's), the datastore, a
  readable source file.
- An update or a create becomes visible in one step (the catalog commit): readers see the
  dataset before or after, never a mix. A change that loses a race raises `DatasetConflict`;
  the version it had written then stays in the datastore, unreferenced, and is named in the
  message.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from dsmount.errors import InvalidRequest, NotFound
from dsmount.shared.fileutil import commit, temp_beside
from dsmount.workspace import datasets_catalog as cat
from dsmount.workspace import datasets_store as io_
from dsmount.workspace import versions
from dsmount.workspace.datasets_catalog import DatasetConflict, DatasetNotFound, Entry
from dsmount.workspace.datasets_examples import example_entries, example_file
from dsmount.workspace.datasets_types import DataTypeIds, check_type, file_name, serialize
from dsmount.workspace.registry import Registry

__all__ = [
    "DataTypeIds", "Dataset", "DatasetConflict", "DatasetNotFound", "Datasets", "MOUNT_ROOT",
]  # fmt: skip

MOUNT_ROOT = "/datastores"  # the daemon's default mountpoint, where `Dataset.path` points
METADATA_FILE = "dataset.json"
_MAX_NAME = 255


def resolve_datastore(registry: Registry, datastore: str | None) -> str:
    """The datastore named, or the registry's default; a clear error when there is none."""
    if datastore is not None:
        return registry.get(datastore).name
    name = registry.default_name()
    if name is None:
        raise NotFound(
            f"no default datastore to keep datasets in: the registry {registry.dir} is empty "
            "(register one: dsmount datastore register-blob / register-local ...)"
        )
    return name


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("a dataset needs a name (a non-empty string)")
    if len(name) > _MAX_NAME or any(ord(c) < 32 for c in name):
        raise InvalidRequest(
            f"dataset name {name[:40]!r}: at most {_MAX_NAME} characters, no control characters"
        )
    return name


def _check_description(description: object) -> str:
    if not isinstance(description, str):
        raise InvalidRequest("a dataset's description is a string")
    return description


def _raw_bytes(raw_data: object, data_type_id: str) -> bytes:
    if isinstance(raw_data, str):
        raw_data = raw_data.encode()
    if not isinstance(raw_data, bytes | bytearray | memoryview):
        raise InvalidRequest(f"raw_data is bytes or str, not {type(raw_data).__name__}")
    data = bytes(raw_data)
    _check_raw_head(data[:4], data[-4:], data_type_id)
    return data


def _check_raw_head(head: bytes, tail: bytes, data_type_id: str) -> None:
    if data_type_id == DataTypeIds.Parquet and (head != b"PAR1" or tail != b"PAR1"):
        raise InvalidRequest("these bytes are not a Parquet file (no PAR1 marks)")


def readable_file(path: str | Path, data_type_id: str) -> tuple[Path, int]:
    """(absolute path, size) of a local file we can read, else InvalidRequest/NotFound."""
    p = Path(path).absolute()
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(4)
            f.seek(max(0, size - 4))
            tail = f.read(4)
    except FileNotFoundError:
        raise NotFound(f"local file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidRequest(f"{path} is a directory: a dataset is one file") from None
    except OSError as e:
        raise InvalidRequest(f"cannot read {path}: {e.strerror}") from None
    _check_raw_head(head, tail, data_type_id)
    return p, size


# -- the operations (shared by the API and the CLI) -------------------------------------------
def load_entries(registry: Registry, datastore: str) -> list[Entry]:
    with io_.open_store(registry, datastore) as store:
        return list(cat.load(store).entries)


def _write_version(
    registry: Registry, datastore: str, data: bytes | Path, meta: dict[str, Any]
) -> tuple[int, int]:
    """Store `data` and its metadata as the next version of `datastore`: (N, data size)."""
    with tempfile.TemporaryDirectory(prefix="dsmount-dataset-") as tmp:
        root = Path(tmp) / "version"
        root.mkdir()
        target = root / file_name(meta["data_type_id"])
        if isinstance(data, bytes):
            target.write_bytes(data)
            size = len(data)
        else:  # already checked readable; linked, not copied
            target.symlink_to(data)
            size = data.stat().st_size
        (root / METADATA_FILE).write_text(
            json.dumps({**meta, "size": size, "file": target.name}, indent=1) + "\n"
        )
        number, _ = versions.create_version(datastore, root, registry=registry, pack=False)
    return number, size


def _commit(
    registry: Registry, datastore: str, base: cat.Catalog, entry: Entry, change: cat.Change
) -> Entry:
    with io_.open_store(registry, datastore) as store:
        try:
            cat.commit(store, base, change)
        except (DatasetConflict, DatasetNotFound) as e:
            raise type(e)(
                f"{e} (the data written for it stays unreferenced as version {entry.version} "
                f"of datastore {datastore!r})"
            ) from None
    return entry


def _new_entry(
    registry: Registry,
    datastore: str,
    data: bytes | Path,
    *,
    family_id: str,
    name: str,
    description: str,
    data_type_id: str,
) -> Entry:
    created = cat.now_iso()
    meta = {
        "family_id": family_id, "name": name, "description": description,
        "data_type_id": data_type_id, "created_date": created,
    }  # fmt: skip
    number, size = _write_version(registry, datastore, data, meta)
    return Entry(
        family_id=family_id, id=f"{family_id}.{number}", name=name, description=description,
        data_type_id=data_type_id, created_date=created, size=size, version=number,
        object=f"{versions.VERSIONS_DIR}/{number}/{file_name(data_type_id)}",
    )  # fmt: skip


def create(
    registry: Registry,
    datastore: str | None,
    data: bytes | Path,
    data_type_id: str,
    name: str,
    description: str,
) -> tuple[str, Entry]:
    """Add a new dataset (`data`: bytes, or a local file already checked): (datastore, entry).
    A name in use is a `DatasetConflict` and nothing is written."""
    check_type(data_type_id)
    _check_name(name)
    _check_description(description)
    where = resolve_datastore(registry, datastore)
    with io_.open_store(registry, where) as store:
        base = cat.load(store)
    if base.by_name(name) is not None:
        raise cat.name_taken(name, where)
    entry = _new_entry(
        registry, where, data, family_id=uuid.uuid4().hex, name=name,
        description=description, data_type_id=data_type_id,
    )  # fmt: skip
    return where, _commit(registry, where, base, entry, cat.adding(entry, where))


def update(
    registry: Registry,
    datastore: str,
    current: Entry,
    data: bytes | Path,
    data_type_id: str | None = None,
    name: str | None = None,
    description: str | None = None,
) -> Entry:
    """Replace the data (and optionally type, name, description) of the dataset `current` was
    read as. If it changed since, or the new name is another dataset's: `DatasetConflict`."""
    data_type_id = check_type(current.data_type_id if data_type_id is None else data_type_id)
    name = _check_name(current.name if name is None else name)
    description = _check_description(current.description if description is None else description)
    with io_.open_store(registry, datastore) as store:
        base = cat.load(store)
    change = cat.replacing(current.id, replace(current, name=name), datastore)
    change(base)  # the checks, before anything is written
    entry = _new_entry(
        registry, datastore, data, family_id=current.family_id, name=name,
        description=description, data_type_id=data_type_id,
    )  # fmt: skip
    return _commit(registry, datastore, base, entry, cat.replacing(current.id, entry, datastore))


def remove(registry: Registry, datastore: str | None, name: str) -> tuple[str, Entry]:
    """Drop dataset `name` from the catalog (its versions stay in the datastore)."""
    where = resolve_datastore(registry, datastore)
    with io_.open_store(registry, where) as store:
        base = cat.load(store)
        entry = base.by_name(name)
        if entry is None:
            raise _not_found(name, where, base.entries)
        cat.commit(store, base, cat.removing(entry.family_id, entry.id, where))
    return where, entry


def _not_found(name: object, where: str | None, entries: Any) -> DatasetNotFound:
    known = ", ".join(repr(e.name) for e in list(entries)[:10]) or "none"
    place = f"datastore {where!r}" if where else "the examples"
    return DatasetNotFound(f"no dataset named {name!r} in {place} (known: {known})")


# -- the Python API --------------------------------------------------------------------------
class Dataset:
    """One dataset: its metadata, its contents, and (user datasets) its updates."""

    def __init__(self, registry: Registry, datastore: str | None, entry: Entry) -> None:
        self._registry = registry
        self.datastore = datastore  # None: an example shipped in the package
        self._entry = entry

    # -- metadata -------------------------------------------------------------------------------
    name = property(lambda self: self._entry.name, doc="Unique name (case-sensitive).")
    description = property(lambda self: self._entry.description)
    family_id = property(lambda self: self._entry.family_id, doc="Stable across updates.")
    data_type_id = property(lambda self: self._entry.data_type_id, doc="See DataTypeIds.")
    id = property(lambda self: self._entry.id, doc="This version of the dataset.")
    size = property(lambda self: self._entry.size, doc="Bytes of the data.")
    version = property(lambda self: self._entry.version, doc="The datastore version.")

    @property
    def created_date(self) -> datetime:
        return datetime.fromisoformat(self._entry.created_date)

    @property
    def is_example(self) -> bool:
        return self.datastore is None

    @property
    def path(self) -> str:
        """Where the data is as a file: under the mount once the version is attached
        (`dsmount attach DATASTORE --version N`), or in the package for an example."""
        if self.datastore is None:
            return str(example_file(self._entry))
        return f"{MOUNT_ROOT}/{self.datastore}/{self.version}/{Path(self._entry.object).name}"

    @property
    def object_path(self) -> str | None:
        """The data object's path inside the datastore (None for an example)."""
        return None if self.datastore is None else self._entry.object

    def to_dict(self) -> dict[str, Any]:
        d = self._entry.to_dict()
        return {**d, "datastore": self.datastore, "path": self.path, "example": self.is_example}

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dataset) and (other.datastore, other.id) == (
            self.datastore, self.id,
        )  # fmt: skip

    def __hash__(self) -> int:
        return hash((self.datastore, self.id))

    # -- reading --------------------------------------------------------------------------------
    def open(self) -> IO[bytes]:
        """A read-only binary stream of the data: each read fetches what it asks for."""
        if self.datastore is None:
            return open(example_file(self._entry), "rb")
        store = io_.open_store(self._registry, self.datastore)
        return io_.RangeStream(store, self._entry.object, self._entry.size)  # type: ignore[return-value]

    def read_as_binary(self) -> bytes:
        with self.open() as f:
            return f.read()

    def read_as_text(self, encoding: str = "utf-8") -> str:
        return self.read_as_binary().decode(encoding)

    def to_dataframe(self) -> Any:
        """The data as a pandas DataFrame, read as its data type says."""
        from dsmount.workspace.datasets_types import deserialize

        with self.open() as f:
            return deserialize(f, self.data_type_id)

    def download(self, dest: str | Path, overwrite: bool = False) -> Path:
        """Write the data to file `dest` (a directory: `dest/<name>.<suffix>`); never a
        partial file under that name."""
        target = Path(dest)
        if target.is_dir():
            suffix = Path(self._entry.object).suffix
            target = target / (self.name.replace("/", "_") + suffix)
        if target.exists() and not overwrite:
            raise cat.DatasetConflict(f"{target} exists (use overwrite)")
        try:
            with self.open() as src, temp_beside(target, suffix=".dsmount-part") as (out, tmp):
                while chunk := src.read(8 * 1024 * 1024):
                    out.write(chunk)
                out.close()
                commit(tmp, target, replace=overwrite)
        except FileExistsError:
            raise cat.DatasetConflict(f"{target} appeared meanwhile; not overwritten") from None
        except OSError as e:
            raise InvalidRequest(f"cannot write {target}: {e.strerror}") from None
        return target

    # -- updating -------------------------------------------------------------------------------
    def _writable(self) -> str:
        if self.datastore is None:
            raise InvalidRequest(f"{self.name!r} is an example dataset: examples cannot change")
        return self.datastore

    def update_from_dataframe(
        self,
        dataframe: Any,
        data_type_id: str | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> Dataset:
        """Replace the data with `dataframe` serialized as `data_type_id` (default: as now);
        `name` and `description` default to their current values."""
        where = self._writable()
        data = serialize(dataframe, check_type(data_type_id or self.data_type_id))
        return self._updated(update(
            self._registry, where, self._entry, data, data_type_id, name, description
        ))  # fmt: skip

    def update_from_raw_data(
        self,
        raw_data: bytes | str,
        data_type_id: str | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> Dataset:
        """Replace the data with `raw_data`, already in `data_type_id` (default: as now)."""
        where = self._writable()
        data = _raw_bytes(raw_data, check_type(data_type_id or self.data_type_id))
        return self._updated(update(
            self._registry, where, self._entry, data, data_type_id, name, description
        ))  # fmt: skip

    def update_from_file(
        self,
        path: str | Path,
        data_type_id: str | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> Dataset:
        """Replace the data with a local file, already in `data_type_id` (default: as now)."""
        where = self._writable()
        local, _ = readable_file(path, check_type(data_type_id or self.data_type_id))
        return self._updated(update(
            self._registry, where, self._entry, local, data_type_id, name, description
        ))  # fmt: skip

    def _updated(self, entry: Entry) -> Dataset:
        self._entry = entry
        return self


class Datasets:
    """The datasets of a workspace: iterate, `[name]`, `[index]`, `len`, `add_from_*`.
    `which`: "all" (user datasets, then examples), "user" or "example"."""

    def __init__(self, registry: Registry, datastore: str | None = None, which: str = "all"):
        self._registry = registry
        self._datastore = datastore  # None: the default datastore, at each call
        self._which = which

    def _user(self) -> list[Dataset]:
        if self._which == "example":
            return []
        if self._datastore is None and self._registry.default_name() is None:
            return []  # no datastore, so no user datasets: the examples still list
        where = resolve_datastore(self._registry, self._datastore)
        return [Dataset(self._registry, where, e) for e in load_entries(self._registry, where)]

    def _all(self) -> list[Dataset]:
        examples = [] if self._which == "user" else [
            Dataset(self._registry, None, e) for e in example_entries()
        ]  # fmt: skip
        return [*self._user(), *examples]

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, name: object) -> bool:
        return any(d.name == name for d in self._all())

    def __getitem__(self, key: int | str) -> Dataset:
        """By index, or by name (case-sensitive); unknown: `DatasetNotFound` (an IndexError
        and a KeyError)."""
        found = self._all()
        if isinstance(key, int) and not isinstance(key, bool):
            try:
                return found[key]
            except IndexError:
                raise DatasetNotFound(
                    f"dataset index {key} out of range ({len(found)} datasets)"
                ) from None
        for d in found:
            if d.name == key:
                return d
        where = None if self._which == "example" else (
            self._datastore or self._registry.default_name()
        )  # fmt: skip
        raise _not_found(key, where, [d._entry for d in found])

    def __repr__(self) -> str:
        return "\n".join(d.name for d in self._all())

    def _add(self, data: bytes | Path, data_type_id: str, name: str, description: str) -> Dataset:
        if self._which == "example":
            raise InvalidRequest("example datasets are shipped with dsmount: add to ws.datasets")
        where, entry = create(self._registry, self._datastore, data, data_type_id, name,
                              description)
        return Dataset(self._registry, where, entry)

    def add_from_dataframe(
        self, dataframe: Any, data_type_id: str, name: str, description: str
    ) -> Dataset:
        """Serialize `dataframe` as `data_type_id` and store it as a new dataset `name`."""
        return self._add(serialize(dataframe, check_type(data_type_id)), data_type_id, name,
                         description)

    def add_from_raw_data(
        self, raw_data: bytes | str, data_type_id: str, name: str, description: str
    ) -> Dataset:
        """Store bytes already in `data_type_id` as a new dataset `name`."""
        return self._add(_raw_bytes(raw_data, check_type(data_type_id)), data_type_id, name,
                         description)

    def add_from_file(
        self, path: str | Path, data_type_id: str, name: str, description: str = ""
    ) -> Dataset:
        """Store a local file already in `data_type_id` as a new dataset `name`."""
        local, _ = readable_file(path, check_type(data_type_id))
        return self._add(local, data_type_id, name, description)

    def remove(self, name: str) -> None:
        """Drop dataset `name` (its versions stay in the datastore, unreferenced)."""
        if self._which == "example":
            raise InvalidRequest("example datasets cannot be removed")
        remove(self._registry, self._datastore, name)
