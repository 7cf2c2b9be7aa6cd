"""Azure file shares through a real daemon and a real FUSE mount (issue 6's "Done means").

The share lives in the Azure Files emulator (tests/support/azurefiles), in this test process; the
daemon is a separate process talking to it over HTTP on 127.0.0.1, attached with the real CLI.
The big data set (nested directories, a 64 MiB file, small files and a 50,000-entry directory)
is built once per module and read by several tests; tests that break things get their own share
and daemon.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient
from azure.storage.fileshare import ShareClient

from tests.support.azurefiles import AzureFilesEmulator
from tests.support.azurefiles_fixture import seed_files, unique_share, upload_tree
from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon
from tests.support.trees import MiB, default_tree_spec, describe_tree, make_tree, sha256_file

pytestmark = pytest.mark.mount

HUGE_DIR = "huge"
HUGE_ENTRIES = 50_000
KEY_VAR = "DSMOUNT_TEST_FILES_KEY"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def huge_content(i: int) -> bytes:
    # Mostly empty files keep 50,000 opens cheap; every 500th has bytes, read like the rest.
    return f"entry {i}\n".encode() * (i % 7 + 1) if i % 500 == 0 else b""


def attach_share(
    daemon: DsmountDaemon, emu: AzureFilesEmulator, name: str, share: str, *extra: str
) -> Path:
    daemon.cli(
        "attach",
        name,
        "--fileshare",
        "--share",
        share,
        "--endpoint",
        emu.endpoint,
        "--account-key-env",
        KEY_VAR,
        *extra,
        env={KEY_VAR: emu.key},
    )
    return daemon.mountpoint / name


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI failed with exactly one line on stderr (no traceback); that line."""
    assert result.returncode != 0, f"expected the command to fail: {result.stdout}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def emu() -> Iterator[AzureFilesEmulator]:
    with AzureFilesEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def dataset(
    emu: AzureFilesEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """(share name, local source tree): the standard tree plus a 64 MiB file, nested dirs and
    a 50,000-entry directory, uploaded through the SDK (the huge directory seeded directly)."""
    spec = default_tree_spec()
    spec["big/large-64MiB.bin"] = 64 * MiB + 4321
    spec["nested/a/b/c/d/small.txt"] = b"small\n"
    spec["nested/a/b/sibling.bin"] = 3 * MiB + 17
    source = make_tree(tmp_path_factory.mktemp("fileshare-source") / "tree", spec)
    share = ShareClient.from_connection_string(
        emu.connection_string, unique_share("data"), allow_trailing_dot=True
    )
    share.create_share()
    try:
        upload_tree(share, source)
        huge = {f"{HUGE_DIR}/e{i:05d}.dat": huge_content(i) for i in range(HUGE_ENTRIES)}
        seed_files(emu, share.share_name, huge)
        for rel, content in huge.items():  # the local twin, for the os.walk comparison
            path = source / rel
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(content)
        yield share.share_name, source
    finally:
        share.delete_share()
        share.close()


@pytest.fixture(scope="module")
def mounted(
    shared_dsmount_daemon: DsmountDaemon, emu: AzureFilesEmulator, dataset: tuple[str, Path]
) -> Path:
    share, _ = dataset
    return attach_share(shared_dsmount_daemon, emu, unique("files"), share)


def test_share_walks_like_the_source(mounted: Path, dataset: tuple[str, Path]) -> None:
    _, source = dataset
    want = describe_tree(source)
    got = describe_tree(mounted)
    assert sorted(got) == sorted(want)
    assert {p: (n.kind, n.size) for p, n in got.items()} == {
        p: (n.kind, n.size) for p, n in want.items()
    }
    # File mtimes are the share's last-write times, which the upload set from the source.
    off = {
        p: (got[p].mtime, want[p].mtime)
        for p, n in want.items()
        if n.kind == "file" and not p.startswith(HUGE_DIR + "/")
        if abs(got[p].mtime - want[p].mtime) > 1e-6
    }
    assert off == {}
    with os.scandir(mounted / HUGE_DIR) as it:
        assert sum(1 for _ in it) == HUGE_ENTRIES


def test_every_file_hashes_like_the_source(mounted: Path, dataset: tuple[str, Path]) -> None:
    _, source = dataset
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    assert len(files) > HUGE_ENTRIES + 1000

    def both(rel: str) -> tuple[str, str]:
        return sha256_file(source / rel), sha256_file(mounted / rel)

    with ThreadPoolExecutor(8) as pool:
        mismatched = [
            rel for rel, (a, b) in zip(files, pool.map(both, files), strict=True) if a != b
        ]
    assert mismatched == []


def test_large_file_reads_exactly_at_any_offset(mounted: Path, dataset: tuple[str, Path]) -> None:
    _, source = dataset
    rel = "big/large-64MiB.bin"
    data = (source / rel).read_bytes()
    fd = os.open(mounted / rel, os.O_RDONLY)
    try:
        for offset, length in [
            (len(data) - 100, 1000),
            (33 * MiB - 3, 2 * MiB + 5),
            (7, 13),
            (len(data), 10),
        ]:
            assert os.pread(fd, length, offset) == data[offset : offset + length]
    finally:
        os.close(fd)


def test_blob_container_and_file_share_side_by_side(
    dsmount_daemon: DsmountDaemon,
    emu: AzureFilesEmulator,
    blob_container: ContainerClient,
    azurite: Azurite,
) -> None:
    blob_container.upload_blob("from/blob.txt", b"blob bytes\n")
    share = ShareClient.from_connection_string(emu.connection_string, unique_share("side"))
    share.create_share()
    try:
        share.create_directory("from")
        share.get_file_client("from/share.txt").upload_file(b"share bytes\n")
        files = attach_share(dsmount_daemon, emu, "files", share.share_name)
        dsmount_daemon.cli(
            "attach",
            "blobs",
            "--blob",
            "--container",
            blob_container.container_name,
            "--connection-string-env",
            "BLOB_CONN",
            env={"BLOB_CONN": azurite.connection_string},
        )
        blobs = dsmount_daemon.mountpoint / "blobs"
        assert sorted(os.listdir(dsmount_daemon.mountpoint)) == ["blobs", "files"]
        assert (blobs / "from" / "blob.txt").read_bytes() == b"blob bytes\n"
        assert (files / "from" / "share.txt").read_bytes() == b"share bytes\n"
        listing = dsmount_daemon.cli("list", "--json").stdout
        assert '"fileshare"' in listing and '"blob"' in listing
        assert emu.key not in listing
    finally:
        share.delete_share()
        share.close()


def test_bad_credentials_fail_at_attach(
    dsmount_daemon: DsmountDaemon, emu: AzureFilesEmulator
) -> None:
    share = ShareClient.from_connection_string(emu.connection_string, unique_share("bad"))
    share.create_share()
    wrong = "d3Jvbmcta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3ODlhYmNkZWZnaGlqaw=="
    try:
        started = time.monotonic()
        result = dsmount_daemon.cli(
            "attach",
            "nope",
            "--fileshare",
            "--share",
            share.share_name,
            "--endpoint",
            emu.endpoint,
            "--account-key-env",
            KEY_VAR,
            env={KEY_VAR: wrong},
            check=False,
        )
        assert time.monotonic() - started < 20  # refused, not retried until a deadline
        line = one_error_line(result)
        assert "credentials were refused" in line and share.share_name in line
        assert wrong not in result.stdout + result.stderr + dsmount_daemon.log_text()

        missing = dsmount_daemon.cli(
            "attach",
            "nope",
            "--fileshare",
            "--share",
            unique_share("missing"),
            "--endpoint",
            emu.endpoint,
            "--account-key-env",
            KEY_VAR,
            env={KEY_VAR: emu.key},
            check=False,
        )
        assert "ShareNotFound" in one_error_line(missing)
        assert os.listdir(dsmount_daemon.mountpoint) == []
    finally:
        share.delete_share()
        share.close()


def test_a_deleted_share_fails_reads_without_hanging(
    make_daemon: Callable[..., DsmountDaemon], emu: AzureFilesEmulator
) -> None:
    deadline = 5.0
    daemon = make_daemon(
        config_text=(
            f"[retry]\nrequest_deadline = {deadline}\nattempt_timeout = 2.0\n"
            '[cache]\nblock_size = "1MiB"\nreadahead_max = "1MiB"\n'
        )
    )
    share = ShareClient.from_connection_string(emu.connection_string, unique_share("gone"))
    share.create_share()
    share.create_directory("d")
    payload = os.urandom(8 * MiB)
    share.get_file_client("d/big.bin").upload_file(payload, max_concurrency=4)
    share.get_file_client("d/other.bin").upload_file(b"never read before")
    share.create_directory("d/later")
    root = attach_share(daemon, emu, "gone", share.share_name)

    assert sorted(os.listdir(root / "d")) == ["big.bin", "later", "other.bin"]
    fd = os.open(root / "d" / "big.bin", os.O_RDONLY)
    try:
        assert os.pread(fd, 1000, 0) == payload[:1000]
        share.delete_share()
        for attempt in (
            lambda: os.pread(fd, 1000, 7 * MiB),  # an uncached block of an open file
            lambda: (root / "d" / "other.bin").read_bytes(),  # a file never read
            lambda: os.stat(root / "d" / "later" / "x"),  # a name never looked up
        ):
            started = time.monotonic()
            with pytest.raises(OSError) as info:
                attempt()
            assert info.value.errno in (errno.EIO, errno.ENOENT), info.value
            assert time.monotonic() - started < deadline + 2
        # A directory never listed: readdir fails with ENOENT, which glibc's readdir reports
        # as the end of the directory (POSIX: a removed directory), so it lists as empty.
        started = time.monotonic()
        try:
            assert os.listdir(root / "d" / "later") == []
        except OSError as exc:
            assert exc.errno in (errno.EIO, errno.ENOENT), exc
        assert time.monotonic() - started < deadline + 2
    finally:
        os.close(fd)
    # The mount itself is fine: it answers, and the datastore detaches.
    assert os.listdir(daemon.mountpoint) == ["gone"]
    daemon.cli("detach", "gone")
    assert os.listdir(daemon.mountpoint) == []
    assert daemon.alive()
