"""Both FUSE transports through a real mount against a real Azurite: the default "direct" one
(dsmount speaks the kernel protocol itself) and "pyfuse3" (libfuse), which the rest of the suite
no longer runs on by default (`DSMOUNT_TEST_TRANSPORT=pyfuse3 bash scripts/test.sh` runs all of
it there). One round of everything a training job does - list, stat, read, mmap, write, append,
truncate, rename, unlink, mkdir - checked against the SDK's view of the container, and what the
status says about the transport.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random

import pytest
from azure.storage.blob import ContainerClient

from tests.support.azurite import Azurite

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

MiB = 1024 * 1024
CONFIG = ('[cache]\nblock_size = "1MiB"\nmemory_budget = "32MiB"\n'
          '[writes]\nenabled = true\npart_size = "1MiB"\n')


@pytest.mark.parametrize("transport", ["direct", "pyfuse3"])
def test_every_kind_of_request_works_on_each_transport(
    transport: str, make_daemon, azurite: Azurite, blob_container: ContainerClient,
) -> None:
    r = random.Random(7)
    existing = {"in/a.bin": r.randbytes(3 * MiB + 5), "in/b.txt": b"hello\n"}
    for name, data in existing.items():
        blob_container.upload_blob(name, data)
    daemon = make_daemon(config_text=CONFIG, extra_args=["--transport", transport])
    daemon.cli("attach", "d", "--blob", "--container", blob_container.container_name,
               "--connection-string-env", "CS", "--read-write",
               env={"CS": azurite.connection_string})
    root = daemon.mountpoint / "d"
    assert daemon.call("status")["fuse"]["transport"] == transport

    # Reads: listing, attributes, whole-file, ranged, mmap.
    assert sorted(e.name for e in os.scandir(root / "in")) == ["a.bin", "b.txt"]
    assert (root / "in/a.bin").stat().st_size == len(existing["in/a.bin"])
    assert (root / "in/a.bin").read_bytes() == existing["in/a.bin"]
    with open(root / "in/a.bin", "rb") as f:
        f.seek(MiB - 3)
        assert f.read(10) == existing["in/a.bin"][MiB - 3:MiB + 7]
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            assert m[2 * MiB:2 * MiB + 100] == existing["in/a.bin"][2 * MiB:2 * MiB + 100]

    # Writes: create, append, truncate, mkdir, rename, unlink; then the SDK's view.
    (root / "out").mkdir()
    body = r.randbytes(2 * MiB + 17)
    (root / "out/x.bin").write_bytes(body)
    with open(root / "out/x.bin", "ab") as f:
        f.write(b"tail")
    os.truncate(root / "out/x.bin", MiB + 1)
    os.rename(root / "out/x.bin", root / "out/y.bin")
    os.unlink(root / "in/b.txt")
    assert (root / "out/y.bin").read_bytes() == body[:MiB + 1]

    names = {b.name for b in blob_container.list_blobs()}
    assert "in/b.txt" not in names and "out/x.bin" not in names
    stored = blob_container.download_blob("out/y.bin").readall()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(body[:MiB + 1]).digest()

    requests = daemon.call("status")["fuse_requests"]
    for kind in ("lookup", "getattr", "open", "read", "write", "release", "mkdir", "rename",
                 "unlink", "setattr"):
        assert requests.get(kind, 0) > 0, (kind, requests)
