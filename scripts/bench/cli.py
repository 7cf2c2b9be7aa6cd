"""One command line for every benchmark: `python -m scripts.bench [SUITE] [OPTIONS]`.

Without a suite name it runs the comparison table (its options are the table's). Every suite
runs with the harness's exit handling: SIGTERM/SIGHUP unwind through `finally`, and whatever
a suite started is released on the way out.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from scripts.bench.harness.cleanup import install_signal_handlers, run_all_cleanups

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITES = {
    "warm": "scripts.bench.suites.warm",
    "streams": "scripts.bench.suites.streams",
    "writes": "scripts.bench.suites.writes",
    "transfer": "scripts.bench.suites.transfer",
    "adapters": "scripts.bench.suites.adapters",
    "soak": "scripts.bench.suites.soak",
}


def render(argv: list[str]) -> int:
    from scripts.bench.report import render_docs

    p = argparse.ArgumentParser(prog="python -m scripts.bench render",
                                description="Render docs/benchmarks.md from saved runs.")
    p.add_argument("--results", type=Path, default=REPO_ROOT / "docs" / "bench-results")
    p.add_argument("--doc", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    args = p.parse_args(argv)
    args.doc.write_text(render_docs(args.results, args.doc))
    print(f"wrote {args.doc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "render":
        return render(argv[1:])
    install_signal_handlers()
    try:
        if argv and argv[0] in SUITES:
            return int(importlib.import_module(SUITES[argv[0]]).main(argv[1:]) or 0)
        from scripts.bench.table.main import main as table

        return table(argv)
    finally:
        run_all_cleanups()
