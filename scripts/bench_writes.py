"""A small write benchmark (not a test, not scripts/bench.py): a sequential write of one big
file through the mount (`dd bs=1M` then close) against the direct SDK
(`upload_blob(..., max_concurrency=8)`), both into an in-memory Azurite, in one run.

    sudo .venv/bin/python scripts/bench_writes.py [--size-mib 1024] [--rounds 2]

The source is one file of random bytes in /dev/shm, so neither side pays to generate data;
each side's time runs from the first byte to the object being committed (the SDK's call
returning; dd's close returning). Every upload is checked by size and sha256 read back with
the SDK. Prints one line per run and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.azurite import Azurite  # noqa: E402
from tests.support.daemon import DsmountDaemon  # noqa: E402

MiB = 1024 * 1024


def sha_of_blob(container, name: str) -> str:  # type: ignore[no-untyped-def]
    h = hashlib.sha256()
    for chunk in container.get_blob_client(name).download_blob(max_concurrency=4).chunks():
        h.update(chunk)
    return h.hexdigest()


def parallel(n: int, src: Path, size: int, daemon: DsmountDaemon, container,  # type: ignore[no-untyped-def]
             want: str) -> int:
    """N writers at once; every file checked; the daemon's peak RSS against its budget."""
    started = time.monotonic()
    procs = [subprocess.Popen(["dd", f"if={src}", f"of={daemon.mountpoint / 'out' / f'w{i}'}",
                               "bs=1M", "status=none"]) for i in range(n)]
    codes = [p.wait() for p in procs]
    took = time.monotonic() - started
    assert codes == [0] * n, codes
    for i in range(n):
        assert sha_of_blob(container, f"w{i}") == want, i
    with open(f"/proc/{daemon.pid}/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) // 1024
    budget = daemon.call("status")["cache"]["budget_bytes"] // MiB
    print(f"{n} writers x {size // MiB} MiB in {took:.1f}s ({n * size / MiB / took:.0f} MB/s); "
          f"every sha256 correct; daemon peak RSS {hwm} MiB, budget {budget} MiB")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-shadow", action="store_true", help="[writes] shadow = false")
    ap.add_argument("--config", default="", help="extra daemon config (TOML text)")
    ap.add_argument("--parallel", type=int, default=0,
                    help="instead: N writers of --size-mib each at once; peak RSS vs budget")
    args = ap.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="dsm-wbench-"))
    src = Path("/dev/shm") / f"dsm-wbench-{uuid.uuid4().hex[:8]}.bin"
    with open(src, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(MiB))
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    sdk_times: list[float] = []
    mount_times: list[float] = []
    cpus: list[float] = []
    with Azurite(work / "azurite", in_memory=True) as azurite:
        service = azurite.blob_service_client()
        container = service.create_container(f"w-{uuid.uuid4().hex[:8]}")
        config = ("[writes]\nenabled = true\n" + ("shadow = false\n" if args.no_shadow else "")
                  + args.config)
        daemon = DsmountDaemon(work / "daemon", config_text=config)
        try:
            daemon.start()
            daemon.cli("attach", "out", "--blob", "--container", container.container_name,
                       "--connection-string-env", "AZ_CONN", "--read-write",
                       env={"AZ_CONN": azurite.connection_string})
            if args.parallel:
                return parallel(args.parallel, src, size, daemon, container, want)
            for r in range(args.rounds):
                name = f"sdk-{r}.bin"
                started = time.monotonic()
                with open(src, "rb") as f:
                    container.upload_blob(name, f, length=size, max_concurrency=8)
                sdk_times.append(time.monotonic() - started)
                assert sha_of_blob(container, name) == want
                container.delete_blob(name)
                name = f"mount-{r}.bin"
                cpu = daemon.cpu_seconds()
                started = time.monotonic()
                subprocess.run(["dd", f"if={src}", f"of={daemon.mountpoint / 'out' / name}",
                                "bs=1M", "status=none"], check=True)
                mount_times.append(time.monotonic() - started)
                cpus.append(daemon.cpu_seconds() - cpu)
                assert sha_of_blob(container, name) == want
                container.delete_blob(name)
                print(f"round {r}: sdk {size / MiB / sdk_times[-1]:.0f} MB/s, "
                      f"mount {size / MiB / mount_times[-1]:.0f} MB/s "
                      f"(daemon CPU {cpus[-1] / (size / 1024**3):.2f} s/GiB)", flush=True)
            status = daemon.call("status")
            print("daemon cache peak", status["cache"]["peak_bytes"] // MiB, "MiB; staging peak",
                  status["staging"]["peak_bytes"] // MiB, "MiB")
        finally:
            daemon.cleanup()
            src.unlink(missing_ok=True)
    sdk, mount = statistics.median(sdk_times), statistics.median(mount_times)
    print(f"median: sdk {size / MiB / sdk:.0f} MB/s, mount {size / MiB / mount:.0f} MB/s, "
          f"ratio {sdk / mount:.2f}x the SDK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
