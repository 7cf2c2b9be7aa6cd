"""Attaching a datastore: from an attach request (a peer's, or one saved before a restart) to
a `Datastore` in the namespace.

The order, and why: decide owner and sharing (`access.AccessRules`); check the names; for a
local directory a user will own, prove that user may list it (race-free, and the directory
checked is the one then served: its identity is compared after the backend opens it); refuse
a clash before building a backend (which may dial the network); wrap a version's backend in
its manifest (fetched once into the manifest directory, where a restart finds it); check
read-write is allowed; one cheap call proving the datastore is reachable; attach.

Invariants:
- A backend that was built and not attached is closed, whatever failed.
- `specs` holds the full request (secrets included, memory only) of everything attached or
  failed, by key: what the state store persists. `failed` holds what a restore could not
  bring up; one failure never stops the others.
"""

from __future__ import annotations

import logging
import os
import pwd
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from dsmount.control.peer import Peer, groups_of
from dsmount.control.protocol import AttachRequest
from dsmount.errors import (
    AlreadyExists,
    DsmountError,
    IntegrityError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from dsmount.node.access import AccessRules
from dsmount.node.fs.core import FileSystem
from dsmount.node.fs.datastore import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    Datastore,
    Presentation,
    user_name,
)
from dsmount.storage.base import Backend
from dsmount.storage.factory import local_root, make_backend
from dsmount.storage.local_access import DirAccess, Reader, check_listable
from dsmount.storage.manifest import Manifest
from dsmount.storage.manifest_backend import ManifestBackend, fetch_manifest, manifest_cache_path
from dsmount.storage.retry import RetryPolicy
from dsmount.storage.spec import DatastoreSpec

log = logging.getLogger(__name__)


def reader_of(peer: Peer) -> Reader:
    """The peer as a local user: its uid and all its groups (from /proc, as they are now)."""
    return Reader(peer.uid, frozenset(groups_of(peer)))


def reader_of_owner(uid: int) -> Reader:
    """A datastore owner when no process of theirs is asking (a daemon restart): their groups
    from the user database. An owner that no longer exists may read nothing."""
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        raise PermissionDenied(f"uid {uid} no longer exists") from None
    return Reader(uid, frozenset(os.getgrouplist(user.pw_name, user.pw_gid)))


def presentation(request: AttachRequest, backend: Backend) -> Presentation:
    """Owner and modes shown for a decided request: a private datastore of a kind without
    owners (cloud storage) shows as its owner's alone; the root-only overrides win."""
    owner = request.effective_owner
    private = not request.effective_shared
    has_owners = backend.root_entry is not None  # local: the source's owners and modes
    o = request.overrides
    return Presentation(
        uid=o.get("uid", owner if owner != 0 and not has_owners else None),
        gid=o.get("gid"),
        file_mode=o.get("file_mode", PRIVATE_FILE_MODE if private and not has_owners else None),
        dir_mode=o.get("dir_mode", PRIVATE_DIR_MODE if private and not has_owners else None),
        private_to=owner if private else None,
    )


def owner_of(spec: dict[str, Any]) -> tuple[int, bool]:
    """(owner, shared) of a saved spec, as its attach would decide them."""
    try:
        request = AttachRequest.from_args(spec)
    except DsmountError:
        owner = spec.get("owner")
        owner = owner if isinstance(owner, int) and not isinstance(owner, bool) else 0
        return owner, owner == 0
    return request.effective_owner, request.effective_shared


class Attacher:
    """Attaches requests to one filesystem core (see the module docstring)."""

    def __init__(
        self,
        core: FileSystem,
        rules: AccessRules,
        *,
        retry: RetryPolicy,
        ttl: float,
        negative_ttl: float,
        backend_factory: Callable[..., Backend] = make_backend,
        manifest_dir: Path | None = None,
        writes_enabled: bool = True,
    ) -> None:
        self.core = core
        self.rules = rules
        self.retry = retry
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.backend_factory = backend_factory
        self.manifest_dir = manifest_dir
        self.writes_enabled = writes_enabled
        self.failed: dict[str, dict[str, Any]] = {}
        self.specs: dict[str, dict[str, Any]] = {}

    def attached(self, name: str, version: str | None) -> bool:
        try:
            self.core.find(name, version)
        except NotFound:
            return False
        return True

    def _check_local(self, request: AttachRequest, peer: Peer | None) -> DirAccess | None:
        """For a local datastore a user (not root) will own: prove that user may list its
        directory, and for a shared one that every user may reach it. None: nothing to check."""
        if not self.rules.checks_directory(request, peer):
            return None
        reader = reader_of(peer) if peer is not None else reader_of_owner(request.effective_owner)
        path = local_root(request.storage)
        try:
            access = check_listable(path, reader)
        except PermissionDenied:
            raise PermissionDenied(f"you (uid {reader.uid}) cannot read {path}") from None
        self.rules.check_shareable(request, path, access.everyone)
        return access

    async def attach(self, args: dict[str, Any], peer: Peer | None = None) -> Datastore:
        """Attach what an attach request (or a saved one, `peer` None) describes."""
        request = self.rules.decide_attach(AttachRequest.from_args(args), peer)
        self.core.check_name(request.name)
        if request.version is not None:
            self.core.check_name(request.version, "version")
        access = self._check_local(request, peer)
        # Refuse a clash before building a backend (which may dial the network).
        if self.attached(request.name, request.version):
            what = repr(request.name)
            if request.version is not None:
                what += f" version {request.version}"
            raise AlreadyExists(f"a datastore {what} is already attached")
        backend = self.backend_factory(request.storage, retry=self.retry)
        try:
            if access is not None and (not backend.capabilities.local_directory
                                       or backend.directory_identity() != access.identity):
                # Swapped between the check and the open: what was checked is not served.
                raise PermissionDenied(
                    f"{local_root(request.storage)} changed while being attached; try again")
            if request.manifest is not None:
                backend = await self._with_manifest(backend, request.storage, request.manifest)
            if request.read_write and not self.writes_enabled:
                raise InvalidRequest(
                    "this daemon's mount is read-only: set [writes] enabled = true in its "
                    "config to attach datastores read-write"
                )
            if request.read_write and not backend.writable:
                raise InvalidRequest(f"a {backend.kind} datastore cannot be attached read-write")
            await backend.check()
        except BaseException:
            await backend.aclose()
            raise
        ds = Datastore(
            name=request.name,
            backend=backend,
            version=request.version,
            immutable=request.immutable,
            ttl=self.ttl if request.ttl is None else request.ttl,
            negative_ttl=self.negative_ttl,
            options=request.to_dict(secrets=False),
            owner=request.effective_owner,
            shared=request.effective_shared,
            presentation=presentation(request, backend),
            read_write=request.read_write,
        )
        try:
            self.core.attach(ds)
        except BaseException:
            await backend.aclose()
            raise
        try:
            await self.core.attached(ds)
        except DsmountError as e:  # leftovers stay journaled; the next attach tries again
            log.warning("[%s] cleaning up interrupted writes: %s", ds.key, e)
        self.failed.pop(ds.key, None)
        self.specs[ds.key] = request.to_dict(secrets=True)
        return ds

    async def _with_manifest(self, inner: Backend, spec: DatastoreSpec, name: str) -> Backend:
        """`inner` behind the manifest `name` (fetched once into the manifest directory; a
        restart finds it there)."""
        if self.manifest_dir is None:
            self.manifest_dir = Path(tempfile.mkdtemp(prefix="dsmount-manifests-"))
        path = manifest_cache_path(self.manifest_dir, spec.location, name)
        with trio.fail_after(self.retry.deadline * 4):  # bounded: 4 deadlines for a big one
            await fetch_manifest(inner, name, path)
        try:
            manifest = Manifest(path)
        except IntegrityError:
            path.unlink(missing_ok=True)  # a damaged copy is fetched again next time
            raise
        return ManifestBackend(inner, manifest, name=name)

    async def restore(self, specs: list[dict[str, Any]]) -> None:
        """Re-attach saved datastores; one that fails is reported, the others still come up."""
        for spec in specs:
            name = str(spec.get("name", "?"))
            version = spec.get("version")
            key = f"{name}/{version}" if version is not None else name
            try:
                await self.attach(spec)
            except Exception as e:
                message = str(e) if isinstance(e, DsmountError) else type(e).__name__
                log.error("[%s] could not be re-attached: %s", key, message)
                owner, shared = owner_of(spec)
                self.failed[key] = {
                    "name": name, "version": version, "path": key, "state": "failed",
                    "error": message, "kind": spec.get("kind"), "owner": owner,
                    "owner_name": user_name(owner), "shared": shared,
                }
                self.specs[key] = dict(spec)
