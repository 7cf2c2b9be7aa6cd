"""The versions the dsmount columns read: the small and tiny files as a PACKED version (rows 4
and 8), made the way users make one, and a synthesised 1,000,000-file version (row 11) made
without uploading a million blobs: a manifest over 4 pack objects that exist, committed as
versions.py commits.

Invariants:
- Versions are made through a registry whose endpoints are direct (uploads never go through
  the proxy); the daemons look them up in `ctx.registry_dir`, whose endpoints are the
  clients'. A failure leaves the run going: the rows that need the version say why.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from scripts.bench.harness.batch import timed
from scripts.bench.harness.cleanup import check, log, short_error
from scripts.bench.harness.servers import Store
from scripts.bench.table.client import Context
from scripts.bench.table.dataset import (
    BASE_SIZE,
    MIL_CONTAINER,
    MIL_DATASTORE,
    MIL_FILES,
    MIL_PACKS,
    MIL_SIZE,
    VER_CONTAINER,
    VER_DATASTORE,
    Dataset,
    MiB,
    million_name,
)


def register_blob(registry_dir: Path, name: str, store: Store, container: str) -> None:
    """Register blob datastore `name` (container `container` of `store`'s Azurite, at
    `store.endpoint`) in the registry at `registry_dir`, creating the container."""
    from dsmount.workspace import registry as reg
    from dsmount.workspace.entries import CredentialRef, DatastoreInfo
    from dsmount.workspace.registry import Registry

    parts = dict(kv.split("=", 1) for kv in store.conn_str.split(";") if "=" in kv)
    info = DatastoreInfo(name, "blob", account=parts["AccountName"], container=container,
                         endpoint=store.endpoint, auth=CredentialRef("account_key", "stored"))
    reg.register(info, parts["AccountKey"], registry=Registry(registry_dir), overwrite=True,
                 create_if_not_exists=True)  # fmt: skip


def make_packed_version(upload_registry: Path, ds: Dataset, workdir: Path) -> int:
    """The small and tiny files as a packed version of `benchver`, made the way users make
    one (`create_version`, what `dsmount datastore create` runs); returns its number."""
    from dsmount.workspace.registry import Registry
    from dsmount.workspace.versions import create_version

    src = workdir / "version-src"
    made: set[Path] = set()

    def write(rel: str, data: bytes) -> None:
        path = src / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)

    try:
        for i in range(ds.scale.n_small):
            write(ds.small_name(i), ds.small_content(i))
        for i in range(ds.scale.n_tiny):
            write(ds.tiny_name(i), ds.tiny_content(i))
        number, _ = create_version(VER_DATASTORE, src, registry=Registry(upload_registry))
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return number


def make_million_version(upload_registry: Path, ds: Dataset, workdir: Path, dirs: int) -> int:
    """A 1,000,000-file version of `benchmil` without a million objects: MIL_PACKS pack objects
    (uploaded) and a manifest of `dirs` (MIL_DIRS) x MIL_FILES files pointing into them (dir d
    uses pack d % MIL_PACKS, file j its j-th MIL_SIZE bytes), pinned to the packs' ETags and
    committed as versions.py commits (`_versions/N.claim`, `N.manifest`, then `N.json`).
    Returns N."""
    import hashlib

    from dsmount.storage.manifest import FileRecord, write_manifest
    from dsmount.workspace.registry import Registry
    from dsmount.workspace.versions import PACKS_DIR, VERSIONS_DIR

    check(MIL_PACKS * MIL_FILES * MIL_SIZE <= BASE_SIZE, "packs larger than the base buffer")
    number = 1
    root = f"{VERSIONS_DIR}/{number}"
    names = [f"{root}/{PACKS_DIR}/pack-{p + 1:06d}" for p in range(MIL_PACKS)]
    md5s = [
        [hashlib.md5(ds.million_content(p, j), usedforsecurity=False).digest()
         for j in range(MIL_FILES)]
        for p in range(MIL_PACKS)
    ]  # fmt: skip
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    mtime_ns = time.time_ns()
    manifest_path = workdir / "million.manifest"
    with Registry(upload_registry).store(MIL_DATASTORE) as store:
        claim = json.dumps({"claimed": time.time(), "pid": os.getpid()}).encode()
        check(store.put_bytes(f"{VERSIONS_DIR}/{number}.claim", claim, exclusive=True),
              f"{MIL_CONTAINER} already has a version {number}")  # fmt: skip
        for p, name in enumerate(names):
            store.put_bytes(name, ds.million_pack(p))
        listed = {f.path: f for f in store.walk(root)}
        check(all(n in listed for n in names), "an uploaded pack is not listed")
        packs = [(n, listed[n].size, listed[n].etag) for n in names]
        records = (
            FileRecord(million_name(d, j), MIL_SIZE, mtime_ns, md5s[d % MIL_PACKS][j],
                       pack=names[d % MIL_PACKS], offset=j * MIL_SIZE)
            for d in range(dirs) for j in range(MIL_FILES)
        )  # fmt: skip
        try:
            counts = write_manifest(manifest_path, records, root=root, kind="version",
                                    packs=packs, created=now, dir_mtime_ns=mtime_ns)  # fmt: skip
            manifest = f"{VERSIONS_DIR}/{number}.manifest"
            md5 = hashlib.md5(manifest_path.read_bytes(), usedforsecurity=False).digest()
            store.upload(manifest_path, manifest, size=manifest_path.stat().st_size, md5=md5,
                         overwrite=True, progress=lambda n: None)  # fmt: skip
            log(f"1M-file manifest: {manifest_path.stat().st_size / MiB:.0f} MiB")
        finally:
            manifest_path.unlink(missing_ok=True)
        record = {"version": number, **counts, "packs": MIL_PACKS, "created": now,
                  "manifest": manifest}  # fmt: skip
        store.put_bytes(f"{VERSIONS_DIR}/{number}.json", json.dumps(record, indent=1).encode())
    return number



def prepare_versions(ctx: Context, direct: Store, million: bool, notes: list[str]) -> None:
    """Make the packed version (rows 4 and 8) and, with `million`, the 1M-file version (row
    11). They are made through a registry whose endpoints are direct (uploads never go through
    the proxy); the daemons look them up in `ctx.registry_dir`, whose endpoints are the
    clients' (the proxy's with --latency; row 11's always). A failure leaves the run going:
    the rows that need the version say why."""
    upload_registry = ctx.workdir / "registry-upload"
    ctx.registry_dir = ctx.workdir / "registry"
    assert ctx.data is not None
    try:
        register_blob(upload_registry, VER_DATASTORE, direct, VER_CONTAINER)
        register_blob(ctx.registry_dir, VER_DATASTORE, ctx.data, VER_CONTAINER)
        secs, number = timed(lambda: make_packed_version(upload_registry, ctx.ds, ctx.workdir))
        ctx.packed_version, ctx.packed_error = number, None
        log(f"packed version {VER_DATASTORE}/{number} made in {secs:.1f}s")
        notes.append(f"packed version (create_version of the small and tiny files): {secs:.1f} s")
    except Exception as exc:
        ctx.packed_error = short_error(exc)
        log(f"packed version not made: {ctx.packed_error}")
    if not million:
        return
    try:
        check(ctx.proxy is not None, "no fault proxy to count LIST calls at")
        assert ctx.proxy is not None
        register_blob(upload_registry, MIL_DATASTORE, direct, MIL_CONTAINER)
        register_blob(ctx.registry_dir, MIL_DATASTORE, ctx.proxy.store(direct), MIL_CONTAINER)
        secs, number = timed(
            lambda: make_million_version(upload_registry, ctx.ds, ctx.workdir, ctx.million_dirs)
        )
        ctx.million_version = number
        log(f"1M-file version {MIL_DATASTORE}/{number} synthesised in {secs:.1f}s")
        notes.append(f"1M-file version synthesised (manifest written and uploaded): {secs:.1f} s")
    except Exception as exc:
        ctx.million_error = short_error(exc)
        log(f"1M-file version not made: {ctx.million_error}")

