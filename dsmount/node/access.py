"""Who may do what through the control socket: pure rules, a peer's identity in, a decision
out. No I/O here (no /proc, no user database, no clock), so every rule is tested on its own
(tests/unit/test_access.py); the operations (`node/ops.py`, `node/attach.py`) apply them.

The rules (a peer is "privileged" if it is root or the daemon's own user, who owns the
process anyway):
- attach: anyone the server let in. What a non-privileged peer attaches is theirs (owner =
  its uid) and private unless it asks for `shared` and `allow_shared` permits; it may not give
  the owner/mode overrides. A local directory must be listable by the user who will own it
  (checked by the attach, race-free) and, to be shared, reachable by every user. Root's and
  the config's datastores are root's and shared, as they always were.
- detach, refresh, warm: the owner or a privileged peer. list, status: a non-privileged peer
  sees only shared datastores and its own; one it may not see is "not attached" to it.
- warm jobs: seen and cancelled by the peer that started them, or a privileged one.
- restore (a daemon restart, no peer): a saved request is taken as it was decided then.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from dsmount.control.peer import Peer
from dsmount.control.protocol import AttachRequest
from dsmount.errors import NotFound, PermissionDenied


@dataclass(frozen=True)
class AccessRules:
    """The rules above for one daemon: whether users may share (`[daemon] allow_shared`), the
    daemon's own uid (privileged like root), and how an owner is named in a refusal (the
    node passes the user database's lookup; the rules themselves look nothing up)."""

    allow_shared: bool = True
    daemon_uid: int = field(default_factory=os.getuid)
    name_of: Callable[[int], str] = str

    def privileged(self, peer: Peer | None) -> bool:
        """Root or the daemon's user; None (a restore, no one asking) counts as privileged."""
        return peer is None or peer.uid in (0, self.daemon_uid)

    def decide_attach(self, request: AttachRequest, peer: Peer | None) -> AttachRequest:
        """The request with its owner and sharing decided by who asks: a non-privileged peer
        owns what it attaches, private unless it asks for --shared and policy allows it, and
        may not override owners or modes. Root (and a saved request) gets what it asks for."""
        if peer is None or self.privileged(peer):
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

    def checks_directory(self, request: AttachRequest, peer: Peer | None) -> bool:
        """Whether the local directory of a (decided) request must be proven listable by its
        owner: a user (not root) will own it, and no privileged peer attaches it for them
        (root attaching for a user is root's call)."""
        if request.storage.kind != "local" or request.effective_owner == 0:
            return False
        return peer is None or not self.privileged(peer)

    @staticmethod
    def check_shareable(request: AttachRequest, path: str, everyone: bool) -> None:
        """A shared local directory must be reachable by every user (`everyone`), else others
        would read through the mount what they cannot read directly."""
        if request.effective_shared and not everyone:
            raise PermissionDenied(
                f"{path} cannot be shared: a directory on its way is not searchable by every "
                "user, so others would read through the mount what they cannot read directly"
            )

    def sees(self, peer: Peer, owner: int, shared: bool) -> bool:
        """Whether `peer` may see (list, status) a datastore of `owner`."""
        return self.privileged(peer) or shared or peer.uid == owner

    def require_owner(self, peer: Peer, owner: int, shared: bool, key: str, what: str) -> None:
        """Only the owner or a privileged peer may `what` (detach, refresh, warm) a datastore;
        one the peer may not even see is "not attached" to it."""
        if self.privileged(peer) or peer.uid == owner:
            return
        if not shared:
            raise NotFound(f"datastore {key!r} is not attached")
        raise PermissionDenied(
            f"datastore {key!r} belongs to {self.name_of(owner)}; only its owner or root may "
            f"{what} it"
        )

    def sees_job(self, peer: Peer | None, started_by: int) -> bool:
        """Whether `peer` may see and cancel a warm job `started_by` started (None: an
        operator's view, the metrics port)."""
        return peer is None or self.privileged(peer) or peer.uid == started_by
