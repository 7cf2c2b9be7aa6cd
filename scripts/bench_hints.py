#!/usr/bin/env python3
"""Ordered prefetch rows: reader hints and directory order against plain dsmount and
`rclone mount --vfs-cache-mode off`, behind a per-request latency (not a test; run as root,
alone on the machine: `flock -x /tmp/machine.lock`).

    python scripts/bench_hints.py [--latency MS ...] [--files N] [--rows shuffle,loader,tree]

One in-memory Azurite holds N (default 1,000) unpacked 100 KiB blobs in one directory; a
FaultProxy in front of it holds every request MS ms (default: 10 and 20, one run each) and
counts the GETs every system sends. Every run is cold: a new daemon (or rclone mount) each.
- shuffle: one shuffled epoch, 4 worker processes each opening one file at a time: dsmount
  with the order hinted (`dsmount.api.hint`), dsmount without, rclone-off. Target: hints >= 3x
  each of the other two.
- loader: the same epoch through a real `torch.utils.data.DataLoader` (4 workers, batches of
  8): with `HintingSampler(RandomSampler)` and without. Target: >= 3x.
- tree: a serial `tar` (to a pipe) and a `cp -r` of the cold directory: dsmount (directory
  order) against rclone-off. Target: >= 3x.
Each row prints files/s, GETs per file and, for dsmount, the bytes fetched and never read
(status: bytes_fetched - bytes_read) and the cache's peak. `rows()` is what a benchmark
package calls: it returns the rows as dicts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.azurite import Azurite  # noqa: E402
from tests.support.daemon import DsmountDaemon, lazy_unmount  # noqa: E402
from tests.support.faultproxy import FaultProxy  # noqa: E402

KiB = 1024
SIZE = 100 * KiB
DIR = "data"
EXTRA = ""  # more daemon config (experiments)
TARGETS = {"shuffle": 3.0, "loader": 3.0, "tree": 3.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _read(path: str) -> int:
    with open(path, "rb") as f:
        return len(f.read())


class Mount:
    """A cold mount of the container: dsmount (with or without directory order) or rclone."""

    def __init__(self, kind: str, bench: Bench, *, dir_order: bool = True) -> None:
        self.kind, self.bench = kind, bench
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-hints-{kind}-"))
        self.daemon: DsmountDaemon | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        if kind == "dsmount":
            self.daemon = DsmountDaemon(config_text=(
                "[metadata]\nttl = 600\n"
                f"[prefetch]\ndir_order = {'true' if dir_order else 'false'}\n" + EXTRA))
            self.daemon.start()
            self.daemon.cli("attach", "b", "--blob", "--container", bench.container,
                            "--connection-string-env", "CS", env={"CS": bench.conn_str})
            self.root = self.daemon.mountpoint / "b"
        else:
            mnt = self.workdir / "mnt"
            mnt.mkdir()
            env = dict(os.environ, RCLONE_CONFIG_B_TYPE="azureblob",
                       RCLONE_CONFIG_B_SAS_URL=bench.sas_url)
            self.proc = subprocess.Popen(
                ["rclone", "mount", f"b:{bench.container}", str(mnt), "--vfs-cache-mode", "off",
                 "--config", str(self.workdir / "rclone.conf")],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(self.workdir / "rclone.log", "ab"), start_new_session=True)  # noqa: SIM115
            deadline = time.monotonic() + 30
            while not os.path.ismount(mnt):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("rclone mount did not come up: "
                                       + (self.workdir / "rclone.log").read_text()[-2000:])
                time.sleep(0.05)
            self.root = mnt
        self.data = self.root / DIR

    def status(self) -> dict[str, Any]:
        if self.daemon is None:
            return {}
        s = self.daemon.call("status")
        (ds,) = s["datastores"]
        return {"fetched_never_read": max(0, ds["bytes_fetched"] - ds["bytes_read"]),
                "cache_peak": s["cache"]["peak_bytes"], "budget": s["cache"]["budget_bytes"],
                "prefetch": s["prefetch"]}

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon.cleanup()
        if self.proc is not None:
            lazy_unmount(self.root)
            self.proc.terminate()
            self.proc.wait(timeout=20)
        shutil.rmtree(self.workdir, ignore_errors=True)


class Bench:
    def __init__(self, files: int) -> None:
        self.files = files
        self.azurite = Azurite(Path(tempfile.mkdtemp(prefix="bench-hints-azurite-")))
        self.azurite.start()
        self.container = "hints"
        cc = self.azurite.blob_service_client().create_container(self.container)
        names = [f"{DIR}/f{i:05d}.bin" for i in range(files)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: cc.upload_blob(n, os.urandom(SIZE)), names))
        self.names = names
        self.proxy = FaultProxy(self.azurite.host, self.azurite.blob_port)
        self.proxy.start()
        self.conn_str = self.proxy.connection_string_for(self.azurite.connection_string)
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        token = generate_container_sas(
            Azurite.ACCOUNT, self.container, account_key=Azurite.KEY,
            permission=ContainerSasPermissions(read=True, list=True),
            expiry=datetime.now(UTC) + timedelta(hours=6))
        self.sas_url = self.proxy.endpoint_for(
            f"{self.azurite.blob_endpoint}/{self.container}?{token}")

    def gets(self) -> int:
        return self.proxy.forwarded.get("get", 0)

    def run(self, mount: Mount, work: Callable[[Mount], None]) -> dict[str, Any]:
        gets0 = self.gets()
        t0 = time.perf_counter()
        work(mount)
        secs = time.perf_counter() - t0
        out = {"seconds": round(secs, 2), "files_per_s": round(self.files / secs, 1),
               "gets_per_file": round((self.gets() - gets0) / self.files, 3), **mount.status()}
        mount.close()
        return out

    def close(self) -> None:
        self.proxy.stop()
        self.azurite.stop()


def shuffled_epoch(bench: Bench, hinted: bool, seed: int = 1) -> Callable[[Mount], None]:
    def work(m: Mount) -> None:
        order = [str(m.root / n) for n in bench.names]
        random.Random(seed).shuffle(order)
        if hinted:
            from dsmount.api import hint

            assert m.daemon is not None
            hint(order, socket=str(m.daemon.socket))
        with multiprocessing.get_context("fork").Pool(4) as pool:
            assert sum(pool.imap(_read, order, chunksize=1)) == SIZE * len(order)
    return work


def loader_epoch(bench: Bench, hinted: bool) -> Callable[[Mount], None]:
    import torch  # here, not in the timed part: importing torch takes seconds
    from torch.utils.data import DataLoader, RandomSampler

    from dsmount.api import HintingSampler

    def work(m: Mount) -> None:
        paths = [str(m.root / n) for n in bench.names]

        class Files(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return len(paths)

            def __getitem__(self, i: int) -> int:
                return _read(paths[i])

        dataset = Files()
        sampler: Any = RandomSampler(dataset, generator=torch.Generator().manual_seed(1))
        if hinted:
            assert m.daemon is not None
            sampler = HintingSampler(sampler, lambda i: paths[i], socket=str(m.daemon.socket))
        loader = DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=4)
        assert sum(int(b.sum()) for b in loader) == SIZE * len(paths)
    return work


def tar(m: Mount) -> None:
    subprocess.run(f"tar -cf - -C {m.root} {DIR} | cat > /dev/null", shell=True, check=True)


def cp(m: Mount) -> None:
    dest = Path(tempfile.mkdtemp(prefix="bench-hints-cp-"))
    try:
        subprocess.run(["cp", "-r", str(m.data), str(dest / DIR)], check=True)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def rows(latency_ms: float, files: int = 1000,
         which: tuple[str, ...] = ("shuffle", "loader", "tree")) -> list[dict[str, Any]]:
    """Every row at one latency: {"row", "system", "latency_ms", figures...}."""
    bench = Bench(files)
    bench.proxy.latency(latency_ms / 1000)
    out: list[dict[str, Any]] = []

    def measure(row: str, system: str, mount: Callable[[], Mount],
                work: Callable[[Mount], None]) -> None:
        log(f"{row} / {system} @ {latency_ms:g} ms")
        r = {"row": row, "system": system, "latency_ms": latency_ms,
             **bench.run(mount(), work)}
        log(f"  {r['files_per_s']} files/s, {r['gets_per_file']} GETs/file")
        out.append(r)

    try:
        if "shuffle" in which:
            measure("shuffle-4proc", "dsmount+hints", lambda: Mount("dsmount", bench),
                    shuffled_epoch(bench, True))
            measure("shuffle-4proc", "dsmount", lambda: Mount("dsmount", bench),
                    shuffled_epoch(bench, False))
            measure("shuffle-4proc", "rclone-off", lambda: Mount("rclone", bench),
                    shuffled_epoch(bench, False))
        if "loader" in which:
            measure("dataloader", "dsmount+sampler", lambda: Mount("dsmount", bench),
                    loader_epoch(bench, True))
            measure("dataloader", "dsmount", lambda: Mount("dsmount", bench),
                    loader_epoch(bench, False))
        if "tree" in which:
            for name, work in (("tar", tar), ("cp-r", cp)):
                measure(name, "dsmount", lambda: Mount("dsmount", bench), work)
                measure(name, "dsmount-no-dir-order",
                        lambda: Mount("dsmount", bench, dir_order=False), work)
                measure(name, "rclone-off", lambda: Mount("rclone", bench), work)
    finally:
        bench.close()
    return out


def ratios(results: list[dict[str, Any]]) -> list[str]:
    """The targets' ratios, one line each."""
    by = {(r["row"], r["system"], r["latency_ms"]): r["files_per_s"] for r in results}
    lines = []
    pairs = [("shuffle-4proc", "dsmount+hints", "dsmount"),
             ("shuffle-4proc", "dsmount+hints", "rclone-off"),
             ("dataloader", "dsmount+sampler", "dsmount"),
             ("tar", "dsmount", "rclone-off"), ("cp-r", "dsmount", "rclone-off"),
             ("tar", "dsmount", "dsmount-no-dir-order"),
             ("cp-r", "dsmount", "dsmount-no-dir-order")]
    for latency in sorted({r["latency_ms"] for r in results}):
        for row, a, b in pairs:
            if (row, a, latency) in by and (row, b, latency) in by:
                x = by[(row, a, latency)] / by[(row, b, latency)]
                lines.append(f"{latency:g} ms  {row:14s} {a} / {b}: {x:.2f}x")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, action="append", help="ms per request (repeat)")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rows", default="shuffle,loader,tree")
    ap.add_argument("--json", dest="json_out", help="write the rows here")
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    for latency in args.latency or [10.0, 20.0]:
        results += rows(latency, args.files, tuple(args.rows.split(",")))
    for r in results:
        p = r.get("prefetch", {})
        extra = ""
        if p:
            h, d = p["hints"], p["dir_order"]
            extra = (f", never read {r['fetched_never_read'] // KiB} KiB, peak "
                     f"{r['cache_peak'] // KiB // 1024} MiB, ahead by hints {h['files_used']}"
                     f"/{h['files_prefetched']} used, by dir order {d['files_used']}/"
                     f"{d['files_prefetched']} used ({d['files_wasted']} wasted)")
        print(f"{r['latency_ms']:g} ms {r['row']:14s} {r['system']:22s} "
              f"{r['files_per_s']:8.1f} files/s {r['gets_per_file']:.3f} GETs/file{extra}")
    print("\n".join(ratios(results)))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
