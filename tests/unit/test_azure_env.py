"""Azure's own credential variables (`dsmount.cli.azure_env`, `choose_auth`): which one wins,
that flags beat the environment, and that a key is never paired with another account."""

from __future__ import annotations

import click
import pytest

from dsmount.cli.azure_env import from_environment
from dsmount.cli.common import choose_auth

CS = "AZURE_STORAGE_CONNECTION_STRING"


def test_the_connection_string_wins_over_account_and_key() -> None:
    env = {CS: "AccountName=a;AccountKey=eA==", "AZURE_STORAGE_ACCOUNT": "a",
           "AZURE_STORAGE_KEY": "eA=="}
    found = from_environment(None, env)
    assert found is not None
    assert (found.kind, found.env, found.account) == ("connection_string", CS, None)
    assert "eA==" not in found.note()


def test_account_with_key_then_with_sas_then_alone_for_azure_ad() -> None:
    key = from_environment(None, {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "k"})
    assert key is not None and (key.kind, key.env, key.account) == (
        "account_key", "AZURE_STORAGE_KEY", "acct")
    sas = from_environment(None, {"AZURE_STORAGE_ACCOUNT": "acct",
                                  "AZURE_STORAGE_SAS_TOKEN": "sv=1&sig=x"})
    assert sas is not None and (sas.kind, sas.env) == ("sas_token", "AZURE_STORAGE_SAS_TOKEN")
    alone = from_environment(None, {"AZURE_STORAGE_ACCOUNT": "acct"})
    assert alone is not None and (alone.kind, alone.env, alone.account) == (
        "azure_ad", None, "acct")
    login = from_environment(None, {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "k",
                                    "AZURE_STORAGE_AUTH_MODE": "login"})
    assert login is not None and login.kind == "azure_ad"


def test_a_key_without_any_account_is_not_used_and_nothing_set_means_none() -> None:
    assert from_environment(None, {"AZURE_STORAGE_KEY": "k"}) is None
    assert from_environment(None, {}) is None
    assert from_environment(None, {CS: "   "}) is None
    # --account names the account the key belongs to, as with the Azure CLI.
    flagged = from_environment("acct", {"AZURE_STORAGE_KEY": "k"})
    assert flagged is not None and (flagged.kind, flagged.account) == ("account_key", None)


def test_a_key_of_another_account_is_refused_not_guessed() -> None:
    with pytest.raises(click.UsageError, match="differs from AZURE_STORAGE_ACCOUNT"):
        from_environment("other", {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "k"})
    # Without a secret beside it the variable is simply not used.
    assert from_environment("other", {"AZURE_STORAGE_ACCOUNT": "acct"}) is None


def test_flags_win_over_the_environment() -> None:
    env = {CS: "AccountName=a;AccountKey=eA=="}
    assert choose_auth({"anonymous": True}, environ=env).kind == "anonymous"
    assert choose_auth({"azure_ad": True}, environ=env).kind == "azure_ad"
    chosen = choose_auth({"sas_token_env": "MY_SAS"}, environ=env)
    assert (chosen.kind, chosen.env, chosen.note) == ("sas_token", "MY_SAS", None)
    from_env = choose_auth({}, environ=env)
    assert (from_env.kind, from_env.env) == ("connection_string", CS)
    assert from_env.note and CS in from_env.note
    assert choose_auth({}, environ={}).kind == "azure_ad"
    assert choose_auth({}, environ=env, use_environment=False).kind == "azure_ad"
