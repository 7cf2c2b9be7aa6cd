"""`dsmount doctor`: check the node and every attached datastore, one line per check.

Presentation only. The node checks are `dsmount.node.doctor_node`'s (run here: they need no
credential); the per-datastore probes are the daemon's `doctor` operation (the daemon holds the
credentials; this command never sees one). Exit status 1 when any check is an error.
"""

from __future__ import annotations

import json
import sys

import click

from dsmount.cli.common import Context
from dsmount.control.client import ControlClient
from dsmount.errors import DsmountError
from dsmount.node.doctor import Check, exit_code

# `status` is cheap; a daemon that does not answer it within this is reported, not waited for.
STATUS_TIMEOUT = 15.0
PROBE_TIMEOUT = 90.0


def _line(check: Check) -> str:
    text = f"{check.status:<8}{check.name:<17}{check.subject}: {check.detail}"
    return f"{text} -- fix: {check.fix}" if check.fix else text


def _gather(obj: Context, config_path: str | None, mountpoint: str | None,
            state_dir: str | None) -> list[Check]:
    from dsmount.node.config import load_config
    from dsmount.node.doctor import check_daemon
    from dsmount.node.doctor_node import node_checks, view_from_config, view_from_status

    try:
        status = ControlClient(obj.socket, timeout=STATUS_TIMEOUT).call("status")
        error = None
    except DsmountError as e:
        status, error = None, str(e)
    checks = [check_daemon(obj.socket, status is not None,
                           status.get("pid") if status else None, error)]
    if status is not None:
        view = view_from_status(status, obj.socket)
    else:
        try:
            config = load_config(config_path, {"daemon": {
                "mountpoint": mountpoint, "state_dir": state_dir, "socket": obj.socket}})
        except DsmountError as e:
            return [*checks, Check("config", config_path or "default", "error", str(e),
                                   "fix the config file")]
        view = view_from_config(config, obj.socket)
    checks += node_checks(view, status is not None)
    if status is None:
        return checks
    try:
        probes = ControlClient(obj.socket, timeout=PROBE_TIMEOUT).call("doctor")["datastores"]
    except DsmountError as e:
        return [*checks, Check("datastores", obj.socket, "error",
                               f"the daemon could not probe its datastores: {e}",
                               "upgrade the daemon if it does not know `doctor`")]
    for probe in probes:
        checks += [Check.from_dict(c) for c in probe.get("checks", [])]
    return checks


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--config", "config_path", default=None, metavar="FILE",
              help="The daemon's config, for when it does not answer [env DSMOUNT_CONFIG].")
@click.option("--mountpoint", default=None,
              help="The daemon's mountpoint, for when it does not answer.")
@click.option("--state-dir", default=None,
              help="The daemon's state directory, for when it does not answer.")
@click.pass_obj
def doctor(obj: Context, as_json: bool, config_path: str | None, mountpoint: str | None,
           state_dir: str | None) -> None:
    """Check this node and every attached datastore; say what is wrong and how to fix it.

    One line per check (ok, warning or error, with the fix); exit status 1 when any check is
    an error. Secrets are never shown."""
    checks = _gather(obj, config_path, mountpoint, state_dir)
    code = exit_code(checks)
    if as_json:
        click.echo(json.dumps({"ok": code == 0, "checks": [c.as_dict() for c in checks]},
                              indent=1))
    else:
        for check in checks:
            click.echo(_line(check))
        counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warning", "error")}
        click.echo(f"doctor: {counts['ok']} ok, {counts['warning']} warning(s), "
                   f"{counts['error']} error(s)", err=True)
    sys.exit(code)


COMMANDS = [doctor]
