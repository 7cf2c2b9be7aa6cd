"""The control operations (dsmount/control/service.py) on plain Request objects, no socket.

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

from dsmount.control.protocol import Request, Response
from dsmount.control.service import ControlService, Peer
from dsmount.errors import NotFound
from dsmount.node.cache.blocks import BlockCache
from dsmount.node.fs.core import FileSystem, FsSettings
from dsmount.storage.base import Backend
from dsmount.storage.factory import make_backend
from dsmount.storage.local import LocalBackend
from dsmount.storage.memory import MemoryBackend
from dsmount.storage.retry import RetryPolicy

# A well-formed (base64, 64 bytes) account key that is no real account's.
ACCOUNT_KEY = "VE9QU0VDUkVULWFjY291bnQta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3ODlhYmNkZWY="
ROOT = Peer(pid=os.getpid(), uid=0, gid=0)
# pid 0 has no /proc entry, so the peer's groups are exactly its gid.
NOBODY = Peer(pid=0, uid=65534, gid=65534)


class Harness:
    def __init__(self, core: FileSystem, factory: Any = make_backend) -> None:
        self.changes = 0
        self.built: list[Backend] = []

        def counting_factory(spec: dict[str, Any], *, retry: RetryPolicy) -> Backend:
            backend = factory(spec, retry=retry)
            self.built.append(backend)
            return backend

        self.service = ControlService(
            core,
            retry=RetryPolicy(base_delay=0.001, max_delay=0.01, deadline=5.0),
            backend_factory=counting_factory,
            on_change=self.count_change,
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
