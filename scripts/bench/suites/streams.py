"""Many sequential readers through one memory budget: bytes downloaded per byte read, the
rate and the daemon's CPU (not a test; run as root, alone on the machine).

    python -m scripts.bench streams [--readers N] [--size-mib S] [--budget B]
                                    [--block-size B] [--readahead-max B] [--py-spy FILE]

Starts a private in-memory Azurite, uploads one blob per reader, starts a daemon with the
given `[cache]` settings and has each reader stream its own blob through the mount (1 MiB
`read()`s, one thread each), then prints the daemon's read counters (`status`), downloaded /
read, MiB/s and the daemon's CPU-seconds per GiB read. With a budget smaller than the readers'
read-ahead windows together it shows whether read-ahead evicts what other readers are about
to read (before the change that stopped it: 8 readers of 96 MiB through 256 MiB downloaded
1.79x what they read). `--py-spy FILE`: raw collapsed stacks of the daemon during the reads
(`--gil`: only samples holding the GIL).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from scripts.bench.harness.cleanup import on_exit
from scripts.bench.harness.daemon import BenchDaemon, blob_attach_args
from scripts.bench.harness.servers import start_azurite

MiB = 1024**2
COUNTERS = ("bytes_read", "bytes_fetched", "readahead_started", "readahead_skipped",
            "readahead_unread_bytes", "cache_misses")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.bench streams",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--size-mib", type=int, default=96, help="each reader's blob")
    ap.add_argument("--budget", default="256MiB", help="[cache] memory_budget")
    ap.add_argument("--block-size", default=None, help="[cache] block_size")
    ap.add_argument("--readahead-max", default=None, help="[cache] readahead_max")
    ap.add_argument("--py-spy", default=None, help="write the daemon's stacks here")
    ap.add_argument("--gil", action="store_true", help="with --py-spy: GIL holders only")
    args = ap.parse_args(argv)
    config = f'[cache]\nmemory_budget = "{args.budget}"\n'
    if args.block_size:
        config += f'block_size = "{args.block_size}"\n'
    if args.readahead_max:
        config += f'readahead_max = "{args.readahead_max}"\n'
    size = args.size_mib * MiB
    tmp = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    on_exit(lambda: shutil.rmtree(tmp, ignore_errors=True))
    azurite = start_azurite(tmp / "azurite")
    try:
        container = azurite.blob_service_client().create_container(f"s-{uuid.uuid4().hex[:8]}")
        blob = os.urandom(size)
        for i in range(args.readers):
            container.upload_blob(f"s{i}.bin", blob, max_concurrency=4)
        daemon = BenchDaemon(tmp / "daemon", config_text=config,
                             env={"CS": azurite.connection_string}).start()
        try:
            daemon.attach("b", *blob_attach_args("b", container.container_name, None, "CS"))
            root = daemon.mountpoint / "b"
            spy = None
            if args.py_spy:
                exe = Path(sys.executable).parent / "py-spy"
                spy = subprocess.Popen(
                    [str(exe) if exe.exists() else "py-spy", "record", "-p", str(daemon.pid),
                     "-o", args.py_spy, "-f", "raw", "-r", "200", "--threads",
                     *(["--gil"] if args.gil else [])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)

            def stream(i: int) -> None:
                with open(root / f"s{i}.bin", "rb", buffering=0) as f:
                    while f.read(MiB):
                        pass

            cpu0, t0 = daemon.cpu_seconds(), time.perf_counter()
            threads = [threading.Thread(target=stream, args=(i,)) for i in range(args.readers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            cpu = daemon.cpu_seconds() - cpu0
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait()
            (ds,) = daemon.call("status")["datastores"]
            total = args.readers * size
            print(f"{args.readers} readers x {args.size_mib} MiB, budget {args.budget}: "
                  f"{elapsed:.2f} s, {total / MiB / elapsed:.0f} MiB/s, "
                  f"daemon {cpu / (total / 1024**3):.2f} CPU-s/GiB, "
                  f"downloaded/read {ds['bytes_fetched'] / max(1, ds['bytes_read']):.2f}")
            print({k: ds.get(k) for k in COUNTERS})
        finally:
            daemon.stop()
    finally:
        azurite.stop()
    return 0
