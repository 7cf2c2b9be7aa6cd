"""Both FUSE transports in one run, alternated: a cold stream of one blob (`dd`, 1 MiB reads)
and a cold shuffled epoch of small files (8 threads), each through a fresh attachment with the
page cache dropped, against one in-memory Azurite. Prints, per round and transport: MB/s and
daemon CPU-s per GiB of the stream, files/s and daemon CPU ms per file of the epoch (utime +
stime over every thread of the daemon, from /proc), and FUSE requests by kind.

    flock -x /tmp/machine.lock .venv/bin/python -m scripts.probes.transport_ab --rounds 4

Needs root (drop caches, mounts) and the test extras (it starts daemons with tests/support).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon

MiB = 1 << 20


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def cpu_seconds(pid: int) -> float:
    ticks = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def requests(daemon: DsmountDaemon) -> dict[str, int]:
    return dict(daemon.call("status")["fuse_requests"])


def delta(before: dict[str, int], after: dict[str, int], per: float = 1) -> dict[str, float]:
    return {k: round((v - before.get(k, 0)) / per, 2) for k, v in after.items()
            if v != before.get(k, 0)}


def one_round(daemon: DsmountDaemon, az: Azurite, name: str, names: list[str], size: int,
              seed: int) -> dict[str, object]:
    daemon.cli("attach", name, "--blob", "--container", "data", "--connection-string-env", "AZ",
               env={"AZ": az.connection_string})
    root = daemon.mountpoint / name
    os.stat(root / "big.bin")
    os.listdir(root / "s")
    drop_caches()
    q0, c0, t0 = requests(daemon), cpu_seconds(daemon.pid), time.perf_counter()
    subprocess.run(["dd", f"if={root / 'big.bin'}", "of=/dev/null", "bs=1M"], check=True,
                   capture_output=True)
    t1, c1, q1 = time.perf_counter(), cpu_seconds(daemon.pid), requests(daemon)
    order = names[:]
    random.Random(seed).shuffle(order)
    drop_caches()
    c2, t2 = cpu_seconds(daemon.pid), time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: (root / n).read_bytes(), order))
    t3, c3, q3 = time.perf_counter(), cpu_seconds(daemon.pid), requests(daemon)
    daemon.cli("detach", name)
    return {"stream_MBps": round(size / MiB / (t1 - t0)),
            "stream_cpu_s_per_GiB": round((c1 - c0) / (size / (1 << 30)), 2),
            "stream_requests": delta(q0, q1), "files_per_s": round(len(names) / (t3 - t2)),
            "cpu_ms_per_file": round((c3 - c2) / len(names) * 1000, 2),
            "requests_per_file": delta(q1, q3, len(names))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream-mib", type=int, default=512)
    parser.add_argument("--files", type=int, default=1000, help="100 KiB blobs in the epoch")
    args = parser.parse_args()
    size = args.stream_mib // 64 * 64 * MiB
    work = Path(tempfile.mkdtemp(prefix="transport-ab-"))
    with Azurite(work / "az") as az:
        container = az.blob_service_client().create_container("data")
        container.upload_blob("big.bin", os.urandom(64 * MiB) * (size // (64 * MiB)),
                              max_concurrency=8)
        r = random.Random(1)
        names = [f"s/{i:05d}.bin" for i in range(args.files)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: container.upload_blob(n, r.randbytes(100 * 1024)), names))
        daemons = {t: DsmountDaemon(config_text='[cache]\nmemory_budget = "256MiB"\n',
                                    extra_args=["--transport", t])
                   for t in ("pyfuse3", "direct")}
        try:
            for d in daemons.values():
                d.start()
            for rnd in range(args.rounds):
                for transport, d in daemons.items():
                    row = one_round(d, az, f"r{rnd}", names, size, rnd)
                    print(json.dumps({"transport": transport, "round": rnd, **row}), flush=True)
        finally:
            for d in daemons.values():
                d.cleanup()


if __name__ == "__main__":
    main()
