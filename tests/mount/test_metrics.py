"""Prometheus metrics through a real mount: the daemon serves /metrics (`--metrics-address`
or `[metrics] address`), parsed here with prometheus_client's own parser. Counters move with
reads through the mount, cold reads land in the stall histogram and reads served from memory
do not, a backend outage (a FaultProxy in front of Azurite) shows as degraded, and the figures
are the very ones `dsmount status --json` prints."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon, wait_until
from tests.support.faultproxy import FaultProxy

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

MiB = 1024 * 1024
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(daemon: DsmountDaemon, accept: str | None = None) -> tuple[Samples, str]:
    address = daemon.call("status")["metrics"]["address"]
    request = urllib.request.Request(f"http://{address}/metrics")
    if accept:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
        content_type = response.headers["Content-Type"]
    assert Azurite.KEY not in text and "AccountKey" not in text  # never a secret
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, content_type


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def uncache(path: Path) -> None:
    """Drop the kernel's pages of one file, so the next read reaches the daemon."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def proxy(azurite: Azurite) -> Any:
    with FaultProxy(azurite.host, azurite.blob_port) as p:
        yield p


def test_counters_stalls_and_degraded_through_a_real_mount(
    make_daemon, azurite: Azurite, blob_container: ContainerClient, proxy: FaultProxy
) -> None:
    big = random.Random(1).randbytes(5 * MiB + 123)
    other = random.Random(2).randbytes(300_000)
    blob_container.upload_blob("big.bin", big)
    blob_container.upload_blob("other.bin", other)
    daemon: DsmountDaemon = make_daemon(
        config_text='[cache]\nblock_size = "1MiB"\nmemory_budget = "64MiB"\n'
        "[retry]\nrequest_deadline = 3\nattempt_timeout = 1\nmax_attempts = 4\n",
        extra_args=["--metrics-address", "127.0.0.1:0"],
    )
    daemon.cli("attach", "m", "--blob", "--container", blob_container.container_name,
               "--connection-string-env", "CS",
               env={"CS": proxy.connection_string_for(azurite.connection_string)})
    root = daemon.mountpoint / "m"
    before, content_type = scrape(daemon)
    assert content_type.startswith("text/plain")
    assert value(before, "dsmount_degraded", datastore="m") == 0
    assert value(before, "dsmount_datastore_info", datastore="m", kind="blob",
                 immutable="false") == 1
    assert value(before, "dsmount_cache_budget_bytes") == 64 * MiB

    # A cold read: bytes, reads, misses, backend GETs and their latency, and stalls move.
    assert sha(root / "big.bin") == hashlib.sha256(big).hexdigest()
    cold, _ = scrape(daemon)
    assert value(cold, "dsmount_read_bytes_total", datastore="m") >= len(big)
    assert value(cold, "dsmount_reads_total", datastore="m") >= 1
    assert value(cold, "dsmount_cache_misses_total", datastore="m") >= 1
    gets = value(cold, "dsmount_backend_requests_total", datastore="m", operation="read",
                 outcome="ok")
    assert gets >= 6  # 5 MiB + a bit in 1 MiB blocks
    assert value(cold, "dsmount_backend_request_duration_seconds_count", datastore="m",
                 operation="read") == gets
    assert value(cold, "dsmount_readahead_bytes_total", datastore="m") > 0
    stalls = value(cold, "dsmount_read_stall_seconds_count", datastore="m")
    assert stalls >= 1
    assert value(cold, "dsmount_read_stall_seconds_bucket", datastore="m", le="+Inf") == stalls
    assert value(cold, "dsmount_read_stall_seconds_sum", datastore="m") > 0

    # The same figures as `status --json`, taken with no read in between.
    (ds,) = json.loads(daemon.cli("status", "--json").stdout)["datastores"]
    assert ds["bytes_read"] == value(cold, "dsmount_read_bytes_total", datastore="m")
    assert ds["read_stall_seconds"]["count"] == stalls
    assert ds["backend_calls"]["read"]["ok"] == gets

    # Read again from memory (the kernel's pages dropped, so the reads reach the daemon): the
    # reads are counted as hits, and none of them is a stall.
    uncache(root / "big.bin")
    assert sha(root / "big.bin") == hashlib.sha256(big).hexdigest()
    warm, _ = scrape(daemon)
    assert value(warm, "dsmount_reads_total", datastore="m") > value(
        cold, "dsmount_reads_total", datastore="m")
    assert value(warm, "dsmount_cache_hits_total", datastore="m") > value(
        cold, "dsmount_cache_hits_total", datastore="m")
    assert value(warm, "dsmount_read_stall_seconds_count", datastore="m") == stalls
    assert value(warm, "dsmount_backend_requests_total", datastore="m", operation="read",
                 outcome="ok") == gets

    # The backend goes down: a read of uncached bytes fails, and the datastore is degraded.
    proxy.down()
    with pytest.raises(OSError) as e:
        (root / "other.bin").read_bytes()
    assert e.value.errno == errno.EIO
    down, _ = scrape(daemon)
    assert value(down, "dsmount_degraded", datastore="m") == 1
    assert value(down, "dsmount_backend_retries_total", datastore="m") >= 1
    assert value(down, "dsmount_backend_requests_total", datastore="m", operation="read",
                 outcome="transient") >= 1
    assert value(down, "dsmount_fetch_errors_total", datastore="m") >= 1
    # ... while what is cached keeps reading.
    uncache(root / "big.bin")
    assert sha(root / "big.bin") == hashlib.sha256(big).hexdigest()

    # Back up: the next read succeeds and the degraded gauge clears.
    proxy.up()

    def read_other() -> bool:
        try:
            return (root / "other.bin").read_bytes() == other
        except OSError:
            return False

    wait_until(read_other, 15, "a read after the outage")
    assert value(scrape(daemon)[0], "dsmount_degraded", datastore="m") == 0


def test_metrics_from_the_config_key_and_off_by_default(make_daemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a" * 200_000)
    plain: DsmountDaemon = make_daemon()
    assert "metrics" not in plain.call("status")
    daemon: DsmountDaemon = make_daemon(config_text='[metrics]\naddress = "127.0.0.1:0"\n')
    root = daemon.attach_local("loc", src)
    assert (root / "a.bin").read_bytes() == b"a" * 200_000
    samples, _ = scrape(daemon)
    assert value(samples, "dsmount_read_bytes_total", datastore="loc") == 200_000
    assert value(samples, "dsmount_read_stall_seconds_count", datastore="loc") >= 1
    # OpenMetrics by content negotiation, and unknown paths are a 404.
    _, content_type = scrape(daemon, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    address = daemon.call("status")["metrics"]["address"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://{address}/nope", timeout=10)
    assert e.value.code == 404
    assert daemon.call("status")["metrics"]["scrapes"] >= 2
    assert daemon.alive()
