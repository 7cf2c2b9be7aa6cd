"""`dsmount doctor` through real conditions: a healthy node, a killed daemon's stale mount, a
stopped Azurite, SAS tokens that expire soon or already did, and a cache budget above the
(fake) cgroup limit. Each runs the real CLI against a real daemon and a real FUSE mount, and
checks the exit status, the lines and that no secret is printed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon, mount_entry

pytestmark = [pytest.mark.mount, pytest.mark.azurite]


def _doctor(daemon: DsmountDaemon, *args: str, env: dict[str, str] | None = None
            ) -> tuple[int, list[dict[str, Any]], str]:
    """(exit status, checks of --json, the text output) of `dsmount doctor`."""
    where = ["--mountpoint", str(daemon.mountpoint), "--state-dir", str(daemon.state_dir),
             "--config", str(daemon.config)]
    text = daemon.cli("doctor", *where, *args, check=False, env=env)
    as_json = daemon.cli("doctor", "--json", *where, *args, check=False, env=env)
    assert as_json.returncode == text.returncode, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["ok"] == (text.returncode == 0)
    for out in (text.stdout, text.stderr, as_json.stdout):
        assert Azurite.KEY not in out and "sig=" not in out
    lines = text.stdout.splitlines()
    assert len(lines) == len(report["checks"])  # one line per check
    return text.returncode, report["checks"], text.stdout


def _one(checks: list[dict[str, Any]], name: str, subject: str | None = None) -> dict[str, Any]:
    found = [c for c in checks if c["name"] == name
             and (subject is None or c["subject"] == subject)]
    assert len(found) == 1, (name, subject, checks)
    return found[0]


def _sas(container: str, expiry: dt.datetime) -> str:
    return generate_container_sas(
        Azurite.ACCOUNT, container, account_key=Azurite.KEY,
        permission=ContainerSasPermissions(read=True, list=True), expiry=expiry,
    )


def test_a_healthy_node_is_all_ok(dsmount_daemon: DsmountDaemon, azurite: Azurite,
                                  blob_container: ContainerClient, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("x")
    dsmount_daemon.attach_local("local", tmp_path / "data")
    name = blob_container.container_name
    blob_container.upload_blob("a.txt", b"a")
    dsmount_daemon.cli("attach", "blobs", "--blob", "--container", name,
                       "--connection-string-env", "CS",
                       env={"CS": azurite.connection_string})
    assert (dsmount_daemon.mountpoint / "blobs" / "a.txt").read_bytes() == b"a"

    code, checks, text = _doctor(dsmount_daemon)
    assert code == 0, text
    assert all(line.startswith("ok ") for line in text.splitlines()), text
    names = {c["name"] for c in checks}
    assert {"daemon", "fuse device", "fusermount3", "user_allow_other", "mountpoint", "socket",
            "state directory", "memory", "reachable", "credential", "clock",
            "proxy"} <= names
    assert {c["subject"] for c in checks if c["name"] == "reachable"} == {"local", "blobs"}
    assert "in step" in _one(checks, "clock", "blobs")["detail"]


def test_a_killed_daemon_leaves_a_stale_mount_that_doctor_names_with_its_fix(
    dsmount_daemon: DsmountDaemon,
) -> None:
    dsmount_daemon.kill9()
    assert mount_entry(dsmount_daemon.mountpoint) is not None  # the dead mount is still there
    code, checks, text = _doctor(dsmount_daemon)
    assert code == 1
    mount = _one(checks, "mountpoint")
    assert mount["status"] == "error"
    assert "transport endpoint is not connected" in mount["detail"]
    assert f"fusermount3 -u -z {dsmount_daemon.mountpoint}" in mount["fix"]
    assert _one(checks, "daemon")["status"] == "error"
    assert f"fix: fusermount3 -u -z {dsmount_daemon.mountpoint}" in text

    # The fix named works: a new daemon cleans the stale mount and the node is healthy again.
    dsmount_daemon.start()
    code, checks, text = _doctor(dsmount_daemon)
    assert code == 0, text
    assert _one(checks, "mountpoint")["status"] == "ok"


def test_a_stopped_azurite_is_an_unreachable_datastore(
    dsmount_daemon: DsmountDaemon, make_azurite: Any,
) -> None:
    server = make_azurite()
    service = server.blob_service_client()
    service.create_container("gone")
    service.close()
    dsmount_daemon.cli("attach", "gone", "--blob", "--container", "gone",
                       "--connection-string-env", "CS", env={"CS": server.connection_string})
    code, checks, _ = _doctor(dsmount_daemon)
    assert code == 0
    server.stop()

    code, checks, text = _doctor(dsmount_daemon)
    assert code == 1, text
    reachable = _one(checks, "reachable", "gone")
    assert reachable["status"] == "error"
    clock = _one(checks, "clock", "gone")
    assert clock["status"] == "warning" and "not measured" in clock["detail"]
    # The rest of the node is still fine.
    assert _one(checks, "mountpoint")["status"] == "ok"


def test_sas_token_expiring_soon_warns(dsmount_daemon: DsmountDaemon, azurite: Azurite,
                                       blob_container: ContainerClient) -> None:
    name = blob_container.container_name
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    dsmount_daemon.cli("attach", "soon", "--blob", "--container", name, "--endpoint",
                       azurite.blob_endpoint, "--account", Azurite.ACCOUNT,
                       "--sas-token-env", "SAS", env={"SAS": _sas(name, expiry)})
    code, checks, text = _doctor(dsmount_daemon)
    assert code == 0, text  # a warning does not fail
    sas = _one(checks, "sas token", "soon")
    assert sas["status"] == "warning"
    assert expiry.strftime("%Y-%m-%d %H:%M") in sas["detail"]
    assert _one(checks, "reachable", "soon")["status"] == "ok"
    (line,) = [x for x in text.splitlines() if "sas token" in x]
    assert line.startswith("warning ") and f"soon: expires {expiry:%Y-%m-%d}" in line
    assert "fix: make a new SAS token" in line


def test_an_expired_sas_token_is_an_error(make_daemon: Any, azurite: Azurite,
                                          blob_container: ContainerClient) -> None:
    """A daemon restarted with a saved SAS token that has expired since: the datastore cannot
    come up, and doctor says why."""
    name = blob_container.container_name
    expired = _sas(name, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    config = (
        "[[datastore]]\n"
        f'name = "old"\nkind = "blob"\ncontainer = "{name}"\n'
        f'endpoint = "{azurite.blob_endpoint}"\naccount = "{Azurite.ACCOUNT}"\n'
        'auth = { kind = "sas_token", env = "OLD_SAS" }\n'
    )
    daemon = make_daemon(config_text=config, env={"OLD_SAS": expired})
    code, checks, text = _doctor(daemon)
    assert code == 1, text
    sas = _one(checks, "sas token", "old")
    assert sas["status"] == "error" and "expired" in sas["detail"]
    assert "new SAS token" in sas["fix"]
    assert _one(checks, "reachable", "old")["status"] == "error"


def test_a_budget_above_the_cgroup_limit(make_daemon: Any, tmp_path: Path) -> None:
    daemon = make_daemon(extra_args=["--cache-budget", "256MiB"])
    fake = tmp_path / "cgroup"
    fake.mkdir()
    (fake / "memory.max").write_text(f"{128 * 1024**2}\n")
    code, checks, text = _doctor(daemon, env={"DSMOUNT_CGROUP_ROOT": str(fake)})
    assert code == 1, text
    memory = _one(checks, "memory")
    assert memory["status"] == "error"
    assert "256.0 MiB" in memory["detail"] and str(fake / "memory.max") in memory["detail"]
    assert "memory_budget" in memory["fix"]
    # Under a roomy limit the same budget is fine.
    (fake / "memory.max").write_text(f"{4 * 1024**3}\n")
    code, checks, text = _doctor(daemon, env={"DSMOUNT_CGROUP_ROOT": str(fake)})
    assert code == 0, text
    assert _one(checks, "memory")["status"] == "ok"
