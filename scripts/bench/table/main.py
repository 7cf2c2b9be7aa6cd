"""The comparison table: dsmount beside direct SDK clients, adlfs and rclone mounts on a
local Azurite, and dsmount on a file share beside the direct file-share SDK on the Azure
Files emulator, every system running the same workloads on the same bytes in one run.

    python -m scripts.bench --quick --only sdk-aio,rclone-off,dsmount,local-disk --no-writes
    python -m scripts.bench --latency 10        # every request 10 ms late, for every system
    python -m scripts.bench --json docs/bench-results/DATE-full.json   # then: render

It prints a markdown table and the goals (scripts/bench/targets.py), met or not, and with
`--json` writes the figures for `python -m scripts.bench render`. Run it as root (FUSE
mounts, drop_caches), alone on the machine.

Invariants:
- Cold measurements drop the kernel page cache first (when allowed; the run notes it if
  not); warm re-reads never do.
- A cold epoch finds nothing cached in any system: dsmount reads datastores no earlier row
  has read, and rclone-full (whose disk cache holds the files since row 3) does not run it.
- MB/s means 10**6 bytes per second (as `dd` prints it); sizes in MiB/GiB are powers of two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from scripts.bench.harness.batch import timed
from scripts.bench.harness.cleanup import log, on_exit, run_all_cleanups
from scripts.bench.harness.meters import CacheDropper, MiB, wait_quiet
from scripts.bench.harness.servers import ProxyProcess, start_share_emulator, start_store
from scripts.bench.report import render_run
from scripts.bench.table import write_rows as wr
from scripts.bench.table.client import Context, Results
from scripts.bench.table.dataset import (
    CONTAINER,
    FULL,
    LIST_CONTAINER,
    MIL_DIRS,
    MIL_FILES,
    QUICK,
    SHARE,
    Dataset,
    KiB,
    upload_dataset,
    upload_share,
)
from scripts.bench.table.notes import method_notes
from scripts.bench.table.rows import CLIENTS, FILESHARE, RCLONE, RCLONE_WRITES, WORKLOADS, WRITERS
from scripts.bench.table.run import run_client
from scripts.bench.table.versions import prepare_versions
from scripts.bench.targets import ratios


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small dataset (2 x 256 MiB, 1,000 small files, ...)")
    p.add_argument("--only", default="", help=f"comma-separated clients, of: {','.join(CLIENTS)}")
    p.add_argument("--skip-rclone", action="store_true", help="leave out both rclone mounts")
    p.add_argument("--workdir", type=Path, help="where mounts, caches and logs go (default: tmp)")
    p.add_argument("--keep", action="store_true", help="keep the workdir (logs) afterwards")
    p.add_argument(
        "--fs-tiny",
        type=int,
        default=None,
        help="write at most this many tiny files to the share (default: the scale's count)",
    )
    p.add_argument("--markdown", type=Path, help="also write the markdown table to this file")
    p.add_argument("--json", type=Path, help="write raw figures as JSON to this file")
    p.add_argument(
        "--cap",
        type=float,
        default=20.0,
        help="seconds after which a count-based workload (small files, preads) stops issuing "
        "requests; its rate is taken over what ran (default 20)",
    )
    p.add_argument(
        "--latency",
        type=float,
        default=None,
        metavar="MS",
        help="put the fault proxy (own process) in front of every store for every system, "
        "holding each request MS milliseconds (0: proxy and request counts, no delay); "
        "default: clients talk to the stores directly (loopback)",
    )
    p.add_argument(
        "--million",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run row 11, the synthesised 1,000,000-file version (default: at full scale only)",
    )
    p.add_argument(
        "--million-only",
        action="store_true",
        help="run row 11 alone: implies --only dsmount --million; no other workload runs",
    )
    p.add_argument(
        "--million-dirs",
        type=int,
        default=MIL_DIRS,
        help=f"directories of {MIL_FILES} files in row 11's version (default {MIL_DIRS}: a "
        "million files; fewer only to smoke-test the row, its figures then are not the target's)",
    )
    p.add_argument(
        "--writes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the write rows 12-14 (default yes) for the clients that have them: "
        f"{', '.join(WRITERS)} (an Azurite of their own)",
    )
    p.add_argument(
        "--writes-only",
        action="store_true",
        help="only the write rows: no dataset upload, no read rows (implies --writes)",
    )
    p.add_argument(
        "--cache-budget",
        default="256MiB",
        help="the dsmount daemons' --cache-budget (default 256MiB); RSS targets follow it",
    )
    args = p.parse_args(argv)
    if args.latency is not None and args.latency < 0:
        p.error("--latency must be >= 0")
    if args.million_dirs < 1:
        p.error("--million-dirs must be >= 1")
    if args.million_only:
        if args.million is False:
            p.error("--million-only contradicts --no-million")
        args.only, args.million = "dsmount", True
    clients = [c.strip() for c in args.only.split(",") if c.strip()] if args.only else list(CLIENTS)
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        p.error(f"unknown client(s): {', '.join(sorted(unknown))}")
    if args.skip_rclone:
        clients = [c for c in clients if c not in (*RCLONE, RCLONE_WRITES)]
    if args.writes_only:
        args.writes = True
        clients = [c for c in clients if c in WRITERS]
    args.clients = [c for c in CLIENTS if c in clients]
    return args


def network_desc(proxy: ProxyProcess | None, proxied: bool) -> str:
    if proxied and proxy is not None:
        return (f"every system through tests/support/faultproxy.py (own process), "
                f"+{proxy.latency_ms:g} ms per request")  # fmt: skip
    if proxy is not None:
        return "loopback, no proxy (row 11 only: through the fault proxy, 0 ms)"
    return "loopback, no proxy"


def servers_desc(results: Results) -> str:
    servers = []
    if any(c not in FILESHARE for c in results):
        servers.append("Azurite in memory on 127.0.0.1")
    if any(c in FILESHARE for c in results):
        servers.append("Azure Files emulator (tests/support/azurefiles, own process), 127.0.0.1")
    return "; ".join(servers)


def load_average() -> str:
    # Other work on the machine skews every column alike; the reader should know how much.
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_workdir(args: argparse.Namespace) -> Path:
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return args.workdir.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="dsmount-bench-"))
    if not args.keep:
        on_exit(lambda: shutil.rmtree(workdir, ignore_errors=True))
    return workdir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m scripts.bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    t_start = time.perf_counter()
    scale = QUICK if args.quick else FULL
    wscale = wr.WRITE_QUICK if args.quick else wr.WRITE_FULL
    notes: list[str] = [f"load average at start: {load_average()}"]
    if os.geteuid() != 0:
        notes.append("not run as root: mounts or drop_caches may fail")
    try:
        workdir = make_workdir(args)
        log(f"workdir {workdir}; clients: {', '.join(args.clients)}")
        ds = Dataset(scale)
        total = 2 * scale.big_size + scale.n_small * scale.small_size
        data = listing = share = write = write_src = None
        reads = not args.writes_only
        if reads and any(c not in FILESHARE for c in args.clients):
            data = start_store(workdir / "azurite-data", CONTAINER)
            listing = start_store(workdir / "azurite-list", LIST_CONTAINER)
            secs, _ = timed(lambda: asyncio.run(upload_dataset(data, listing, ds)))
            log(f"uploaded {total / MiB:.0f} MiB + {scale.n_tiny} tiny blobs in {secs:.1f}s")
            notes.append(f"dataset upload: {secs:.1f} s")
        if reads and any(c in FILESHARE for c in args.clients):
            share = start_share_emulator(workdir / "azurefiles", SHARE)
            n_tiny = scale.n_tiny if args.fs_tiny is None else min(args.fs_tiny, scale.n_tiny)
            share = replace(share, n_tiny=n_tiny)
            secs, _ = timed(lambda: asyncio.run(upload_share(share, ds)))
            log(f"wrote {total / MiB:.0f} MiB + {n_tiny} tiny files to the share in {secs:.1f}s")
            notes.append(f"file share upload: {secs:.1f} s")
            if n_tiny < scale.n_tiny:
                notes.append(
                    f"file share: only {n_tiny} of {scale.n_tiny} tiny files written "
                    "(--fs-tiny): its listing figures are for that many entries"
                )
        if args.writes and any(c in WRITERS for c in args.clients):
            write = start_store(workdir / "azurite-write", wr.WRITE_CONTAINER, writable=True)
            secs, write_src = timed(lambda: wr.WriteSource(wscale))
            on_exit(write_src.cleanup)
            log(f"write sources in {write_src.dir} made in {secs:.1f}s")

        ctx = Context(
            workdir=workdir,
            ds=ds,
            data=data,
            listing=listing,
            share=share,
            dropper=CacheDropper(),
            offsets1=ds.pread_offsets(1),
            offsets8=ds.pread_offsets(8),
            cap_s=args.cap,
            shuffle1=ds.shuffled(1),
            shuffle2=ds.shuffled(2),
            shuffle3=ds.shuffled(3),
            shuffle4=ds.shuffled(4),
            cache_budget=args.cache_budget,
            million_dirs=args.million_dirs,
            million_only=args.million_only,
            write=write,
            write_src=write_src,
            writes_only=args.writes_only,
        )
        with_dsmount = "dsmount" in args.clients
        million = with_dsmount and (args.million if args.million is not None else not args.quick)
        if args.latency is not None or (million and data is not None):
            upstreams = [s.endpoint for s in (data, listing, share, write) if s is not None]
            proxy = ProxyProcess(workdir / "faultproxy", upstreams, args.latency or 0.0)
            ctx.proxy = proxy
            if args.latency is not None:  # every client's store is the proxy's from here on
                ctx.proxied = True
                ctx.data = data and proxy.store(data)
                ctx.listing = listing and proxy.store(listing)
                ctx.share = share and proxy.share(share)
                ctx.write = write and proxy.store(write)
        if with_dsmount and data is not None:
            prepare_versions(ctx, data, million, notes)
        results: Results = {}
        for name in args.clients:
            t0 = time.perf_counter()
            wait_quiet([s.pid for s in (data, listing, share, write, ctx.proxy) if s is not None])
            results[name] = run_client(name, ctx)
            log(f"{name}: done in {time.perf_counter() - t0:.1f}s")
        if ctx.dropper.failed:
            notes.append(ctx.dropper.failed)
    finally:
        run_all_cleanups()

    elapsed = time.perf_counter() - t_start
    notes.append(f"load average at end: {load_average()}")
    notes.append(f"whole benchmark run: {elapsed:.0f} s")
    for client, cells in results.items():
        for key, note in cells.get("notes", {}).items():
            notes.append(f"{client}, {WORKLOADS[key][0]}: {note}")
    notes += method_notes(ctx, results)
    scale_desc = (
        f"{'quick' if args.quick else 'full'}: 2 x {scale.big_size // MiB} MiB blobs, "
        f"{scale.n_small} x {scale.small_size // KiB} KiB files in {scale.small_dirs} dirs, "
        f"{scale.n_tiny} tiny blobs in one dir, {scale.n_preads} x "
        f"{scale.pread_size // KiB} KiB preads"
    )
    if args.writes_only:
        scale_desc = f"{'quick' if args.quick else 'full'}, write rows only"
    if ctx.write is not None:
        scale_desc += f"; {wscale.desc()}"
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command,
        "scale": asdict(scale),
        "scale_desc": scale_desc,
        "servers": servers_desc(results),
        "network": network_desc(ctx.proxy, ctx.proxied),
        "latency_ms": args.latency,
        "cache_budget": args.cache_budget,
        "machine": f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "notes": notes,
        "elapsed_s": elapsed,
    }
    from dsmount.shared.sizes import parse_size

    rs = ratios(results, parse_size(args.cache_budget) / MiB, reads=not args.writes_only)
    md = render_run(results, meta, rs)
    print(md)
    if args.markdown:
        args.markdown.write_text(md)
    if args.json:
        payload = {"meta": meta, "results": results, "ratios": [asdict(r) for r in rs]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if args.keep:
        log(f"kept {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
