"""Ordered prefetch through a real mount: reader hints and directory order (node/hints.py).

A private Azurite with its debug log on (the server's own account of every GET), behind a
FaultProxy that holds every request 10 ms (what a request to real storage costs), a real
daemon, reads through the mountpoint. Covered:
- a hinted shuffled epoch read by 4 threads: exact bytes, one GET per file, nearly every
  file fetched ahead and used, nothing wasted, the hint ends when consumed;
- a hint replaced halfway: what the old one fetched and nobody read is at most its window;
- a hinting process killed: its hint ends, nothing more is fetched;
- a hint naming files that do not exist (skipped), a file whose mode forbids the caller
  (skipped, never fetched) and another user's private datastore (refused as not attached);
- a cache budget smaller than the window: exact bytes, one GET per file, the budget holds;
- directory order: a serial reader of a listed directory gets files fetched ahead, all used;
  a reader that jumps ends the guess (at most the window wasted) and a reader in reverse
  order gets nothing fetched ahead;
and `dsmount status` and the metrics tell the same story.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from dsmount.api import hint
from tests.support.azurite import Azurite
from tests.support.azurite_log import downloads, settled_requests
from tests.support.daemon import NOBODY, REPO_ROOT, DsmountDaemon, clean_env, wait_until
from tests.support.faultproxy import FaultProxy

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

KiB = 1024
SMALL = 100 * KiB
WINDOW = 16  # [prefetch] window_files in these tests
LATENCY = 0.01


@dataclass
class Mounted:
    azurite: Azurite
    proxy: FaultProxy
    container: ContainerClient
    daemon: DsmountDaemon
    root: Path
    files: dict[str, bytes]

    def gets(self) -> Counter[str]:
        """GETs per blob so far, as the server logged them."""
        return Counter(r.blob for r in downloads(settled_requests(self.azurite),
                                                 self.container.container_name))

    def prefetch(self) -> dict:
        return self.daemon.call("status")["prefetch"]

    def paths(self, names: list[str]) -> list[str]:
        return [str(self.root / n) for n in names]


def blob_data(seed: int, size: int = SMALL) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@contextlib.contextmanager
def make_mounted(make_azurite: Callable[..., Azurite], make_daemon: Callable[..., DsmountDaemon],
                 files: dict[str, bytes], config: str = "") -> Iterator[Mounted]:
    azurite = make_azurite(debug=True)
    service = azurite.blob_service_client()
    container = service.create_container("hinted")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: container.upload_blob(kv[0], kv[1]), files.items()))
    with FaultProxy(azurite.host, azurite.blob_port) as proxy:
        proxy.latency(LATENCY)
        daemon = make_daemon(config_text=(
            '[cache]\nmemory_budget = "256MiB"\n' if "[cache]" not in config else "")
            + f"[metadata]\nttl = 600\n[prefetch]\nwindow_files = {WINDOW}\n" + config)
        daemon.cli("attach", "ds", "--blob", "--container", container.container_name,
                   "--connection-string-env", "AZ_CONN",
                   env={"AZ_CONN": proxy.connection_string_for(azurite.connection_string)})
        try:
            yield Mounted(azurite, proxy, container, daemon, daemon.mountpoint / "ds", files)
        finally:
            service.close()


@pytest.fixture
def mounted(make_azurite: Callable[..., Azurite],
            make_daemon: Callable[..., DsmountDaemon]) -> Iterator[Mounted]:
    files = {f"train/f{i:04d}.jpg": blob_data(i) for i in range(200)}
    with make_mounted(make_azurite, make_daemon, files) as m:
        yield m


def settled(m: Mounted) -> dict:
    """The prefetch status once no hint is active."""
    return wait_until(lambda: (s := m.prefetch())["hints_active"] == 0 and s, timeout=30,
                      what="every hint to end")


def read_all(m: Mounted, names: list[str], threads: int = 4) -> None:
    """Read `names` in order from `threads` readers, each one file at a time (as DataLoader
    workers do), and check every byte."""
    def one(name: str) -> None:
        with open(m.root / name, "rb") as f:
            got = f.read()
        assert sha(got) == sha(m.files[name]), name

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, names))


def test_a_hinted_epoch_reads_exact_bytes_and_fetches_each_file_once(
        mounted: Mounted, tmp_path: Path) -> None:
    order = sorted(mounted.files)
    random.Random(1).shuffle(order)
    listing = tmp_path / "order.txt"
    listing.write_text("\n".join(mounted.paths(order)) + "\n")
    out = mounted.daemon.cli("hint", "--from", str(listing), "--json")
    assert '"files": 200' in out.stdout
    read_all(mounted, order)

    gets = mounted.gets()
    assert set(gets) == set(order)
    assert all(n == 1 for n in gets.values()), [k for k, n in gets.items() if n > 1]
    p = settled(mounted)
    h = p["hints"]
    # The reader starts with the hint, so its first files may be opened before they are
    # fetched ahead; every one fetched ahead was used.
    assert h["files_prefetched"] >= len(order) - WINDOW, h
    assert h["files_used"] == h["files_prefetched"]
    assert h["bytes_used"] == h["files_used"] * SMALL
    assert h["files_wasted"] == h["bytes_wasted"] == 0
    assert p["hints_ended"] == {"done": 1}
    assert p["ahead_bytes"] == 0
    text = mounted.daemon.cli("status").stdout
    assert f"prefetch by hints: {h['files_prefetched']} file(s)" in text


def test_a_hint_replaced_halfway_wastes_at_most_its_window(mounted: Mounted) -> None:
    first = [f"train/f{i:04d}.jpg" for i in range(100)]
    second = [f"train/f{i:04d}.jpg" for i in range(100, 200)]
    random.Random(2).shuffle(second)
    hint(mounted.paths(first), socket=str(mounted.daemon.socket))
    read_all(mounted, first[:50])
    took = hint(mounted.paths(second), socket=str(mounted.daemon.socket))
    assert took["files"] == 100
    read_all(mounted, second)

    gets = mounted.gets()
    assert all(n == 1 for n in gets.values())
    unread = [n for n in first[50:] if n in gets]
    assert len(unread) <= WINDOW, unread  # fetched for the first hint, never read
    assert set(second) <= set(gets)
    p = settled(mounted)
    assert p["hints_ended"] == {"replaced": 1, "done": 1}
    assert p["hints"]["files_wasted"] == len(unread)
    assert p["hints"]["bytes_wasted"] == len(unread) * SMALL


def test_a_killed_hinting_process_ends_its_hint(mounted: Mounted) -> None:
    order = mounted.paths(sorted(mounted.files))
    script = ("import sys, time\nfrom dsmount.api import hint\n"
              "hint(sys.stdin.read().split(), socket=sys.argv[1])\nprint('hinted', flush=True)\n"
              "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(mounted.daemon.socket)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=REPO_ROOT, env=clean_env())
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("\n".join(order))
        proc.stdin.close()
        assert proc.stdout.readline().strip() == "hinted"
        # Nobody reads: the daemon fetches one window ahead and waits.
        wait_until(lambda: mounted.prefetch()["hints"]["files_prefetched"] == WINDOW,
                   timeout=30, what="the prefetch to settle")
        # files_prefetched counts GETs started; on a busy machine some are still on their way
        # through the proxy, and a kill now would cut them before the server logs them.
        wait_until(lambda: sum(mounted.gets().values()) == WINDOW, timeout=30,
                   what="the window's GETs to reach the server")
        assert mounted.prefetch()["hints_active"] == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    p = settled(mounted)
    assert p["hints_ended"] == {"caller exited": 1}
    assert p["hints"]["files_wasted"] == WINDOW
    assert p["ahead_bytes"] == 0
    assert sum(mounted.gets().values()) == WINDOW  # nothing more after the kill


def test_a_budget_smaller_than_the_window_keeps_the_budget_and_one_get_per_file(
        make_azurite: Callable[..., Azurite], make_daemon: Callable[..., DsmountDaemon]
) -> None:
    files = {f"train/f{i:04d}.jpg": blob_data(i) for i in range(120)}
    config = '[cache]\nmemory_budget = "2MiB"\nblock_size = "256KiB"\n'
    with make_mounted(make_azurite, make_daemon, files, config) as m:
        order = sorted(files)
        random.Random(3).shuffle(order)
        took = hint(m.paths(order), socket=str(m.daemon.socket))
        assert took["window_bytes"] == 1024 * KiB  # half the budget, below 16 x 100 KiB
        read_all(m, order)
        gets = m.gets()
        assert set(gets) == set(order) and all(n == 1 for n in gets.values())
        status = m.daemon.call("status")
        assert status["cache"]["peak_bytes"] <= 2048 * KiB
        assert status["prefetch"]["hints"]["files_used"] >= len(order) // 2


def test_a_hint_skips_missing_and_forbidden_files_and_refuses_others_private_datastores(
        make_azurite: Callable[..., Azurite], make_daemon: Callable[..., DsmountDaemon]
) -> None:
    azurite = make_azurite(debug=True)
    service = azurite.blob_service_client()
    mine, secret, theirs = (service.create_container(n) for n in ("mine", "secret", "theirs"))
    for c in (mine, secret, theirs):
        for i in range(10):
            c.upload_blob(f"f{i}.bin", blob_data(i, 10 * KiB))
    conn = azurite.connection_string
    daemon = make_daemon(config_text='[daemon]\nsocket_group = "nogroup"\n'
                         '[metadata]\nttl = 600\n')
    env = {"AZ_CONN": conn}

    def attach(name: str, container: str, *extra: str, user: tuple[int, int] | None = None
               ) -> None:
        daemon.cli("attach", name, "--blob", "--container", container,
                   "--connection-string-env", "AZ_CONN", *extra, env=env, user=user)

    attach("mine", "mine", "--shared")  # root's, shared: 0444, everyone reads
    attach("secret", "secret", "--shared", "--file-mode", "0400")  # root's, root only
    other = (65533, 65534)
    attach("theirs", "theirs", user=other)  # private to uid 65533
    mp = daemon.mountpoint
    refused = daemon.cli("hint", str(mp / "mine/f0.bin"), str(mp / "theirs/f1.bin"),
                         user=NOBODY, check=False)
    assert refused.returncode == 1
    assert f"{mp}/theirs/f1.bin is not under an attached datastore" in refused.stderr
    outside = daemon.cli("hint", "/etc/passwd", user=NOBODY, check=False)
    assert outside.returncode == 1 and "is not under the mountpoint" in outside.stderr

    names = ([str(mp / f"mine/f{i}.bin") for i in range(5)]
             + [str(mp / "mine/nothing-here.bin"), str(mp / "mine/f9.bin/below")]
             + [str(mp / f"secret/f{i}.bin") for i in range(3)])
    took = daemon.cli("hint", *names, "--json", user=NOBODY)
    assert '"files": 10' in took.stdout

    def looked_at_all() -> dict | None:
        h = (s := daemon.call("status")["prefetch"])["hints"]
        return s if h["files_skipped"] == 5 and h["files_prefetched"] == 5 else None

    p = wait_until(looked_at_all, timeout=30, what="every hinted file looked at")
    assert p["hints_active"] == 1  # waiting for the reader
    served = settled_requests(azurite)
    fetched = {c: sorted(r.blob for r in downloads(served, c))
               for c in ("mine", "secret", "theirs")}
    # Nothing of secret (0400, root's) nor of theirs (private to another user).
    assert fetched == {"mine": [f"f{i}.bin" for i in range(5)], "secret": [], "theirs": []}
    service.close()


def test_directory_order_prefetch_starts_and_stops(mounted: Mounted) -> None:
    in_order = sorted(n for n in mounted.files if n < "train/f0100")
    assert len(os.listdir(mounted.root / "train")) == 200  # a reader lists, then reads
    for name in in_order:  # as tar and cp -r do
        with open(mounted.root / name, "rb") as f:
            assert sha(f.read()) == sha(mounted.files[name])
    d = mounted.prefetch()["dir_order"]
    # Two successors in a row start the guess; from then on every next file came ahead.
    assert d["files_prefetched"] >= len(in_order) - 3, d
    assert d["files_used"] >= len(in_order) - 3 - WINDOW, d
    before = d["files_prefetched"]

    # A reader that jumps: the guess ends, at most one window abandoned.
    rest = sorted(n for n in mounted.files if n >= "train/f0100")
    for name in [*rest[:10], rest[60], *reversed(rest[11:60]), *reversed(rest[61:])]:
        with open(mounted.root / name, "rb") as f:
            assert sha(f.read()) == sha(mounted.files[name])
    d = mounted.prefetch()["dir_order"]
    assert d["files_wasted"] <= WINDOW, d
    wasted_files = d["files_wasted"]
    # From the jump on (reverse order) nothing more was fetched ahead.
    assert d["files_prefetched"] - before <= 10 + WINDOW - 3
    gets = mounted.gets()
    assert set(gets) >= set(mounted.files) - {rest[10]}  # rest[10]: fetched ahead or not
    assert all(n == 1 for n in gets.values())
    assert wasted_files >= 1  # the guess was ahead when the reader jumped
    metrics_text = mounted.daemon.call("status")["prefetch"]
    assert metrics_text["dir_order"]["files_prefetched"] == d["files_prefetched"]


def test_a_named_hint_ends_when_idle_or_cancelled(mounted: Mounted) -> None:
    names = mounted.paths(sorted(mounted.files)[:40])
    mounted.daemon.cli("hint", "--caller", "job-a", "--idle-timeout", "1", *names[:20])
    mounted.daemon.cli("hint", "--caller", "job-b", *names[20:])
    assert mounted.prefetch()["hints_active"] == 2
    # job-a: nothing of it is opened and nobody renews it.
    wait_until(lambda: mounted.prefetch()["hints_ended"] == {"idle": 1}, timeout=30,
               what="the idle hint to end")
    mounted.daemon.cli("hint", "--caller", "job-b", "--cancel")
    p = mounted.prefetch()
    assert p["hints_active"] == 0 and p["hints_ended"] == {"idle": 1, "cancelled": 1}
    assert p["ahead_bytes"] == 0
    assert p["hints"]["files_wasted"] == p["hints"]["files_prefetched"]
    # What they fetched ahead went to the backend once, and nothing more is coming.
    gets = mounted.gets()
    assert all(n == 1 for n in gets.values())
    assert sum(gets.values()) == p["hints"]["files_prefetched"]
