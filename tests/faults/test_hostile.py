"""Hostile names and data through a real mount.

- Blob names with "..", ".", "//", odd Unicode, control characters, URL syntax, 1,024-byte
  names: every name that can be a POSIX path is listed and reads exactly; the others (a ".."
  or "." or empty segment, a segment over 255 bytes) are skipped and logged, never escape
  the datastore and never break the listing.
- A 0-byte blob; a 100 GiB blob (made of one 4 MiB block committed 25,600 times: nothing of
  that size exists anywhere) read at random offsets near its end, exactly, without ever being
  fetched whole (status bytes_fetched); a blob deleted between listing and open fails fast.
- Huge directories stream: 100,000 entries in one directory (Azure Files emulator, seeded
  directly: Azurite creates ~300 blobs/s, so 100,000 blobs cannot be made in a test's time)
  and a few thousand blobs in one virtual directory, with time and daemon RSS checked.
"""

from __future__ import annotations

import errno
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from azure.storage.blob import (
    BlobBlock,
    ContainerClient,
    ContainerSasPermissions,
    generate_container_sas,
)
from azure.storage.fileshare import ShareClient

from tests.faults.conftest import MiB, attach_blob, fault_config, status_of, upload_many
from tests.faults.content import pattern_bytes
from tests.support.azurefiles import AzureFilesEmulator
from tests.support.azurefiles_fixture import seed_files
from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

GiB = 1024 * MiB
NAME_MAX = 255


def rss(pid: int) -> int:
    """Resident set size of `pid` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def visible(name: str) -> bool:
    """Whether a blob name can be shown as a path (the rule the mount must follow)."""
    return all(
        seg not in ("", ".", "..") and len(seg.encode()) <= NAME_MAX for seg in name.split("/")
    )


HOSTILE_NAMES = [
    # Dot segments: never shown (a ".." would point outside its directory).
    "dots/../escape.txt",
    "dots/./here.txt",
    "dots/ok.txt",
    "../top.txt",
    # Empty segments.
    "slashes//double.txt",
    "slashes/ok.txt",
    "slashes/trailing/",
    # Odd Unicode: bidi override, NFC and NFD of the same letter (two names), emoji, BOM,
    # zero-width joiner, CJK, a combining sequence.
    "uni/\u202eevil.txt",
    "uni/\u00e9.txt",
    "uni/e\u0301.txt",
    "uni/\U0001f600.bin",
    "uni/\ufeffbom.txt",
    "uni/a\u200db.txt",
    "uni/\u6f22\u5b57.txt",
    "uni/Z\u0351\u036b.txt",
    # Control characters valid in XML (Azurite cannot list the others; Azure encodes them).
    "ctrl/tab\there.txt",
    "ctrl/new\nline.txt",
    "ctrl/del\x7f.txt",
    # URL syntax and shell metacharacters in names.
    "url/what?x=1&sig=abc#frag.txt",
    "url/100%25.txt",
    "url/a+b c.txt",
    "url/$(id);`x`.txt",
    "url/-rf",
    "url/trail.",
    "url/ lead",
    "url/*?[]",
    # Long names: one 300-byte segment (cannot be a file name), and a 1,024-byte path of
    # four 255-byte segments (can).
    "long/" + "x" * 300,
    "/".join(["y" * 255] * 4),
]


def put_raw(azurite: Azurite, container: str, name: str, data: bytes) -> None:
    """Put Blob with every segment percent-encoded (dots too): the SDK's URLs would have
    their "." and ".." segments normalized away by the HTTP stack."""
    sas = generate_container_sas(
        azurite.ACCOUNT,
        container,
        account_key=azurite.KEY,
        permission=ContainerSasPermissions(write=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    path = "/".join(quote(seg, safe="").replace(".", "%2E") for seg in name.split("/"))
    r = requests.put(
        f"{azurite.blob_endpoint}/{container}/{path}?{sas}",
        data=data,
        timeout=30,
        headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"},
    )
    assert r.status_code == 201, (name, r.status_code, r.text[:200])


def walk_files(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = Path(dirpath) / f
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def test_hostile_names_are_shown_exactly_or_skipped(
    make_daemon: Callable[..., DsmountDaemon],
    azurite: Azurite,
    blob_container: ContainerClient,
) -> None:
    names = HOSTILE_NAMES
    for i, name in enumerate(names):
        data = f"blob {i}: {name!r}\n".encode()
        if any(seg in (".", "..") for seg in name.split("/")):
            put_raw(azurite, blob_container.container_name, name, data)
        else:
            blob_container.upload_blob(name, data)
    stored = {b.name for b in blob_container.list_blobs()}
    assert stored == set(names), set(names) ^ stored  # the service kept every name as given
    daemon = make_daemon(config_text=fault_config())
    root = attach_blob(daemon, "hostile", blob_container.container_name, azurite.connection_string)
    expected = {
        name: f"blob {i}: {name!r}\n".encode()
        for i, name in enumerate(names)
        if visible(name) and not name.endswith("/")
    }
    assert walk_files(root) == expected
    # Nothing escaped the datastore: no "top.txt"/"escape.txt" anywhere above it.
    assert sorted(os.listdir(daemon.mountpoint)) == ["hostile"]
    assert sorted(os.listdir(root / "dots")) == ["ok.txt"]
    for bad in ("dots/../escape.txt", "long/" + "x" * 300):
        with pytest.raises(OSError) as info:
            os.stat(root / bad)
        assert info.value.errno in (errno.ENOENT, errno.ENAMETOOLONG)
    log = daemon.log_text()
    assert "skipping blob" in log and "'..' path segment" in log
    assert daemon.alive()


def test_empty_and_100gib_blobs_and_a_blob_deleted_before_open(
    make_daemon: Callable[..., DsmountDaemon],
    azurite: Azurite,
    blob_container: ContainerClient,
) -> None:
    blob_container.upload_blob("empty.bin", b"")
    # 100 GiB (+ a 1,000-byte tail) from one 4 MiB block listed 25,600 times.
    unit = 4 * MiB
    repeats = 100 * GiB // unit
    block = pattern_bytes(71, 0, unit)
    tail = pattern_bytes(72, 0, 1000)
    huge = blob_container.get_blob_client("huge.bin")
    huge.stage_block("unit", block)
    huge.stage_block("tail", tail)
    huge.commit_block_list([BlobBlock("unit")] * repeats + [BlobBlock("tail")])
    size = repeats * unit + len(tail)
    blob_container.upload_blob("doomed.bin", b"about to go")

    def expected(offset: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            if offset >= repeats * unit:
                piece = tail[offset - repeats * unit :][:length]
            else:
                piece = block[offset % unit :][:length]
            if not piece:
                break
            out += piece
            offset += len(piece)
            length -= len(piece)
        return bytes(out)

    daemon = make_daemon(config_text=fault_config(block_size="1MiB", readahead_max="4MiB"))
    root = attach_blob(daemon, "odd", blob_container.container_name, azurite.connection_string)
    assert sorted(os.listdir(root)) == ["doomed.bin", "empty.bin", "huge.bin"]

    assert os.stat(root / "empty.bin").st_size == 0
    assert (root / "empty.bin").read_bytes() == b""

    assert os.stat(root / "huge.bin").st_size == size
    r = random.Random(7)
    reads = [(size - 100, 100), (size - 1000 - 50, 100), (size - 1, 1), (size, 10)]
    reads += [(r.randrange(size - GiB, size - 65536), 65536) for _ in range(20)]
    reads += [(r.randrange(0, size - 65536), r.randrange(1, 65536)) for _ in range(10)]
    started = time.monotonic()
    fd = os.open(root / "huge.bin", os.O_RDONLY)
    try:
        for offset, length in reads:
            assert os.pread(fd, length, offset) == expected(offset, length), (offset, length)
        # The last 8 MiB sequentially: read-ahead stops at the end of the blob.
        offset, got = size - 8 * MiB, bytearray()
        while chunk := os.pread(fd, MiB, offset + len(got)):
            got += chunk
        assert bytes(got) == expected(offset, 8 * MiB)
    finally:
        os.close(fd)
    took = time.monotonic() - started
    fetched = status_of(daemon, "odd")["bytes_fetched"]
    assert fetched < 128 * MiB, f"{fetched / MiB:.0f} MiB fetched for ~10 MiB of reads"
    assert took < 30, took

    # Deleted between listing and open: ENOENT at once, and afterwards the name is gone.
    blob_container.delete_blob("doomed.bin")
    started = time.monotonic()
    with pytest.raises(FileNotFoundError):
        (root / "doomed.bin").read_bytes()
    assert time.monotonic() - started < 2
    # The daemon forgot it: a new open asks the service (the kernel may still answer a stat
    # from its attribute cache until the TTL).
    with pytest.raises(FileNotFoundError):
        open(root / "doomed.bin", "rb").close()


HUGE_DIR_ENTRIES = 100_000
BLOB_DIR_ENTRIES = int(os.environ.get("DSM_BLOB_DIR_ENTRIES", "2000"))


def test_100000_entries_in_one_directory_stream(
    make_daemon: Callable[..., DsmountDaemon],
    azurefiles: AzureFilesEmulator,
    file_share: ShareClient,
    azurite: Azurite,
    blob_container: ContainerClient,
) -> None:
    names = [f"e{i:06d}.dat" for i in range(HUGE_DIR_ENTRIES)]
    seed_files(azurefiles, file_share.share_name, {f"big/{n}": b"" for n in names})
    upload_many(blob_container, ((f"big/b{i:05d}", b"%d" % i) for i in range(BLOB_DIR_ENTRIES)))
    daemon = make_daemon(config_text=fault_config(deadline=30, attempt_timeout=15))
    assert daemon.pid is not None
    key_var = "DSM_FAULT_FILES_KEY"
    daemon.cli(
        "attach",
        "files",
        "--fileshare",
        "--share",
        file_share.share_name,
        "--endpoint",
        azurefiles.endpoint,
        "--account-key-env",
        key_var,
        env={key_var: azurefiles.key},
    )
    blobs = attach_blob(daemon, "blobs", blob_container.container_name, azurite.connection_string)
    files = daemon.mountpoint / "files"
    before = rss(daemon.pid)

    started = time.monotonic()
    with os.scandir(files / "big") as it:
        first = next(it)
        first_after = time.monotonic() - started
        seen = [first.name] + [e.name for e in it]
    total = time.monotonic() - started
    grown = rss(daemon.pid) - before
    print(
        f"{len(seen)} entries: first after {first_after:.2f}s, all after {total:.1f}s, "
        f"daemon RSS +{grown / MiB:.0f} MiB"
    )
    assert sorted(seen) == names
    assert first_after < total / 3, "the listing did not stream"
    assert total < 60
    # Roughly 1 KiB per entry for inodes, attributes and the cached listing; no copies.
    assert grown < 300 * MiB, f"daemon RSS grew {grown / MiB:.0f} MiB"
    started = time.monotonic()
    assert len(os.listdir(files / "big")) == HUGE_DIR_ENTRIES  # cached: fast
    assert time.monotonic() - started < total

    started = time.monotonic()
    listed = sorted(os.listdir(blobs / "big"))
    assert listed == [f"b{i:05d}" for i in range(BLOB_DIR_ENTRIES)]
    print(f"{BLOB_DIR_ENTRIES} blobs listed in {time.monotonic() - started:.1f}s")
    assert (blobs / "big" / "b01234").read_bytes() == b"1234"
