"""Results as people read them: one run's JSON rendered as a markdown table with its goals
(`render_run`), and docs/benchmarks.md rendered from the saved runs (`render_docs`).

docs/benchmarks.md holds, between two markers, one section per JSON file under
docs/bench-results/ (newest first), rendered here; what lies outside the markers (the
introduction, the dated history) is left as it is. Nothing in the rendered part is typed by
hand: re-rendering gives the same text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from scripts.bench.table.rows import CLIENTS, WORKLOADS
from scripts.bench.targets import Ratio

BEGIN = "<!-- rendered by `python -m scripts.bench render`: begin -->"
END = "<!-- rendered by `python -m scripts.bench render`: end -->"
Results = dict[str, dict[str, Any]]


def fmt_cell(v: Any, unit: str) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, dict) and "error" in v:
        return "error: " + str(v["error"]).replace("|", "\\|")[:120]
    if isinstance(v, dict):  # requests by kind, per file
        return ", ".join(f"{k} {n:.2f}" for k, n in v.items()) or "none"
    if unit == "s":
        return f"{v:.3f}"
    if unit in ("req/file", "x", "CPU-s", "ms"):
        return f"{v:.2f}"
    return f"{v:,.0f}" if v >= 100 or unit == "calls" else f"{v:.1f}"


def md_escape(text: str) -> str:
    """A table cell's text: a `|` (as in `find | wc -l`) would end the cell."""
    return text.replace("|", "\\|")


def render_run(results: Results, meta: dict[str, Any], rs: list[Ratio]) -> str:
    clients = [c for c in CLIENTS if c in results] + [c for c in results if c not in CLIENTS]
    lines = [
        f"Scale: {meta['scale_desc']}. {meta['servers']}; {meta['network']}; {meta['machine']}.",
        "",
        "| workload | unit | " + " | ".join(clients) + " |",
        "|---|---|" + "---:|" * len(clients),
    ]
    for key, (label, unit) in WORKLOADS.items():
        if all(results[c].get(key) is None for c in clients):
            continue  # a row no selected client measures (e.g. row 11 without --million)
        cells = [
            fmt_cell(results[c].get(key), unit)
            + ("*" if key in results[c].get("notes", {}) else "")
            for c in clients
        ]
        lines.append(f"| {md_escape(label)} | {unit} | " + " | ".join(cells) + " |")
    lines += ["", "| dsmount target | measured | target | met? |", "|---|---:|---|---|"]
    for r in rs:
        measured = "n/a" if r.measured is None else f"{r.measured:.2f}"
        met = "n/a" if r.met is None else ("yes" if r.met else "**no**")
        label = md_escape(f"{r.group}: {r.label} ({r.detail})")
        lines.append(f"| {label} | {measured} | {r.target} | {met} |")
    lines.append("")
    lines.append(f"Goals met: {sum(1 for r in rs if r.met)} of "
                 f"{sum(1 for r in rs if r.met is not None)} measured "
                 f"({sum(1 for r in rs if r.met is None)} reported only or not measured).")
    if meta["notes"]:
        lines += ["", "Notes (* marks a figure with a note):", *(f"- {n}" for n in meta["notes"])]
    return "\n".join(lines) + "\n"


def load_run(path: Path) -> tuple[Results, dict[str, Any], list[Ratio]]:
    payload = json.loads(path.read_text())
    return payload["results"], payload["meta"], [Ratio(**r) for r in payload["ratios"]]


def render_docs(results_dir: Path, doc: Path) -> str:
    """docs/benchmarks.md with its rendered part made from every run in `results_dir`."""
    sections = []
    runs = [(path, *load_run(path)) for path in results_dir.glob("*.json")]
    # Newest first, by the date (and time, where recorded) each run was taken.
    runs.sort(key=lambda run: (run[2].get("date") or run[0].stem, run[0].name), reverse=True)
    for path, results, meta, rs in runs:
        title = meta.get("date") or path.stem
        how = meta.get("command", "")
        rel = Path(os.path.relpath(path, doc.parent)).as_posix()
        sections.append(f"### {title}: {meta['scale_desc'].split(':')[0]} scale\n\n"
                        + (f"`{how}` (results: [{rel}]({rel}))\n\n" if how else "")
                        + render_run(results, meta, rs))
    rendered = "\n".join([BEGIN, "", *sections, END])
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + rendered + tail
