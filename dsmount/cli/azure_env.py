"""Azure's own conventions for credentials, as the Azure CLI reads them: with no auth flag,
`AZURE_STORAGE_CONNECTION_STRING`, else `AZURE_STORAGE_ACCOUNT` with `AZURE_STORAGE_KEY` or
`AZURE_STORAGE_SAS_TOKEN` (`AZURE_STORAGE_AUTH_MODE=login` asks for Azure AD instead, and
`AZURE_STORAGE_ACCOUNT` alone names the account for Azure AD).

Invariants:
- Only the *name* of the variable leaves this module (in an `EnvAuth`); the secret is read later
  by the caller from that variable, exactly as for `--account-key-env VAR`, and travels to the
  daemon over the control socket, never on a command line.
- An explicit auth flag always wins; the environment is consulted only when none was given.
- A key or SAS token belongs to the account named beside it: with `--account` naming another
  account than `AZURE_STORAGE_ACCOUNT`, the environment's secret is not used (a clear error,
  never a wrong guess).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import click

CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT = "AZURE_STORAGE_ACCOUNT"
KEY = "AZURE_STORAGE_KEY"
SAS_TOKEN = "AZURE_STORAGE_SAS_TOKEN"
AUTH_MODE = "AZURE_STORAGE_AUTH_MODE"
VARIABLES = (CONNECTION_STRING, ACCOUNT, KEY, SAS_TOKEN, AUTH_MODE)


@dataclass(frozen=True)
class EnvAuth:
    """What the environment says: a secret kind and the variable holding it (None: Azure AD),
    and the account it names (None: from the connection string, or the flags)."""

    kind: str
    env: str | None
    account: str | None

    def note(self) -> str:
        """One line telling the user where the credential came from (never its value)."""
        if self.env is None:
            return f"using Azure AD for account {self.account} (from {ACCOUNT})"
        if self.account and self.env != CONNECTION_STRING:
            return f"using {self.env} for account {self.account} (from {ACCOUNT})"
        return f"using the credential in {self.env}"


def _get(environ: Mapping[str, str], name: str) -> str | None:
    value = (environ.get(name) or "").strip()
    return value or None


def from_environment(
    account_flag: str | None, environ: Mapping[str, str] | None = None
) -> EnvAuth | None:
    """The credential the Azure conventions give, or None when the environment names none."""
    env = os.environ if environ is None else environ
    account = _get(env, ACCOUNT)
    if account_flag and account and account_flag != account:
        if _get(env, KEY) or _get(env, SAS_TOKEN):
            raise click.UsageError(
                f"--account {account_flag} differs from {ACCOUNT}={account}: the credential "
                f"in {KEY if _get(env, KEY) else SAS_TOKEN} is for another account; name "
                "it with --account-key-env / --sas-token-env (or unset the variables)"
            )
        account = None
    if (_get(env, AUTH_MODE) or "").lower() == "login":
        return EnvAuth("azure_ad", None, account) if account else None
    if _get(env, CONNECTION_STRING):
        return EnvAuth("connection_string", CONNECTION_STRING, None)
    named = account_flag or account
    if named and _get(env, KEY):
        return EnvAuth("account_key", KEY, account)
    if named and _get(env, SAS_TOKEN):
        return EnvAuth("sas_token", SAS_TOKEN, account)
    if account:
        return EnvAuth("azure_ad", None, account)
    return None
