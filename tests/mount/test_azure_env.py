"""Azure's own conventions through the real CLI and a real mount: `dsmount attach --blob` and
`dsmount datastore register-blob` with no auth flag take AZURE_STORAGE_CONNECTION_STRING, else
AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN; no secret reaches an
argv, a log or the output; and `dsmount daemon --socket PATH` serves that socket."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from tests.support.azurite import Azurite
from tests.support.daemon import REPO_ROOT, DsmountDaemon, clean_env, running_daemon

pytestmark = [pytest.mark.mount, pytest.mark.azurite]


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _no_secret_anywhere(daemon: DsmountDaemon, *outputs: str) -> None:
    assert daemon.pid is not None
    for text in (_cmdline(daemon.pid), daemon.log_text(), *outputs):
        assert Azurite.KEY not in text
        assert "sig=" not in text


def test_attach_with_only_the_connection_string_in_the_environment(
    dsmount_daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient
) -> None:
    blob_container.upload_blob("a/hello.txt", b"hello from the env\n")
    name = blob_container.container_name
    result = dsmount_daemon.cli(
        "attach", "envcs", "--blob", "--container", name,
        env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
    )
    assert "AZURE_STORAGE_CONNECTION_STRING" in result.stderr  # says where it came from
    hello = dsmount_daemon.mountpoint / "envcs/a/hello.txt"
    assert hello.read_bytes() == b"hello from the env\n"
    listed = json.loads(dsmount_daemon.cli("list", "--json").stdout)
    (ds,) = listed["datastores"]
    # Account and endpoint came from the connection string.
    assert ds["backend"]["account"] == Azurite.ACCOUNT
    assert ds["backend"]["endpoint"] == azurite.blob_endpoint
    assert ds["backend"]["auth"] == "connection_string"
    _no_secret_anywhere(dsmount_daemon, result.stdout, result.stderr, json.dumps(listed))


def test_account_with_key_and_account_with_sas_token(
    dsmount_daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient
) -> None:
    blob_container.upload_blob("k.txt", b"key")
    name = blob_container.container_name
    dsmount_daemon.cli(
        "attach", "envkey", "--blob", "--container", name, "--endpoint", azurite.blob_endpoint,
        env={"AZURE_STORAGE_ACCOUNT": Azurite.ACCOUNT, "AZURE_STORAGE_KEY": Azurite.KEY},
    )
    assert (dsmount_daemon.mountpoint / "envkey/k.txt").read_bytes() == b"key"
    sas = generate_container_sas(
        Azurite.ACCOUNT, name, account_key=Azurite.KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    result = dsmount_daemon.cli(
        "attach", "envsas", "--blob", "--container", name, "--endpoint", azurite.blob_endpoint,
        env={"AZURE_STORAGE_ACCOUNT": Azurite.ACCOUNT, "AZURE_STORAGE_SAS_TOKEN": sas},
    )
    assert "AZURE_STORAGE_SAS_TOKEN" in result.stderr
    assert (dsmount_daemon.mountpoint / "envsas/k.txt").read_bytes() == b"key"
    auths = {d["name"]: d["backend"]["auth"]
             for d in dsmount_daemon.call("list")["datastores"]}
    assert auths == {"envkey": "account_key", "envsas": "sas_token"}
    _no_secret_anywhere(dsmount_daemon, result.stdout, result.stderr)

    # A key for another account is refused with a clear error, nothing attached.
    refused = dsmount_daemon.cli(
        "attach", "wrong", "--blob", "--container", name, "--account", "someoneelse",
        env={"AZURE_STORAGE_ACCOUNT": Azurite.ACCOUNT, "AZURE_STORAGE_KEY": Azurite.KEY},
        check=False,
    )
    assert refused.returncode != 0
    assert "differs from AZURE_STORAGE_ACCOUNT" in refused.stderr
    assert "wrong" not in {d["name"] for d in dsmount_daemon.call("list")["datastores"]}


def test_register_from_the_environment_stored_and_by_reference(
    dsmount_daemon: DsmountDaemon, azurite: Azurite, blob_container: ContainerClient,
    tmp_path: Path,
) -> None:
    blob_container.upload_blob("r.txt", b"registered")
    name = blob_container.container_name
    registry = tmp_path / "registry"
    env = {"DSMOUNT_REGISTRY": str(registry),
           "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    dsmount_daemon.cli("datastore", "register-blob", "stored", "--container", name, env=env)
    dsmount_daemon.cli("datastore", "register-blob", "byref", "--container", name,
                       "--by-reference", env=env)
    shown = {n: json.loads(dsmount_daemon.cli("datastore", "show", n, "--json", env=env).stdout)
             for n in ("stored", "byref")}
    assert shown["stored"]["auth"] == {"kind": "connection_string", "source": "stored"}
    assert shown["byref"]["auth"] == {"kind": "connection_string", "source": "env",
                                      "ref": "AZURE_STORAGE_CONNECTION_STRING"}
    assert Azurite.KEY not in (registry / "datastores.toml").read_text()
    # The stored one attaches without the variable; the reference needs it at each use.
    no_var = {"DSMOUNT_REGISTRY": str(registry)}
    dsmount_daemon.cli("attach", "stored", env=no_var)
    assert (dsmount_daemon.mountpoint / "stored/r.txt").read_bytes() == b"registered"
    missing = dsmount_daemon.cli("attach", "byref", env=no_var, check=False)
    assert missing.returncode != 0 and "AZURE_STORAGE_CONNECTION_STRING" in missing.stderr
    dsmount_daemon.cli("attach", "byref", env=env)
    assert (dsmount_daemon.mountpoint / "byref/r.txt").read_bytes() == b"registered"


class _LocalSocketDaemon(DsmountDaemon):
    """Started as `dsmount daemon --socket PATH ...` (the option after the subcommand)."""

    def command(self) -> list[str]:
        cmd = super().command()
        at = cmd.index("--socket")
        del cmd[at : at + 2]
        return [*cmd, "--socket", str(self.socket)]


def test_daemon_takes_socket_after_the_subcommand_and_shows_it_in_help(tmp_path: Path) -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "dsmount", "daemon", "--help"], cwd=REPO_ROOT,
        env=clean_env(), capture_output=True, text=True, check=True,
    ).stdout
    assert "--socket PATH" in help_text
    from tests.support.daemon import require_fuse

    require_fuse()
    with running_daemon() as plain:
        plain_cmd = plain.command()
    daemon = _LocalSocketDaemon()
    try:
        assert daemon.command().index("--socket") > daemon.command().index("daemon")
        assert plain_cmd.index("--socket") < plain_cmd.index("daemon")
        daemon.start()
        assert "pong" in daemon.cli("ping").stdout
        assert daemon.socket.exists()
    finally:
        daemon.cleanup()
