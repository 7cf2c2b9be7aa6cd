"""What each control operation does to the running daemon, on plain data.

The socket server hands every parsed request here together with the peer's credentials; this
module validates arguments, builds backends, and changes the namespace. It never sees bytes
on a socket, so it is tested directly.

Who may do what (a peer is "privileged" if it is root or the daemon's own user):
- attach: anyone the server let in. What a non-privileged peer attaches is theirs (owner =
  its uid) and private unless it asks for `shared` and `allow_shared` permits; it may not give
  the owner/mode overrides; a local directory must be listable by it (checked race-free, the
  directory checked is the one served) and, to be shared, reachable by every user. Root's and
  the config's datastores are root's and shared, as they always were.
- detach, refresh: the owner or a privileged peer. list, status: a non-privileged peer sees
  only shared datastores and its own; one it may not see is "not attached" to it.
- restore (a daemon restart): saved owners are kept, and a user's local directory is checked
  again against that user's current groups.
"""

from __future__ import annotations

import logging
import os
import pwd
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from dsmount.control.protocol import (
    AttachRequest,
    HintRequest,
    Request,
    Response,
    get_bool,
    get_paths,
    get_str,
    get_version,
)
from dsmount.errors import (
    AlreadyExists,
    DsmountError,
    IntegrityError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from dsmount.node.fs.core import FileSystem
from dsmount.node.fs.datastore import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    Datastore,
    Presentation,
    user_name,
)
from dsmount.node.hints import Prefetcher
from dsmount.node.warm import Warmer, WarmJob, warm_capacity_note
from dsmount.storage.base import Backend
from dsmount.storage.factory import local_root, make_backend
from dsmount.storage.local import LocalBackend
from dsmount.storage.local_access import DirAccess, Reader, check_listable
from dsmount.storage.manifest import Manifest
from dsmount.storage.manifest_backend import ManifestBackend, fetch_manifest, manifest_cache_path
from dsmount.storage.retry import RetryPolicy
from dsmount.storage.spec import DatastoreSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    # The supplementary groups the kernel recorded at connect (SO_PEERGROUPS); None: unknown,
    # read from /proc/PID instead.
    groups: frozenset[int] | None = None

    @property
    def privileged(self) -> bool:
        """Root, or the daemon's own user (who owns the process anyway)."""
        return self.uid in (0, os.getuid())


def _groups_of(peer: Peer) -> set[int]:
    """The peer's gid and supplementary groups: as the kernel recorded them at connect, else
    from /proc/PID - but only while that process still runs as the peer's uid (a pid can be
    reused by another user's process once the client exits)."""
    groups = {peer.gid}
    if peer.groups is not None:
        return groups | peer.groups
    extra: set[int] = set()
    uid_ok = False
    try:
        with open(f"/proc/{peer.pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    uid_ok = all(int(u) == peer.uid for u in line.split()[1:3])
                elif line.startswith("Groups:"):
                    extra.update(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return groups | extra if uid_ok else groups


def reader_of(peer: Peer) -> Reader:
    """The peer as a local user: its uid and all its groups (from /proc, as they are now)."""
    return Reader(peer.uid, frozenset(_groups_of(peer)))


def reader_of_owner(uid: int) -> Reader:
    """A datastore owner when no process of theirs is asking (a daemon restart): their groups
    from the user database. An owner that no longer exists may read nothing."""
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        raise PermissionDenied(f"uid {uid} no longer exists") from None
    return Reader(uid, frozenset(os.getgrouplist(user.pw_name, user.pw_gid)))


class ControlService:
    def __init__(
        self,
        core: FileSystem,
        *,
        retry: RetryPolicy,
        ttl: float = 60.0,
        negative_ttl: float = 5.0,
        allow_shared: bool = True,
        backend_factory: Callable[..., Backend] = make_backend,
        on_change: Callable[[], None] | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
        manifest_dir: Path | None = None,
        warmer: Warmer | None = None,
        writes_enabled: bool = True,
        prefetcher: Prefetcher | None = None,
    ) -> None:
        self.prefetcher = prefetcher
        self.writes_enabled = writes_enabled
        self.manifest_dir = manifest_dir
        self.core = core
        self.retry = retry
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.allow_shared = allow_shared
        self.backend_factory = backend_factory
        self.on_change = on_change or (lambda: None)
        self.status_extra = status_extra or (lambda: {})
        self.warmer = warmer
        self.started = time.time()
        self.failed: dict[str, dict[str, Any]] = {}  # restored datastores that did not come up
        # Full specs (secrets included, memory only) of everything attached or failed, by key;
        # what the state store persists.
        self.specs: dict[str, dict[str, Any]] = {}

    async def handle(self, request: Request, peer: Peer) -> Response:
        try:
            method = getattr(self, f"op_{request.op}")
            result = await method(request.args, peer)
        except DsmountError as e:
            return Response.from_error(e, request.id)
        except Exception as e:  # never let one request take the daemon down
            log.exception("control %s failed", request.op)
            return Response.failure("internal", f"internal error: {type(e).__name__}", request.id)
        return Response.success(result, request.id)

    async def op_ping(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"pong": True, "pid": os.getpid()}

    # -- attach -----------------------------------------------------------------------------
    def _decide(self, request: AttachRequest, peer: Peer | None) -> AttachRequest:
        """The request with its owner and sharing decided by who asks: a non-root peer owns
        what it attaches, private unless it asks for --shared and policy allows it, and may
        not override owners or modes. Root (and a saved request) gets what it asks for."""
        if peer is None or peer.privileged:
            return request
        if request.overrides:
            given = ", ".join(f"--{k.replace('_', '-')}" for k in request.overrides)
            raise PermissionDenied(f"only root may attach with {given}")
        if request.owner not in (None, peer.uid):
            raise PermissionDenied(f"uid {peer.uid} may not attach for uid {request.owner}")
        shared = bool(request.shared)
        if shared and not self.allow_shared:
            raise PermissionDenied(
                "this daemon does not let users share datastores ([daemon] allow_shared = "
                "false); attach without --shared"
            )
        return replace(request, owner=peer.uid, shared=shared)

    def _check_local(self, request: AttachRequest, peer: Peer | None) -> DirAccess | None:
        """For a local datastore a user (not root) will own: prove that user may list its
        directory, and for a shared one that every user may reach it (else others would read
        through the mount what they cannot read directly). None: nothing to check."""
        owner = request.effective_owner
        if request.storage.kind != "local" or owner == 0:
            return None
        if peer is not None and peer.privileged:
            return None  # root attaching for a user: root's call
        reader = reader_of(peer) if peer is not None else reader_of_owner(owner)
        path = local_root(request.storage)
        try:
            access = check_listable(path, reader)
        except PermissionDenied:
            raise PermissionDenied(f"you (uid {reader.uid}) cannot read {path}") from None
        if request.effective_shared and not access.everyone:
            raise PermissionDenied(
                f"{path} cannot be shared: a directory on its way is not searchable by every "
                "user, so others would read through the mount what they cannot read directly"
            )
        return access

    @staticmethod
    def _presentation(request: AttachRequest, backend: Backend) -> Presentation:
        owner = request.effective_owner
        private = not request.effective_shared
        has_owners = backend.root_entry is not None  # local: the source's owners and modes
        o = request.overrides
        return Presentation(
            uid=o.get("uid", owner if owner != 0 and not has_owners else None),
            gid=o.get("gid"),
            file_mode=o.get("file_mode", PRIVATE_FILE_MODE if private and not has_owners
                            else None),
            dir_mode=o.get("dir_mode", PRIVATE_DIR_MODE if private and not has_owners else None),
            private_to=owner if private else None,
        )

    async def attach_spec(self, args: dict[str, Any], peer: Peer | None = None) -> Datastore:
        """Attach what an attach request (or a saved one, `peer` None) describes."""
        request = self._decide(AttachRequest.from_args(args), peer)
        self.core.check_name(request.name)
        if request.version is not None:
            self.core.check_name(request.version, "version")
        access = self._check_local(request, peer)
        # Refuse a clash before building a backend (which may dial the network).
        if self._attached(request.name, request.version):
            what = repr(request.name)
            if request.version is not None:
                what += f" version {request.version}"
            raise AlreadyExists(f"a datastore {what} is already attached")
        backend = self.backend_factory(request.storage, retry=self.retry)
        try:
            if access is not None and (not isinstance(backend, LocalBackend)
                                       or backend.local.identity != access.identity):
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
            presentation=self._presentation(request, backend),
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
                await self.attach_spec(spec)
            except Exception as e:
                message = str(e) if isinstance(e, DsmountError) else type(e).__name__
                log.error("[%s] could not be re-attached: %s", key, message)
                owner, shared = _owner_of(spec)
                self.failed[key] = {
                    "name": name, "version": version, "path": key, "state": "failed",
                    "error": message, "kind": spec.get("kind"), "owner": owner,
                    "owner_name": user_name(owner), "shared": shared,
                }
                self.specs[key] = dict(spec)

    async def op_attach(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        ds = await self.attach_spec(args, peer)
        self.on_change()
        return ds.describe()

    # -- who may see and change what --------------------------------------------------------
    def _target(self, args: dict[str, Any]) -> tuple[str, str | None]:
        name, version = get_str(args, "name") or "", get_version(args)
        if version is None and "/" in name:
            name, version = name.split("/", 1)
        return name, version

    @staticmethod
    def _may(peer: Peer, owner: int, shared: bool, key: str, what: str) -> None:
        """Only the owner or root may `what` (detach, refresh) a datastore; one the peer may
        not even see is "not attached" to it."""
        if peer.privileged or peer.uid == owner:
            return
        if not shared:
            raise NotFound(f"datastore {key!r} is not attached")
        raise PermissionDenied(
            f"datastore {key!r} belongs to {user_name(owner)}; only its owner or root may "
            f"{what} it"
        )

    @staticmethod
    def _sees(peer: Peer, owner: int, shared: bool) -> bool:
        return peer.privileged or shared or peer.uid == owner

    async def op_detach(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        name, version = self._target(args)
        force = get_bool(args, "force")
        key = f"{name}/{version}" if version else name
        if key in self.failed and not self._attached(name, version):
            self._may(peer, *_owner_of(self.specs.get(key, {})), key, "detach")
            self.failed.pop(key)
            self.specs.pop(key, None)
            self.on_change()
            return {"detached": key, "lazy": False}
        found = self.core.find(name, version)
        self._may(peer, found.owner, found.shared, found.key, "detach")
        ds = await self.core.detach(name, version, force=force)
        self.specs.pop(ds.key, None)
        self.on_change()
        return {"detached": ds.key, "lazy": ds.open_files > 0}

    def _attached(self, name: str, version: str | None) -> bool:
        try:
            self.core.find(name, version)
        except NotFound:
            return False
        return True

    def _visible(self, peer: Peer) -> tuple[list[Datastore], list[dict[str, Any]]]:
        shown = [ds for ds in self.core.datastores() if self._sees(peer, ds.owner, ds.shared)]
        failed = [f for f in self.failed.values()
                  if self._sees(peer, f.get("owner", 0), f.get("shared", True))]
        return shown, failed

    async def op_list(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        shown, failed = self._visible(peer)
        return {"datastores": [ds.describe() for ds in shown], "failed": failed}

    async def op_status(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        shown, failed = self._visible(peer)
        return self.status(shown, failed, peer)

    def status(self, shown: list[Datastore] | None = None,
               failed: list[dict[str, Any]] | None = None, peer: Peer | None = None
               ) -> dict[str, Any]:
        """What `dsmount status --json` shows `peer`; with no arguments everything, as the
        metrics endpoint (an operator's port) exports it."""
        if shown is None:
            shown, failed = self.core.datastores(), list(self.failed.values())
        warm = {} if self.warmer is None else {"warm": self.warmer.summary(
            lambda job: peer is None or self._job_visible(peer, job))}
        return {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "cache": self.core.cache.as_dict(),
            "open": self.core.open_counts(),
            "datastores": [ds.status() for ds in shown],
            "failed": failed,
            **self.status_extra(),
            **warm,
        }

    async def op_refresh(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        name, version = self._target(args)
        path = get_str(args, "path", required=False) or ""
        if ".." in path.split("/"):
            raise InvalidRequest("path must not contain '..'")
        ds = self.core.find(name, version)
        self._may(peer, ds.owner, ds.shared, ds.key, "refresh")
        dropped = self.core.refresh(name, version, path)
        return {"refreshed": name if version is None else f"{name}/{version}", "dropped": dropped}

    # -- warm (node/warm.py runs the jobs; these only start, report and cancel them) ----------
    def _warmer(self) -> Warmer:
        if self.warmer is None:
            raise InvalidRequest("this daemon does not warm datastores")
        return self.warmer

    async def op_warm(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        warmer = self._warmer()
        name, version = self._target(args)
        if version is None and "/" in name:
            name, version = name.split("/", 1)
        paths = get_paths(args)
        if any(".." in p.split("/") for p in paths):
            raise InvalidRequest("paths must not contain '..'")
        parallel = args.get("parallel")
        if parallel is not None and (isinstance(parallel, bool) or not isinstance(parallel, int)
                                     or not 1 <= parallel <= 256):
            raise InvalidRequest("argument 'parallel' must be an integer from 1 to 256")
        ds = self.core.find(name, version)
        # Warming reads everything (and reports names and sizes): the owner's or root's call.
        self._may(peer, ds.owner, ds.shared, ds.key, "warm")
        job = warmer.start(ds, paths, parallel, started_by=peer.uid)
        return {**job.as_dict(), "note": warm_capacity_note(job)}

    def _job(self, args: dict[str, Any], peer: Peer) -> WarmJob:
        job = self._warmer().job(get_str(args, "job") or "")
        if not self._job_visible(peer, job):
            raise NotFound(f"no warm job {job.id!r}")
        return job

    @staticmethod
    def _job_visible(peer: Peer, job: WarmJob) -> bool:
        return peer.privileged or peer.uid == job.started_by

    async def op_warm_status(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return self._job(args, peer).as_dict()

    async def op_warm_cancel(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return self._warmer().cancel(self._job(args, peer).id).as_dict()

    # -- hints (node/hints.py does the work) --------------------------------------------------
    async def op_hint(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        if self.prefetcher is None:
            raise InvalidRequest("this daemon does not take hints")
        r = HintRequest.from_args(args)
        watch = r.pid if r.pid is not None else (peer.pid if r.caller is None else None)
        return self.prefetcher.hint(r.paths, uid=peer.uid, reader=reader_of(peer),
                                    caller=r.caller or f"pid {peer.pid}", watch_pid=watch,
                                    append=r.append, idle_timeout=r.idle_timeout)


def _owner_of(spec: dict[str, Any]) -> tuple[int, bool]:
    """(owner, shared) of a saved spec, as its attach would decide them."""
    try:
        request = AttachRequest.from_args(spec)
    except DsmountError:
        owner = spec.get("owner")
        owner = owner if isinstance(owner, int) and not isinstance(owner, bool) else 0
        return owner, owner == 0
    return request.effective_owner, request.effective_shared
