"""FUSE passthrough on the direct transport, through a real mount against a real Azurite: a
file complete and verified in the disk cache is opened with its cache file as the kernel's
backing file, so no READ reaches the daemon; and every guarantee holds across it - exact bytes,
a block found after a restart is verified before the kernel may read it, a corrupt one is never
served, a replaced blob is not served from its old file, an evicted block keeps serving the
reader that has it open, the disk budget holds.

Passthrough needs kernel >= 6.9 and root. Where the kernel lacks it, the same tests check the
fallback instead (every read through the daemon, the same bytes): they do not skip.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon, wait_until

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

MiB = 1024 * 1024


def kernel_has_passthrough() -> bool:
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) >= (6, 9) and os.geteuid() == 0


def start(make_daemon: Callable[..., DsmountDaemon], disk: Path, *, disk_budget: str = "64MiB",
          ttl: float = 600) -> DsmountDaemon:
    return make_daemon(
        config_text=('[cache]\nblock_size = "1MiB"\nmemory_budget = "8MiB"\n'
                     f'disk_dir = "{disk}"\ndisk_budget = "{disk_budget}"\n'
                     f"[metadata]\nttl = {ttl}\n"),
        extra_args=["--transport", "direct"])


def upload(container: ContainerClient, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        container.upload_blob(name, data, overwrite=True)


def attach(daemon: DsmountDaemon, azurite: Azurite, container: ContainerClient) -> Path:
    daemon.cli("attach", "d", "--blob", "--container", container.container_name,
               "--connection-string-env", "CS", env={"CS": azurite.connection_string})
    return daemon.mountpoint / "d"


def datastore(daemon: DsmountDaemon) -> dict:
    status = daemon.call("status")
    (ds,) = [d for d in status["datastores"] if d["name"] == "d"]
    return ds


def read_all(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        got = (root / name).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), name


def small_files(seed: int, n: int) -> dict[str, bytes]:
    r = random.Random(seed)
    return {f"s/{i:03d}.bin": r.randbytes(r.randrange(1, 300_000)) for i in range(n)}


def test_cached_small_files_are_read_by_the_kernel_with_no_read_request(
    make_daemon: Callable[..., DsmountDaemon], azurite: Azurite,
    blob_container: ContainerClient, tmp_path: Path,
) -> None:
    files = small_files(1, 25)
    files["big/three-blocks.bin"] = random.Random(2).randbytes(3 * MiB + 11)
    upload(blob_container, files)
    daemon = start(make_daemon, tmp_path / "disk")
    root = attach(daemon, azurite, blob_container)
    assert daemon.cli("warm", "d", "-q").returncode == 0
    status = daemon.call("status")
    assert status["fuse"]["transport"] == "direct"
    assert status["fuse"]["passthrough"] is kernel_has_passthrough()
    before = status["fuse_requests"]

    read_all(root, files)
    after = daemon.call("status")
    ds = [d for d in after["datastores"] if d["name"] == "d"][0]
    reads = after["fuse_requests"].get("read", 0) - before.get("read", 0)
    if kernel_has_passthrough():
        assert ds["passthrough_opens"] == 25  # every small file; the 3-block one is not one
        assert ds["passthrough_bytes"] == sum(len(v) for k, v in files.items()
                                              if k.startswith("s/"))
        assert 0 < reads <= 3 * MiB // (128 * 1024) + 8  # only the big file's reads
    else:
        assert ds["passthrough_opens"] == 0 and reads >= 25
    assert after["fuse_requests"].get("flush", 0) == before.get("flush", 0)  # readers: NOFLUSH
    assert after["fuse"].get("backing_files_open", 0) == 0  # every one closed at release


def test_a_block_found_at_restart_is_verified_first_and_a_corrupt_one_is_never_served(
    make_daemon: Callable[..., DsmountDaemon], azurite: Azurite,
    blob_container: ContainerClient, tmp_path: Path,
) -> None:
    files = small_files(3, 12)
    upload(blob_container, files)
    disk = tmp_path / "disk"
    daemon = start(make_daemon, disk)
    attach(daemon, azurite, blob_container)
    assert daemon.cli("warm", "d", "-q").returncode == 0
    daemon.stop()
    blocks = sorted(disk.glob("*.blk"))
    assert len(blocks) == len(files)
    victim = blocks[0]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same name and size: only the CRC can tell
    victim.write_bytes(bytes(raw))

    daemon.start()  # restores the attachment
    root = daemon.mountpoint / "d"
    wait_until(lambda: (root / "s").is_dir(), 20, "restored attachment")
    # First pass, in reverse listing order so directory-order read-ahead (which would check the
    # next files' CRCs before their opens) stays out of it: every open finds an unverified
    # block, so the daemon reads it, checks its CRC, and passes nothing through.
    read_all(root, dict(reversed(list(files.items()))))
    ds = datastore(daemon)
    assert ds["passthrough_opens"] == 0
    assert daemon.call("status")["disk_cache"]["corrupt_discarded"] == 1
    read_all(root, files)  # second pass: verified blocks go to the kernel
    expected = len(files) if kernel_has_passthrough() else 0
    assert datastore(daemon)["passthrough_opens"] == expected


def test_a_replaced_blob_is_not_served_from_its_old_file_and_open_readers_keep_theirs(
    make_daemon: Callable[..., DsmountDaemon], azurite: Azurite,
    blob_container: ContainerClient, tmp_path: Path,
) -> None:
    old = {"f.bin": b"old version " * 5000}
    upload(blob_container, old)
    daemon = start(make_daemon, tmp_path / "disk", ttl=0)
    root = attach(daemon, azurite, blob_container)
    assert daemon.cli("warm", "d", "-q").returncode == 0
    with open(root / "f.bin", "rb") as held:
        assert datastore(daemon)["passthrough_opens"] == (1 if kernel_has_passthrough() else 0)
        upload(blob_container, {"f.bin": b"NEW" * 7000})
        # The handle opened before the replace is pinned to the version it opened.
        assert held.read() == old["f.bin"]
    assert (root / "f.bin").read_bytes() == b"NEW" * 7000
    assert datastore(daemon)["passthrough_opens"] == (1 if kernel_has_passthrough() else 0)


def test_an_evicted_block_keeps_serving_its_open_reader_and_the_disk_budget_holds(
    make_daemon: Callable[..., DsmountDaemon], azurite: Azurite,
    blob_container: ContainerClient, tmp_path: Path,
) -> None:
    r = random.Random(4)
    first = {"a/first.bin": r.randbytes(400_000)}
    rest = {f"b/{i}.bin": r.randbytes(400_000) for i in range(8)}
    upload(blob_container, first | rest)
    daemon = start(make_daemon, tmp_path / "disk", disk_budget="1MiB")
    root = attach(daemon, azurite, blob_container)
    assert daemon.cli("warm", "d", "a", "-q").returncode == 0
    with open(root / "a/first.bin", "rb") as held:
        assert held.read(10) == first["a/first.bin"][:10]
        read_all(root, rest)  # 3.2 MB through a 1 MiB disk cache: first.bin's block goes
        disk = daemon.call("status")["disk_cache"]
        assert disk["used_bytes"] <= 1 * MiB
        names = {p.name.split("-")[0] for p in (tmp_path / "disk").glob("*.blk")}
        assert len(names) <= 2
        held.seek(0)
        assert held.read() == first["a/first.bin"]


def test_a_forced_detach_leaves_an_open_reader_its_bytes_and_a_new_attachment_its_own(
    make_daemon: Callable[..., DsmountDaemon], azurite: Azurite,
    blob_container: ContainerClient, tmp_path: Path,
) -> None:
    old = {"f.bin": random.Random(5).randbytes(200_000)}
    upload(blob_container, old)
    daemon = start(make_daemon, tmp_path / "disk")
    root = attach(daemon, azurite, blob_container)
    assert daemon.cli("warm", "d", "-q").returncode == 0
    fd = os.open(root / "f.bin", os.O_RDONLY)
    try:
        assert datastore(daemon)["passthrough_opens"] == (1 if kernel_has_passthrough() else 0)
        refused = daemon.cli("detach", "d", check=False)
        assert refused.returncode != 0 and "open file" in refused.stderr
        assert daemon.cli("detach", "d", "--force").returncode == 0
        wait_until(lambda: "d" not in os.listdir(daemon.mountpoint), 5, "d to go")
        upload(blob_container, {"f.bin": b"the new attachment's bytes"})
        root = attach(daemon, azurite, blob_container)
        assert (root / "f.bin").read_bytes() == b"the new attachment's bytes"
        # The descriptor opened before the detach still reads what it opened, whole.
        assert os.pread(fd, 300_000, 0) == old["f.bin"]
        assert os.pread(fd, 1000, 150_000) == old["f.bin"][150_000:151_000]
    finally:
        os.close(fd)
    wait_until(lambda: daemon.call("status")["fuse"].get("backing_files_open", 0) == 0, 10,
               "the backing file to be closed at release")
    listed = {d["path"]: d for d in daemon.call("list")["datastores"]}
    assert listed["d"]["open_files"] == 0
