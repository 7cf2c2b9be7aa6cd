"""What each control operation does to the running daemon: the table the control server
dispatches through (`operations`), and the operations on the namespace itself (ping, attach,
detach, refresh). Attaching is `node/attach.py`; list, status and warm are
`node/status_ops.py`; who may do what is `node/access.py` (pure rules).

The daemon builds one `NodeOps` and hands its `handle` (a `control.dispatch.Dispatcher` over
`operations()`) to the control server, so the node depends on control and never the reverse.
Adding an operation: its name in `control.protocol.OPERATIONS` and one line in `operations`.

Invariant: a handler raises only `DsmountError`s for a refusal; the dispatcher turns those into
typed replies and anything else into "internal", so one request never stops the daemon.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsmount.control.dispatch import Dispatcher, Handler
from dsmount.control.peer import Peer
from dsmount.control.protocol import get_bool, get_str, get_target
from dsmount.errors import InvalidRequest
from dsmount.node.access import AccessRules
from dsmount.node.attach import Attacher, owner_of
from dsmount.node.doctor_probe import probe_all
from dsmount.node.fs.core import FileSystem
from dsmount.node.fs.datastore import Datastore, user_name
from dsmount.node.status_ops import StatusOps
from dsmount.node.warm import Warmer
from dsmount.storage.base import Backend
from dsmount.storage.factory import make_backend
from dsmount.storage.retry import RetryPolicy


class NodeOps:
    """The control operations of one daemon (see the module docstring)."""

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
    ) -> None:
        self.core = core
        self.rules = AccessRules(allow_shared=allow_shared, name_of=user_name)
        self.attacher = Attacher(
            core, self.rules, retry=retry, ttl=ttl, negative_ttl=negative_ttl,
            backend_factory=backend_factory, manifest_dir=manifest_dir,
            writes_enabled=writes_enabled,
        )
        self.reports = StatusOps(core, self.rules, self.attacher.failed, warmer=warmer,
                                 status_extra=status_extra)
        self.on_change = on_change or (lambda: None)
        self.handle = Dispatcher(self.operations())

    def operations(self) -> dict[str, Handler]:
        """Every operation the control socket serves, by name: one line each."""
        return {
            "ping": self.ping,
            "attach": self.attach,
            "detach": self.detach,
            "refresh": self.refresh,
            "list": self.reports.list,
            "status": self.reports.status_op,
            "warm": self.reports.warm,
            "warm_status": self.reports.warm_status,
            "warm_cancel": self.reports.warm_cancel,
            "doctor": self.doctor,
        }

    async def doctor(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Probe every datastore the peer sees (node/doctor_probe.py does the work)."""
        shown, failed = self.reports.visible(peer)
        keys = [ds.key for ds in shown] + [str(f.get("path")) for f in failed]
        return {"datastores": await probe_all({k: self.specs.get(k) for k in keys},
                                              self.attacher.backend_factory)}

    # -- what the daemon reads and restores -------------------------------------------------------
    @property
    def specs(self) -> dict[str, dict[str, Any]]:
        """Full specs (secrets included, memory only) of everything attached or failed."""
        return self.attacher.specs

    @property
    def failed(self) -> dict[str, dict[str, Any]]:
        """Restored datastores that did not come up, by key."""
        return self.attacher.failed

    async def restore(self, specs: list[dict[str, Any]]) -> None:
        await self.attacher.restore(specs)

    def status(self) -> dict[str, Any]:
        """Everything, as the metrics endpoint (an operator's port) exports it."""
        return self.reports.status()

    # -- the operations -------------------------------------------------------------------------
    async def ping(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"pong": True, "pid": os.getpid()}

    async def attach(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        ds = await self.attacher.attach(args, peer)
        self.on_change()
        return ds.describe()

    async def detach(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        name, version = get_target(args)
        force = get_bool(args, "force")
        key = f"{name}/{version}" if version else name
        failed = self.attacher.failed
        if key in failed and not self.attacher.attached(name, version):
            self.rules.require_owner(peer, *owner_of(self.specs.get(key, {})), key, "detach")
            failed.pop(key)
            self.specs.pop(key, None)
            self.on_change()
            return {"detached": key, "lazy": False}
        found: Datastore = self.core.find(name, version)
        self.rules.require_owner(peer, found.owner, found.shared, found.key, "detach")
        ds = await self.core.detach(name, version, force=force)
        self.specs.pop(ds.key, None)
        self.on_change()
        return {"detached": ds.key, "lazy": ds.open_files > 0}

    async def refresh(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        name, version = get_target(args)
        path = get_str(args, "path", required=False) or ""
        if ".." in path.split("/"):
            raise InvalidRequest("path must not contain '..'")
        ds = self.core.find(name, version)
        self.rules.require_owner(peer, ds.owner, ds.shared, ds.key, "refresh")
        dropped = self.core.refresh(name, version, path)
        return {"refreshed": name if version is None else f"{name}/{version}", "dropped": dropped}
