"""What each control operation does to the running daemon, on plain data.

The socket server hands every parsed request here together with the peer's credentials; this
module validates arguments, builds backends, and changes the namespace. It never sees bytes
on a socket, so it is tested directly.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsmount.control.protocol import (
    AttachRequest,
    Request,
    Response,
    get_bool,
    get_paths,
    get_str,
    get_version,
)
from dsmount.errors import AlreadyExists, DsmountError, InvalidRequest, NotFound, PermissionDenied
from dsmount.node.fs.core import FileSystem
from dsmount.node.fs.datastore import Datastore
from dsmount.node.warm import Warmer, warm_capacity_note
from dsmount.storage.base import Backend
from dsmount.storage.factory import is_dir, local_root, make_backend
from dsmount.storage.retry import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_can_read_dir(path: Path, peer: Peer) -> bool:
    """Whether `peer` could list `path` itself: x on every ancestor, r+x on the directory.

    Used so an attach request cannot make the (root) daemon serve a directory its requester
    could not read.
    """
    if peer.uid == 0:
        return True
    groups = _groups_of(peer)
    path = path.resolve()
    chain = [*reversed(path.parents), path]
    for i, p in enumerate(chain):
        try:
            st = os.stat(p)
        except OSError:
            return False
        need = stat.S_IXUSR if i < len(chain) - 1 else stat.S_IRUSR | stat.S_IXUSR
        if st.st_uid == peer.uid:
            ok = st.st_mode & need == need
        elif st.st_gid in groups:
            ok = st.st_mode & (need >> 3) == need >> 3
        else:
            ok = st.st_mode & (need >> 6) == need >> 6
        if not ok:
            return False
    return True


def _groups_of(peer: Peer) -> set[int]:
    groups = {peer.gid}
    try:
        with open(f"/proc/{peer.pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
    except OSError:
        pass
    return groups


class ControlService:
    def __init__(
        self,
        core: FileSystem,
        *,
        retry: RetryPolicy,
        ttl: float = 60.0,
        negative_ttl: float = 5.0,
        backend_factory: Callable[..., Backend] = make_backend,
        on_change: Callable[[], None] | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
        warmer: Warmer | None = None,
    ) -> None:
        self.core = core
        self.retry = retry
        self.ttl = ttl
        self.negative_ttl = negative_ttl
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

    async def attach_spec(self, args: dict[str, Any], peer: Peer | None = None) -> Datastore:
        """Attach what an attach request (or a saved one, `peer` None) describes."""
        request = AttachRequest.from_args(args)
        self.core.check_name(request.name)
        if request.version is not None:
            self.core.check_name(request.version, "version")
        spec = request.storage
        if spec.kind == "local" and peer is not None:
            path = Path(local_root(spec))
            if is_dir(path) and not peer_can_read_dir(path, peer):
                raise PermissionDenied(f"you (uid {peer.uid}) cannot read {path}")
        # Refuse a clash before building a backend (which may dial the network).
        if self._attached(request.name, request.version):
            what = repr(request.name)
            if request.version is not None:
                what += f" version {request.version}"
            raise AlreadyExists(f"a datastore {what} is already attached")
        backend = self.backend_factory(spec, retry=self.retry)
        try:
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
        )
        try:
            self.core.attach(ds)
        except BaseException:
            await backend.aclose()
            raise
        self.failed.pop(ds.key, None)
        self.specs[ds.key] = request.to_dict(secrets=True)
        return ds

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
                self.failed[key] = {
                    "name": name, "version": version, "path": key, "state": "failed",
                    "error": message, "kind": spec.get("kind"),
                }
                self.specs[key] = dict(spec)

    async def op_attach(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        ds = await self.attach_spec(args, peer)
        self.on_change()
        return ds.describe()

    def _target(self, args: dict[str, Any]) -> tuple[str, str | None]:
        return get_str(args, "name") or "", get_version(args)

    async def op_detach(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        name, version = self._target(args)
        if version is None and "/" in name:
            name, version = name.split("/", 1)
        force = get_bool(args, "force")
        key = f"{name}/{version}" if version else name
        if key in self.failed and not self._attached(name, version):
            self.failed.pop(key)
            self.specs.pop(key, None)
            self.on_change()
            return {"detached": key, "lazy": False}
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

    async def op_list(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {
            "datastores": [ds.describe() for ds in self.core.datastores()],
            "failed": list(self.failed.values()),
        }

    async def op_status(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return self.status()

    def status(self) -> dict[str, Any]:
        """What `dsmount status --json` shows (and the metrics endpoint exports)."""
        return {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "cache": self.core.cache.as_dict(),
            "open": self.core.open_counts(),
            "datastores": [ds.status() for ds in self.core.datastores()],
            "failed": list(self.failed.values()),
            **self.status_extra(),
        }

    async def op_refresh(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        name, version = self._target(args)
        if version is None and "/" in name:
            name, version = name.split("/", 1)
        path = get_str(args, "path", required=False) or ""
        if ".." in path.split("/"):
            raise InvalidRequest("path must not contain '..'")
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
        job = warmer.start(self.core.find(name, version), paths, parallel)
        return {**job.as_dict(), "note": warm_capacity_note(job)}

    async def op_warm_status(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return self._warmer().job(get_str(args, "job") or "").as_dict()

    async def op_warm_cancel(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return self._warmer().cancel(get_str(args, "job") or "").as_dict()
