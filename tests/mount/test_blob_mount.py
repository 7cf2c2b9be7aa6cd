"""A blob container under the mount, against a real Azurite: exact bytes, the tree, names that
cannot be POSIX names, directory markers, prefixes, and an object replaced under a reader."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

BLOCK = 1024 * 1024  # small blocks so modest blobs span many


def _data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _tree() -> dict[str, bytes]:
    files = {
        "big/one.bin": _data(9 * BLOCK + 12345, 1),
        "big/two.bin": _data(3 * BLOCK, 2),
        "empty.bin": b"",
        "deep/a/b/c/d/leaf.txt": b"leaf\n",
        "unicode/naïve café ✓.txt": "héllo\n".encode(),
        "spaces in/name with spaces.txt": b"spaces\n",
    }
    for d in range(8):
        for i in range(25):
            files[f"small/d{d}/f{i:03d}.dat"] = _data(
                random.Random(d * 100 + i).randrange(1, 40000), 1000 + d * 100 + i
            )
    return files


@pytest.fixture
def blob_daemon(make_daemon, azurite: Azurite) -> DsmountDaemon:
    return make_daemon(
        config_text=f'[cache]\nblock_size = "{BLOCK}"\nmemory_budget = "64MiB"\n'
        "[metadata]\nttl = 60\n"
    )


def attach(daemon: DsmountDaemon, azurite: Azurite, name: str, container: str, *extra: str) -> Path:
    daemon.cli(
        "attach",
        name,
        "--blob",
        "--container",
        container,
        "--connection-string-env",
        "AZ_CONN",
        *extra,
        env={"AZ_CONN": azurite.connection_string},
    )
    return daemon.mountpoint / name


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(256 * 1024):
            h.update(chunk)
    return h.hexdigest()


def test_every_file_reads_exactly_in_parallel_and_the_tree_matches(
    blob_daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient
) -> None:
    files = _tree()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: blob_container.upload_blob(kv[0], kv[1]), files.items()))
    root = attach(blob_daemon, azurite, "data", blob_container.container_name)

    # os.walk lists exactly the container: names, types, sizes.
    seen: dict[str, int] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            seen[str(p.relative_to(root))] = p.stat().st_size
    assert seen == {k: len(v) for k, v in files.items()}

    # sha256 of every file, read from 8 threads at once, equals what was uploaded.
    with ThreadPoolExecutor(8) as pool:
        digests = dict(zip(files, pool.map(lambda rel: _sha(root / rel), files), strict=True))
    for rel, data in files.items():
        assert digests[rel] == hashlib.sha256(data).hexdigest(), rel

    # Modes and types as configured; the mount is read-only.
    st = (root / "big/one.bin").stat()
    assert oct(st.st_mode & 0o777) == "0o444"
    with pytest.raises(OSError) as e:
        open(root / "big/new.bin", "wb")  # noqa: SIM115
    assert e.value.errno == errno.EROFS
    with pytest.raises(FileNotFoundError):
        (root / "big/missing.bin").stat()

    status = blob_daemon.call("status")
    (ds,) = status["datastores"]
    assert ds["bytes_read"] >= sum(len(v) for v in files.values())
    assert ds["blocks_fetched"] > 0 and ds["backend_errors"] == 0
    assert status["cache"]["peak_bytes"] <= status["cache"]["budget_bytes"]


def test_names_that_cannot_be_posix_names_are_skipped_and_markers_are_directories(
    blob_daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient
) -> None:
    blob_container.upload_blob("ok.txt", b"ok")
    blob_container.upload_blob("a//b", b"empty segment")
    blob_container.upload_blob("x", b"a blob named like a directory")
    blob_container.upload_blob("x/y", b"inside x")
    blob_container.upload_blob("long/" + "n" * 300, b"segment over 255 bytes")
    blob_container.upload_blob("long/fine.txt", b"fine")
    blob_container.upload_blob("marker", b"", metadata={"hdi_isfolder": "true"})
    blob_container.upload_blob("marker2", b"", metadata={"hdi_isfolder": "true"})
    blob_container.upload_blob("marker2/inside.txt", b"in marker2")
    root = attach(blob_daemon, azurite, "odd", blob_container.container_name)

    names = sorted(os.listdir(root))
    assert names == ["a", "long", "marker", "marker2", "ok.txt", "x"]
    assert (root / "x").is_dir()  # both a blob and a prefix: the directory wins
    assert (root / "x/y").read_bytes() == b"inside x"
    assert os.listdir(root / "a") == []  # "a//b" has an empty segment: skipped
    assert sorted(os.listdir(root / "long")) == ["fine.txt"]
    assert (root / "marker").is_dir() and os.listdir(root / "marker") == []
    assert sorted(os.listdir(root / "marker2")) == ["inside.txt"]
    assert (root / "ok.txt").read_bytes() == b"ok"
    assert blob_daemon.alive()


def test_prefix_is_the_datastore_root(
    blob_daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient
) -> None:
    blob_container.upload_blob("outside.txt", b"no")
    blob_container.upload_blob("some/prefix/train/1.txt", b"one")
    blob_container.upload_blob("some/prefix/val.txt", b"val")
    root = attach(
        blob_daemon, azurite, "pfx", blob_container.container_name, "--prefix", "some/prefix"
    )
    assert sorted(os.listdir(root)) == ["train", "val.txt"]
    assert (root / "train/1.txt").read_bytes() == b"one"
    assert not (root / "outside.txt").exists()


def test_a_blob_replaced_under_an_open_handle_fails_it_and_refresh_shows_the_new_one(
    blob_daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient
) -> None:
    old = _data(6 * BLOCK, 10)
    new = _data(5 * BLOCK + 7, 11)
    blob_container.upload_blob("model.bin", old)
    root = attach(blob_daemon, azurite, "rw", blob_container.container_name)
    path = root / "model.bin"
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == old[:4096]  # pinned to the old ETag from here on
        blob_container.upload_blob("model.bin", new, overwrite=True)
        with pytest.raises(OSError) as e:
            # Far from what was read, so neither the cache nor read-ahead holds it.
            os.pread(fd, 4096, 5 * BLOCK)
        assert e.value.errno in (errno.ESTALE, errno.EIO)
    finally:
        os.close(fd)
    blob_daemon.cli("refresh", "rw")
    assert path.stat().st_size == len(new)
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(new).digest()


def test_second_read_of_unchanged_data_comes_from_the_page_cache(
    blob_daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient
) -> None:
    data = _data(4 * BLOCK, 12)
    blob_container.upload_blob("epoch.bin", data)
    root = attach(blob_daemon, azurite, "epochs", blob_container.container_name)
    assert (root / "epoch.bin").read_bytes() == data
    before = blob_daemon.call("status")["datastores"][0]["bytes_read"]
    assert (root / "epoch.bin").read_bytes() == data  # same ETag: keep_cache
    after = blob_daemon.call("status")["datastores"][0]["bytes_read"]
    assert after == before  # no read reached the daemon


def test_bad_credentials_fail_the_attach_with_one_clear_line(
    blob_daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient
) -> None:
    wrong = azurite.connection_string.replace(Azurite.KEY, "d3Jvbmcga2V5IGZvciB0ZXN0cw==")
    result = blob_daemon.cli(
        "attach",
        "bad",
        "--blob",
        "--container",
        blob_container.container_name,
        "--connection-string-env",
        "AZ_CONN",
        check=False,
        env={"AZ_CONN": wrong},
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsmount: "), result.stderr
    assert "d3Jvbmcga2V5" not in result.stderr + result.stdout
    assert "bad" not in os.listdir(blob_daemon.mountpoint)
