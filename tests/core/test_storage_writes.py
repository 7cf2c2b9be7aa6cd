"""The write verbs of the storage interface (staged parts + atomic commit, append, delete,
directories, copy, rename) against every writable kind: a real Azurite container, a share of
the Azure Files emulator, a local directory and the memory backend. What a backend wrote is
read back *around* it (the SDKs, the disk, the dict), never through the backend itself.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from azure.storage.blob import ContainerClient
from azure.storage.fileshare import ShareClient

from dsmount.errors import (
    AlreadyExists,
    AuthFailed,
    Changed,
    CrossDevice,
    NotEmpty,
    NotFound,
    Transient,
)
from dsmount.shared.credentials import Credential, Secret
from dsmount.storage.azure.blob import BlobBackend
from dsmount.storage.azure.fileshare import FileShareBackend
from dsmount.storage.base import Backend, Part
from dsmount.storage.retry import RetryPolicy
from dsmount.storage.writes import is_temp_name
from tests.support.azurefiles import AzureFilesEmulator
from tests.support.azurite import Azurite
from tests.support.faultproxy import FaultProxy
from tests.support.faulty_backend import FaultyBackend
from tests.support.local_writable_backend import WritableLocalBackend
from tests.support.memory_backend import MemoryBackend

MiB = 1024 * 1024
FAST = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05, deadline=30)
KINDS = ["blob", "fileshare", "local", "memory"]


def data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@dataclass
class Kit:
    """One writable backend plus a way to look at what it stored without it."""

    kind: str
    backend: Backend
    get: Callable[[str], bytes | None]  # the stored bytes of a file, or None
    seed: Callable[[str, bytes], None]  # store a file the way another tool would
    names: Callable[[str], list[str]]  # names directly in a directory (raw, unfiltered)


def _blob_kit(container: ContainerClient, azurite: Azurite, proxy: FaultProxy | None) -> Kit:
    conn = azurite.connection_string if proxy is None else proxy.connection_string_for(
        azurite.connection_string
    )
    backend = BlobBackend(
        container=container.container_name,
        credential=Credential("connection_string", Secret(conn)),
        retry=FAST,
    )

    def get(path: str) -> bytes | None:
        blob = container.get_blob_client(path)
        return blob.download_blob().readall() if blob.exists() else None

    def names(path: str) -> list[str]:
        prefix = f"{path}/" if path else ""
        return sorted(
            item.name[len(prefix) :].rstrip("/")
            for item in container.walk_blobs(name_starts_with=prefix or None, delimiter="/")
        )

    return Kit("blob", backend, get,
               lambda p, b: container.upload_blob(p, b, overwrite=True), names)


def _share_kit(share: ShareClient, emu: AzureFilesEmulator) -> Kit:
    backend = FileShareBackend(
        share=share.share_name,
        credential=Credential("account_key", Secret(emu.key)),
        endpoint=emu.endpoint,
        retry=FAST,
    )

    def get(path: str) -> bytes | None:
        f = share.get_file_client(path)
        return f.download_file().readall() if f.exists() else None

    def seed(path: str, body: bytes) -> None:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            d = share.get_directory_client("/".join(parts[:depth]))
            if not d.exists():
                d.create_directory()
        share.get_file_client(path).upload_file(body)

    def names(path: str) -> list[str]:
        listing = share.get_directory_client(path).list_directories_and_files()
        return sorted(i["name"] for i in listing)

    return Kit("fileshare", backend, get, seed, names)


def _local_kit(root: Path) -> Kit:
    def get(path: str) -> bytes | None:
        p = root / path
        return p.read_bytes() if p.is_file() else None

    def seed(path: str, body: bytes) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(body)

    return Kit("local", WritableLocalBackend(root), get, seed,
               lambda p: sorted(x.name for x in (root / p).iterdir()))


def _memory_kit() -> Kit:
    backend = MemoryBackend(retry=FAST)

    def get(path: str) -> bytes | None:
        item = backend.files.get(path)
        return item[0] if item else None

    def names(path: str) -> list[str]:
        prefix = f"{path}/" if path else ""
        found = {p[len(prefix) :].split("/")[0] for p in list(backend.files) + list(backend.dirs)
                 if p.startswith(prefix)}
        return sorted(found)

    return Kit("memory", backend, get, backend.put, names)


@pytest.fixture
async def kit(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kit]:
    kind = request.param
    if kind == "blob":
        azurite = request.getfixturevalue("azurite")
        made = _blob_kit(request.getfixturevalue("blob_container"), azurite, None)
    elif kind == "fileshare":
        made = _share_kit(request.getfixturevalue("file_share"),
                          request.getfixturevalue("azurefiles"))
    elif kind == "local":
        made = _local_kit(tmp_path)
    else:
        made = _memory_kit()
    try:
        yield made
    finally:
        await made.backend.aclose()


every_kind = pytest.mark.parametrize("kit", KINDS, indirect=True)


async def put_all(upload, body: bytes, part: int, order: list[int] | None = None) -> list[Part]:
    """Put `body` in parts of `part` bytes, concurrently, in `order` (shuffled by default)."""
    offsets = list(range(0, len(body), part))
    order = order if order is not None else random.Random(7).sample(range(len(offsets)),
                                                                      len(offsets))
    got: dict[int, Part] = {}

    async def one(i: int) -> None:
        off = offsets[i]
        got[off] = await upload.put(off, body[off : off + part])

    async with trio.open_nursery() as nursery:
        for i in order:
            nursery.start_soon(one, i)
    return [got[o] for o in offsets]


@every_kind
async def test_parts_are_invisible_until_the_commit_then_exact(kit: Kit) -> None:
    body = data(5 * MiB + 4321, 1)
    await kit.backend.make_dir("dir")  # a file share's (or disk's) parent must exist
    upload = await kit.backend.begin_upload("dir/new.bin")
    parts = await put_all(upload, body, 1 * MiB)
    assert kit.get("dir/new.bin") is None  # staged, not visible
    entry = await upload.commit(parts, len(body))
    assert kit.get("dir/new.bin") == body
    assert entry.size == len(body) and not entry.is_dir
    stat = await kit.backend.stat("dir/new.bin")
    assert stat.etag == entry.etag and stat.size == len(body)
    assert not any(is_temp_name(n) for n in kit.names("dir"))


@every_kind
async def test_commit_replaces_the_old_version_in_one_step(kit: Kit) -> None:
    kit.seed("ckpt.bin", b"old" * 1000)
    old = await kit.backend.stat("ckpt.bin")
    body = data(3 * MiB, 2)
    upload = await kit.backend.begin_upload("ckpt.bin", base=old)
    parts = await put_all(upload, body, MiB)
    assert kit.get("ckpt.bin") == b"old" * 1000  # readers still see the old one
    await upload.commit(parts, len(body), keep=False)
    assert kit.get("ckpt.bin") == body
    assert (await kit.backend.stat("ckpt.bin")).etag != old.etag


@every_kind
async def test_an_empty_file_commits(kit: Kit) -> None:
    upload = await kit.backend.begin_upload("empty")
    entry = await upload.commit([], 0)
    assert kit.get("empty") == b"" and entry.size == 0


@every_kind
async def test_append_uploads_only_the_new_bytes(kit: Kit) -> None:
    first = data(2 * MiB + 17, 3)
    upload = await kit.backend.begin_upload("log.txt")
    entry = await upload.commit(await put_all(upload, first, MiB), len(first))
    content = first
    for i in range(3):
        before = kit.backend.stats.bytes_uploaded
        more = data(1000 + i, 10 + i)
        upload = await kit.backend.begin_upload("log.txt", base=entry, append=True)
        assert upload.kept == len(content)
        part = await upload.put(len(content), more)
        entry = await upload.commit([part], len(content) + len(more))
        content += more
        assert kit.backend.stats.bytes_uploaded - before == len(more)
        assert kit.get("log.txt") == content
        assert entry.size == len(content)


@every_kind
async def test_append_to_a_replaced_base_is_refused(kit: Kit) -> None:
    first = await kit.backend.begin_upload("a.log")  # a blob with a block list to keep
    base = await first.commit([await first.put(0, b"one\n")], 4)
    upload = await kit.backend.begin_upload("a.log", base=base, append=True)
    assert upload.kept == 4
    part = await upload.put(base.size, b"two\n")
    await trio.sleep(0.01)  # a distinct mtime for the local kind's version
    kit.seed("a.log", b"someone else\n")
    if kit.kind == "fileshare":
        # No conditional commit on Azure Files: an append is written in place (documented).
        await upload.commit([part], base.size + 4)
        return
    with pytest.raises(Changed):
        await upload.commit([part], base.size + 4)
    assert kit.get("a.log") == b"someone else\n"


async def test_append_to_a_blob_without_a_block_list_rewrites_it(
    azurite: Azurite, blob_container: ContainerClient
) -> None:
    made = _blob_kit(blob_container, azurite, None)
    try:
        made.seed("single.bin", b"x" * 1000)  # Put Blob: no committed blocks to keep
        base = await made.backend.stat("single.bin")
        upload = await made.backend.begin_upload("single.bin", base=base, append=True)
        assert upload.kept == 0
        parts = [await upload.put(0, b"x" * 1000), await upload.put(1000, b"y")]
        await upload.commit(parts, 1001)
        assert made.get("single.bin") == b"x" * 1000 + b"y"
    finally:
        await made.backend.aclose()


async def test_a_blob_append_after_our_own_commit_needs_no_block_list_request(
    azurite: Azurite, blob_container: ContainerClient
) -> None:
    made = _blob_kit(blob_container, azurite, None)
    try:
        upload = await made.backend.begin_upload("grow.log")
        entry = await upload.commit([await upload.put(0, b"a" * 10)], 10)
        requests = made.backend.stats.requests
        upload = await made.backend.begin_upload("grow.log", base=entry, append=True)
        entry = await upload.commit([await upload.put(10, b"b")], 11)
        assert made.backend.stats.requests - requests == 2  # Put Block + Put Block List
        assert made.get("grow.log") == b"a" * 10 + b"b"
    finally:
        await made.backend.aclose()


@every_kind
async def test_delete_and_directories(kit: Kit) -> None:
    kit.seed("d/f.txt", b"f")
    await kit.backend.delete("d/f.txt")
    assert kit.get("d/f.txt") is None
    with pytest.raises(NotFound):
        await kit.backend.delete("d/f.txt")
    entry = await kit.backend.make_dir("empty")
    assert entry.is_dir
    assert (await kit.backend.stat("empty")).is_dir
    assert "empty" in await _names(kit.backend, "")
    with pytest.raises(AlreadyExists):
        await kit.backend.make_dir("empty")
    kit.seed("full/x", b"x")
    with pytest.raises(NotEmpty):
        await kit.backend.remove_dir("full")
    await kit.backend.remove_dir("empty")
    with pytest.raises(NotFound):
        await kit.backend.stat("empty")


async def _names(backend: Backend, path: str) -> list[str]:
    out: list[str] = []
    async for page in backend.list(path):
        out += [e.name for e in page]
    return sorted(out)


@every_kind
async def test_rename_a_file_over_another(kit: Kit) -> None:
    kit.seed("runs/tmp.ckpt", b"new checkpoint")
    kit.seed("runs/last.ckpt", b"old checkpoint")
    entry = await kit.backend.rename("runs/tmp.ckpt", "runs/last.ckpt")
    assert kit.get("runs/last.ckpt") == b"new checkpoint"
    assert kit.get("runs/tmp.ckpt") is None
    assert entry is not None and entry.size == len(b"new checkpoint")


@every_kind
async def test_rename_a_directory(kit: Kit) -> None:
    for i in range(5):
        kit.seed(f"src/sub/f{i}", f"file {i}".encode())
    await kit.backend.rename("src", "dst", is_dir=True)
    assert [kit.get(f"dst/sub/f{i}") for i in range(5)] == [f"file {i}".encode() for i in range(5)]
    assert kit.get("src/sub/f0") is None
    with pytest.raises(NotFound):
        await kit.backend.stat("src")


async def test_a_blob_directory_beyond_the_rename_limit_is_refused_untouched(
    azurite: Azurite, blob_container: ContainerClient
) -> None:
    made = _blob_kit(blob_container, azurite, None)
    try:
        for i in range(6):
            made.seed(f"big/f{i}", b"x")
        with pytest.raises(CrossDevice):
            await made.backend.rename("big", "moved", is_dir=True, max_entries=5)
        assert all(made.get(f"big/f{i}") == b"x" for i in range(6))
        assert made.get("moved/f0") is None
    finally:
        await made.backend.aclose()


@pytest.mark.parametrize("kit", ["blob", "memory", "local"], indirect=True)
async def test_copy_is_server_side_and_exact(kit: Kit) -> None:
    body = data(3 * MiB + 5, 4)
    kit.seed("a.bin", body)
    entry = await kit.backend.copy("a.bin", "b.bin")
    assert kit.get("b.bin") == body and kit.get("a.bin") == body
    assert entry.size == len(body)


async def test_file_share_upload_uses_a_hidden_temporary_file(
    file_share: ShareClient, azurefiles: AzureFilesEmulator
) -> None:
    made = _share_kit(file_share, azurefiles)
    try:
        upload = await made.backend.begin_upload("out.bin")
        assert upload.temp_path is not None and is_temp_name(upload.temp_path)
        part = await upload.put(0, b"hello")
        raw = made.names("")
        assert [n for n in raw if is_temp_name(n)], raw  # it exists in the share ...
        assert await _names(made.backend, "") == []  # ... but no listing of ours shows it
        await upload.abort()
        assert made.names("") == []
        upload = await made.backend.begin_upload("out.bin")
        part = await upload.put(0, b"hello")
        await upload.commit([part], 5)
        assert made.names("") == ["out.bin"] and made.get("out.bin") == b"hello"
    finally:
        await made.backend.aclose()


async def test_memory_faults_on_parts_are_retried() -> None:
    made = _memory_kit()
    backend = made.backend
    assert isinstance(backend, MemoryBackend)
    backend.faults.error, backend.faults.fail_next, backend.faults.ops = Transient("x"), 3, {"put"}
    upload = await backend.begin_upload("f")
    part = await upload.put(0, b"abc")
    await upload.commit([part], 3)
    assert made.get("f") == b"abc" and backend.faults.fail_next == 0


async def test_dropped_connections_during_block_uploads_are_retried_exactly(
    azurite: Azurite, blob_container: ContainerClient
) -> None:
    with FaultProxy(azurite.host, azurite.blob_port) as proxy:
        made = _blob_kit(blob_container, azurite, proxy)
        try:
            body = data(6 * MiB, 5)
            # Cut the connection 700 KiB into each of the first 4 sends: mid-block, every block.
            proxy.drop_up_every(700 * 1024, times=4)
            upload = await made.backend.begin_upload("dropped.bin")
            parts = await put_all(upload, body, 2 * MiB, order=[0, 1, 2])
            proxy.drop_up_every(None)
            await upload.commit(parts, len(body))
            assert proxy.stats["drops"] > 0
            assert made.get("dropped.bin") == body
        finally:
            await made.backend.aclose()



async def test_a_pooled_part_buffer_is_sent_as_is_and_survives_retried_503s(
    azurite: Azurite, blob_container: ContainerClient
) -> None:
    from dsmount.node.fs.write_handle import PartBuffer

    with FaultProxy(azurite.host, azurite.blob_port) as proxy:
        made = _blob_kit(blob_container, azurite, proxy)
        try:
            buf = PartBuffer(data(2 * MiB, 9))
            upload = await made.backend.begin_upload("pooled.bin")
            proxy.respond_503(2)  # failed attempts: the SDK's pipeline deep-copies the request
            part = await upload.put(0, buf)
            await upload.commit([part], len(buf))
            assert proxy.stats["injected_503"] == 2
            assert made.get("pooled.bin") == bytes(buf)
        finally:
            await made.backend.aclose()


@every_kind
async def test_a_small_file_is_committed_whole(kit: Kit) -> None:
    upload = await kit.backend.begin_upload("small.txt")
    requests = kit.backend.stats.requests
    entry = await upload.commit_whole(b"tiny")
    assert kit.get("small.txt") == b"tiny" and entry.size == 4
    if kit.kind == "blob":
        assert kit.backend.stats.requests - requests == 1  # one Put Blob
    assert not any(is_temp_name(n) for n in kit.names(""))


# -- the fault-injecting wrapper, over every kind ------------------------------------------------
@every_kind
async def test_a_failed_commit_keeps_the_old_version_and_the_next_upload_works(kit: Kit) -> None:
    """Injected above the backend's retries: the caller sees the failure, the backend's own
    clean-up runs, and nothing of the failed version is visible or left behind."""
    await kit.backend.make_dir("dir")
    kit.seed("dir/f", b"old version")
    faulty = FaultyBackend(kit.backend)
    assert faulty.capabilities == kit.backend.capabilities and faulty.kind == kit.kind
    fault = faulty.inject(Transient("injected"), ops=["commit"], times=1)
    body = data(3 * MiB + 17, 11)
    base = await faulty.stat("dir/f")
    upload = await faulty.begin_upload("dir/f", base=base)
    parts = await put_all(upload, body, MiB)
    with pytest.raises(Transient, match="injected"):
        await upload.commit(parts, len(body), keep=False)
    assert await upload.abort() is True
    assert kit.get("dir/f") == b"old version"
    assert not any(is_temp_name(n) for n in kit.names("dir"))
    assert fault.injected == 1

    upload = await faulty.begin_upload("dir/f", base=await faulty.stat("dir/f"))
    entry = await upload.commit(await put_all(upload, body, MiB), len(body), keep=False)
    assert kit.get("dir/f") == body and entry.size == len(body)
    assert faulty.calls["commit"] == 2 and faulty.calls["put"] == 8 and faulty.calls["abort"] == 1


@every_kind
async def test_faults_reach_the_filesystem_as_errors_and_leave_it_serving(
    kit: Kit, tmp_path: Path
) -> None:
    """The filesystem core over a wrapped backend of each kind: a failed read, listing or
    lookup is that call's error; the next call is served from the real backend."""
    from tests.core.test_fs_writes import running

    kit.seed("f.bin", data(300_000, 3))
    faulty = FaultyBackend(kit.backend)
    async with running(tmp_path) as env:
        env.cache.failure_ttl = 0  # the next read asks the backend again (no failure memory)
        env.attach("ds", faulty, read_write=False)
        faulty.inject(Transient("list down"), ops=["list", "stat"], times=1)
        with pytest.raises(Transient, match="list down"):
            await env.names("ds")
        assert "f.bin" in await env.names("ds")
        fault = faulty.inject(AuthFailed("403 injected"), ops=["read"], times=10**6)
        with pytest.raises(AuthFailed, match="403 injected"):
            await env.read("ds/f.bin")
        assert fault.injected >= 1
        faulty.clear()
        assert await env.read("ds/f.bin") == data(300_000, 3)
    assert faulty.calls["read"] >= 2
