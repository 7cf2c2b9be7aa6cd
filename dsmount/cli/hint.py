"""`dsmount hint [--from FILE|-] [PATH ...]`: tell the daemon which files will be read next, in
order, so it fetches ahead of the reader (node/hints.py). Returns at once.

The hint lives with the process that ran this command (a script's shell: when it exits, the
hint ends) unless `--caller ID` names it (then a later `dsmount hint --caller ID` replaces it,
and it ends when idle). Exit status: 0 when the daemon took the hint, 1 when it refused it
(a path not under an attached datastore; nothing is kept then), 2 for bad usage.
"""

from __future__ import annotations

import json
import os
import sys

import click

from dsmount.cli.common import Context, fail, guarded
from dsmount.workspace.hinting import cancel, hint


def _read_paths(source: str) -> list[str]:
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
    except OSError as e:
        fail(f"cannot read {source}: {e.strerror or e}", 2)
    return [line for line in text.splitlines() if line.strip()]


@click.command("hint")
@click.argument("paths", nargs=-1)
@click.option("--from", "source", metavar="FILE|-",
              help="Read the paths from FILE (or stdin), one per line, in read order.")
@click.option("--caller", metavar="ID",
              help="Name the hint (default: this command's parent process, whose exit ends it).")
@click.option("--idle-timeout", type=float, metavar="SECONDS",
              help="End the hint after this long without a file of it opened.")
@click.option("--cancel", "cancel_it", is_flag=True, help="End the caller's hint.")
@click.option("--json", "as_json", is_flag=True, help="Print what the daemon took as JSON.")
@click.pass_obj
@guarded()
def hint_command(obj: Context, paths: tuple[str, ...], source: str | None, caller: str | None,
                 idle_timeout: float | None, cancel_it: bool, as_json: bool) -> None:
    """Fetch PATHs (absolute, under the mountpoint) ahead, in this order, while they are read."""
    ordered = list(paths) + (_read_paths(source) if source else [])
    pid = None
    if caller is None:  # live as long as whoever ran us (a script, a shell)
        pid = os.getppid()
        caller = f"pid {pid}"
    if cancel_it:
        cancel(caller=caller, socket=obj.socket)
        result = {"caller": caller, "files": 0}
    else:
        if not ordered:
            fail("no paths given (PATH ..., or --from FILE|-)", 2)
        bad = next((p for p in ordered if not os.path.isabs(p)), None)
        if bad is not None:
            fail(f"{bad!r} is not an absolute path (give paths under the mountpoint)", 2)
        result = hint(ordered, caller=caller, pid=pid, idle_timeout=idle_timeout,
                      socket=obj.socket)
    if as_json:
        click.echo(json.dumps(result))
    elif not cancel_it:
        click.echo(f"hinted {result['files']} file(s); fetching up to "
                   f"{result['window_files']} ahead")


COMMANDS = [hint_command]
