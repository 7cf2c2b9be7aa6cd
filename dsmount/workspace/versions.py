"""Versions of a registered datastore: immutable snapshots stored in the datastore itself.

Versions (Grid-style) live in the datastore itself, not in the registry: version N of a datastore is
the prefix `<prefix>/_versions/N/` (for a local datastore, `<path>/_versions/N/`). It is
claimed by creating `_versions/N.claim` exclusively, filled, and committed by writing
`_versions/N.json` (a small manifest); only committed versions are listed or attached, and a
failed attempt's number is never reused. Versions are immutable: attached without TTL
revalidation.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from dsmount.errors import BackendError, InvalidRequest, NotFound
from dsmount.storage.store import Store
from dsmount.workspace.entries import parse_version
from dsmount.workspace.registry import Registry

VERSIONS_DIR = "_versions"
_VERSION_FILE = re.compile(r"([1-9][0-9]{0,8})\.(json|claim)")


def versions(name: str, *, registry: Registry | None = None) -> list[int]:
    """The committed versions of datastore `name`, ascending."""
    reg = registry or Registry()
    with reg.store(name) as store:
        files, _ = store.list_dir(VERSIONS_DIR)
    return sorted(int(m[1]) for f in files if (m := _VERSION_FILE.fullmatch(f)) and m[2] == "json")


def create_version(
    name: str, src_dir: str | Path, *, registry: Registry | None = None, quiet: bool = True
) -> tuple[int, Any]:
    """Upload the CONTENTS of `src_dir` as the next version N of datastore `name`.
    Returns (N, the transfer summary)."""
    from dsmount.workspace import transfer

    reg = registry or Registry()
    sources = transfer.local_tree(src_dir)
    if not sources:
        raise InvalidRequest(f"{src_dir} holds no files: nothing to store as a version")
    with reg.store(name) as store:
        number = _claim_version(store)
        summary = transfer.upload(
            store, sources, f"{VERSIONS_DIR}/{number}", quiet=quiet, desc=f"{name} v{number}"
        )
        manifest = {
            "version": number,
            "files": len(sources),
            "bytes": sum(s.size for s in sources),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        store.put_bytes(f"{VERSIONS_DIR}/{number}.json", json.dumps(manifest, indent=1).encode())
    return number, summary


def _claim_version(store: Store) -> int:
    for _ in range(20):  # another writer may claim the same number first: look again
        files, dirs = store.list_dir(VERSIONS_DIR)
        used = {int(m[1]) for f in files if (m := _VERSION_FILE.fullmatch(f))}
        used |= {int(d) for d in dirs if d.isdigit()}
        number = max(used, default=0) + 1
        claim = json.dumps({"claimed": time.time(), "pid": os.getpid()}).encode()
        if store.put_bytes(f"{VERSIONS_DIR}/{number}.claim", claim, exclusive=True):
            return number
    raise BackendError("could not claim a new version number (too many concurrent writers)")


def attach_spec_for(
    name: str, version: str | None = None, *, registry: Registry | None = None
) -> dict[str, Any]:
    """The attach request fields (`DatastoreSpec` wire form, secret included) of a registered
    datastore, or of one of its versions (then immutable; `version` normalized, "latest"
    resolved to the highest committed version)."""
    reg = registry or Registry()
    info = reg.get(name)
    spec = info.storage_spec(reg.credential(info))
    # A version is immutable; the datastore itself is attached the way it was registered.
    extra: dict[str, Any] = {"read_write": True} if info.read_write else {}
    if version is not None:
        known = versions(name, registry=reg)
        if str(version) == "latest" and known:
            version = str(known[-1])
        number = parse_version(version) if str(version) != "latest" else 0
        if number not in known:
            listed = ", ".join(map(str, known)) or "none yet: dsmount datastore create"
            raise NotFound(f"datastore {name!r} has no version {number} (versions: {listed})")
        spec = spec.below(f"{VERSIONS_DIR}/{number}")
        extra = {"version": str(number), "immutable": True}
    return {**spec.to_dict(secrets=True), **extra}
