"""`dsmount warm NAME[/VERSION] [PATH ...]`: prefetch into the daemon's cache, with a progress
bar (files, bytes, rate, ETA) or JSON lines (`--json`), cancelled cleanly by Ctrl-C.

The daemon does the work (`warm` starts a job, `warm_status` reports it, `warm_cancel` stops
it; node/warm.py); this command only polls and draws. Exit status: 0 when every planned file
was warmed, 1 when the job failed or some files could not be read, 130 when interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from dsmount.cli.common import Context, fail, guarded
from dsmount.shared.sizes import format_size
from dsmount.workspace.progress import progress_enabled

POLL = 0.25  # seconds between progress polls: smooth enough for a bar, nothing for the daemon
JSON_EVERY = 1.0  # seconds between --json progress lines


class _Bar:
    """A tqdm bar in bytes whose total grows while the daemon is still listing."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024,
                            file=sys.stderr, dynamic_ncols=True, smoothing=0.1, desc="warm")

    def update(self, p: dict[str, Any]) -> None:
        if self.bar is None:
            return
        if self.bar.total != p["bytes_total"]:
            self.bar.total = p["bytes_total"]
        self.bar.update(p["bytes_done"] - self.bar.n)
        listing = ", listing" if p["listing"] else ""
        self.bar.set_postfix_str(f"{p['files_done']}/{p['files_total']} files{listing}",
                                 refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _summary(p: dict[str, Any]) -> str:
    rate = p["rate_bytes_per_s"]
    text = (f"{p['state']}: {p['files_done']}/{p['files_total']} files, "
            f"{format_size(p['bytes_done'])} in {p['elapsed']:.1f}s "
            f"({format_size(rate)}/s), {format_size(p['bytes_fetched'])} fetched, "
            f"{p['files_cached']} file(s) already cached, {p['target']} cache")
    if p.get("message"):
        text += f"; {p['message']}"
    return text


@click.command("warm")
@click.argument("target", metavar="NAME[/VERSION]")
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("--version", "version", default=None, help="The version (or NAME/VERSION).")
@click.option("--parallel", type=click.IntRange(1, 256), default=None,
              help="Files fetched at once [the daemon's max_concurrent_gets].")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines: progress about once a second, then the final state.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
@guarded()
def warm(obj: Context, target: str, paths: tuple[str, ...], version: str | None,
         parallel: int | None, as_json: bool, quiet: bool) -> None:
    """Prefetch a datastore (or PATHs in it) into the cache: the disk cache when the daemon
    has one, else memory while it fits. What is cached already is not fetched again; after
    it, the files read at cache speed and keep reading while the backend is down."""
    started = obj.call("warm", name=target, version=version, paths=list(paths),
                       parallel=parallel)
    job = started["job"]
    if not as_json:
        click.echo(f"dsmount: warming {started['datastore']} {started['note']}", err=True)
    bar = _Bar(progress_enabled(quiet) and not as_json)
    last_line = 0.0
    progress = started
    try:
        while progress["state"] == "running":
            time.sleep(POLL)
            progress = obj.call("warm_status", job=job)
            bar.update(progress)
            if as_json and time.monotonic() - last_line >= JSON_EVERY:
                click.echo(json.dumps(progress))
                last_line = time.monotonic()
    except KeyboardInterrupt:
        bar.close()
        progress = _cancel(obj, job)
        click.echo(json.dumps(progress) if as_json else f"dsmount: {_summary(progress)}",
                   err=not as_json)
        sys.exit(130)
    bar.close()
    if as_json:
        click.echo(json.dumps(progress))
    else:
        click.echo(_summary(progress))
        for message in progress["error_messages"]:
            click.echo(f"dsmount: could not warm {message}", err=True)
    if progress["state"] != "done" or progress["errors"]:
        fail(progress.get("message") or f"{progress['errors']} file(s) could not be warmed")


def _cancel(obj: Context, job: str) -> dict[str, Any]:
    """Cancel the job and wait (a little) until the daemon says it stopped."""
    progress = obj.call("warm_cancel", job=job)
    deadline = time.monotonic() + 10
    while progress["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        progress = obj.call("warm_status", job=job)
    return progress


COMMANDS = [warm]
