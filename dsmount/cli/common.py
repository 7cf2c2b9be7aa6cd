"""What both sides of the command line share, written once: the context that reaches the
daemon, error handling (one line on stderr, a non-zero exit), tables, and the authentication
options with the rule that exactly one source of a credential is given."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import click

from dsmount.cli.azure_env import from_environment
from dsmount.control.client import ControlClient
from dsmount.errors import DsmountError
from dsmount.shared.secretref import read_secret_env, read_secret_file


class Context:
    """`ctx.obj` of every command: where the daemon's control socket is."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def client(self) -> ControlClient:
        return ControlClient(self.socket)

    def call(self, op: str, **args: Any) -> Any:
        return self.client().call(op, **args)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"dsmount: {message}", err=True)
    sys.exit(code)


def run_guarded(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except DsmountError as e:
        fail(str(e))


def guarded(exit_code: int = 1) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command whose dsmount errors end it with one line and `exit_code`; Ctrl-C with 130."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except DsmountError as e:
                fail(str(e), exit_code)
            except KeyboardInterrupt:
                fail("interrupted", 130)

        return inner

    return wrap


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    for row in [header, *rows]:
        click.echo(fmt.format(*[str(x) for x in row]).rstrip())


# -- authentication -----------------------------------------------------------------------------
SECRET_KINDS = ("connection_string", "account_key", "sas_token")
_HELP = {
    "connection_string": "a connection string",
    "account_key": "the account key",
    "sas_token": "a SAS token",
}


def auth_options(*, registry: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The credential flags (`--account-key-env VAR`, `--sas-token-file FILE`, ...). Secrets
    come from an environment variable or a 0600 file, never from argv. `registry` adds
    `--by-reference` (record where the secret lives instead of storing it)."""
    opts = []
    for kind in SECRET_KINDS:
        flag = kind.replace("_", "-")
        opts.append(click.option(f"--{flag}-env", metavar="VAR",
                                 help=f"Env var holding {_HELP[kind]}."))
        opts.append(click.option(f"--{flag}-file", metavar="FILE",
                                 help=f"0600 file holding {_HELP[kind]}."))
    opts += [
        click.option("--azure-ad", is_flag=True,
                     help="Azure AD (managed identity, az login, env credentials). The "
                     "default when no flag is given and no AZURE_STORAGE_CONNECTION_STRING, "
                     "AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY / AZURE_STORAGE_SAS_TOKEN are "
                     "set (Azure's own conventions, read as with --*-env)."),
        click.option("--client-id", default=None, help="User-assigned managed identity id."),
        click.option("--anonymous", is_flag=True, help="Public container: no credential."),
    ]
    if registry:
        opts.append(click.option(
            "--by-reference", is_flag=True,
            help="Record the env var / file name and read it at each use, instead of "
            "storing the secret in the registry's 0600 secrets file."))

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return apply


@dataclass(frozen=True)
class AuthChoice:
    """The one credential source the flags named: a secret kind with its env var or file,
    or "azure_ad" (the default) or "anonymous"."""

    kind: str
    env: str | None = None
    file: str | None = None
    client_id: str | None = None
    #: The account the environment named (AZURE_STORAGE_ACCOUNT), for when no --account is given.
    account: str | None = None
    #: Where the credential came from, when it was not a flag (shown to the user on stderr).
    note: str | None = None

    def secret(self) -> str | None:
        if self.env:
            return read_secret_env(self.env)
        if self.file:
            return read_secret_file(self.file)
        return None

    def to_wire(self) -> dict[str, Any]:
        """The `auth` object of an attach request, the secret read from its source."""
        if self.kind in SECRET_KINDS:
            return {"kind": self.kind, "secret": self.secret()}
        return {"kind": self.kind, **({"client_id": self.client_id} if self.client_id else {})}


def choose_auth(
    options: dict[str, Any],
    *,
    account: str | None = None,
    environ: Mapping[str, str] | None = None,
    use_environment: bool = True,
) -> AuthChoice:
    """The AuthChoice of the flags in `options` (as click passes them); exactly one source.

    With no auth flag at all and `use_environment`, Azure's own variables decide (see
    `dsmount.cli.azure_env`; `account` is the --account flag), else Azure AD."""
    given = [
        (kind, options.get(f"{kind}_env"), options.get(f"{kind}_file"))
        for kind in SECRET_KINDS
        if options.get(f"{kind}_env") or options.get(f"{kind}_file")
    ]
    azure_ad, anonymous = bool(options.get("azure_ad")), bool(options.get("anonymous"))
    if any(env and file for _, env, file in given) or len(given) + azure_ad + anonymous > 1:
        raise click.UsageError("give one way to authenticate")
    client_id = options.get("client_id")
    if client_id and (given or anonymous):
        raise click.UsageError("--client-id goes with --azure-ad")
    if given:
        kind, env, file = given[0]
        return AuthChoice(kind, env, file)
    if anonymous:
        return AuthChoice("anonymous")
    if use_environment and not azure_ad and not client_id:
        found = from_environment(account, environ)
        if found is not None:
            return AuthChoice(found.kind, env=found.env, account=found.account,
                              note=found.note())
    return AuthChoice("azure_ad", client_id=client_id)
