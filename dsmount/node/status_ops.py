"""The reporting and warming operations: `list` and `status` (what a peer may see of the
daemon) and `warm`, `warm_status`, `warm_cancel` (node/warm.py runs the jobs; these only
start, report and cancel them, once the access rules say who may).

Invariant: a non-privileged peer sees only the datastores and warm jobs the rules let it see;
`status()` with no peer is the operator's view (the metrics port): everything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from dsmount.control.peer import Peer
from dsmount.control.protocol import get_paths, get_str, get_target
from dsmount.errors import InvalidRequest, NotFound
from dsmount.node.access import AccessRules
from dsmount.node.fs.core import FileSystem
from dsmount.node.fs.datastore import Datastore
from dsmount.node.warm import Warmer, WarmJob, warm_capacity_note


class StatusOps:
    """`list`, `status` and the warm operations over one core (see the module docstring)."""

    def __init__(
        self,
        core: FileSystem,
        rules: AccessRules,
        failed: dict[str, dict[str, Any]],
        *,
        warmer: Warmer | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.core = core
        self.rules = rules
        self.failed = failed  # the attacher's: restored datastores that did not come up
        self.warmer = warmer
        self.status_extra = status_extra or (lambda: {})
        self.started = time.time()

    def visible(self, peer: Peer) -> tuple[list[Datastore], list[dict[str, Any]]]:
        """The datastores, and the failed ones, `peer` may see."""
        sees = self.rules.sees
        shown = [ds for ds in self.core.datastores() if sees(peer, ds.owner, ds.shared)]
        failed = [f for f in self.failed.values()
                  if sees(peer, f.get("owner", 0), f.get("shared", True))]
        return shown, failed

    async def list(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        shown, failed = self.visible(peer)
        return {"datastores": [ds.describe() for ds in shown], "failed": failed}

    async def status_op(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        shown, failed = self.visible(peer)
        return self.status(shown, failed, peer)

    def status(self, shown: list[Datastore] | None = None,
               failed: list[dict[str, Any]] | None = None, peer: Peer | None = None
               ) -> dict[str, Any]:
        """What `dsmount status --json` shows `peer`; with no arguments everything, as the
        metrics endpoint (an operator's port) exports it."""
        if shown is None:
            shown, failed = self.core.datastores(), list(self.failed.values())
        warm = {} if self.warmer is None else {"warm": self.warmer.summary(
            lambda job: self.rules.sees_job(peer, job.started_by))}
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

    # -- warm -----------------------------------------------------------------------------------
    def _warmer(self) -> Warmer:
        if self.warmer is None:
            raise InvalidRequest("this daemon does not warm datastores")
        return self.warmer

    async def warm(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        warmer = self._warmer()
        name, version = get_target(args)
        paths = get_paths(args)
        if any(".." in p.split("/") for p in paths):
            raise InvalidRequest("paths must not contain '..'")
        parallel = args.get("parallel")
        if parallel is not None and (isinstance(parallel, bool) or not isinstance(parallel, int)
                                     or not 1 <= parallel <= 256):
            raise InvalidRequest("argument 'parallel' must be an integer from 1 to 256")
        ds = self.core.find(name, version)
        # Warming reads everything (and reports names and sizes): the owner's or root's call.
        self.rules.require_owner(peer, ds.owner, ds.shared, ds.key, "warm")
        job = warmer.start(ds, paths, parallel, started_by=peer.uid)
        return {**job.as_dict(), "note": warm_capacity_note(job)}

    def _job(self, args: dict[str, Any], peer: Peer) -> WarmJob:
        job = self._warmer().job(get_str(args, "job") or "")
        if not self.rules.sees_job(peer, job.started_by):
            raise NotFound(f"no warm job {job.id!r}")
        return job

    async def warm_status(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return self._job(args, peer).as_dict()

    async def warm_cancel(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return self._warmer().cancel(self._job(args, peer).id).as_dict()
