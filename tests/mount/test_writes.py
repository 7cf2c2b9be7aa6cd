"""Writing through a real mount into a blob container of a real Azurite: Python writes of big
and small files, `cp -r`, `tar x`, `rsync -a`, the checkpoint pattern, appends, directories and
renames; every object read back with the SDK (not the mount) and compared by sha256.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from azure.storage.blob import ContainerClient

from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon
from tests.support.trees import MiB, default_tree_spec, make_tree

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

CONFIG = (
    '[cache]\nblock_size = "1MiB"\nmemory_budget = "64MiB"\n'
    '[writes]\nenabled = true\npart_size = "1MiB"\n'
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def attach(daemon: DsmountDaemon, azurite: Azurite, name: str, container: str,
           *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return daemon.cli(
        "attach", name, "--blob", "--container", container,
        "--connection-string-env", "AZ_CONN", *extra,
        env={"AZ_CONN": azurite.connection_string}, check=check,
    )


@pytest.fixture
def rw(make_daemon, azurite: Azurite, blob_container: ContainerClient
       ) -> tuple[DsmountDaemon, Path]:
    daemon = make_daemon(config_text=CONFIG)
    name = unique("out")
    attach(daemon, azurite, name, blob_container.container_name, "--read-write")
    return daemon, daemon.mountpoint / name


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blobs(container: ContainerClient, prefix: str = "") -> dict[str, str]:
    """sha256 of every non-marker blob below `prefix`, read with the SDK."""
    out = {}
    for props in container.list_blobs(name_starts_with=prefix or None, include=["metadata"]):
        if (props.metadata or {}).get("hdi_isfolder") == "true":
            continue
        data = container.get_blob_client(props.name).download_blob().readall()
        out[props.name[len(prefix):]] = sha(data)
    return out


def tree_shas(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[p.relative_to(root).as_posix()] = sha(p.read_bytes())
    return out


def test_python_writes_of_large_and_small_files(
    rw: tuple[DsmountDaemon, Path], blob_container: ContainerClient
) -> None:
    daemon, mnt = rw
    big = os.urandom(24 * MiB + 12345)
    with open(mnt / "big.bin", "wb") as f:
        for i in range(0, len(big), 1 << 20):
            f.write(big[i : i + (1 << 20)])
    small = {f"small/{i:03d}.txt": f"small file {i}\n".encode() * (i + 1) for i in range(40)}
    os.mkdir(mnt / "small")
    for name, body in small.items():
        (mnt / name).write_bytes(body)
    (mnt / "empty").write_bytes(b"")
    expected = {"big.bin": sha(big), "empty": sha(b""), **{k: sha(v) for k, v in small.items()}}
    assert blobs(blob_container) == expected
    assert (mnt / "big.bin").stat().st_size == len(big)
    assert sha((mnt / "big.bin").read_bytes()) == sha(big)  # and back through the mount
    assert sorted(os.listdir(mnt / "small")) == sorted(n.split("/")[1] for n in small)
    status = daemon.call("status")
    entry = next(d for d in status["datastores"] if d["path"] == mnt.name)
    assert entry["bytes_written"] == len(big) + sum(map(len, small.values()))
    assert entry["commits"] == len(expected) and entry["failed_commits"] == 0
    assert entry["writers_open"] == 0 and entry["read_write"] is True
    human = daemon.cli("status").stdout
    assert f"{len(expected)} commit(s), 0 failed, 0 writer(s) open" in human


def test_cp_tar_and_rsync_into_the_mount(
    rw: tuple[DsmountDaemon, Path], blob_container: ContainerClient, tmp_path: Path
) -> None:
    _, mnt = rw
    spec = default_tree_spec(many=120)
    src = make_tree(tmp_path / "src", spec)
    want = tree_shas(src)
    subprocess.run(["cp", "-r", str(src), str(mnt / "cp")], check=True, timeout=300)
    subprocess.run(["cp", "-a", str(src), str(mnt / "cpa")], check=True, timeout=300)
    archive = tmp_path / "src.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(src), "."], check=True, timeout=300)
    os.mkdir(mnt / "tar")
    subprocess.run(["tar", "xf", str(archive), "-C", str(mnt / "tar")], check=True, timeout=300)
    subprocess.run(["rsync", "-a", f"{src}/", str(mnt / "rsync")], check=True, timeout=300)
    for where in ("cp", "cpa", "tar", "rsync"):
        assert blobs(blob_container, f"{where}/") == want, where
        assert (mnt / where / "empty-dir").is_dir()  # a marker blob keeps it
    # A second rsync finds nothing to do and changes nothing.
    again = subprocess.run(["rsync", "-a", "--itemize-changes", f"{src}/", str(mnt / "rsync")],
                           check=True, timeout=300, capture_output=True, text=True)
    assert blobs(blob_container, "rsync/") == want
    assert again.returncode == 0


def test_the_checkpoint_pattern_with_numpy_and_pickle(
    rw: tuple[DsmountDaemon, Path], blob_container: ContainerClient
) -> None:
    _, mnt = rw
    os.mkdir(mnt / "ckpt")
    first = np.arange(3 * MiB // 8, dtype=np.float64)
    np.save(mnt / "ckpt" / "model.npy", first)
    old_bytes = (mnt / "ckpt" / "model.npy").read_bytes()
    reader = open(mnt / "ckpt" / "model.npy", "rb")  # noqa: SIM115 - kept open on purpose
    try:
        head = reader.read(MiB)
        for step in range(3):
            weights = first * (step + 2)
            tmp = mnt / "ckpt" / f".model.npy.tmp{step}"
            with open(tmp, "wb") as f:
                np.save(f, weights)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, mnt / "ckpt" / "model.npy")
            assert np.array_equal(np.load(mnt / "ckpt" / "model.npy"), weights)
            got = blob_container.get_blob_client("ckpt/model.npy").download_blob().readall()
            assert got == (mnt / "ckpt" / "model.npy").read_bytes()
        # The reader of the old checkpoint: its bytes, or ESTALE; never a mix.
        try:
            rest = reader.read()
        except OSError as e:
            assert e.errno == errno.ESTALE
        else:
            assert head + rest == old_bytes
    finally:
        reader.close()
    state = {"step": 7, "weights": list(range(1000))}
    with open(mnt / "ckpt" / "state.pkl.tmp", "wb") as f:
        pickle.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(mnt / "ckpt" / "state.pkl.tmp", mnt / "ckpt" / "state.pkl")
    assert pickle.loads(blob_container.get_blob_client("ckpt/state.pkl").download_blob()
                        .readall()) == state
    assert sorted(os.listdir(mnt / "ckpt")) == ["model.npy", "state.pkl"]
    assert set(blobs(blob_container, "ckpt/")) == {"model.npy", "state.pkl"}


def test_directories_renames_and_removal(
    rw: tuple[DsmountDaemon, Path], blob_container: ContainerClient
) -> None:
    _, mnt = rw
    os.makedirs(mnt / "a" / "b")
    assert blob_container.get_blob_client("a/b").get_blob_properties().metadata == {
        "hdi_isfolder": "true"
    }
    for i in range(5):
        (mnt / "a" / "b" / f"f{i}").write_bytes(b"x" * i)
    os.rename(mnt / "a", mnt / "moved")
    assert sorted(os.listdir(mnt / "moved" / "b")) == [f"f{i}" for i in range(5)]
    assert blobs(blob_container) == {f"moved/b/f{i}": sha(b"x" * i) for i in range(5)}
    assert not (mnt / "a").exists()
    with pytest.raises(OSError) as e:
        os.rmdir(mnt / "moved" / "b")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(IsADirectoryError):
        os.unlink(mnt / "moved")
    for i in range(5):
        os.unlink(mnt / "moved" / "b" / f"f{i}")
    os.rmdir(mnt / "moved" / "b")
    os.rmdir(mnt / "moved")
    assert os.listdir(mnt) == [] and list(blob_container.list_blobs()) == []
    (mnt / "f").write_bytes(b"f")
    with pytest.raises(OSError) as e:
        os.link(mnt / "f", mnt / "g")
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.symlink("f", mnt / "s")
    assert e.value.errno == errno.EPERM
    os.chmod(mnt / "f", 0o600)  # accepted, not stored
    os.utime(mnt / "f", (1, 1))


def test_appends_and_updates(rw: tuple[DsmountDaemon, Path], blob_container: ContainerClient
                             ) -> None:
    _, mnt = rw
    log = mnt / "train.log"
    expected = b""
    for i in range(50):
        with open(log, "a") as f:
            line = f"step {i} loss {1 / (i + 1):.4f}\n"
            f.write(line)
        expected += line.encode()
    assert blob_container.get_blob_client("train.log").download_blob().readall() == expected
    assert log.read_bytes() == expected
    with open(log, "r+b") as f:  # an update in place
        f.seek(5)
        f.write(b"XX")
    expected = expected[:5] + b"XX" + expected[7:]
    assert blob_container.get_blob_client("train.log").download_blob().readall() == expected
    os.truncate(log, 10)
    assert blob_container.get_blob_client("train.log").download_blob().readall() == expected[:10]


def test_read_only_datastores_and_versions_refuse_writes(
    make_daemon, azurite: Azurite, blob_container: ContainerClient
) -> None:
    daemon = make_daemon(config_text=CONFIG)
    blob_container.upload_blob("keep.txt", b"keep")
    name = unique("ro")
    attach(daemon, azurite, name, blob_container.container_name)
    mnt = daemon.mountpoint / name
    attempts = [
        lambda: open(mnt / "new.txt", "w"),  # noqa: SIM115
        lambda: open(mnt / "keep.txt", "a"),  # noqa: SIM115
        lambda: os.mkdir(mnt / "d"),
        lambda: os.unlink(mnt / "keep.txt"),
        lambda: os.rename(mnt / "keep.txt", mnt / "k2"),
        lambda: os.truncate(mnt / "keep.txt", 0),
        lambda: os.mkdir(daemon.mountpoint / "not-a-datastore"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS
    failed = attach(daemon, azurite, unique("v"), blob_container.container_name,
                    "--version", "1", "--read-write", check=False)
    assert failed.returncode != 0 and "immutable" in failed.stderr
    version = unique("ver")
    attach(daemon, azurite, version, blob_container.container_name, "--version", "1")
    for attempt in (
        lambda: open(daemon.mountpoint / version / "1" / "new.txt", "w"),  # noqa: SIM115
        lambda: os.mkdir(daemon.mountpoint / version / "1" / "d"),
        lambda: os.unlink(daemon.mountpoint / version / "1" / "keep.txt"),
    ):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS
    assert blob_container.get_blob_client("keep.txt").download_blob().readall() == b"keep"
    listed = daemon.cli("list").stdout.splitlines()
    mode_column = listed[0].split().index("MODE")
    assert next(line.split() for line in listed if line.startswith(name))[mode_column] == "ro"


def test_a_read_write_attachment_survives_a_restart(
    rw: tuple[DsmountDaemon, Path], blob_container: ContainerClient
) -> None:
    daemon, mnt = rw
    (mnt / "before").write_bytes(b"1")
    daemon.restart()
    (mnt / "after").write_bytes(b"2")
    assert blobs(blob_container) == {"before": sha(b"1"), "after": sha(b"2")}


def test_a_config_entry_attaches_read_write(
    make_daemon, azurite: Azurite, blob_container: ContainerClient
) -> None:
    config = CONFIG + (
        '[[datastore]]\nname = "cfg"\nkind = "blob"\n'
        f'container = "{blob_container.container_name}"\nread_write = true\n'
        'auth = {kind = "connection_string", env = "AZ_CONN"}\n'
    )
    daemon = make_daemon(config_text=config, env={"AZ_CONN": azurite.connection_string})
    (daemon.mountpoint / "cfg" / "from-config.txt").write_bytes(b"config")
    assert blob_container.get_blob_client("from-config.txt").download_blob().readall() == (
        b"config"
    )
