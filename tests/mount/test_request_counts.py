"""Backend requests per read pattern, counted by the server, through a real mount.

A private Azurite with its debug log on (tests/support/azurite_log.py: the server's own list
of every request, with the byte range of each download) and a FaultProxy in front of it (bytes
on the wire), a real daemon, reads through the mountpoint:
- small files (100 KiB), read serially as `tar` does and from 8 threads as an image decoder
  does (header first): exactly one GET each, of the whole file;
- random 64 KiB preads of a big blob: the bytes downloaded are at most twice the bytes read,
  and no byte is downloaded twice;
- a file streamed after a random read of its first bytes: no byte is downloaded twice, in about
  one GET per block;
- many streams through a budget smaller than their read-ahead windows: read-ahead does not
  evict the blocks the other streams are about to read (each byte downloaded about once);
and `dsmount status` tells the same numbers (GETs, bytes fetched) as the server.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from tests.support.azurite import Azurite
from tests.support.azurite_log import Request, downloads, settled_requests
from tests.support.daemon import DsmountDaemon
from tests.support.faultproxy import FaultProxy

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

KiB, MiB = 1024, 1024 * 1024
BLOCK = 8 * MiB  # the default block size: what the numbers are about
SMALL = 100 * KiB
N_SMALL = 100


@dataclass
class Counted:
    azurite: Azurite
    proxy: FaultProxy
    container: ContainerClient
    daemon: DsmountDaemon
    root: Path

    def gets(self) -> dict[str, list[Request]]:
        """The downloads of each blob so far, as the server logged them."""
        out: dict[str, list[Request]] = defaultdict(list)
        for r in downloads(settled_requests(self.azurite), self.container.container_name):
            out[r.blob].append(r)
        return out

    def status(self) -> dict:
        (ds,) = self.daemon.call("status")["datastores"]
        return ds


def data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def ranges(reqs: list[Request]) -> list[tuple[int, int]]:
    """(first, last + 1) of each download, in offset order."""
    out = []
    for r in reqs:
        assert r.first is not None and r.last is not None, r
        out.append((r.first, r.last + 1))
    return sorted(out)


def assert_disjoint(spans: list[tuple[int, int]]) -> None:
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"bytes {start}-{end} were downloaded twice"


@pytest.fixture
def counted(
    make_azurite: Callable[..., Azurite], make_daemon: Callable[..., DsmountDaemon]
) -> Iterator[Counted]:
    azurite = make_azurite(debug=True)
    service = azurite.blob_service_client()
    container = service.create_container("counted")
    with FaultProxy(azurite.host, azurite.blob_port) as proxy:
        daemon = make_daemon(
            config_text='[cache]\nmemory_budget = "256MiB"\n[metadata]\nttl = 600\n'
        )
        daemon.cli(
            "attach", "ds", "--blob", "--container", container.container_name,
            "--connection-string-env", "AZ_CONN",
            env={"AZ_CONN": proxy.connection_string_for(azurite.connection_string)},
        )
        try:
            yield Counted(azurite, proxy, container, daemon, daemon.mountpoint / "ds")
        finally:
            service.close()


def upload(container: ContainerClient, blobs: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: container.upload_blob(kv[0], kv[1]), blobs.items()))


def test_every_small_file_is_one_get_serially_and_from_8_threads(counted: Counted) -> None:
    files = {f"{d}/f{i:03d}.jpg": data(i + (1000 if d == "threads" else 0), SMALL)
             for d in ("serial", "threads") for i in range(N_SMALL)}
    upload(counted.container, files)
    root = counted.root
    assert len(os.listdir(root / "serial")) == len(os.listdir(root / "threads")) == N_SMALL
    assert counted.gets() == {}  # listing downloads nothing

    # Unbuffered: each read() is one read(2), so the kernel sees the reads as the tools make
    # them (a buffered open would read the whole file in one call of st_blksize bytes).
    def read_like_tar(rel: str) -> bytes:
        parts = []
        with open(root / rel, "rb", buffering=0) as f:
            while chunk := f.read(10240):  # tar's record size
                parts.append(chunk)
        return b"".join(parts)

    def read_like_a_decoder(rel: str) -> bytes:
        parts = []
        with open(root / rel, "rb", buffering=0) as f:
            os.pread(f.fileno(), 512, 0)  # sniff the header, then read it all
            while chunk := f.read(16 * KiB):
                parts.append(chunk)
        return b"".join(parts)

    for i in range(N_SMALL):
        rel = f"serial/f{i:03d}.jpg"
        assert sha(read_like_tar(rel)) == sha(files[rel])
    threaded = [f"threads/f{i:03d}.jpg" for i in range(N_SMALL)]
    with ThreadPoolExecutor(8) as pool:
        got = dict(zip(threaded, pool.map(read_like_a_decoder, threaded), strict=True))
    assert all(sha(got[rel]) == sha(files[rel]) for rel in threaded)

    gets = counted.gets()
    assert set(gets) == set(files)
    for rel, reqs in gets.items():
        assert len(reqs) == 1, f"{rel}: {len(reqs)} GETs"
        assert ranges(reqs) == [(0, SMALL)], rel  # the whole file
    st = counted.status()
    assert st["blocks_fetched"] == len(files)
    assert st["bytes_fetched"] == len(files) * SMALL
    # Every GET was started at open (read-ahead) and used by the first read.
    assert st["readahead_started"] == st["readahead_hits"] == len(files)
    assert st["cache_misses"] == 0


def test_random_64k_preads_fetch_at_most_twice_the_bytes_read(counted: Counted) -> None:
    size, n, length = 64 * MiB, 300, 64 * KiB
    big = data(1, size)
    upload(counted.container, {"big.bin": big})
    rng = random.Random(2)
    offsets = [rng.randrange(0, size - length) for _ in range(n)]
    before = counted.proxy.stats["bytes_down"]
    fd = os.open(counted.root / "big.bin", os.O_RDONLY)
    try:
        for off in offsets:
            assert os.pread(fd, length, off) == big[off : off + length]
    finally:
        os.close(fd)
    on_wire = counted.proxy.stats["bytes_down"] - before
    spans = ranges(counted.gets()["big.bin"])
    fetched = sum(end - start for start, end in spans)
    read = n * length
    print(f"{n} random 64 KiB preads: {len(spans)} GETs, {fetched / read:.2f}x the bytes read "
          f"downloaded, {on_wire / read:.2f}x on the wire (with HTTP headers)")
    assert_disjoint(spans)
    assert fetched <= 2 * read
    assert on_wire <= 2 * read
    st = counted.status()
    assert st["bytes_fetched"] == fetched and st["blocks_fetched"] == len(spans)
    # Read-ahead only where two reads happened to be neighbours (within two reads' length,
    # page-rounded, of each other): a 1 MiB window, a few GETs (more where the random reads'
    # cached extents cut it into holes).
    neighbours = sum(
        abs(b - (a + length)) <= 2 * (length + 8 * KiB)
        for a, b in zip(offsets, offsets[1:], strict=False)
    )
    assert st["readahead_started"] <= 8 * neighbours, (st, neighbours)


def test_a_stream_after_a_random_read_of_its_first_bytes_fetches_no_byte_twice(
    counted: Counted,
) -> None:
    size = 5 * BLOCK + 12345
    blob = data(3, size)
    upload(counted.container, {"stream.bin": blob})
    with open(counted.root / "stream.bin", "rb", buffering=0) as f:
        # What a format sniffer does: the first bytes, a header further on...
        assert os.pread(f.fileno(), 4096, 0) == blob[:4096]
        assert os.pread(f.fileno(), 512, 300 * KiB) == blob[300 * KiB : 300 * KiB + 512]
        # ...then the whole file from the start.
        h = hashlib.sha256()
        while chunk := f.read(MiB):
            h.update(chunk)
    assert h.hexdigest() == sha(blob)
    spans = ranges(counted.gets()["stream.bin"])
    assert_disjoint(spans)
    assert spans[0][0] == 0 and spans[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # no hole either
    blocks = -(-size // BLOCK)
    # One GET per block once the window is a block; while it grows from 1 MiB to a block (four
    # sizes) at most two of each size; the two random reads' own, and the one more GET each
    # cuts a piece of the stream into.
    assert len(spans) <= blocks + 2 * 4 + 4, (len(spans), spans)
    st = counted.status()
    assert st["bytes_fetched"] == size and st["blocks_fetched"] == len(spans)
    assert st["readahead_started"] > 0 and st["readahead_hits"] > 0


def test_streams_through_a_budget_smaller_than_their_windows_download_each_byte_about_once(
    make_azurite: Callable[..., Azurite], make_daemon: Callable[..., DsmountDaemon]
) -> None:
    """Six readers of their own 24 MiB blob, 8 MiB windows, through a 24 MiB budget: before
    read-ahead gave way to bytes no reader had reached yet, they evicted each other's next
    blocks and downloaded 1.77x the bytes read."""
    azurite = make_azurite(debug=True)
    service = azurite.blob_service_client()
    container = service.create_container("streams")
    blobs = {f"s{i}.bin": data(100 + i, 24 * MiB) for i in range(6)}
    upload(container, blobs)
    daemon = make_daemon(config_text=(
        '[cache]\nmemory_budget = "24MiB"\nblock_size = "1MiB"\nreadahead_max = "8MiB"\n'))
    daemon.cli("attach", "ds", "--blob", "--container", "streams",
               "--connection-string-env", "AZ_CONN", env={"AZ_CONN": azurite.connection_string})
    root = daemon.mountpoint / "ds"

    def stream(name: str) -> str:
        h = hashlib.sha256()
        with open(root / name, "rb", buffering=0) as f:
            while chunk := f.read(MiB):
                h.update(chunk)
        return h.hexdigest()

    with ThreadPoolExecutor(len(blobs)) as pool:
        assert list(pool.map(stream, blobs)) == [sha(b) for b in blobs.values()]
    total = sum(len(b) for b in blobs.values())
    downloaded = sum(r.last + 1 - r.first for r in downloads(settled_requests(azurite), "streams")
                     if r.first is not None and r.last is not None)
    (st,) = daemon.call("status")["datastores"]
    assert st["bytes_read"] == total and st["bytes_fetched"] == downloaded
    assert st["readahead_started"] > 0 and st["readahead_hits"] > 0
    assert downloaded <= 1.2 * total, (downloaded / total, st)
    assert st["readahead_unread_bytes"] <= 0.2 * total, st


def test_status_counts_the_fuse_requests_each_file_costs_by_kind(counted: Counted) -> None:
    """`fuse_requests` in `dsmount status` counts what the kernel asked, by kind: every open
    of a file is one `open` and, once closed, one `release`; its bytes came in `read`s."""
    files = {f"k/f{i:02d}.bin": data(500 + i, SMALL) for i in range(20)}
    upload(counted.container, files)
    assert len(os.listdir(counted.root / "k")) == len(files)

    def requests() -> dict[str, int]:
        return counted.daemon.call("status")["fuse_requests"]

    before = requests()
    for rel, body in files.items():
        with open(counted.root / rel, "rb") as f:
            assert f.read() == body
    # release is asynchronous (close(2) does not wait for it): poll until the last one lands.
    deadline = time.monotonic() + 10
    while True:
        after = requests()
        delta = {op: n - before.get(op, 0) for op, n in after.items()}
        if delta.get("release", 0) >= len(files) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert delta["open"] == len(files)
    assert delta["release"] == len(files)
    assert len(files) <= delta["read"] <= 2 * len(files)
    assert delta.get("lookup", 0) <= len(files)  # readdirplus answered most of them
    assert delta.get("write", 0) == 0
