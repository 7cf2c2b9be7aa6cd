"""One sequential write of a big file through the mount (`dd bs=1M`, then close) against the
direct SDK (`upload_blob(..., max_concurrency=8)`), both into an in-memory Azurite, in one run;
or, with `--parallel N`, N writers at once against the daemon's memory budget.

    python -m scripts.bench writes [--size-mib 1024] [--rounds 2] [--parallel N]

The source is one file of random bytes in /dev/shm, so neither side pays to generate data;
each side's time runs from the first byte to the object being committed (the SDK's call
returning; dd's close returning). Every upload is checked by size and sha256 read back with
the SDK. Prints one line per run and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from scripts.bench.harness.cleanup import on_exit
from scripts.bench.harness.daemon import BenchDaemon, blob_attach_args
from scripts.bench.harness.meters import GiB, MiB, median, vm_hwm_bytes
from scripts.bench.harness.servers import start_azurite


def sha_of_blob(container: Any, name: str) -> str:
    h = hashlib.sha256()
    for chunk in container.get_blob_client(name).download_blob(max_concurrency=4).chunks():
        h.update(chunk)
    return h.hexdigest()


def parallel(n: int, src: Path, size: int, daemon: BenchDaemon, container: Any,
             want: str) -> int:
    """N writers at once; every file checked; the daemon's peak RSS against its budget."""
    started = time.monotonic()
    procs = [subprocess.Popen(["dd", f"if={src}", f"of={daemon.mountpoint / 'out' / f'w{i}'}",
                               "bs=1M", "status=none"]) for i in range(n)]
    codes = [p.wait() for p in procs]
    took = time.monotonic() - started
    if codes != [0] * n:
        raise RuntimeError(f"writers failed: {codes}")
    bad = [i for i in range(n) if sha_of_blob(container, f"w{i}") != want]
    if bad:
        raise RuntimeError(f"writers {bad}: sha256 of the object differs from the source")
    hwm = vm_hwm_bytes(daemon.pid) // MiB
    budget = daemon.status()["cache"]["budget_bytes"] // MiB
    print(f"{n} writers x {size // MiB} MiB in {took:.1f}s ({n * size / MiB / took:.0f} MB/s); "
          f"every sha256 correct; daemon peak RSS {hwm} MiB, budget {budget} MiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.bench writes",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-shadow", action="store_true", help="[writes] shadow = false")
    ap.add_argument("--config", default="", help="extra daemon config (TOML text)")
    ap.add_argument("--parallel", type=int, default=0,
                    help="instead: N writers of --size-mib each at once; peak RSS vs budget")
    args = ap.parse_args(argv)
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="dsm-wbench-"))
    on_exit(lambda: shutil.rmtree(work, ignore_errors=True))
    src = Path("/dev/shm") / f"dsm-wbench-{uuid.uuid4().hex[:8]}.bin"
    on_exit(lambda: src.unlink(missing_ok=True))
    with open(src, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(MiB))
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    sdk_times: list[float] = []
    mount_times: list[float] = []
    azurite = start_azurite(work / "azurite")
    container = azurite.blob_service_client().create_container(f"w-{uuid.uuid4().hex[:8]}")
    config = ("[writes]\nenabled = true\n" + ("shadow = false\n" if args.no_shadow else "")
              + args.config)
    daemon = BenchDaemon(work / "daemon", config_text=config,
                         env={"AZ_CONN": azurite.connection_string}).start()
    daemon.attach("out", *blob_attach_args("out", container.container_name, None, "AZ_CONN",
                                           "--read-write"))
    if args.parallel:
        return parallel(args.parallel, src, size, daemon, container, want)
    for r in range(args.rounds):
        name = f"sdk-{r}.bin"
        started = time.monotonic()
        with open(src, "rb") as f:
            container.upload_blob(name, f, length=size, max_concurrency=8)
        sdk_times.append(time.monotonic() - started)
        if sha_of_blob(container, name) != want:
            raise RuntimeError("the SDK's object differs from the source")
        container.delete_blob(name)
        name = f"mount-{r}.bin"
        cpu = daemon.cpu_seconds()
        started = time.monotonic()
        subprocess.run(["dd", f"if={src}", f"of={daemon.mountpoint / 'out' / name}", "bs=1M",
                        "status=none"], check=True)
        mount_times.append(time.monotonic() - started)
        cpu = daemon.cpu_seconds() - cpu
        if sha_of_blob(container, name) != want:
            raise RuntimeError("the mount's object differs from the source")
        container.delete_blob(name)
        print(f"round {r}: sdk {size / MiB / sdk_times[-1]:.0f} MB/s, "
              f"mount {size / MiB / mount_times[-1]:.0f} MB/s "
              f"(daemon CPU {cpu / (size / GiB):.2f} s/GiB)", flush=True)
    status = daemon.status()
    print("daemon cache peak", status["cache"]["peak_bytes"] // MiB, "MiB; staging peak",
          status["staging"]["peak_bytes"] // MiB, "MiB")
    sdk, mount = median(sdk_times), median(mount_times)
    print(f"median: sdk {size / MiB / sdk:.0f} MB/s, mount {size / MiB / mount:.0f} MB/s, "
          f"ratio {sdk / mount:.2f}x the SDK")
    return 0
