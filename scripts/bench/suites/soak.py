"""Soak run: 16 readers through a real dsmount mount for N minutes while faults are injected.

    python -m scripts.bench soak --minutes 2

Starts a private Azurite (in memory), a FaultProxy in front of it and a `dsmount daemon` on a
temporary mountpoint (root and FUSE needed, as for the mount tests); uploads files whose every
byte is known (tests/faults/content.py) and attaches them through the proxy with the real
CLI. Then 16 reader threads read for `--minutes` (half stream files sequentially in 1 MiB
reads, like a training loader; half read random ranges), checking every byte, while an injector
cycles through random faults: connections dropped every few MiB, 503s (with and without
Retry-After), delays, resets, a backend down or hung for a while. It prints reads done, bytes
verified, wrong bytes served (must be 0), errors by kind, faults injected, the longest a read
waited, and the daemon's peak RSS against the cache budget. Exit status 1 if any wrong byte
was served or a reader hung.

Every process it starts is stopped and the mount removed on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from scripts.bench.harness.daemon import BenchDaemon, blob_attach_args
from scripts.bench.harness.meters import vm_hwm_bytes, vm_rss_bytes
from scripts.bench.harness.servers import start_azurite
from tests.faults.conftest import upload_pattern
from tests.faults.content import pattern_bytes
from tests.support.faultproxy import FaultProxy

MiB = 1024 * 1024
READERS = 16
BUDGET = 256 * MiB
DEADLINE = 10.0
FILES = [(f"data/shard-{i:02d}.bin", 1000 + i, (24 + 8 * i) * MiB + 4099 * i) for i in range(8)]
SMALL = [(f"small/item-{i:03d}.bin", 2000 + i, 1000 + 37 * i) for i in range(64)]
CONFIG = f"""
[retry]
request_deadline = {DEADLINE}
attempt_timeout = 4.0
[cache]
memory_budget = "{BUDGET // MiB}MiB"
block_size = "4MiB"
readahead_max = "32MiB"
"""


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reads = 0
        self.bytes_verified = 0
        self.wrong_bytes = 0
        self.wrong_reads: list[str] = []
        self.short_reads = 0
        self.errors: Counter[str] = Counter()
        self.longest_wait = 0.0
        self.longest_what = ""

    def read(self, took: float, what: str) -> None:
        with self.lock:
            self.reads += 1
            if took > self.longest_wait:
                self.longest_wait, self.longest_what = took, what


def count_wrong(got: bytes, want: bytes) -> int:
    return sum(1 for a, b in zip(got, want, strict=True) if a != b)


def reader(n: int, root: Path, stop: threading.Event, stats: Stats) -> None:
    r = random.Random(n)
    streaming = n % 2 == 0
    files = FILES + SMALL
    while not stop.is_set():
        rel, seed, size = r.choice(FILES) if streaming else r.choice(files)
        try:
            fd = os.open(root / rel, os.O_RDONLY)
        except OSError as e:
            stats.errors[f"open {errno.errorcode.get(e.errno or 0, e.errno)}"] += 1
            time.sleep(0.1)
            continue
        try:
            offsets = (
                range(0, size, MiB)
                if streaming
                else [r.randrange(0, size) for _ in range(r.randrange(1, 20))]
            )
            for offset in offsets:
                if stop.is_set():
                    break
                length = MiB if streaming else r.randrange(1, 2 * MiB)
                started = time.monotonic()
                try:
                    got = os.pread(fd, length, offset)
                except OSError as e:
                    took = time.monotonic() - started
                    stats.read(took, f"{rel}@{offset} (failed)")
                    stats.errors[errno.errorcode.get(e.errno or 0, str(e.errno))] += 1
                    if e.errno == errno.ESTALE:
                        break
                    continue
                took = time.monotonic() - started
                stats.read(took, f"{rel}@{offset}")
                # Forget these pages, so reads keep going to the daemon, not the page cache.
                with contextlib.suppress(OSError):
                    os.posix_fadvise(fd, offset, len(got), os.POSIX_FADV_DONTNEED)
                # A short read is POSIX for "the data before an error" (the kernel returns
                # what it copied before a page failed): counted, and its bytes checked too.
                want = pattern_bytes(seed, offset, len(got))
                with stats.lock:
                    if len(got) < min(length, size - offset):
                        stats.short_reads += 1
                    if got == want:
                        stats.bytes_verified += len(got)
                    else:
                        stats.wrong_bytes += count_wrong(got, want)
                        stats.wrong_reads.append(f"{rel}@{offset}+{len(got)}")
        finally:
            os.close(fd)


FAULT_KINDS = ("drop", "503", "503-retry-after", "delay", "reset", "down", "blackhole", "calm")


def injector(
    proxy: FaultProxy, stop: threading.Event, faults: Counter[str], kinds: list[str]
) -> None:
    r = random.Random(99)
    while not stop.wait(r.uniform(1.0, 4.0)):
        kind = r.choice(kinds)
        faults[kind] += 1
        if kind == "drop":
            proxy.drop_every(r.randrange(1, 64) * MiB)
        elif kind == "503":
            proxy.respond_503(r.randrange(1, 20))
        elif kind == "503-retry-after":
            proxy.respond_503(r.randrange(1, 5), retry_after=r.choice([1, 2]))
        elif kind == "delay":
            proxy.delay(r.uniform(0.01, 0.3))
        elif kind == "reset":
            proxy.reset_next(r.randrange(1, 10))
        elif kind in ("down", "blackhole"):
            # Sometimes shorter than the request deadline (retries absorb it), sometimes
            # longer (readers must get EIO in time, then recover).
            getattr(proxy, kind)()
            stop.wait(r.choice([1.0, 3.0, DEADLINE + 3]))
            proxy.up()
        if kind in ("delay", "drop"):
            stop.wait(r.uniform(2, 6))  # a while, then back to normal
        if kind in ("delay", "drop", "calm"):
            proxy.clear()
    proxy.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench soak",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--no-faults", action="store_true", help="A baseline run, no faults.")
    parser.add_argument(
        "--faults",
        default="drop,drop," + ",".join(FAULT_KINDS[1:]),
        help=f"Comma-separated fault kinds to draw from (of {', '.join(FAULT_KINDS)}).",
    )
    args = parser.parse_args(argv)
    unknown = set(args.faults.split(",")) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kind(s): {', '.join(sorted(unknown))}")
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dsm-soak-")))
        server = start_azurite(work / "azurite")
        stack.callback(server.stop)
        proxy = stack.enter_context(FaultProxy(server.host, server.blob_port))
        service = server.blob_service_client()
        stack.callback(service.close)
        container = service.create_container("soak")
        total = 0
        for rel, seed, size in FILES + SMALL:
            upload_pattern(container, rel, seed, size)
            total += size
        conn = proxy.connection_string_for(server.connection_string)
        daemon = BenchDaemon(work / "daemon", config_text=CONFIG, env={"SOAK_CONN": conn})
        stack.callback(daemon.stop)
        daemon.start()
        root = daemon.attach("soak", *blob_attach_args("soak", "soak", None, "SOAK_CONN"))
        print(
            f"{len(FILES) + len(SMALL)} files, {total / MiB:.0f} MiB, {READERS} readers, "
            f"{args.minutes:g} min, deadline {DEADLINE:g}s, budget {BUDGET // MiB} MiB",
            flush=True,
        )

        stats, faults, stop = Stats(), Counter[str](), threading.Event()
        threads = [
            threading.Thread(target=reader, args=(n, root, stop, stats), daemon=True)
            for n in range(READERS)
        ]
        if not args.no_faults:
            threads.append(
                threading.Thread(
                    target=injector,
                    args=(proxy, stop, faults, args.faults.split(",")),
                    daemon=True,
                )
            )
        started = time.monotonic()
        for t in threads:
            t.start()
        end = started + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(10.0, max(0.0, end - time.monotonic())))
            print(
                f"  {time.monotonic() - started:5.0f}s: {stats.reads} reads, "
                f"{stats.bytes_verified / MiB:.0f} MiB verified, "
                f"{sum(stats.errors.values())} errors",
                flush=True,
            )
        stop.set()
        hung = 0
        for t in threads:
            t.join(DEADLINE + 30)
            hung += t.is_alive()
        elapsed = time.monotonic() - started
        status = daemon.call("status")
        ds = next(d for d in status["datastores"] if d["path"] == "soak")
        rss = {"VmHWM": vm_hwm_bytes(daemon.pid), "VmRSS": vm_rss_bytes(daemon.pid)}
        proxy_stats = proxy.stats

    print()
    print(f"ran                 {elapsed:.0f} s with {READERS} readers")
    print(f"reads done          {stats.reads}")
    print(
        f"bytes verified      {stats.bytes_verified} ({stats.bytes_verified / MiB:.0f} MiB, "
        f"{stats.bytes_verified / MiB / elapsed:.0f} MiB/s)"
    )
    print(
        f"wrong bytes served  {stats.wrong_bytes}"
        + (f" in {stats.wrong_reads[:5]}" if stats.wrong_reads else "")
    )
    print(f"short reads         {stats.short_reads} (data before an error, all verified)")
    errors = ", ".join(f"{k} {v}" for k, v in stats.errors.most_common()) or "none"
    print(f"errors by kind      {errors}")
    print(
        f"faults injected     {sum(faults.values())}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(faults.items()))
    )
    print(
        f"proxy saw           {proxy_stats['requests']} requests, {proxy_stats['drops']} "
        f"dropped, {proxy_stats['resets']} reset, {proxy_stats['killed']} killed, "
        f"{proxy_stats['injected_503']} answered 503"
    )
    print(
        f"daemon retries      {ds['backend_retries']} (errors {ds['backend_errors']}, "
        f"fetch errors {ds['fetch_errors']})"
    )
    print(
        f"longest read wait   {stats.longest_wait:.2f} s ({stats.longest_what}; "
        f"deadline {DEADLINE:g} s)"
    )
    print(
        f"daemon RSS          peak {rss['VmHWM'] / MiB:.0f} MiB, at the end "
        f"{rss['VmRSS'] / MiB:.0f} MiB (cache budget {BUDGET // MiB} MiB, cache peak "
        f"{status['cache']['peak_bytes'] / MiB:.0f} MiB)"
    )
    print(f"readers hung        {hung}")
    return 1 if stats.wrong_bytes or hung else 0
