"""The whole-file helpers (`dsmount.storage.files`) over the one storage interface, and the
portal blocking callers reach it through (`dsmount.storage.portal`): on every kind (a local
directory, a blob container in a real Azurite, a share in the Azure Files emulator), the verbs
the helpers need (walk, file_info, content_md5, create, exclusive commits that carry an MD5),
and a fault-injecting wrapper showing that a failed upload leaves nothing visible.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from azure.storage.blob import ContainerClient
from azure.storage.fileshare import ShareClient

from dsmount.errors import AlreadyExists, ReadOnly, Transient
from dsmount.shared.credentials import Credential, Secret
from dsmount.storage import files as files_module
from dsmount.storage.azure.blob import BlobBackend
from dsmount.storage.azure.fileshare import FileShareBackend
from dsmount.storage.files import TRANSFER_RETRY, Files, open_version
from dsmount.storage.local import LocalBackend
from dsmount.storage.portal import Portal, portal
from tests.support.azurefiles import AzureFilesEmulator
from tests.support.azurite import Azurite
from tests.support.faulty_backend import FaultyBackend
from tests.support.memory_backend import MemoryBackend


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


def _cred(connection_string: str) -> Credential:
    return Credential("connection_string", Secret(connection_string))


@pytest.fixture(params=["local", "blob", "fileshare"])
def files(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Files]:
    """Files of each kind, below a prefix that does not exist yet (`create` makes it)."""
    if request.param == "local":
        f = Files(LocalBackend(tmp_path / "new" / "root", must_exist=False))
    elif request.param == "blob":
        azurite: Azurite = request.getfixturevalue("azurite")
        name = f"c{uuid.uuid4().hex[:12]}"  # a container nobody made yet
        f = Files(BlobBackend(container=name, prefix="p/q", retry=TRANSFER_RETRY,
                              credential=_cred(azurite.connection_string)))
    else:
        emulator: AzureFilesEmulator = request.getfixturevalue("azurefiles")
        share: ShareClient = request.getfixturevalue("file_share")
        f = Files(FileShareBackend(share=share.share_name, prefix="p/q", retry=TRANSFER_RETRY,
                                   credential=_cred(emulator.connection_string)))
    with f:
        yield f


def test_create_walk_stat_and_md5_on_every_kind(files: Files, tmp_path: Path) -> None:
    assert files.create() in (True, False)  # a file share exists already; its prefix did not
    assert files.create() is False  # there now
    assert files.capabilities.uploads
    tree = {"a.txt": b"alpha", "d/b.txt": b"beta", "d/e/c.bin": b"\0" * 1000,
            "d.txt.bak": b"not below d"}
    for path, data in tree.items():
        assert files.put_bytes(path, data, exclusive=True) is True
    walked = {f.path: f.size for f in files.walk()}
    assert walked == {p: len(d) for p, d in tree.items()}
    assert sorted(f.path for f in files.walk("d")) == ["d/b.txt", "d/e/c.bin"]
    assert [f.path for f in files.walk("d/b.txt")] == ["d/b.txt"]  # a prefix naming a file
    assert list(files.walk("nothing/here")) == []
    one = files.stat("d/e/c.bin")
    assert one is not None and one.size == 1000
    assert files.content_md5(one) == _md5(b"\0" * 1000)
    assert files.stat("d") is None and files.stat("missing/x") is None
    for f in files.walk():
        assert files.content_md5(f) == _md5(tree[f.path])
    assert files.list_dir("d") == (["b.txt"], ["e"])
    assert files.list_dir("no/such") == ([], [])


def test_exclusive_writes_never_replace_and_uploads_carry_their_md5(
    files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.create()
    assert files.put_bytes("x.txt", b"first", exclusive=True) is True
    assert files.put_bytes("x.txt", b"second", exclusive=True) is False
    assert files.read_range("x.txt", 0, 100) == b"first"
    # A big file in parts (parallel), committed exclusively: refused once the name exists.
    monkeypatch.setattr(files_module, "PART", 64 * 1024)
    monkeypatch.setattr(files_module, "BIG_FILE", 1)
    data = bytes(range(256)) * 1200  # 300 KiB: five parts
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    moved: list[int] = []
    files.upload(src, "sub/big.bin", size=len(data), md5=_md5(data), overwrite=False,
                 progress=moved.append)
    assert sum(moved) == len(data)
    with pytest.raises(AlreadyExists):
        files.upload(src, "sub/big.bin", size=len(data), md5=_md5(data), overwrite=False,
                     progress=lambda n: None)
    f = files.stat("sub/big.bin")
    assert f is not None and f.size == len(data) and files.content_md5(f) == _md5(data)
    out = tmp_path / "out.bin"
    with open(out, "wb") as sink:
        files.download(f, sink, progress=lambda n: None)
    assert out.read_bytes() == data
    assert files.read_range("sub/big.bin", len(data) - 10, 100) == data[-10:]
    if files.kind != "local":  # the stored Content-MD5 is the one given, not recomputed
        listed = next(iter(files.walk("sub/big.bin")))
        assert files.content_md5(listed) == _md5(data)


def test_a_failed_upload_leaves_nothing_visible(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files_module, "PART", 1024)
    inner = MemoryBackend()
    faulty = FaultyBackend(inner)
    faulty.inject(Transient("connection reset"), ops=["put"], after=2)
    src = tmp_path / "f.bin"
    src.write_bytes(b"z" * 5000)
    with Files(faulty) as files:
        with pytest.raises(Transient):
            files.upload(src, "f.bin", size=5000, md5=_md5(b"z" * 5000), overwrite=True,
                         progress=lambda n: None)
        assert files.stat("f.bin") is None
        assert faulty.calls["abort"] == 1
        faulty.clear()
        faulty.inject(Transient("lost"), ops=["commit"])
        with pytest.raises(Transient):
            files.put_bytes("g.txt", b"small")
        assert files.stat("g.txt") is None and faulty.calls["abort"] == 2


def test_a_version_is_read_only(tmp_path: Path) -> None:
    from dsmount.storage.manifest import FileRecord, write_manifest

    root = tmp_path / "ds"
    (root / "v1").mkdir(parents=True)
    (root / "v1" / "h.txt").write_bytes(b"hello")  # a file of its own (not packed)
    write_manifest(tmp_path / "m", [FileRecord("h.txt", 5, 0, _md5(b"hello"))], root="v1",
                   kind="version")
    (root / "v.manifest").write_bytes((tmp_path / "m").read_bytes())
    with open_version(Files(LocalBackend(root)), "v.manifest") as version:
        assert not version.capabilities.uploads
        assert [(f.path, f.md5) for f in version.walk()] == [("h.txt", _md5(b"hello"))]
        assert version.read_range("h.txt", 1, 3) == b"ell"
        with pytest.raises(ReadOnly):
            version.put_bytes("x", b"no")
        assert "version v1" in version.describe()


def test_the_portal_runs_calls_from_many_threads_at_once() -> None:
    """Each thread's call waits until all have arrived: it would never finish if the portal ran
    calls one at a time (the deadline turns that into a failure, not a hang)."""
    n = 8
    arrived = 0
    all_in: trio.Event | None = None
    results: list[int] = []

    async def meet(i: int) -> int:
        nonlocal arrived, all_in
        if all_in is None:
            all_in = trio.Event()
        arrived += 1
        if arrived == n:
            all_in.set()
        with trio.fail_after(30):
            await all_in.wait()
        return i

    p = Portal(name="dsmount-portal-test")
    threads = [threading.Thread(target=lambda i=i: results.append(p.run(meet, i)))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(n))


def test_a_blocking_call_from_the_portals_own_loop_is_refused_not_a_deadlock() -> None:
    p = Portal(name="dsmount-portal-test")

    async def nested() -> None:
        p.run(trio.sleep, 0)  # would block the loop on itself

    with pytest.raises(RuntimeError, match="own loop"):
        p.run(nested)


async def test_the_portal_answers_a_caller_inside_trio() -> None:
    async def double(x: int) -> int:
        await trio.sleep(0)
        return 2 * x

    assert portal().run(double, 21) == 42  # from a helper thread: no deadlock
    with pytest.raises(ZeroDivisionError):
        portal().run(_divide_by_zero)


async def _divide_by_zero() -> None:
    1 / 0  # noqa: B018


def test_a_blob_walk_is_flat_and_carries_md5s(azurite: Azurite,
                                              blob_container: ContainerClient) -> None:
    for i in range(30):
        blob_container.upload_blob(f"d{i % 3}/sub/f{i:02d}", f"{i}".encode())
    backend = BlobBackend(container=blob_container.container_name, retry=TRANSFER_RETRY,
                          credential=_cred(azurite.connection_string))
    with Files(backend) as files:
        before = backend.stats.requests
        walked = list(files.walk())
        assert len(walked) == 30
        assert all(f.md5 == _md5(str(int(f.path[-2:])).encode()) for f in walked)
        assert backend.stats.requests - before == 1  # one listing page, not one per directory
