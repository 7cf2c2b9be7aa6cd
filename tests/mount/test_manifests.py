"""Versions as manifests and packs, end to end: a real daemon and mount over a real Azurite
whose `--debug` log counts every operation the daemon caused.

Covers issue 11's "Done means" for versions: a version is attached and walked with zero LIST
and HEAD calls; the sha256 of every file of a packed version equals its source; a snapshot
whose blob changed gives ESTALE (never the new bytes); a version made before manifests (no
manifest in N.json) still mounts; a restarted daemon re-attaches a version without fetching its
manifest again; `dsmount run --download` of a packed version copies it exactly.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dsmount.workspace import registry as reg
from dsmount.workspace import versions as ver
from dsmount.workspace.entries import CredentialRef, DatastoreInfo
from dsmount.workspace.registry import Registry
from tests.support.azurite import Azurite
from tests.support.azurite_fixture import skip_or_fail_without_azurite
from tests.support.azurite_ops import HEADS, LISTS, OperationLog
from tests.support.daemon import REPO_ROOT, DsmountDaemon, clean_env, wait_until
from tests.support.trees import describe_tree, make_tree, sha256_file

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

KiB = 1024
MiB = 1024 * KiB


@pytest.fixture(scope="module")
def debug_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """An Azurite of this module's own, logging every operation."""
    skip_or_fail_without_azurite()
    server = Azurite(tmp_path_factory.mktemp("azurite-debug"), debug=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ops(debug_azurite: Azurite) -> OperationLog:
    return OperationLog(debug_azurite.debug_log_path)


@pytest.fixture
def registry(tmp_path: Path, debug_azurite: Azurite) -> Iterator[Registry]:
    """A registry with one blob datastore "ds" in a fresh container."""
    container = f"m-{uuid.uuid4().hex[:12]}"
    registry = Registry(tmp_path / "registry")
    info = DatastoreInfo("ds", "blob", account=Azurite.ACCOUNT, container=container,
                         endpoint=debug_azurite.blob_endpoint,
                         auth=CredentialRef("account_key", "stored"))
    reg.register(info, Azurite.KEY, registry=registry, create_if_not_exists=True)
    yield registry
    service = debug_azurite.blob_service_client()
    try:
        service.delete_container(container)
    finally:
        service.close()


def dataset(root: Path) -> Path:
    """Small files of many sizes in several directories, a few big ones, an empty one."""
    spec: dict[str, bytes | int | None] = {
        f"train/c{i % 5}/img{i:04d}.jpg": 1 + (i * 7919) % (150 * KiB) for i in range(240)
    }
    spec.update({"big/a.bin": 3 * MiB + 17, "big/b.bin": 2 * MiB, "empty.txt": b"",
                 "labels.csv": b"path,label\n" * 50})
    return make_tree(root, spec)


def spec_of(registry: Registry, version: str) -> dict[str, object]:
    """The attach request of a version (the registry's listing of versions happens here, in
    the test process, not in the daemon)."""
    return ver.attach_spec_for("ds", version, registry=registry)


def attach(daemon: DsmountDaemon, spec: dict[str, object]) -> Path:
    result = daemon.call("attach", name="ds", **spec)
    return daemon.mountpoint / result["path"]


def sha_all(root: Path, rels: list[str]) -> dict[str, str]:
    with ThreadPoolExecutor(8) as pool:
        return dict(zip(rels, pool.map(lambda r: sha256_file(root / r), rels), strict=True))


def files_of(tree: dict[str, object]) -> list[str]:
    return sorted(p for p, n in tree.items() if getattr(n, "kind", "") == "file")


def test_a_packed_version_mounts_without_listing_and_reads_exactly(
    make_daemon: Callable[..., DsmountDaemon], registry: Registry, ops: OperationLog,
    tmp_path: Path,
) -> None:
    src = dataset(tmp_path / "src")
    number, _ = ver.create_version("ds", src, registry=registry)
    daemon = make_daemon()
    spec = spec_of(registry, str(number))
    mark = ops.mark()
    root = attach(daemon, spec)
    mounted = describe_tree(root)
    source = describe_tree(src)
    assert {p: (n.kind, n.size) for p, n in mounted.items()} == {
        p: (n.kind, n.size) for p, n in source.items()
    }
    for rel in files_of(source):  # file mtimes are the source's
        assert mounted[rel].mtime == pytest.approx(source[rel].mtime, abs=1e-6)
    done = ops.since(mark)
    assert [o for o in done if o.operation in LISTS | HEADS] == []
    assert {o.blob for o in done} == {f"_versions/{number}.manifest"}  # and nothing else
    rels = files_of(source)
    assert sha_all(root, rels) == sha_all(src, rels)
    reads = ops.since(mark)
    assert [o for o in reads if o.operation in LISTS | HEADS] == []
    # Every byte came from the pack objects and the two big files: never a per-file object.
    read_blobs = {o.blob for o in reads if o.operation == "Blob_Download"}
    assert all(
        b.endswith(".manifest") or "/.packs/" in b or b.startswith(f"_versions/{number}/big/")
        for b in read_blobs if b
    ), read_blobs


def test_a_restarted_daemon_reattaches_without_fetching_the_manifest(
    make_daemon: Callable[..., DsmountDaemon], registry: Registry, ops: OperationLog,
    tmp_path: Path,
) -> None:
    src = make_tree(tmp_path / "src", {"a/x.txt": b"x" * 5000, "b.txt": b"bee"})
    number, _ = ver.create_version("ds", src, registry=registry)
    daemon = make_daemon()
    root = attach(daemon, spec_of(registry, str(number)))
    assert (root / "a/x.txt").read_bytes() == b"x" * 5000
    daemon.kill9()
    mark = ops.mark()
    daemon.start()
    assert (root / "b.txt").read_bytes() == b"bee"
    assert sorted(os.listdir(root)) == ["a", "b.txt"]
    done = ops.since(mark)
    assert [o for o in done if o.operation in LISTS | HEADS] == []
    assert [o for o in done if (o.blob or "").endswith(".manifest")] == []


def test_a_snapshot_pins_etags_so_a_changed_blob_is_estale(
    make_daemon: Callable[..., DsmountDaemon], registry: Registry, debug_azurite: Azurite,
) -> None:
    container = registry.get("ds").container
    service = debug_azurite.blob_service_client()
    try:
        c = service.get_container_client(container)
        c.upload_blob("data/a.bin", b"A" * 1000)
        c.upload_blob("data/sub/b.bin", b"B" * 3000)
        c.upload_blob("elsewhere.txt", b"not in the snapshot")
        number, files = ver.snapshot("ds", "data", registry=registry)
        assert files == 2
        root = attach(make_daemon(), spec_of(registry, str(number)))
        assert sorted(os.listdir(root)) == ["a.bin", "sub"]
        c.upload_blob("data/a.bin", b"Z" * 1000, overwrite=True)  # changed after the snapshot
        with pytest.raises(OSError) as info:
            (root / "a.bin").read_bytes()
        assert info.value.errno == errno.ESTALE
        assert (root / "sub/b.bin").read_bytes() == b"B" * 3000
    finally:
        service.close()


def test_a_version_made_before_manifests_still_mounts(
    make_daemon: Callable[..., DsmountDaemon], registry: Registry, debug_azurite: Azurite,
) -> None:
    container = registry.get("ds").container
    service = debug_azurite.blob_service_client()
    try:
        c = service.get_container_client(container)
        c.upload_blob("_versions/1/train/x.txt", b"old layout")
        c.upload_blob("_versions/1.json", b'{"version": 1, "files": 1}')
    finally:
        service.close()
    spec = ver.attach_spec_for("ds", "1", registry=registry)
    assert "manifest" not in spec
    root = attach(make_daemon(), spec_of(registry, "1"))
    assert (root / "train/x.txt").read_bytes() == b"old layout"


def test_run_download_copies_a_packed_version_exactly(
    make_daemon: Callable[..., DsmountDaemon], registry: Registry, tmp_path: Path,
) -> None:
    src = dataset(tmp_path / "src")
    number, _ = ver.create_version("ds", src, registry=registry)
    daemon = make_daemon()
    dest = tmp_path / "copy"
    result = subprocess.run(
        [sys.executable, "-m", "dsmount", "--socket", str(daemon.socket), "run", "--quiet",
         "--download", f"d@ds:{number}={dest}", "--", sys.executable, "-c", "pass"],
        cwd=REPO_ROOT, env=clean_env({"DSMOUNT_REGISTRY": str(registry.dir)}),
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    rels = files_of(describe_tree(src))
    assert files_of(describe_tree(dest)) == rels
    assert sha_all(dest, rels) == sha_all(src, rels)


def _shuffled_epoch(root: Path, rels: list[str], seed: int) -> dict[str, str]:
    import random

    order = list(rels)
    random.Random(seed).shuffle(order)
    return sha_all(root, order)


def test_a_shuffled_epoch_over_a_cached_version_fetches_each_pack_block_about_once(
    make_daemon: Callable[..., DsmountDaemon], registry: Registry, ops: OperationLog,
    tmp_path: Path,
) -> None:
    spec_tree = {f"img/{i:04d}.jpg": 20 * KiB + (i * 7919) % (60 * KiB) for i in range(400)}
    src = make_tree(tmp_path / "src", spec_tree)
    number, _ = ver.create_version("ds", src, registry=registry)
    daemon = make_daemon()
    spec = spec_of(registry, str(number))
    mark = ops.mark()
    root = attach(daemon, spec)
    rels = sorted(spec_tree)
    total = sum(spec_tree.values())
    assert _shuffled_epoch(root, rels, 1) == sha_all(src, rels)
    gets = [o for o in ops.since(mark) if o.operation == "Blob_Download"]
    pack_gets = [o for o in gets if "/.packs/" in (o.blob or "")]
    blocks = -(-total // (8 * MiB))  # the pack's 8 MiB blocks
    assert 1 <= len(pack_gets) <= 2 * blocks, (len(pack_gets), blocks)
    assert len(gets) - len(pack_gets) == 1  # the manifest, nothing per file


def test_a_version_larger_than_the_cache_fetches_about_each_files_own_bytes(
    make_daemon: Callable[..., DsmountDaemon], registry: Registry, tmp_path: Path,
) -> None:
    spec_tree = {f"img/{i:04d}.jpg": 100 * KiB + i for i in range(200)}  # ~20 MiB
    src = make_tree(tmp_path / "src", spec_tree)
    number, _ = ver.create_version("ds", src, registry=registry)
    # 32 MiB of cache: the version does not fit in half of it, so no pack blocks are spread.
    daemon = make_daemon(extra_args=["--cache-budget", "32MiB"])
    root = attach(daemon, spec_of(registry, str(number)))
    rels = sorted(spec_tree)
    assert _shuffled_epoch(root, rels, 2) == sha_all(src, rels)
    status = daemon.call("status")
    ds = next(d for d in status["datastores"] if d["name"] == "ds")
    total = sum(spec_tree.values())
    assert ds["bytes_fetched"] <= 2 * total, (ds["bytes_fetched"], total)


def test_the_first_read_of_a_packed_file_fetches_its_whole_pack_when_the_version_fits(
    make_daemon: Callable[..., DsmountDaemon], registry: Registry, ops: OperationLog,
    tmp_path: Path,
) -> None:
    spec_tree = {f"img/{i:04d}.jpg": 50 * KiB + i for i in range(300)}  # ~15 MiB, one pack
    src = make_tree(tmp_path / "src", spec_tree)
    number, _ = ver.create_version("ds", src, registry=registry)
    daemon = make_daemon()
    root = attach(daemon, spec_of(registry, str(number)))
    total = sum(spec_tree.values())
    one = "img/0150.jpg"
    assert sha256_file(root / one) == sha256_file(src / one)

    def fetched() -> int:
        ds = next(d for d in daemon.call("status")["datastores"] if d["name"] == "ds")
        return ds["bytes_fetched"] if ds["bytes_fetched"] >= total else 0

    # One file read; the rest of its pack follows in the background, each byte once.
    got = wait_until(fetched, 30, "the whole pack to be fetched")
    assert total <= got <= total + 8 * MiB  # the manifest's own bytes are not in here
    mark = ops.mark()
    rels = sorted(spec_tree)
    assert _shuffled_epoch(root, rels, 3) == sha_all(src, rels)
    assert [o for o in ops.since(mark) if o.operation == "Blob_Download"] == []


def test_a_version_larger_than_memory_but_fitting_the_disk_cache_spreads_its_packs(
    make_daemon: Callable[..., DsmountDaemon], registry: Registry, ops: OperationLog,
    tmp_path: Path,
) -> None:
    spec_tree = {f"img/{i:04d}.jpg": 100 * KiB + i for i in range(300)}  # ~30 MiB
    src = make_tree(tmp_path / "src", spec_tree)
    number, _ = ver.create_version("ds", src, registry=registry)
    # 4 MiB of memory cannot hold it; 256 MiB of disk cache can.
    daemon = make_daemon(config_text=(
        '[cache]\nblock_size = "1MiB"\nmemory_budget = "4MiB"\n'
        f'disk_dir = "{tmp_path / "disk"}"\ndisk_budget = "256MiB"\n'))
    mark = ops.mark()
    root = attach(daemon, spec_of(registry, str(number)))
    rels = sorted(spec_tree)
    total = sum(spec_tree.values())
    assert _shuffled_epoch(root, rels, 4) == sha_all(src, rels)
    gets = [o for o in ops.since(mark) if o.operation == "Blob_Download"]
    pack_gets = [o for o in gets if "/.packs/" in (o.blob or "")]
    blocks = -(-total // MiB)
    # Pack blocks, about once each (not one GET per file), whatever memory evicted.
    assert 1 <= len(pack_gets) <= 2 * blocks + 2, (len(pack_gets), blocks)
    status = daemon.call("status")
    assert status["disk_cache"]["used_bytes"] >= total
    # Memory does not churn: a block evicted from memory is not fetched again whole; the
    # files read later come from disk, each as its own bytes.
    ds = next(d for d in status["datastores"] if d["name"] == "ds")
    assert ds["bytes_fetched"] <= 2 * total, (ds["bytes_fetched"], total)
