"""The who-may-what rules of the control operations (dsmount/node/access.py), on their own:
a peer's identity in, a decision out, nothing looked up.

Covered: who is privileged (root, the daemon's user; a restore with no peer); what a user's
attach becomes (theirs, private unless shared and allowed; no overrides, no attaching for
someone else); when a local directory must be proven listable and shareable; who sees and
who may change a datastore (a private one of someone else is "not attached"); who sees a
warm job.
"""

from __future__ import annotations

from typing import Any

import pytest

from dsmount.control.peer import Peer
from dsmount.control.protocol import AttachRequest
from dsmount.errors import NotFound, PermissionDenied
from dsmount.node.access import AccessRules

DAEMON = 4000
RULES = AccessRules(daemon_uid=DAEMON, name_of=lambda uid: f"user{uid}")
ROOT = Peer(pid=1, uid=0, gid=0)
SELF = Peer(pid=2, uid=DAEMON, gid=DAEMON)
ALICE = Peer(pid=3, uid=1001, gid=1001)
BOB = Peer(pid=4, uid=1002, gid=1002)


def request(**args: Any) -> AttachRequest:
    return AttachRequest.from_args({"name": "d", "kind": "local", "path": "/srv/d", **args})


def cloud(**args: Any) -> AttachRequest:
    return AttachRequest.from_args({"name": "c", "kind": "blob", "container": "cc",
                                    "account": "acct", **args})


def test_root_and_the_daemons_user_are_privileged_others_are_not() -> None:
    assert RULES.privileged(ROOT) and RULES.privileged(SELF)
    assert not RULES.privileged(ALICE)
    assert RULES.privileged(None)  # a restore: decided when it was first attached


def test_a_users_attach_is_theirs_and_private_unless_shared() -> None:
    mine = RULES.decide_attach(request(), ALICE)
    assert (mine.effective_owner, mine.effective_shared) == (1001, False)
    shared = RULES.decide_attach(request(shared=True), ALICE)
    assert (shared.effective_owner, shared.effective_shared) == (1001, True)
    # The same owner given explicitly is fine; root's own wishes stand as asked.
    assert RULES.decide_attach(request(owner=1001), ALICE).effective_owner == 1001
    as_root = RULES.decide_attach(request(owner=1002, shared=False, uid=7), ROOT)
    assert (as_root.owner, as_root.shared, as_root.uid) == (1002, False, 7)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"uid": 5}, "only root may attach with --uid"),
        ({"file_mode": "0644", "gid": 3}, "only root may attach with --gid, --file-mode"),
        ({"owner": 1002}, "uid 1001 may not attach for uid 1002"),
    ],
)
def test_a_user_may_not_override_or_attach_for_someone_else(args: dict[str, Any],
                                                            message: str) -> None:
    with pytest.raises(PermissionDenied, match=message):
        RULES.decide_attach(request(**args), ALICE)


def test_sharing_can_be_forbidden_to_users_not_to_root() -> None:
    closed = AccessRules(allow_shared=False, daemon_uid=DAEMON)
    with pytest.raises(PermissionDenied, match="allow_shared = false"):
        closed.decide_attach(request(shared=True), ALICE)
    assert closed.decide_attach(request(), ALICE).effective_shared is False
    assert closed.decide_attach(request(shared=True), ROOT).effective_shared is True


def test_which_local_directories_are_checked_for_their_owner() -> None:
    users = RULES.decide_attach(request(), ALICE)
    assert RULES.checks_directory(users, ALICE)
    assert RULES.checks_directory(users, None)  # a restore checks the owner again
    assert not RULES.checks_directory(users, ROOT)  # root attaching for a user: root's call
    assert not RULES.checks_directory(request(), ROOT)  # root's own
    assert not RULES.checks_directory(RULES.decide_attach(cloud(), ALICE), ALICE)


def test_a_shared_directory_must_be_reachable_by_everyone() -> None:
    shared = RULES.decide_attach(request(shared=True), ALICE)
    with pytest.raises(PermissionDenied, match="cannot be shared"):
        AccessRules.check_shareable(shared, "/srv/d", everyone=False)
    AccessRules.check_shareable(shared, "/srv/d", everyone=True)
    private = RULES.decide_attach(request(), ALICE)
    AccessRules.check_shareable(private, "/srv/d", everyone=False)


def test_who_sees_a_datastore() -> None:
    assert RULES.sees(ALICE, owner=1001, shared=False)
    assert RULES.sees(BOB, owner=1001, shared=True)
    assert not RULES.sees(BOB, owner=1001, shared=False)
    assert RULES.sees(ROOT, owner=1001, shared=False) and RULES.sees(SELF, 1001, False)


def test_only_the_owner_or_a_privileged_peer_changes_a_datastore() -> None:
    for peer in (ALICE, ROOT, SELF):
        RULES.require_owner(peer, 1001, False, "d", "detach")
    with pytest.raises(PermissionDenied,
                       match="'d' belongs to user1001; only its owner or root may refresh it"):
        RULES.require_owner(BOB, 1001, True, "d", "refresh")
    # One Bob may not even see is, to him, not attached at all.
    with pytest.raises(NotFound, match="datastore 'd' is not attached"):
        RULES.require_owner(BOB, 1001, False, "d", "warm")


def test_a_warm_job_is_seen_by_who_started_it_and_the_privileged() -> None:
    assert RULES.sees_job(ALICE, started_by=1001)
    assert not RULES.sees_job(BOB, started_by=1001)
    assert RULES.sees_job(ROOT, 1001) and RULES.sees_job(SELF, 1001)
    assert RULES.sees_job(None, 1001)  # the operator's view (metrics)
