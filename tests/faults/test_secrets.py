"""Secrets never leak: account keys, SAS tokens and connection strings stay out of every log
line (at debug level), CLI output, the state file and process command lines; and a config file
holding a secret is refused when others can read it.

The scan runs a private Azurite with an account whose key is generated for this test, so any
trace of it (its text, URL-encoded forms, prefixes, the hex or raw bytes of its base64
decoding) can only come from a leak.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote

import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)

from dsmount.errors import ConfigError
from dsmount.node.config import load_config
from tests.faults.conftest import fault_config, unique
from tests.support.azurite import Azurite
from tests.support.daemon import REPO_ROOT, DsmountDaemon, clean_env

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

ACCOUNT = "dsmleakcheck"
VAR = "DSM_SECRET_UNDER_TEST"


def secret_forms(secret: str) -> set[bytes]:
    """Every form in which `secret` could show up in text or bytes."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret), unquote(secret)}
    forms |= {f[:16] for f in list(forms) if len(f) >= 24}  # a truncated leak
    out = {f.encode() for f in forms if len(f) >= 12}
    for text in {secret, unquote(secret)}:
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:
            continue
        if len(raw) >= 12:
            out |= {raw[:12], raw[:12].hex().encode(), raw[:12].hex().upper().encode()}
    return out


def sas_parts(sas: str) -> list[str]:
    """The SAS token and its signature (the part that is the actual secret)."""
    sig = next(p.split("=", 1)[1] for p in sas.split("&") if p.startswith("sig="))
    return [sas, sig]


def random_key() -> str:
    return base64.b64encode(secrets.token_bytes(64)).decode()


class Recorder:
    """Runs the real CLI, keeping its output and its /proc/<pid>/cmdline for the scan."""

    def __init__(self, daemon: DsmountDaemon) -> None:
        self.daemon = daemon
        self.blobs: list[tuple[str, bytes]] = []

    def cli(
        self, *args: str, secret: str | None = None, ok: bool | None = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "dsmount", "--socket", str(self.daemon.socket), *args]
        env = clean_env({VAR: secret} if secret is not None else {})
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        cmdline = b""
        while b"dsmount" not in cmdline and proc.poll() is None:  # empty while still exec'ing
            with contextlib.suppress(OSError), open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                cmdline = f.read()
        out, err = proc.communicate(timeout=60)
        assert b"dsmount" in cmdline  # really the CLI's own command line
        self.blobs += [
            (f"cmdline of dsmount {args[0]}", cmdline),
            (f"output of dsmount {' '.join(args)}", (out + err).encode()),
        ]
        if ok is not None:
            assert (proc.returncode == 0) == ok, (args, out, err, self.daemon.log_tail())
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def snapshot_daemon(self, label: str) -> None:
        with open(f"/proc/{self.daemon.pid}/cmdline", "rb") as f:
            self.blobs.append((f"daemon cmdline ({label})", f.read()))


def assert_no_leak(blobs: Iterable[tuple[str, bytes]], secret_values: Iterable[str]) -> None:
    forms = set()
    for value in secret_values:
        forms |= secret_forms(value)
    leaks = [(where, form) for where, data in blobs for form in forms if form in data]
    assert leaks == [], f"secret material found: {[(w, f[:8]) for w, f in leaks][:10]}"


def test_the_scan_finds_a_leak_in_any_form() -> None:
    key = random_key()
    raw = base64.b64decode(key)
    for leaked in (key, quote(key, safe=""), key[:16], raw[:12].hex(), raw[:12].hex().upper()):
        with pytest.raises(AssertionError, match="secret material"):
            assert_no_leak([("probe", f"...{leaked}...".encode())], [key])
    with pytest.raises(AssertionError, match="secret material"):
        assert_no_leak([("probe", b"..." + raw[:12] + b"...")], [key])
    assert_no_leak([("probe", key[:8].encode())], [key])  # too short to mean anything


def test_no_secret_in_logs_output_state_or_cmdline(
    make_daemon: Callable[..., DsmountDaemon],
    make_azurite: Callable[..., Azurite],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, wrong_key = random_key(), random_key()
    monkeypatch.setenv("AZURITE_ACCOUNTS", f"{Azurite.ACCOUNT}:{Azurite.KEY};{ACCOUNT}:{key}")
    server = make_azurite()
    endpoint = f"http://{server.host}:{server.blob_port}/{ACCOUNT}"
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
        f"BlobEndpoint={endpoint};"
    )
    sas = generate_account_sas(
        ACCOUNT,
        key,
        ResourceTypes(container=True, object=True),
        AccountSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    bad_sas = sas.replace("sig=", "sig=AAAA")
    unreachable = "http://127.0.0.1:9/" + ACCOUNT  # discard port: nothing listens
    down_conn = conn.replace(endpoint, unreachable)
    sas_conn = f"BlobEndpoint={endpoint};SharedAccessSignature={sas}"

    container = unique("leak")
    with BlobServiceClient(
        endpoint, credential={"account_name": ACCOUNT, "account_key": key}
    ) as service:
        client = service.create_container(container)
        client.upload_blob("dir/file.txt", b"content\n")

    daemon = make_daemon(config_text=fault_config(deadline=3, attempt_timeout=1, log_level="debug"))
    rec = Recorder(daemon)
    rec.snapshot_daemon("start")
    blob = ("--blob", "--container", container)
    by_key = ("--account", ACCOUNT, "--endpoint", endpoint, "--account-key-env", VAR)
    by_sas = ("--account", ACCOUNT, "--endpoint", endpoint, "--sas-token-env", VAR)
    by_conn = ("--connection-string-env", VAR)

    # Successful attaches, one per credential kind, each read through the mount.
    rec.cli("attach", "bykey", *blob, *by_key, secret=key)
    rec.cli("attach", "bysas", *blob, *by_sas, secret=sas)
    rec.cli("attach", "byconn", *blob, *by_conn, secret=conn)
    rec.cli("attach", "bysasconn", *blob, *by_conn, secret=sas_conn)
    for name in ("bykey", "bysas", "byconn", "bysasconn"):
        assert (daemon.mountpoint / name / "dir" / "file.txt").read_bytes() == b"content\n"
    # Failures: wrong key, bad SAS signature, unreachable endpoint (each kind), missing
    # container; each must fail with one clear line and no secret.
    started = time.monotonic()
    for name, opts, secret in [
        ("wrongkey", by_key, wrong_key),
        ("badsas", by_sas, bad_sas),
        (
            "downkey",
            ("--account", ACCOUNT, "--endpoint", unreachable, "--account-key-env", VAR),
            key,
        ),
        ("downsas", ("--account", ACCOUNT, "--endpoint", unreachable, "--sas-token-env", VAR), sas),
        ("downconn", by_conn, down_conn),
    ]:
        result = rec.cli("attach", name, *blob, *opts, secret=secret, ok=False)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        # Each failed for the reason under test (not, say, a validation error).
        assert ("403" if name in ("wrongkey", "badsas") else "connect") in result.stderr
    rec.cli(
        "attach",
        "nocontainer",
        "--blob",
        "--container",
        unique("none"),
        *by_conn,
        secret=conn,
        ok=False,
    )
    assert time.monotonic() - started < 60
    # Everything that shows or changes state.
    for args in (
        ["list"],
        ["list", "--json"],
        ["status"],
        ["status", "--json"],
        ["refresh", "bykey"],
        ["refresh", "bysas", "dir"],
        ["ping"],
    ):
        rec.cli(*args)
    rec.snapshot_daemon("running")
    # A restart restores the attachments from the state directory (secrets from the 0600
    # secrets file), and logs the restore at debug level.
    daemon.restart()
    rec.snapshot_daemon("restarted")
    assert (daemon.mountpoint / "bykey" / "dir" / "file.txt").read_bytes() == b"content\n"
    rec.cli("status", "--json")
    for name in ("bykey", "bysas", "byconn"):
        rec.cli("detach", name)
    rec.cli("detach", "nope", ok=False)

    state_files = [p for p in daemon.state_dir.iterdir() if p.is_file()]
    assert any(p.name == "attached.json" for p in state_files)
    secrets_file = daemon.state_dir / "secrets.json"
    assert (secrets_file.stat().st_mode & 0o077) == 0  # the one place secrets may live
    rec.blobs += [
        (f"state file {p.name}", p.read_bytes()) for p in state_files if p != secrets_file
    ]
    log = daemon.log_path.read_bytes()
    assert b"DEBUG" in log  # the daemon really logged at debug level
    rec.blobs.append(("daemon log", log))
    assert_no_leak(
        rec.blobs, [key, wrong_key, conn, down_conn, sas_conn, *sas_parts(sas), *sas_parts(bad_sas)]
    )


def test_config_with_an_inline_secret_must_be_private(tmp_path: Path) -> None:
    key = random_key()
    config = tmp_path / "dsmount.toml"
    config.write_text(
        '[[datastore]]\nname = "x"\nkind = "blob"\ncontainer = "c"\naccount = "a"\n'
        f'auth = {{kind = "account_key", secret = "{key}"}}\n'
    )
    for mode in (0o644, 0o640, 0o604):
        os.chmod(config, mode)
        with pytest.raises(ConfigError) as info:
            load_config(config)
        message = str(info.value)
        assert str(config) in message and f"chmod 600 {config}" in message
        assert key not in message
    os.chmod(config, 0o600)
    assert load_config(config).datastores[0]["name"] == "x"
    # A reference to a secret (env or file) is not a secret: any mode is fine.
    config.write_text(
        '[[datastore]]\nname = "x"\nkind = "blob"\ncontainer = "c"\naccount = "a"\n'
        'auth = {kind = "account_key", env = "SOME_VAR"}\n'
    )
    os.chmod(config, 0o644)
    assert load_config(config).datastores[0]["auth"] == {"kind": "account_key", "env": "SOME_VAR"}


def test_daemon_refuses_a_readable_config_with_a_secret(tmp_path: Path) -> None:
    key = random_key()
    daemon = DsmountDaemon(
        config_text=(
            '[[datastore]]\nname = "x"\nkind = "blob"\ncontainer = "c"\naccount = "a"\n'
            f'auth = {{kind = "account_key", secret = "{key}"}}\n'
        )
    )
    os.chmod(daemon.config, 0o644)
    try:
        daemon.start(wait=False)
        assert daemon.wait_exit(20) == 1
        log = daemon.log_text()
        assert "chmod 600" in log and str(daemon.config) in log
        assert key not in log and "Traceback" not in log
    finally:
        daemon.cleanup()
