"""The benchmark package's pure parts: its /proc meters count every process and thread of a
system, its goals report a missing figure as "n/a" (never as met), and docs/benchmarks.md's
rendered part is made only from saved runs (rendering twice changes nothing, and the text
outside the markers is kept). No module of scripts/ grows past 500 lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from scripts.bench.harness import meters
from scripts.bench.report import BEGIN, END, render_docs
from scripts.bench.targets import ratios

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_no_script_grows_past_500_lines() -> None:
    long = {str(p.relative_to(SCRIPTS)): n for p in SCRIPTS.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}


def test_cpu_seconds_count_every_thread_and_child_process() -> None:
    # A parent that sleeps and a child that spins in two threads: the tree's CPU is the
    # child's, counted from the parent's pid.
    spin = ("import threading,time\n"
            "def f():\n t=time.thread_time()\n while time.thread_time()-t<0.4: pass\n"
            "ts=[threading.Thread(target=f) for _ in range(2)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\ntime.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess,sys,time\n"
                               f"p=subprocess.Popen([sys.executable,'-c',{spin!r}])\n"
                               "time.sleep(30)\n"])
    try:
        deadline = time.monotonic() + 20
        while meters.cpu_seconds([parent.pid]) < 0.6:  # the spinning child, both threads
            assert time.monotonic() < deadline, "the child's CPU never showed in the tree"
            time.sleep(0.05)
        assert len(meters.descendants(parent.pid)) == 2
        assert meters.rss_bytes([parent.pid]) > meters.vm_rss_bytes(parent.pid)
    finally:
        for pid in reversed(meters.descendants(parent.pid)):
            os.kill(pid, 9)
        parent.wait()


def test_a_vanished_process_counts_zero() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert meters.cpu_seconds([proc.pid]) == 0
    assert meters.rss_bytes([proc.pid]) == 0


def test_peak_rss_keeps_the_peak() -> None:
    peak = meters.PeakRss([os.getpid()], interval=0.01)
    peak.start()
    block = bytearray(64 << 20)  # touched: resident
    block[::4096] = b"x" * len(block[::4096])
    time.sleep(0.1)
    del block
    assert peak.stop() >= 64 << 20


def test_a_missing_figure_is_reported_never_met() -> None:
    results = {"dsmount": {"disk_epoch_per_s": 900.0}, "sdk-aio": {}}
    by_label = {r.label: r for r in ratios(results, 256.0)}
    local = by_label["disk-cache epoch vs the same files on local disk"]
    assert local.met is None and local.measured is None
    cpu = by_label["daemon CPU per file, disk-cache epoch"]
    assert cpu.met is None


def test_goals_compare_with_the_best_of_the_systems_named() -> None:
    results = {"dsmount": {"disk_epoch_per_s": 3000.0, "disk_epoch_cpu_ms": 0.3},
               "local-disk": {"disk_epoch_per_s": 5000.0}}
    by_label = {r.label: r for r in ratios(results, 256.0)}
    epoch = by_label["disk-cache epoch vs the same files on local disk"]
    assert epoch.measured == 0.6 and epoch.met is True
    assert by_label["daemon CPU per file, disk-cache epoch"].met is False


def run_payload(date: str) -> dict:
    results = {"dsmount": {"disk_epoch_per_s": 1000.0,
                           "fuse_disk_epoch": {"lookup": 1.0, "open": 1.0}},
               "local-disk": {"disk_epoch_per_s": 4000.0}}
    meta = {"date": date, "command": "python -m scripts.bench --quick", "scale_desc": "quick: x",
            "servers": "Azurite", "network": "loopback", "machine": "2 CPUs", "notes": []}
    from dataclasses import asdict
    return {"meta": meta, "results": results,
            "ratios": [asdict(r) for r in ratios(results, 256.0)]}


def test_docs_are_rendered_from_saved_runs_only(tmp_path: Path) -> None:
    runs = tmp_path / "bench-results"
    runs.mkdir()
    for date in ("2026-12-05", "2026-12-06"):
        (runs / f"{date}-quick.json").write_text(json.dumps(run_payload(date)))
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{BEGIN}\nstale text\n{END}\n\n## History\nold\n")
    first = render_docs(runs, doc)
    assert "stale text" not in first
    assert first.startswith("# Benchmarks\n\nintro\n") and first.endswith("## History\nold\n")
    assert first.index("2026-12-06") < first.index("2026-12-05")  # newest first
    assert "| 18. disk-cache epoch" in first and "lookup 1.00, open 1.00" in first
    assert "| 0.25 |" in first  # the ratio 1000 / 4000, computed, not typed
    doc.write_text(first)
    assert render_docs(runs, doc) == first


def test_cleanup_runs_last_registered_first_and_once() -> None:
    from scripts.bench.harness import cleanup

    order: list[str] = []
    cleanup.on_exit(lambda: order.append("workdir"))
    early = cleanup.on_exit(lambda: order.append("server"))
    cleanup.on_exit(lambda: order.append("mount"))
    runner = threading.Thread(target=early)  # released early, from another thread
    runner.start()
    runner.join()
    cleanup.run_all_cleanups()
    early()
    cleanup.run_all_cleanups()
    assert order == ["server", "mount", "workdir"]
