"""The Python API (dsmount.workspace.api) on a local directory and on a blob container in Azurite:
the Azure ML verbs, reading helpers, data references. Only 127.0.0.1 is contacted."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from dsmount.errors import AlreadyExists, InvalidRequest, NotFound
from dsmount.workspace.api import DataReference, Datastore, Workspace
from tests.support.azurite import Azurite
from tests.support.trees import make_tree

CSV = b"id,label,score\n1,cat,0.5\n2,dog,0.25\n3,cat,1.0\n"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "registry")


@pytest.fixture
def blob_ds(ws: Workspace, azurite: Azurite, blob_container: ContainerClient) -> Datastore:
    return Datastore.register_azure_blob_container(
        ws,
        "cats",
        blob_container.container_name,
        Azurite.ACCOUNT,
        account_key=Azurite.KEY,
        endpoint=azurite.blob_endpoint,
    )


def test_workspace_registration_verbs(ws: Workspace, azurite: Azurite, tmp_path: Path) -> None:
    container = f"api-{uuid.uuid4().hex[:10]}"
    ds = Datastore.register_azure_blob_container(
        ws,
        datastore_name="blobby",
        container_name=container,
        account_name=Azurite.ACCOUNT,
        account_key=Azurite.KEY,
        endpoint=azurite.blob_endpoint,
        create_if_not_exists=True,
    )
    service = azurite.blob_service_client()
    try:
        assert service.get_container_client(container).exists()
        assert (ds.name, ds.datastore_type, ds.container_name) == ("blobby", "AzureBlob", container)
        assert Azurite.KEY not in repr(ds) and Azurite.KEY not in repr(ds.info)
        local = Datastore.register_local(ws, "loc", tmp_path)
        assert sorted(ws.datastores) == ["blobby", "loc"]
        assert {n: d.datastore_type for n, d in ws.datastores.items()} == {
            "blobby": "AzureBlob",
            "loc": "Local",
        }
        assert ws.get_default_datastore() == ds  # the first registered
        ws.set_default_datastore("loc")
        assert ws.get_default_datastore() == local and local.is_default
        assert Datastore.get(ws, "blobby") == ds
        with pytest.raises(AlreadyExists):
            Datastore.register_local(ws, "loc", tmp_path / "x", create_if_not_exists=True)
        with pytest.raises(NotFound):
            Datastore.get(ws, "nope")
        with pytest.raises(InvalidRequest, match="one way"):
            Datastore.register_azure_blob_container(
                ws, "x", "c", "a", sas_token="sv=1&sig=2", account_key=Azurite.KEY
            )
        ds.unregister()
        assert sorted(ws.datastores) == ["loc"]
    finally:
        service.delete_container(container)
        service.close()


def test_upload_download_and_reading_helpers(blob_ds: Datastore, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {"tables/t.csv": CSV, "tables/t.tsv": CSV.replace(b",", b"\t"), "blob.bin": 3_000_000},
    )
    summary = blob_ds.upload(src, target_path="data", show_progress=False)
    assert summary.files_transferred == 3
    assert blob_ds.upload(src, target_path="data").files_transferred == 0
    one = blob_ds.upload_files([src / "blob.bin"], target_path="single", show_progress=False)
    assert one.transferred == ["single/blob.bin"]
    got = blob_ds.download(tmp_path / "dst", prefix="data", show_progress=False)
    assert got.files_transferred == 3
    assert (tmp_path / "dst/blob.bin").read_bytes() == (src / "blob.bin").read_bytes()

    assert blob_ds.read_as_text("data/tables/t.csv") == CSV.decode()
    assert blob_ds.read_as_binary("data/blob.bin") == (src / "blob.bin").read_bytes()
    with blob_ds.open("data/blob.bin") as f:
        f.seek(2_999_990)
        assert f.read() == (src / "blob.bin").read_bytes()[2_999_990:]
        f.seek(10)
        assert f.read(5) == (src / "blob.bin").read_bytes()[10:15]
    with blob_ds.open("data/tables/t.csv", "r") as text:
        assert isinstance(text, io.TextIOWrapper) and text.readline() == "id,label,score\n"
    with pytest.raises(NotFound):
        blob_ds.open("data/none.csv")
    with pytest.raises(InvalidRequest, match="read-only"):
        blob_ds.open("data/tables/t.csv", "wb")


def test_to_dataframe(blob_ds: Datastore, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas", reason="pandas is the optional 'dataframe' extra")
    pytest.importorskip("pyarrow", reason="pyarrow is the optional 'dataframe' extra")
    frame = pd.DataFrame({"id": [1, 2, 3], "label": ["cat", "dog", "cat"]})
    out = tmp_path / "src"
    out.mkdir()
    frame.to_parquet(out / "t.parquet")
    (out / "t.csv").write_bytes(CSV)
    (out / "t.tsv").write_bytes(CSV.replace(b",", b"\t"))
    (out / "t.dat").write_bytes(CSV)
    blob_ds.upload(out, show_progress=False)
    assert blob_ds.to_dataframe("t.parquet").equals(frame)
    csv = blob_ds.to_dataframe("t.csv")
    assert list(csv.columns) == ["id", "label", "score"] and csv["score"].sum() == 1.75
    assert blob_ds.to_dataframe("t.tsv").equals(csv)
    assert blob_ds.to_dataframe("t.dat", format="csv").equals(csv)
    with pytest.raises(InvalidRequest, match="format"):
        blob_ds.to_dataframe("t.dat")


def test_to_dataframe_without_pandas_says_how_to_get_it(
    blob_ds: Datastore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pandas(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "pandas":
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match=r"pip install 'dsmount\[dataframe\]'"):
        blob_ds.to_dataframe("t.csv")


def test_data_references(blob_ds: Datastore) -> None:
    ref = blob_ds.path("train/images")
    assert isinstance(ref, DataReference) and ref.mode == "mount"
    assert str(ref) == "$DSMOUNT_DATAREFERENCE_CATS"
    assert ref.as_mount(2).run_options() == ["--mount", "cats:2/train/images"]
    assert ref.as_download().run_options() == ["--download", "cats/train/images"]
    out = blob_ds.path("results", data_reference_name="out").as_upload("./out")
    assert out.run_options() == ["--upload", "out@cats/results=./out"]
    assert out.env_name == "DSMOUNT_DATAREFERENCE_OUT"
    assert blob_ds.as_download("/tmp/x").to_reference().local == "/tmp/x"
    with pytest.raises(InvalidRequest, match="immutable"):
        ref.as_mount(1).as_upload("x")
