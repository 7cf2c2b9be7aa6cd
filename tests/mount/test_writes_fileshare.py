"""Writing through a real mount into a share of the Azure Files emulator: a new file is
written under a temporary name and renamed into place at close, directories and renames are
native; every file read back with the SDK (not the mount) and compared by sha256.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from azure.storage.fileshare import ShareClient

from dsmount.storage.writes import is_temp_name
from tests.support.azurefiles import AzureFilesEmulator
from tests.support.daemon import DsmountDaemon, wait_until
from tests.support.trees import MiB, default_tree_spec, make_tree

pytestmark = pytest.mark.mount

KEY_VAR = "DSMOUNT_TEST_FILES_KEY"
CONFIG = (
    '[cache]\nblock_size = "1MiB"\nmemory_budget = "64MiB"\n'
    '[writes]\nenabled = true\npart_size = "1MiB"\n'
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def rw(make_daemon, azurefiles: AzureFilesEmulator, file_share: ShareClient
       ) -> tuple[DsmountDaemon, Path]:
    daemon = make_daemon(config_text=CONFIG)
    name = f"fs-{uuid.uuid4().hex[:8]}"
    daemon.cli("attach", name, "--fileshare", "--share", file_share.share_name, "--endpoint",
               azurefiles.endpoint, "--account-key-env", KEY_VAR, "--read-write",
               env={KEY_VAR: azurefiles.key})
    return daemon, daemon.mountpoint / name


def files(share: ShareClient, path: str = "") -> dict[str, str]:
    """sha256 of every file below `path`, read with the SDK; temporary files included (a test
    asserts there are none)."""
    out = {}
    todo = [path]
    while todo:
        d = todo.pop()
        for item in share.get_directory_client(d).list_directories_and_files():
            rel = f"{d}/{item['name']}" if d else item["name"]
            if item["is_directory"]:
                todo.append(rel)
            else:
                data = share.get_file_client(rel).download_file().readall()
                out[rel[len(path) + 1 :] if path else rel] = sha(data)
    return out


def test_a_new_file_is_invisible_until_its_close(
    rw: tuple[DsmountDaemon, Path], file_share: ShareClient
) -> None:
    _, mnt = rw
    body = os.urandom(5 * MiB + 3)
    with open(mnt / "out.bin", "wb") as f:
        f.write(body[: 3 * MiB])
        f.flush()

        def raw() -> list[str]:
            return [i["name"] for i in file_share.list_directories_and_files()]

        # Parts upload in the background, under a temporary name ...
        wait_until(lambda: [n for n in raw() if is_temp_name(n)], 20, "a temporary file")
        assert "out.bin" not in raw()  # ... not under its own name yet,
        assert os.listdir(mnt) == ["out.bin"]  # and the mount never shows the temporary one
        f.write(body[3 * MiB :])
    assert files(file_share) == {"out.bin": sha(body)}
    assert (mnt / "out.bin").read_bytes() == body


def test_trees_renames_and_directories(
    rw: tuple[DsmountDaemon, Path], file_share: ShareClient, tmp_path: Path
) -> None:
    _, mnt = rw
    src = make_tree(tmp_path / "src", default_tree_spec(many=60))
    subprocess.run(["cp", "-r", str(src), str(mnt / "copy")], check=True, timeout=300)
    subprocess.run(["rsync", "-a", f"{src}/", str(mnt / "synced")], check=True, timeout=300)
    want = {}
    for dirpath, _, names in os.walk(src):
        for n in names:
            p = Path(dirpath) / n
            want[p.relative_to(src).as_posix()] = sha(p.read_bytes())
    assert files(file_share, "copy") == want
    assert files(file_share, "synced") == want
    os.rename(mnt / "copy", mnt / "renamed")  # the service's own directory rename
    assert files(file_share, "renamed") == want and not (mnt / "copy").exists()
    (mnt / "renamed" / "tmp.ckpt").write_bytes(b"new")
    os.replace(mnt / "renamed" / "tmp.ckpt", mnt / "renamed" / "README.txt")
    assert file_share.get_file_client("renamed/README.txt").download_file().readall() == b"new"
    os.mkdir(mnt / "empty")
    assert file_share.get_directory_client("empty").exists()
    with pytest.raises(OSError) as e:
        os.rmdir(mnt / "renamed")
    assert e.value.errno == errno.ENOTEMPTY
    os.rmdir(mnt / "empty")
    assert not file_share.get_directory_client("empty").exists()


def test_appends_on_a_share(rw: tuple[DsmountDaemon, Path], file_share: ShareClient) -> None:
    _, mnt = rw
    expected = b""
    for i in range(30):
        with open(mnt / "events.log", "ab") as f:
            f.write(f"event {i}\n".encode())
        expected += f"event {i}\n".encode()
    assert file_share.get_file_client("events.log").download_file().readall() == expected


def test_concurrent_writers_of_different_files(
    rw: tuple[DsmountDaemon, Path], file_share: ShareClient
) -> None:
    _, mnt = rw
    bodies = {f"w{i}.bin": os.urandom(3 * MiB + i) for i in range(6)}

    def write(name: str) -> None:
        with open(mnt / name, "wb") as f:
            for off in range(0, len(bodies[name]), 256 * 1024):
                f.write(bodies[name][off : off + 256 * 1024])

    threads = [threading.Thread(target=write, args=(n,)) for n in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert files(file_share) == {n: sha(b) for n, b in bodies.items()}
