"""Integrity end to end: bytes that do not match the MD5 the service sent are never served.

- Files: a GET of at most 4 MiB asks for the range's MD5; a body corrupted in transit (the
  emulator flips a byte after computing it) is refused: EIO and an error line in the log, and
  the next read (the corruption gone) is exact.
- Files and Blob: a read covering a whole object is checked against the object's stored MD5;
  a wrong one means EIO, a right one is served.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient, ContentSettings
from azure.storage.fileshare import ShareClient

from dsmount.node.cache.blocks import FAILURE_TTL
from tests.faults.conftest import MiB, attach_blob, fault_config, status_of
from tests.faults.content import pattern_bytes
from tests.support.azurefiles import AzureFilesEmulator
from tests.support.azurefiles_fixture import seed_files
from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon, wait_until

pytestmark = pytest.mark.mount

KEY_VAR = "DSM_FAULT_FILES_KEY"


def attach_share(daemon: DsmountDaemon, emu: AzureFilesEmulator, name: str, share: str) -> Path:
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
        env={KEY_VAR: emu.key},
    )
    return daemon.mountpoint / name


def read_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_errno(path: Path) -> int:
    with pytest.raises(OSError) as info:
        read_file(path)
    return info.value.errno or 0


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_fileshare_range_corrupted_in_transit_is_never_served(
    make_daemon: Callable[..., DsmountDaemon],
    azurefiles: AzureFilesEmulator,
    file_share: ShareClient,
) -> None:
    data = pattern_bytes(61, 0, 3 * MiB + 5)
    seed_files(azurefiles, file_share.share_name, {"d/data.bin": data})
    daemon = make_daemon(config_text=fault_config(block_size="1MiB", readahead_max="1MiB"))
    root = attach_share(daemon, azurefiles, "files", file_share.share_name)
    assert os.listdir(root / "d") == ["data.bin"]  # metadata cached: next GET is the read

    azurefiles.faults.corrupt_next(1, methods={"GET"})
    assert read_errno(root / "d" / "data.bin") == errno.EIO
    assert azurefiles.faults.injected_corruptions == 1
    wait_until(lambda: "integrity check failed" in daemon.log_text(), 5, "the log line")
    st = status_of(daemon, "files")
    assert st["fetch_errors"] >= 1 and "MD5" in (st["backend_last_error"] or ""), st
    # Nothing wrong was cached: once the corruption is gone the file reads exactly.
    wait_until(
        lambda: read_or_none(root / "d" / "data.bin") == data,
        FAILURE_TTL + 5,
        "an exact read after the corruption",
    )


def read_or_none(path: Path) -> bytes | None:
    try:
        return read_file(path)
    except OSError:
        return None


def test_fileshare_whole_file_checked_against_its_stored_md5(
    make_daemon: Callable[..., DsmountDaemon],
    azurefiles: AzureFilesEmulator,
    file_share: ShareClient,
) -> None:
    # 6 MiB in one 8 MiB block: too big for a range MD5, so the stored MD5 is what is checked.
    good, bad = pattern_bytes(62, 0, 6 * MiB), pattern_bytes(63, 0, 6 * MiB)
    seed_files(azurefiles, file_share.share_name, {"good.bin": good, "bad.bin": bad})
    for name, md5 in (("good.bin", md5_b64(good)), ("bad.bin", md5_b64(b"other bytes"))):
        file_share.get_file_client(name).set_http_headers(
            ContentSettings(content_md5=bytearray(base64.b64decode(md5)))
        )
    daemon = make_daemon(config_text=fault_config(block_size="8MiB", readahead_max="8MiB"))
    root = attach_share(daemon, azurefiles, "stored", file_share.share_name)
    assert read_file(root / "good.bin") == good
    assert read_errno(root / "bad.bin") == errno.EIO
    assert "integrity check failed" in daemon.log_text()


@pytest.mark.azurite
def test_blob_whole_blob_checked_against_its_stored_md5(
    make_daemon: Callable[..., DsmountDaemon],
    azurite: Azurite,
    blob_container: ContainerClient,
) -> None:
    small, big = pattern_bytes(64, 0, 3 * MiB), pattern_bytes(65, 0, 6 * MiB)
    for name, data in (("small-good.bin", small), ("big-good.bin", big), ("big-bad.bin", big)):
        blob_container.upload_blob(name, data)
        md5 = md5_b64(data) if "good" in name else md5_b64(b"other bytes")
        blob_container.get_blob_client(name).set_http_headers(
            ContentSettings(content_md5=bytearray(base64.b64decode(md5)))
        )
    daemon = make_daemon(config_text=fault_config(block_size="8MiB", readahead_max="8MiB"))
    root = attach_blob(daemon, "blobs", blob_container.container_name, azurite.connection_string)
    assert read_file(root / "small-good.bin") == small  # range MD5 (3 MiB <= 4 MiB) checked
    assert read_file(root / "big-good.bin") == big  # stored MD5 of the whole blob checked
    assert read_errno(root / "big-bad.bin") == errno.EIO
    assert "integrity check failed" in daemon.log_text()
