"""The control operations (dsmount/node/ops.py, attach.py, status_ops.py) on plain Request
objects through the dispatcher the server uses, no socket.

Covered: attach of a local directory (and what may be shown of it: never a secret), the error
codes of every refusal, list/status shapes, refresh, the peer-permission check on local
paths, restore() bringing up what it can, and handle() answering even when a backend factory
blows up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from dsmount.control.peer import Peer, groups_of
from dsmount.control.protocol import OPERATIONS, Request, Response
from dsmount.errors import NotFound
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.fs.core import FileSystem, FsSettings
from dsmount.node.ops import NodeOps
from dsmount.storage.base import Backend
from dsmount.storage.factory import make_backend
from dsmount.storage.local import LocalBackend
from dsmount.storage.retry import RetryPolicy
from tests.support.memory_backend import MemoryBackend

# A well-formed (base64, 64 bytes) account key that is no real account's.
ACCOUNT_KEY = "VE9QU0VDUkVULWFjY291bnQta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3ODlhYmNkZWY="
ROOT = Peer(pid=os.getpid(), uid=0, gid=0)
# pid 0 has no /proc entry, so the peer's groups are exactly its gid.
NOBODY = Peer(pid=0, uid=65534, gid=65534)
OTHER = Peer(pid=0, uid=65533, gid=65534)


class Harness:
    def __init__(self, core: FileSystem, factory: Any = make_backend, **options: Any) -> None:
        self.changes = 0
        self.built: list[Backend] = []

        def counting_factory(spec: dict[str, Any], *, retry: RetryPolicy) -> Backend:
            backend = factory(spec, retry=retry)
            self.built.append(backend)
            return backend

        self.service = NodeOps(
            core,
            retry=RetryPolicy(base_delay=0.001, max_delay=0.01, deadline=5.0),
            backend_factory=counting_factory,
            on_change=self.count_change,
            **options,
        )

    def count_change(self) -> None:
        self.changes += 1

    async def call(self, op: str, peer: Peer = ROOT, **args: Any) -> Response:
        response = await self.service.handle(Request(op=op, args=args, id=op), peer)
        assert response.id == op
        if not response.ok:
            assert response.result is None and response.message
        return response


@pytest.fixture
async def core() -> AsyncIterator[FileSystem]:
    cache = BlockCache(16 * 1024**2)
    core = FileSystem(cache, FsSettings(block_size=64 * 1024))
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        yield core
        nursery.cancel_scope.cancel()


@pytest.fixture
def service(core: FileSystem) -> Harness:
    return Harness(core)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hello.txt").write_text("hello\n")
    return tmp_path / "data"


@pytest.fixture
def shared_tree() -> Iterator[Path]:
    """A tree under /tmp that others may traverse (pytest's tmp_path is 0700 to root)."""
    top = Path(tempfile.mkdtemp(prefix="dsmount-perm-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)
        for name, mode in (("public", 0o755), ("private", 0o700)):
            (top / name).mkdir()
            (top / name / "f").write_text(name)
            os.chmod(top / name, mode)
        yield top
    finally:
        shutil.rmtree(top)


def local(name: str, path: Path, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "local", "path": str(path), **extra}


async def test_attach_local(service: Harness, data_dir: Path) -> None:
    response = await service.call("attach", **local("data", data_dir))
    assert response.ok, response.message
    described = response.result
    assert described["name"] == "data" and described["path"] == "data"
    assert described["kind"] == "local" and described["version"] is None
    assert described["backend"] == {"kind": "local", "path": str(data_dir)}
    assert service.changes == 1


async def test_attach_keeps_the_secret_out_of_sight(core: FileSystem, data_dir: Path) -> None:
    # A blob spec with an account key, served by a local backend (no network needed).
    harness = Harness(core, lambda spec, *, retry: LocalBackend(data_dir))
    auth = {"kind": "account_key", "secret": ACCOUNT_KEY}
    response = await harness.call(
        "attach", name="data", kind="blob", container="c", account="acct", auth=auth
    )
    assert response.ok, response.message
    # Nothing a client can see carries the secret...
    for shown in (response, await harness.call("list"), await harness.call("status")):
        assert ACCOUNT_KEY not in shown.encode().decode()
    # ...but the daemon keeps the full spec (memory only) for its state store.
    assert harness.service.specs["data"]["auth"]["secret"] == ACCOUNT_KEY
    ds = harness.service.core.find("data")
    assert ds.options["auth"] == {"kind": "account_key"}


async def test_a_local_datastore_takes_no_credential(service: Harness, data_dir: Path) -> None:
    auth = {"kind": "account_key", "secret": ACCOUNT_KEY}
    response = await service.call("attach", **local("data", data_dir, auth=auth))
    assert (response.ok, response.code) == (False, "invalid_request")
    assert ACCOUNT_KEY not in response.encode().decode()
    assert service.service.core.datastores() == []


async def test_attach_version_is_immutable_by_default(service: Harness, data_dir: Path) -> None:
    response = await service.call("attach", **local("data", data_dir, version=3))
    assert response.ok and response.result["path"] == "data/3"
    assert response.result["immutable"] is True
    response = await service.call(
        "attach", **local("other", data_dir, immutable=False, version="v1")
    )
    assert response.result["immutable"] is False


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"name": "x", "kind": "local", "path": "/definitely/not/here"}, "not_found"),
        ({"name": "x", "kind": "local", "path": "relative/dir"}, "invalid_request"),
        ({"name": "x", "kind": "local"}, "invalid_request"),
        ({"name": "x", "kind": "ftp", "path": "/tmp"}, "invalid_request"),
        ({"name": "x", "path": "/tmp"}, "invalid_request"),
        ({"name": "a/b", "kind": "local", "path": "/tmp"}, "invalid_request"),
        ({"kind": "local", "path": "/tmp"}, "invalid_request"),
        ({"name": 5, "kind": "local", "path": "/tmp"}, "invalid_request"),
        ({"name": "x", "kind": "local", "path": "/tmp", "version": ".."}, "invalid_request"),
        ({"name": "x", "kind": "local", "path": "/tmp", "immutable": "yes"}, "invalid_request"),
        ({"name": "x", "kind": "local", "path": "/tmp", "version": True}, "invalid_request"),
        ({"name": "x", "kind": "local", "path": "/tmp", "version": [1]}, "invalid_request"),
    ],
)
async def test_attach_refusals(service: Harness, spec: dict[str, Any], code: str) -> None:
    response = await service.call("attach", **spec)
    assert (response.ok, response.code) == (False, code)
    assert service.service.core.datastores() == [] and service.changes == 0


async def test_attach_duplicate(service: Harness, data_dir: Path) -> None:
    assert (await service.call("attach", **local("data", data_dir))).ok
    response = await service.call("attach", **local("data", data_dir))
    assert (response.ok, response.code) == (False, "already_exists")
    assert len(service.built) == 1  # refused before building (and dialling) a backend


async def test_detach(service: Harness, data_dir: Path) -> None:
    response = await service.call("detach", name="nothing")
    assert (response.ok, response.code) == (False, "not_found")
    assert (await service.call("attach", **local("data", data_dir))).ok
    assert (await service.call("attach", **local("imgs", data_dir, version="v1"))).ok
    response = await service.call("detach", name="imgs/v1")  # NAME/VERSION form
    assert response.ok and response.result == {"detached": "imgs/v1", "lazy": False}
    response = await service.call("detach", name="data", force=True)
    assert response.ok and response.result == {"detached": "data", "lazy": False}
    assert service.service.specs == {}
    assert (await service.call("list")).result == {"datastores": [], "failed": []}
    assert service.changes == 4


async def test_detach_busy(service: Harness, data_dir: Path) -> None:
    await service.call("attach", **local("data", data_dir))
    service.service.core.find("data").open_files = 1  # as if a file were open
    response = await service.call("detach", name="data")
    assert (response.ok, response.code) == (False, "busy")
    response = await service.call("detach", name="data", force=True)
    assert response.ok and response.result["lazy"] is True


async def test_list_and_status_shapes(service: Harness, data_dir: Path) -> None:
    await service.call("attach", **local("b", data_dir))
    await service.call("attach", **local("a", data_dir))
    listed = (await service.call("list")).result
    assert [d["name"] for d in listed["datastores"]] == ["a", "b"]
    assert listed["failed"] == []
    for d in listed["datastores"]:
        assert {"name", "version", "path", "kind", "immutable", "open_files", "backend"} <= set(d)
    status = (await service.call("status")).result
    assert {"pid", "uptime", "cache", "open", "datastores", "failed"} <= set(status)
    assert status["pid"] == os.getpid() and status["uptime"] >= 0
    assert status["cache"]["budget_bytes"] == 16 * 1024**2
    assert set(status["open"]) == {"files", "writers", "dirs", "inodes"}
    for d in status["datastores"]:
        assert d["state"] == "ok"
        assert {"bytes_read", "cache_hits", "cache_hit_ratio", "backend_requests"} <= set(d)
    json.dumps(status)  # all of it goes on the wire
    assert (await service.call("ping")).result["pong"] is True


async def test_refresh(service: Harness, data_dir: Path) -> None:
    await service.call("attach", **local("data", data_dir))
    response = await service.call("refresh", name="data")
    assert response.ok and response.result["refreshed"] == "data"
    assert isinstance(response.result["dropped"], int)
    response = await service.call("refresh", name="data", path="sub/file")
    assert response.ok
    response = await service.call("refresh", name="data", path="../etc")
    assert (response.ok, response.code) == (False, "invalid_request")
    response = await service.call("refresh", name="absent")
    assert (response.ok, response.code) == (False, "not_found")


async def test_peer_must_be_able_to_read_a_local_path(service: Harness, shared_tree: Path) -> None:
    response = await service.call("attach", NOBODY, **local("priv", shared_tree / "private"))
    assert (response.ok, response.code) == (False, "permission_denied")
    assert "65534" in (response.message or "")
    assert service.built == []
    # The control case: the same peer may attach what it can read.
    response = await service.call("attach", NOBODY, **local("pub", shared_tree / "public"))
    assert response.ok, response.message
    # Root may attach anything.
    assert (await service.call("attach", ROOT, **local("priv", shared_tree / "private"))).ok


async def test_restore_brings_up_what_it_can(service: Harness, data_dir: Path) -> None:
    good = local("good", data_dir)
    bad = local("bad", data_dir / "vanished", version="v2")
    await service.service.restore([good, bad])
    listed = (await service.call("list")).result
    assert [d["name"] for d in listed["datastores"]] == ["good"]
    [failed] = listed["failed"]
    assert failed["path"] == "bad/v2" and failed["state"] == "failed"
    assert "vanished" in failed["error"] and failed["kind"] == "local"
    assert set(service.service.specs) == {"good", "bad/v2"}  # still persisted, for next time
    # A failed one can be detached (forgotten) like an attached one.
    response = await service.call("detach", name="bad", version="v2")
    assert response.ok and response.result == {"detached": "bad/v2", "lazy": False}
    assert (await service.call("list")).result["failed"] == []
    assert set(service.service.specs) == {"good"}


async def test_restore_then_successful_attach_clears_the_failure(
    service: Harness, data_dir: Path, tmp_path: Path
) -> None:
    later = tmp_path / "later"
    await service.service.restore([local("later", later)])
    assert [f["path"] for f in (await service.call("list")).result["failed"]] == ["later"]
    later.mkdir()
    assert (await service.call("attach", **local("later", later))).ok
    assert (await service.call("list")).result["failed"] == []


async def test_handle_never_raises(core: FileSystem, data_dir: Path) -> None:
    def exploding(spec: dict[str, Any], *, retry: RetryPolicy) -> Backend:
        raise RuntimeError("factory exploded")

    harness = Harness(core, exploding)
    response = await harness.call("attach", **local("x", data_dir))
    assert (response.ok, response.code) == (False, "internal")
    assert "RuntimeError" in (response.message or "")
    await harness.service.restore([local("y", data_dir)])
    assert harness.service.failed["y"]["error"] == "RuntimeError"
    assert (await harness.call("list")).ok


async def test_failed_check_closes_the_backend(core: FileSystem) -> None:
    class Unreachable(MemoryBackend):
        closed = 0

        async def check(self) -> None:
            raise NotFound("container does not exist")

        async def aclose(self) -> None:
            Unreachable.closed += 1

    harness = Harness(core, lambda spec, *, retry: Unreachable())
    response = await harness.call("attach", name="x", kind="blob", container="c", account="a")
    assert (response.ok, response.code) == (False, "not_found")
    assert Unreachable.closed == 1
    assert core.datastores() == []


async def test_bad_numbers_are_refused_before_building_a_backend(service: Harness) -> None:
    for bad in ("soon", -1, True, [5]):
        response = await service.call("attach", name="x", kind="local", path="/tmp", ttl=bad)
        assert (response.ok, response.code) == (False, "invalid_request")
        assert "ttl" in (response.message or "")
    assert service.built == []


# -- whose datastores (issue 12) --------------------------------------------------------------
async def test_what_a_user_attaches_is_theirs_and_private(service: Harness,
                                                          shared_tree: Path) -> None:
    response = await service.call("attach", NOBODY, **local("mine", shared_tree / "public"))
    assert response.ok, response.message
    assert (response.result["owner"], response.result["owner_name"]) == (65534, "nobody")
    assert response.result["shared"] is False
    ds = service.service.core.find("mine")
    assert (ds.owner, ds.shared, ds.presentation.private_to) == (65534, False, 65534)
    assert ds.presentation.uid is None and ds.presentation.file_mode is None  # source's modes
    saved = service.service.specs["mine"]
    assert (saved["owner"], saved["shared"]) == (65534, False)  # survives a restart
    # Others do not see it, and may not detach or refresh it.
    for op in ("list", "status"):
        assert (await service.call(op, OTHER)).result["datastores"] == []
        assert [d["name"] for d in (await service.call(op, ROOT)).result["datastores"]] == [
            "mine"]
        assert [d["name"] for d in (await service.call(op, NOBODY)).result["datastores"]] == [
            "mine"]
    for op in ("detach", "refresh"):
        response = await service.call(op, OTHER, name="mine")
        assert (response.ok, response.code) == (False, "not_found")
    assert (await service.call("refresh", NOBODY, name="mine")).ok
    assert (await service.call("detach", NOBODY, name="mine")).ok


async def test_shared_datastores_of_users(service: Harness, shared_tree: Path) -> None:
    response = await service.call("attach", NOBODY,
                                  **local("ours", shared_tree / "public", shared=True))
    assert response.ok, response.message
    ds = service.service.core.find("ours")
    assert (ds.owner, ds.shared, ds.presentation.private_to) == (65534, True, None)
    assert [d["name"] for d in (await service.call("list", OTHER)).result["datastores"]] == [
        "ours"]
    response = await service.call("detach", OTHER, name="ours")
    assert (response.ok, response.code) == (False, "permission_denied")
    assert "belongs to nobody" in (response.message or "")
    assert (await service.call("detach", ROOT, name="ours")).ok
    # Root's own datastores are root's: a user may not detach them either.
    assert (await service.call("attach", ROOT, **local("roots", shared_tree / "public"))).ok
    response = await service.call("detach", NOBODY, name="roots")
    assert (response.ok, response.code) == (False, "permission_denied")


async def test_sharing_can_be_turned_off(core: FileSystem, shared_tree: Path) -> None:
    harness = Harness(core, allow_shared=False)
    response = await harness.call("attach", NOBODY,
                                  **local("ours", shared_tree / "public", shared=True))
    assert (response.ok, response.code) == (False, "permission_denied")
    assert "allow_shared" in (response.message or "") and harness.built == []
    assert (await harness.call("attach", NOBODY, **local("mine", shared_tree / "public"))).ok
    assert (await harness.call("attach", ROOT, **local("roots", shared_tree / "public"))).ok


async def test_only_root_overrides_owners_and_modes(service: Harness, shared_tree: Path) -> None:
    for extra in ({"uid": 0}, {"gid": 0}, {"file_mode": "0644"}, {"dir_mode": 0o755},
                  {"owner": 0}, {"owner": 1000}):
        response = await service.call("attach", NOBODY,
                                      **local("x", shared_tree / "public", **extra))
        assert (response.ok, response.code) == (False, "permission_denied"), extra
    assert service.built == []
    response = await service.call("attach", ROOT, **local(
        "over", shared_tree / "private", uid=4321, gid=8765, file_mode="0640", dir_mode=0o750))
    assert response.ok, response.message
    p = service.service.core.find("over").presentation
    assert (p.uid, p.gid, p.file_mode, p.dir_mode, p.private_to) == (4321, 8765, 0o640, 0o750,
                                                                      None)
    saved = service.service.specs["over"]
    assert (saved["file_mode"], saved["dir_mode"], saved["uid"]) == ("0640", "0750", 4321)
    for bad in ({"uid": -1}, {"gid": "root"}, {"file_mode": "0999"}, {"dir_mode": 0o1777},
                {"shared": "yes"}, {"owner": True}):
        response = await service.call("attach", ROOT, **local("y", shared_tree, **bad))
        assert (response.ok, response.code) == (False, "invalid_request"), bad


async def test_a_users_cloud_datastore_shows_as_theirs(core: FileSystem) -> None:
    harness = Harness(core, lambda spec, *, retry: MemoryBackend({"f": b"x"}))
    response = await harness.call("attach", NOBODY, name="c", kind="blob", container="c",
                                  account="a")
    assert response.ok, response.message
    p = core.find("c").presentation
    assert (p.uid, p.file_mode, p.dir_mode, p.private_to) == (65534, 0o400, 0o500, 65534)
    response = await harness.call("attach", NOBODY, name="s", kind="blob", container="c",
                                  account="a", shared=True)
    p = core.find("s").presentation
    assert (p.uid, p.file_mode, p.dir_mode, p.private_to) == (65534, None, None, None)


async def test_a_local_directory_must_be_reachable_by_all_to_be_shared(
    service: Harness, shared_tree: Path
) -> None:
    (shared_tree / "public" / "sub").mkdir()
    os.chmod(shared_tree, 0o701)  # "others" may search it, the group may not
    response = await service.call("attach", NOBODY,
                                  **local("x", shared_tree / "public" / "sub", shared=True))
    assert (response.ok, response.code) == (False, "permission_denied")
    assert "cannot be shared" in (response.message or "")
    assert (await service.call("attach", NOBODY, **local("y", shared_tree / "public"))).ok


async def test_a_directory_swapped_while_attaching_is_refused(
    core: FileSystem, shared_tree: Path
) -> None:
    public = shared_tree / "public"

    def swapping(spec: Any, *, retry: RetryPolicy) -> Backend:
        os.rename(public, shared_tree / "was-public")
        os.symlink(shared_tree / "private", public)
        return make_backend(spec, retry=retry)

    harness = Harness(core, swapping)
    response = await harness.call("attach", NOBODY, **local("x", public))
    assert (response.ok, response.code) == (False, "permission_denied")
    assert "changed while being attached" in (response.message or "")
    assert core.datastores() == []


async def test_restore_keeps_owners_and_checks_them_again(service: Harness,
                                                          shared_tree: Path) -> None:
    await service.service.restore([
        local("kept", shared_tree / "public", owner=65534, shared=False),
        local("lost", shared_tree / "private", owner=65534, shared=False),
        local("gone", shared_tree / "public", owner=4242424, shared=False),
    ])
    ds = service.service.core.find("kept")
    assert (ds.owner, ds.shared) == (65534, False)
    failed = {f["name"]: f for f in service.service.failed.values()}
    assert set(failed) == {"lost", "gone"}
    assert "cannot read" in failed["lost"]["error"] and failed["lost"]["owner"] == 65534
    assert "no longer exists" in failed["gone"]["error"]
    # A failed datastore of a user is theirs too.
    assert (await service.call("list", OTHER)).result["failed"] == []
    response = await service.call("detach", OTHER, name="lost")
    assert (response.ok, response.code) == (False, "not_found")
    assert (await service.call("detach", NOBODY, name="lost")).ok


def test_peer_groups_come_from_the_connection_or_a_process_still_theirs() -> None:
    me = os.getpid()
    assert groups_of(Peer(pid=me, uid=0, gid=5, groups=frozenset({7, 8}))) == {5, 7, 8}
    proc = groups_of(Peer(pid=me, uid=0, gid=5))
    assert proc == {5, *os.getgroups()}
    # A pid now running as someone else (reused after the client exited) tells nothing.
    assert groups_of(Peer(pid=me, uid=12345, gid=5)) == {5}


async def test_every_protocol_operation_has_one_handler(service: Harness) -> None:
    assert set(service.service.operations()) == OPERATIONS
    # An operation the parser knows but this table does not serve is a typed refusal.
    response = await service.service.handle(Request(op="no_such_op", id=7), ROOT)
    assert (response.ok, response.code, response.id) == (False, "invalid_request", 7)
    assert "no_such_op" in (response.message or "")
