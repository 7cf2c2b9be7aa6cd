"""Epoch harness shared by the FUSE prototypes: a cold-cache shuffled read of a tree of small files.

What it measures, for one prototype filesystem against the same files read from local disk:
  * files/s of an epoch (8 threads, shuffled, one open/read-all/close per file), page cache,
    dentries and inodes dropped before every epoch (`echo 3 > /proc/sys/vm/drop_caches`);
  * the ratio to the same epoch read straight from the local directory, alternated in one run;
  * the daemon's CPU per file: utime+stime of every process of the daemon (the process and all
    its descendants; `/proc/PID/stat` of a process already sums all of its threads, checked
    against the sum over `/proc/PID/task/*/stat`);
  * FUSE requests per file by kind, read from a shared counter file the daemon fills
    (one row of uint64 per worker, one column per FUSE opcode).

Run it through a prototype (`fuse_workers.py bench`, `rawfuse.py bench`); it needs root (drop
caches, mount). Measurements must run alone: `flock -x /tmp/machine.lock ...`.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_WORKERS = 64
OPCODES = {
    1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 14: "OPEN", 15: "READ", 17: "STATFS",
    18: "RELEASE", 25: "FLUSH", 26: "INIT", 27: "OPENDIR", 28: "READDIR", 29: "RELEASEDIR",
    38: "DESTROY", 42: "BATCH_FORGET", 44: "READDIRPLUS",
}
NCOLS = 64  # opcodes < 64 are counted; column 63 holds "forgotten inodes" (entries, not requests)
FORGOTTEN = 63


class Counters:
    """A file-backed table of uint64 counters, one row per worker, shared across fork."""

    def __init__(self, path: str, create: bool = False) -> None:
        size = MAX_WORKERS * NCOLS * 8
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(path, flags, 0o600)
        if create:
            os.ftruncate(fd, size)
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED)
        os.close(fd)
        self.table = memoryview(self.map).cast("Q")

    def row(self, worker: int) -> memoryview:
        return self.table[worker * NCOLS:(worker + 1) * NCOLS]

    def totals(self) -> list[list[int]]:
        return [list(self.row(w)) for w in range(MAX_WORKERS)]


def make_tree(root: Path, nfiles: int, size: int) -> list[str]:
    """Create (once) nfiles files of size bytes in subdirectories of 500; return relative paths."""
    rels = [f"d{i // 500:03d}/f{i:05d}.bin" for i in range(nfiles)]
    marker = root / f".made-{nfiles}-{size}"
    if not marker.exists():
        rng = random.Random(7)
        for rel in rels:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(size))
        os.sync()
        marker.touch()
    return rels


DROP = True


def drop_caches() -> None:
    if not DROP:  # functional checks only: never report numbers taken this way
        return
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def read_epoch(root: Path, rels: list[str], threads: int, seed: int) -> tuple[float, int]:
    """Read every file once (shuffled) with `threads` threads; return (seconds, bytes)."""
    order = list(rels)
    random.Random(seed).shuffle(order)
    nxt = iter(order)
    lock = threading.Lock()
    total = [0]
    errors: list[BaseException] = []

    def work() -> None:
        got = 0
        try:
            while True:
                with lock:
                    rel = next(nxt, None)
                if rel is None:
                    break
                fd = os.open(root / rel, os.O_RDONLY)
                try:
                    while n := len(os.read(fd, 1 << 20)):
                        got += n
                finally:
                    os.close(fd)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)
        with lock:
            total[0] += got

    ts = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"epoch failed: {errors[0]!r} ({len(errors)} threads)")
    return dt, total[0]


def _stat_ticks(path: str) -> tuple[int, int]:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime (fields 14, 15 of proc(5))


def tree_pids(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def daemon_cpu(pids: list[int]) -> tuple[float, float]:
    """CPU seconds of all pids: (from process stat, from the sum over their tasks)."""
    proc = tasks = 0
    for p in pids:
        try:
            proc += sum(_stat_ticks(f"/proc/{p}/stat"))
            for t in os.listdir(f"/proc/{p}/task"):
                tasks += sum(_stat_ticks(f"/proc/{p}/task/{t}/stat"))
        except OSError:
            continue
    return proc / CLK_TCK, tasks / CLK_TCK


def daemon_switches(pids: list[int]) -> int:
    """Context switches of every task of pids: a thundering herd shows up here per file."""
    total = 0
    for p in pids:
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                for line in Path(f"/proc/{p}/task/{t}/status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--tree", default="/var/tmp/dsm-probe-tree", help="local directory of files")
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--size-kib", type=int, default=100)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2, help="FUSE epochs (each after a local one)")
    ap.add_argument("--mnt", default="/var/tmp/dsm-probe-mnt")
    ap.add_argument("--counters", default="/dev/shm/dsm-probe-counters")
    ap.add_argument("--label", default="", help="name of the row in the output")
    ap.add_argument("--subdir", default="", help="where the tree appears under --mnt")
    ap.add_argument("--no-drop", action="store_true",
                    help="do not drop caches (a functional check, not a measurement)")


def run(args: argparse.Namespace, serve_cmd: list[str]) -> dict:
    """Build the tree, start `serve_cmd` (a daemon that mounts args.mnt), alternate epochs."""
    global DROP
    DROP = not args.no_drop
    root = Path(args.tree)
    rels = make_tree(root, args.files, args.size_kib * 1024)
    top = Path(args.mnt)
    top.mkdir(parents=True, exist_ok=True)
    mnt = top / args.subdir
    Counters(args.counters, create=True)
    daemon = subprocess.Popen(serve_cmd)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(top) or not (mnt / rels[0]).exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not mount (rc={daemon.poll()})")
            time.sleep(0.05)
        os.stat(mnt / rels[0])  # INIT done, workers up
        time.sleep(0.5)
        counters = Counters(args.counters)
        rows = []
        for ep in range(args.epochs):
            # The snapshot comes before the first drop: evicting the previous FUSE epoch's
            # inodes sends the FORGETs, and that work belongs to a FUSE epoch.
            pids = tree_pids(daemon.pid)
            c0, t0, s0 = daemon_cpu(pids), counters.totals(), daemon_switches(pids)
            drop_caches()
            ldt, lbytes = read_epoch(root, rels, args.threads, seed=ep)
            drop_caches()
            fdt, fbytes = read_epoch(mnt, rels, args.threads, seed=ep)
            time.sleep(0.2)  # let FORGETs of the epoch's own evictions settle into the counts
            c1, t1, s1 = daemon_cpu(pids), counters.totals(), daemon_switches(pids)
            if fbytes != lbytes:
                raise RuntimeError(f"bytes differ: fuse {fbytes} local {lbytes}")
            n = len(rels)
            kinds: dict[str, float] = {}
            workers_busy = 0
            for w in range(MAX_WORKERS):
                d = [b - a for a, b in zip(t0[w], t1[w], strict=True)]
                workers_busy += any(d)
                for op, cnt in enumerate(d):
                    if cnt:
                        name = OPCODES.get(op, "forgotten" if op == FORGOTTEN else f"op{op}")
                        kinds[name] = kinds.get(name, 0) + cnt / n
            cpu = c1[0] - c0[0]
            rows.append({
                "label": args.label, "epoch": ep, "files": n,
                "local_fps": round(n / ldt), "fuse_fps": round(n / fdt),
                "ratio": round(ldt / fdt, 3),
                "cpu_ms_per_file": round(cpu * 1000 / n, 3),
                "cpu_ms_per_file_tasks": round((c1[1] - c0[1]) * 1000 / n, 3),
                "cores": round(cpu / fdt, 2), "daemon_procs": len(pids),
                "workers_serving": workers_busy,
                "switches_per_file": round((s1 - s0) / n, 2),
                "req_per_file": {k: round(v, 3) for k, v in sorted(kinds.items())},
            })
            print(json.dumps(rows[-1]), flush=True)
        for rel in random.Random(1).sample(rels, min(50, len(rels))):
            if (mnt / rel).read_bytes() != (root / rel).read_bytes():
                raise RuntimeError(f"content differs: {rel}")
        return {"rows": rows}
    finally:
        if args.subdir:  # a full daemon: let it unmount on its way out
            daemon.terminate()
        else:
            subprocess.run(["umount", "-l", str(top)], check=False, capture_output=True)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def main_with(serve_args: Callable[[argparse.Namespace], list[str]],
              ap: argparse.ArgumentParser) -> None:
    args = ap.parse_args()
    if args.cmd == "bench":
        out = run(args, [sys.executable, *serve_args(args)])
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))


def table(dirs: list[str]) -> str:
    """Markdown rows from the --json files of run_all.sh runs: ranges over epochs >= 1
    (epoch 0 has no FORGETs yet), over every run directory given."""
    rows: dict[str, list[dict]] = {}
    for d in dirs:
        for f in sorted(Path(d).glob("*.json"), key=lambda p: p.stat().st_mtime):
            for r in json.loads(f.read_text())["rows"]:
                if r["epoch"] >= 1:
                    rows.setdefault(r["label"], []).append(r)

    def rng(label: str, key: str, fmt: str) -> str:
        vals = [r[key] for r in rows[label]]
        lo, hi = format(min(vals), fmt), format(max(vals), fmt)
        return lo if lo == hi else f"{lo}-{hi}"

    out = ["| design | files/s | local files/s | ratio | daemon CPU ms/file | cores "
           "| requests/file |",
           "|---|---|---|---|---|---|---|"]
    for label in rows:
        kinds = rows[label][-1]["req_per_file"]
        req = ", ".join(f"{k} {v:.2f}" for k, v in kinds.items() if k != "forgotten" and v >= 0.01)
        out.append(f"| {label} | {rng(label, 'fuse_fps', ',')} | {rng(label, 'local_fps', ',')} "
                   f"| {rng(label, 'ratio', '.2f')} | {rng(label, 'cpu_ms_per_file', '.3f')} "
                   f"| {rng(label, 'cores', '.2f')} | {req} |")
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Print the markdown table of run_all.sh outputs.")
    ap.add_argument("dirs", nargs="+", help="directories of --json row files")
    print(table(ap.parse_args().dirs))
