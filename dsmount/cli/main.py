"""`dsmount ...`: the command line, one module per side (`node`: the daemon and what talks to
it; `workspace`: the registry, transfers, `dsmount run`) and what they share (`common`).

Errors are one line on stderr and a non-zero exit code; `--json` prints machine-readable
output. Secrets are read from an environment variable or a 0600 file, never from argv.
"""

from __future__ import annotations

import click

from dsmount.cli import dataset, doctor, node, warm, workspace
from dsmount.cli.common import Context
from dsmount.control.client import default_socket


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", "socket_path", envvar="DSMOUNT_SOCKET", default=None,
              help="Control socket of the daemon (env DSMOUNT_SOCKET).", metavar="PATH")
@click.version_option(package_name="dsmount")
@click.pass_context
def cli(ctx: click.Context, socket_path: str | None) -> None:
    """dsmount: datastores (Azure blob containers, file shares, local directories) as files."""
    ctx.obj = Context(socket_path or default_socket())


for command in [*node.COMMANDS, *warm.COMMANDS, *workspace.COMMANDS, *doctor.COMMANDS,
                *dataset.COMMANDS]:
    cli.add_command(command)


def main() -> None:
    cli(prog_name="dsmount")
