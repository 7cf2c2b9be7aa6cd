"""Named datasets end to end: made through the Python API or the real CLI (subprocesses), kept
in a blob container in a real Azurite, and read back as plain files through a real dsmount
FUSE mount of the version that holds them (`Dataset.path`)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from dsmount.api import Datastore, DataTypeIds, Workspace
from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def container(azurite: Azurite) -> Iterator[str]:
    name = f"dset-{uuid.uuid4().hex[:12]}"
    yield name
    service = azurite.blob_service_client()
    try:
        if service.get_container_client(name).exists():
            service.delete_container(name)
    finally:
        service.close()


@pytest.fixture
def ws(tmp_path: Path, azurite: Azurite, container: str) -> Workspace:
    workspace = Workspace(tmp_path / "registry")
    Datastore.register_azure_blob_container(
        workspace, "tables", container, Azurite.ACCOUNT, account_key=Azurite.KEY,
        endpoint=azurite.blob_endpoint, create_if_not_exists=True,
    )  # fmt: skip
    return workspace


@pytest.fixture
def dsm(dsmount_daemon: DsmountDaemon, ws: Workspace) -> Cli:
    """`dsmount ARGS` against the test daemon and the workspace's registry."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"DSMOUNT_REGISTRY": str(ws.registry.dir)}
        return dsmount_daemon.cli(*args, check=check, env=env, timeout=120)

    return run


def mounted(daemon: DsmountDaemon, path: str) -> Path:
    """`Dataset.path` (under /datastores) under the test daemon's own mountpoint."""
    rel = Path(path).relative_to("/datastores")
    return daemon.mountpoint / rel


def test_a_dataset_reads_through_a_real_mount(
    ws: Workspace, dsm: Cli, dsmount_daemon: DsmountDaemon
) -> None:
    frame = pd.DataFrame({"city": ["Oslo", "Lima", "Pune"], "pop_m": [0.7, 10.1, 7.2]})
    ds = ws.datasets.add_from_dataframe(frame, DataTypeIds.GenericCSV, "cities", "three cities")
    assert ds.path == f"/datastores/tables/{ds.version}/data.csv"
    dsm("attach", "tables", "--version", str(ds.version))
    path = mounted(dsmount_daemon, ds.path)
    with open(path, "rb") as f:  # any tool reads it as a plain file
        assert f.read() == ds.read_as_binary()
    pd.testing.assert_frame_equal(pd.read_csv(path), frame)
    meta = json.loads((path.parent / "dataset.json").read_text())
    assert (meta["name"], meta["family_id"], meta["data_type_id"]) == (
        "cities", ds.family_id, "GenericCSV",
    )  # fmt: skip
    assert sorted(os.listdir(path.parent)) == ["data.csv", "dataset.json"]

    # An update is a new version, mounted beside the old one, which does not change.
    ds.update_from_dataframe(frame.head(1), data_type_id=DataTypeIds.Parquet)
    dsm("attach", "tables", "--version", str(ds.version))
    new = mounted(dsmount_daemon, ds.path)
    assert new.name == "data.parquet" and new.parent != path.parent
    pd.testing.assert_frame_equal(pd.read_parquet(new), frame.head(1))
    pd.testing.assert_frame_equal(pd.read_csv(path), frame)


def test_the_cli_shares_the_implementation(
    ws: Workspace, dsm: Cli, dsmount_daemon: DsmountDaemon, tmp_path: Path
) -> None:
    src = tmp_path / "scores.tsv"
    src.write_bytes(b"name\tscore\nada\t3\nbob\t5\n")
    created = json.loads(dsm(
        "dataset", "create", "scores", str(src), "--type", "GenericTSV",
        "--description", "two scores", "--json",
    ).stdout)  # fmt: skip
    api = ws.datasets["scores"]  # the CLI's dataset, seen through the API
    assert created["id"] == api.id and created["datastore"] == "tables"
    assert api.read_as_binary() == src.read_bytes() and api.description == "two scores"

    listed = json.loads(dsm("dataset", "list", "--json").stdout)
    assert [d["name"] for d in listed] == [d.name for d in ws.datasets]
    assert [d["name"] for d in json.loads(dsm("dataset", "list", "--user", "--json").stdout)] == [
        "scores"
    ]
    shown = json.loads(dsm("dataset", "show", "scores", "--json").stdout)
    assert shown["path"] == api.path and shown["size"] == src.stat().st_size

    err = dsm("dataset", "create", "scores", str(src), "--type", "GenericTSV", check=False)
    assert err.returncode == 1 and "'scores' already exists" in err.stderr
    err = dsm("dataset", "create", "x", str(tmp_path / "none"), "--type", "GenericCSV",
              check=False)  # fmt: skip
    assert err.returncode == 1 and "does not exist" in err.stderr

    src2 = tmp_path / "scores2.csv"
    src2.write_bytes(b"name,score\ncy,8\n")
    dsm("dataset", "update", "scores", str(src2), "--type", "GenericCSV", "--name", "scores v2")
    err = dsm("dataset", "show", "scores", check=False)
    assert err.returncode == 1 and "no dataset named 'scores'" in err.stderr
    now = ws.datasets["scores v2"]
    assert now.family_id == api.family_id and now.description == "two scores"
    assert now.read_as_binary() == src2.read_bytes()

    out = dsm("dataset", "download", "scores v2", str(tmp_path)).stdout
    assert (tmp_path / "scores v2.csv").read_bytes() == src2.read_bytes(), out
    err = dsm("dataset", "download", "scores v2", str(tmp_path), check=False)
    assert err.returncode == 1 and "exists" in err.stderr

    # The version the CLI made mounts like any other.
    dsm("attach", "tables", "--version", str(now.version))
    assert mounted(dsmount_daemon, now.path).read_bytes() == src2.read_bytes()

    dsm("dataset", "remove", "scores v2")
    assert list(ws.user_datasets) == []
    assert mounted(dsmount_daemon, now.path).read_bytes() == src2.read_bytes()  # data kept
