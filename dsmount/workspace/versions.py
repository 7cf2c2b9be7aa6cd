"""Versions of a registered datastore: immutable snapshots stored in the datastore itself.

Version N lives in the datastore, not in the registry. It is claimed by creating
`_versions/N.claim` exclusively, filled, and committed by writing `_versions/N.json` last; only
committed versions are listed or attached, and a failed attempt's number is never reused.

- `create_version` uploads a local tree below `_versions/N/`: files under 1 MiB packed into
  pack objects of ~32 MiB in path order (`_versions/N/.packs/`, see `packing`), bigger ones as
  objects of their own; then writes the manifest `_versions/N.manifest` (`storage.manifest`:
  every path with size, mtime, MD5 and where its bytes are, pinned to the objects' ETags where
  the store reports them) and commits. `pack=False` stores every file as its own object (still
  with a manifest).
- `snapshot` makes version N of data other tools uploaded (azcopy, the portal): one listing,
  every object's ETag pinned in a manifest (root: the listed prefix), so a blob changed since
  gives ESTALE through the mount, never mixed bytes. Nothing is copied.
- A version with a manifest attaches with no LIST or HEAD call (`AttachRequest.manifest`); one
  made before manifests existed (no "manifest" in N.json) is served from `_versions/N/` as
  before. `version_source` gives the files of either (`storage.files`), for downloads and the
  Python API.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from dsmount.errors import BackendError, InvalidRequest, NotFound
from dsmount.storage.files import Files, open_version
from dsmount.storage.manifest import FileRecord, write_manifest
from dsmount.storage.names import join
from dsmount.workspace.entries import parse_version
from dsmount.workspace.packing import plan_packs
from dsmount.workspace.registry import Registry

VERSIONS_DIR = "_versions"
PACKS_DIR = ".packs"
_VERSION_FILE = re.compile(r"([1-9][0-9]{0,8})\.(json|claim)")


def versions(name: str, *, registry: Registry | None = None) -> list[int]:
    """The committed versions of datastore `name`, ascending."""
    reg = registry or Registry()
    with reg.store(name) as store:
        files, _ = store.list_dir(VERSIONS_DIR)
    return sorted(int(m[1]) for f in files if (m := _VERSION_FILE.fullmatch(f)) and m[2] == "json")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _commit(store: Files, number: int, record: dict[str, Any]) -> None:
    store.put_bytes(f"{VERSIONS_DIR}/{number}.json", json.dumps(record, indent=1).encode())


def _upload_manifest(store: Files, number: int, path: Path) -> str:
    name = f"{VERSIONS_DIR}/{number}.manifest"
    md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).digest()
    store.upload(path, name, size=path.stat().st_size, md5=md5, overwrite=True,
                 progress=lambda n: None)
    return name


def create_version(
    name: str,
    src_dir: str | Path,
    *,
    registry: Registry | None = None,
    quiet: bool = True,
    pack: bool = True,
) -> tuple[int, Any]:
    """Upload the CONTENTS of `src_dir` as the next version N of datastore `name` (see the
    module docstring). Returns (N, the transfer summary)."""
    from dsmount.workspace import transfer

    reg = registry or Registry()
    sources = transfer.local_tree(src_dir)
    if not sources:
        raise InvalidRequest(f"{src_dir} holds no files: nothing to store as a version")
    root = f"{VERSIONS_DIR}/{{n}}"
    plan = plan_packs(sources, path=lambda s: s.rel, size=lambda s: s.size)
    if not pack:
        plan.loose, plan.packs = sorted(sources, key=lambda s: s.rel), []
    with reg.store(name) as store, tempfile.TemporaryDirectory(prefix="dsmount-pack-") as tmp:
        number = _claim_version(store)
        root = root.format(n=number)
        records: list[FileRecord] = []
        uploads = list(plan.loose)
        pack_names: list[str] = []
        for i, members in enumerate(plan.packs, start=1):
            rel = f"{PACKS_DIR}/pack-{i:06d}"
            pack_names.append(join(root, rel))
            local = Path(tmp) / f"pack-{i:06d}"
            offset = 0
            with open(local, "wb") as out:
                for s in members:
                    data = s.path.read_bytes()
                    if len(data) != s.size:
                        raise InvalidRequest(f"{s.path} changed while the version was made")
                    out.write(data)
                    records.append(FileRecord(
                        s.rel, s.size, s.path.stat().st_mtime_ns,
                        hashlib.md5(data, usedforsecurity=False).digest(),
                        pack=pack_names[-1], offset=offset))
                    offset += len(data)
            uploads.append(transfer.LocalFile(local, rel, offset))
        summary = transfer.upload(store, uploads, root, quiet=quiet, desc=f"{name} v{number}")
        # One listing pins what was uploaded: ETags (and MD5s where the listing has them).
        listed = {f.path: f for f in store.walk(root)}
        pinned_packs = []
        for pack_name in pack_names:
            f = listed.get(pack_name)
            pinned_packs.append((pack_name, f.size if f else 0, f.etag if f else None))
        for s in plan.loose:
            f = listed.get(join(root, s.rel))
            md5 = f.md5 if f is not None and f.md5_known else None
            records.append(FileRecord(s.rel, s.size, s.path.stat().st_mtime_ns, md5,
                                      f.etag if f is not None else None))
        manifest = Path(tmp) / "manifest"
        counts = write_manifest(manifest, records, root=root, kind="version", packs=pinned_packs,
                                created=_now(), dir_mtime_ns=time.time_ns())
        manifest_name = _upload_manifest(store, number, manifest)
        _commit(store, number, {
            "version": number, **counts, "packs": len(pack_names), "created": _now(),
            "manifest": manifest_name,
        })
    return number, summary


def snapshot(name: str, prefix: str = "", *, registry: Registry | None = None) -> tuple[int, int]:
    """Make version N of what datastore `name` holds below `prefix` now, without copying: a
    manifest pinning every object's ETag. Returns (N, files)."""
    reg = registry or Registry()
    info = reg.get(name)
    if info.kind == "local":
        raise InvalidRequest("snapshot pins object ETags: use `datastore create` for a local "
                             "directory")
    prefix = prefix.strip("/")
    with reg.store(name) as store, tempfile.TemporaryDirectory(prefix="dsmount-snap-") as tmp:
        records = []
        for f in store.walk(prefix):
            rel = f.path[len(prefix):].lstrip("/") if prefix else f.path
            if not prefix and (rel == VERSIONS_DIR or rel.startswith(VERSIONS_DIR + "/")):
                continue  # versions are not part of the data
            etag = f.etag
            if etag is None:  # a file share's listing has no ETags: ask each file once
                full = store.stat(f.path)
                etag = full.etag if full is not None else None
            records.append(FileRecord(rel, f.size, int((f.mtime or 0) * 1e9),
                                      f.md5 if f.md5_known else None, etag))
        if not records:
            raise NotFound(f"nothing to snapshot: {store.describe()}/{prefix} holds no files")
        number = _claim_version(store)
        manifest = Path(tmp) / "manifest"
        counts = write_manifest(manifest, records, root=prefix, kind="snapshot", created=_now(),
                                dir_mtime_ns=time.time_ns())
        manifest_name = _upload_manifest(store, number, manifest)
        _commit(store, number, {
            "version": number, **counts, "kind": "snapshot", "prefix": prefix,
            "created": _now(), "manifest": manifest_name,
        })
    return number, counts["files"]


def _claim_version(store: Files) -> int:
    for _ in range(20):  # another writer may claim the same number first: look again
        files, dirs = store.list_dir(VERSIONS_DIR)
        used = {int(m[1]) for f in files if (m := _VERSION_FILE.fullmatch(f))}
        used |= {int(d) for d in dirs if d.isdigit()}
        number = max(used, default=0) + 1
        claim = json.dumps({"claimed": time.time(), "pid": os.getpid()}).encode()
        if store.put_bytes(f"{VERSIONS_DIR}/{number}.claim", claim, exclusive=True):
            return number
    raise BackendError("could not claim a new version number (too many concurrent writers)")


def _resolve(name: str, version: str, reg: Registry) -> int:
    known = versions(name, registry=reg)
    if str(version) == "latest" and known:
        version = str(known[-1])
    number = parse_version(version) if str(version) != "latest" else 0
    if number not in known:
        listed = ", ".join(map(str, known)) or "none yet: dsmount datastore create"
        raise NotFound(f"datastore {name!r} has no version {number} (versions: {listed})")
    return number


def version_record(store: Files, number: int) -> dict[str, Any]:
    """The commit record `_versions/N.json` of a committed version."""
    raw = store.read_range(f"{VERSIONS_DIR}/{number}.json", 0, 1 << 20)
    try:
        record = json.loads(raw)
    except ValueError:
        raise BackendError(f"{VERSIONS_DIR}/{number}.json is not valid JSON") from None
    return record if isinstance(record, dict) else {}


def attach_spec_for(
    name: str, version: str | None = None, *, registry: Registry | None = None
) -> dict[str, Any]:
    """The attach request fields (`DatastoreSpec` wire form, secret included) of a registered
    datastore, or of one of its versions (then immutable; `version` normalized, "latest"
    resolved to the highest committed version; a version with a manifest names it, and the
    spec stays at the datastore's root, where the manifest's object names start)."""
    reg = registry or Registry()
    info = reg.get(name)
    spec = info.storage_spec(reg.credential(info))
    # A version is immutable; the datastore itself is attached the way it was registered.
    extra: dict[str, Any] = {"read_write": True} if info.read_write else {}
    if version is not None:
        number = _resolve(name, version, reg)
        with reg.store(name) as store:
            manifest = version_record(store, number).get("manifest")
        extra = {"version": str(number), "immutable": True}
        if isinstance(manifest, str) and manifest:
            extra["manifest"] = manifest
        else:
            spec = spec.below(f"{VERSIONS_DIR}/{number}")
    return {**spec.to_dict(secrets=True), **extra}


def version_source(
    name: str, version: str, path: str = "", *, registry: Registry | None = None
) -> tuple[Files, str]:
    """(the files, the prefix in them) holding `path` of version `version`: the version's files
    through its manifest, or (older versions) its directory in the datastore."""
    reg = registry or Registry()
    number = _resolve(name, version, reg)
    store = reg.store(name)
    try:
        manifest = version_record(store, number).get("manifest")
        if isinstance(manifest, str) and manifest:
            return open_version(store, manifest), path
    except BaseException:
        store.close()
        raise
    return store, join(VERSIONS_DIR, str(number), path)
