"""Named datasets through the Python API (`dsmount.api`), each against a blob container in a
real Azurite: the seed's calls with only the import changed. Round trips per data type,
metadata and enumeration, the examples offline, conflicts, updates and renames, racing
updates, and `open()` reading a prefix with one ranged request counted at the server."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from azure.storage.blob import ContainerClient

from dsmount.api import (
    DatasetConflict,
    DatasetNotFound,
    Datasets,
    Datastore,
    DataTypeIds,
    Workspace,
)
from dsmount.errors import InvalidRequest, NotFound
from tests.support.azurite import Azurite
from tests.support.azurite_log import downloads, settled_requests

pytestmark = pytest.mark.azurite

FRAME = pd.DataFrame(
    {
        "id": [1, 2, 3],
        "label": ["cat", "dog, spotted", "cat"],
        "score": [0.5, 0.25, 1.0],
    }
)


def register(ws: Workspace, azurite: Azurite, container: str, name: str = "dsets") -> Datastore:
    return Datastore.register_azure_blob_container(
        ws, name, container, Azurite.ACCOUNT, account_key=Azurite.KEY,
        endpoint=azurite.blob_endpoint,
    )  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path, azurite: Azurite, blob_container: ContainerClient) -> Workspace:
    """A workspace whose default datastore is an empty blob container in Azurite."""
    workspace = Workspace(tmp_path / "registry")
    register(workspace, azurite, blob_container.container_name)
    return workspace


def blobs(container: ContainerClient) -> dict[str, str]:
    """Every blob in the container with its ETag: what "nothing written" compares."""
    return {b.name: b.etag for b in container.list_blobs()}


# -- round trips --------------------------------------------------------------------------------
ROUND_TRIPS: list[tuple[str, pd.DataFrame, pd.DataFrame, bytes]] = [
    # (type, frame written, frame expected back, first line of the stored bytes)
    (DataTypeIds.GenericCSV, FRAME, FRAME, b"id,label,score\n"),
    (DataTypeIds.GenericTSV, FRAME, FRAME, b"id\tlabel\tscore\n"),
    (DataTypeIds.GenericCSVNoHeader, FRAME, FRAME.set_axis([0, 1, 2], axis=1), b"1,cat,0.5\n"),
    (DataTypeIds.GenericTSVNoHeader, FRAME, FRAME.set_axis([0, 1, 2], axis=1), b"1\tcat\t0.5\n"),
    (
        DataTypeIds.PlainText,
        pd.DataFrame({"line": ["first line", "second, with a comma", "  third  "]}),
        pd.DataFrame({0: ["first line", "second, with a comma", "  third  "]}),
        b"first line\n",
    ),
    (
        DataTypeIds.Parquet,
        FRAME.assign(when=pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"])),
        FRAME.assign(when=pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"])),
        b"PAR1",
    ),
]


@pytest.mark.parametrize(("data_type_id", "written", "expected", "first"), ROUND_TRIPS,
                         ids=[t[0] for t in ROUND_TRIPS])  # fmt: skip
def test_round_trip_per_data_type(
    ws: Workspace,
    blob_container: ContainerClient,
    data_type_id: str,
    written: pd.DataFrame,
    expected: pd.DataFrame,
    first: bytes,
) -> None:
    ds = ws.datasets.add_from_dataframe(
        dataframe=written, data_type_id=data_type_id, name="my new dataset",
        description="my description",
    )  # fmt: skip
    again = ws.datasets["my new dataset"]  # read back from the catalog, not the object in hand
    got = again.to_dataframe()
    pd.testing.assert_frame_equal(got, expected)
    raw = again.read_as_binary()
    assert raw.startswith(first)
    # The bytes are in the container, where any tool finds them.
    assert blob_container.download_blob(ds.object_path).readall() == raw
    assert again.size == len(raw) and again.data_type_id == data_type_id
    if data_type_id != DataTypeIds.Parquet:
        assert again.read_as_text() == raw.decode()
    # The same bytes as raw data give the same dataset contents.
    copy = ws.datasets.add_from_raw_data(raw, data_type_id, "raw copy", "from bytes")
    pd.testing.assert_frame_equal(copy.to_dataframe(), expected)


# -- metadata, enumeration, examples -----------------------------------------------------------
def test_metadata_and_enumeration_by_name_and_index(ws: Workspace, tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    first = ws.datasets.add_from_dataframe(FRAME, DataTypeIds.GenericCSV, "alpha", "first one")
    second = ws.datasets.add_from_raw_data(
        "a\tb\n1\t2\n", DataTypeIds.GenericTSV, "Beta", "second one"
    )
    after = dt.datetime.now(dt.UTC)
    examples = list(ws.example_datasets)

    assert [d.name for d in ws.user_datasets] == ["alpha", "Beta"]
    assert [d.name for d in ws.datasets] == ["alpha", "Beta", *(e.name for e in examples)]
    assert len(ws.datasets) == 2 + len(examples) and len(ws.user_datasets) == 2
    assert ws.datasets[0] == first and ws.datasets[1] == second and ws.datasets[-1] == examples[-1]
    assert ws.get_default_datastore().datasets["Beta"] == second

    beta = ws.datasets["Beta"]
    assert (beta.name, beta.description, beta.data_type_id) == ("Beta", "second one", "GenericTSV")
    assert beta.size == len(b"a\tb\n1\t2\n") == len(beta.read_as_binary())
    assert beta.family_id == second.family_id != first.family_id
    assert beta.id.startswith(beta.family_id) and beta.id != first.id
    assert before <= beta.created_date <= after
    assert not beta.is_example and beta.datastore == "dsets"
    assert beta.path == f"/datastores/dsets/{beta.version}/data.tsv"

    # A datastore named instead of the default keeps its own datasets.
    local = Datastore.register_local(
        ws, "elsewhere", tmp_path / "elsewhere", create_if_not_exists=True
    )
    there = local.datasets.add_from_raw_data(b"k\n1\n", DataTypeIds.GenericCSV, "alpha", "local")
    assert there.datastore == "elsewhere" and (tmp_path / "elsewhere" / there.object_path).is_file()
    assert ws.datasets["alpha"] == first and local.datasets["alpha"] == there
    assert [d.name for d in local.datasets] == ["alpha"]

    for wrong in ("beta", "BETA", "Beta ", "gamma"):  # names are case-sensitive
        with pytest.raises(DatasetNotFound, match=f"no dataset named '{wrong}'") as info:
            ws.datasets[wrong]
        assert isinstance(info.value, IndexError) and isinstance(info.value, KeyError)
        assert wrong not in ws.datasets
    with pytest.raises(IndexError, match="out of range"):
        ws.datasets[len(ws.datasets)]


def test_examples_read_offline_like_user_datasets(tmp_path: Path) -> None:
    # No datastore at all: nothing to contact, the examples still list and read.
    ws = Workspace(tmp_path / "empty-registry")
    names = [d.name for d in ws.example_datasets]
    assert len(names) >= 3 and [d.name for d in ws.datasets] == names
    assert list(ws.user_datasets) == []
    for ds in ws.example_datasets:
        frame = ds.to_dataframe()
        assert len(frame) > 0 and len(frame.columns) >= 3
        assert ds.is_example and ds.family_id.startswith("example-")
        assert ds.size == len(ds.read_as_binary()) == Path(ds.path).stat().st_size
        with ds.open() as f:
            assert f.read(10) == ds.read_as_binary()[:10]
    planets = ws.datasets["Solar System Planets"]
    assert list(planets.to_dataframe()["planet"])[:3] == ["Mercury", "Venus", "Earth"]
    weekdays = ws.example_datasets["Days of the Week"]
    assert weekdays.data_type_id == DataTypeIds.GenericCSVNoHeader
    assert list(weekdays.to_dataframe().columns) == [0, 1, 2, 3]
    with pytest.raises(InvalidRequest, match="example"):
        planets.update_from_dataframe(FRAME)
    with pytest.raises(NotFound, match="no default datastore"):
        ws.datasets.add_from_dataframe(FRAME, DataTypeIds.GenericCSV, "x", "y")
    assert not (tmp_path / "empty-registry").exists()  # nothing written, not even the registry
    with pytest.raises(InvalidRequest, match="registry of datastores"):
        Workspace(workspace_id="4c29e1adeba2e5a7", authorization_token="f4f3ade2c6aefdb1")


# -- conflicts and bad input --------------------------------------------------------------------
def test_a_name_in_use_is_a_conflict_and_nothing_is_written(
    ws: Workspace, blob_container: ContainerClient
) -> None:
    ws.datasets.add_from_dataframe(FRAME, DataTypeIds.GenericCSV, "taken", "the first")
    stored = blobs(blob_container)
    with pytest.raises(DatasetConflict, match="'taken' already exists"):
        ws.datasets.add_from_dataframe(FRAME.head(1), DataTypeIds.GenericCSV, "taken", "again")
    with pytest.raises(DatasetConflict):
        ws.datasets.add_from_raw_data(b"x\n", DataTypeIds.PlainText, "taken", "again")
    assert blobs(blob_container) == stored
    assert ws.datasets["taken"].description == "the first"
    assert len(ws.datasets["taken"].to_dataframe()) == 3


def test_bad_input_is_a_clear_error_and_writes_nothing(
    ws: Workspace, blob_container: ContainerClient, tmp_path: Path
) -> None:
    ds = ws.datasets.add_from_dataframe(FRAME, DataTypeIds.GenericCSV, "good", "kept")
    stored = blobs(blob_container)
    add = ws.datasets.add_from_dataframe
    cases: list[tuple[Callable[[], Any], type[Exception], str]] = [
        (lambda: add(FRAME, "ExcelSheet", "n", "d"), InvalidRequest, "unknown data type"),
        (lambda: add(FRAME, DataTypeIds.PlainText, "n", "d"), InvalidRequest, "one column"),
        (lambda: add(pd.DataFrame({"t": ["a\nb"]}), DataTypeIds.PlainText, "n", "d"),
         InvalidRequest, "line break"),
        (lambda: add(pd.DataFrame([[1, 2]], columns=["a", "a"]), DataTypeIds.GenericCSV, "n",
                     "d"), InvalidRequest, "repeated: a"),
        (lambda: add(pd.DataFrame({"m": [1, "x", 2.5]}), DataTypeIds.Parquet, "n", "d"),
         InvalidRequest, "cannot be written as Parquet"),
        (lambda: add([1, 2], DataTypeIds.GenericCSV, "n", "d"), InvalidRequest, "DataFrame"),
        (lambda: add(FRAME, DataTypeIds.GenericCSV, "", "d"), InvalidRequest, "needs a name"),
        (lambda: ws.datasets.add_from_raw_data(b"a,b", DataTypeIds.Parquet, "n", "d"),
         InvalidRequest, "not a Parquet file"),
        (lambda: ws.datasets.add_from_file(tmp_path / "none.csv", "GenericCSV", "n"),
         NotFound, "does not exist"),
        (lambda: ws.datasets.add_from_file(tmp_path, "GenericCSV", "n"),
         InvalidRequest, "is a directory"),
        (lambda: ds.update_from_dataframe(FRAME, data_type_id="Bogus"),
         InvalidRequest, "unknown data type"),
        (lambda: ws.get_default_datastore().datasets["good"].update_from_dataframe(
            pd.DataFrame({1: [1]})), InvalidRequest, "must be strings"),
    ]  # fmt: skip
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    with pytest.raises(NotFound, match="no datastore named 'elsewhere'"):
        Datasets(ws.registry, "elsewhere").add_from_dataframe(FRAME, "GenericCSV", "n", "d")
    assert blobs(blob_container) == stored
    assert ws.datasets["good"].id == ds.id and [d.name for d in ws.user_datasets] == ["good"]


# -- updates --------------------------------------------------------------------------------------
def test_updates_of_data_name_description_and_type(
    ws: Workspace, blob_container: ContainerClient
) -> None:
    frame2 = FRAME.assign(score=[9.0, 8.0, 7.0])
    ws.datasets.add_from_dataframe(
        FRAME, DataTypeIds.GenericCSV, "existing dataset", "data up to jan 2015"
    )
    dataset = ws.datasets["existing dataset"]
    family, first_id = dataset.family_id, dataset.id

    dataset.update_from_dataframe(frame2)  # data only: the rest stays
    assert (dataset.data_type_id, dataset.name, dataset.description) == (
        "GenericCSV", "existing dataset", "data up to jan 2015",
    )  # fmt: skip
    pd.testing.assert_frame_equal(ws.datasets["existing dataset"].to_dataframe(), frame2)
    assert dataset.family_id == family and dataset.id != first_id

    dataset = ws.datasets["existing dataset"]
    dataset.update_from_dataframe(dataframe=frame2, data_type_id=DataTypeIds.GenericTSV)
    reread = ws.datasets["existing dataset"]
    assert reread.data_type_id == "GenericTSV" and reread.object_path.endswith("data.tsv")
    assert reread.read_as_binary().startswith(b"id\tlabel\tscore\n")
    pd.testing.assert_frame_equal(reread.to_dataframe(), frame2)

    dataset = ws.datasets["existing dataset"]
    dataset.update_from_dataframe(dataframe=frame2, description="data up to feb 2015")
    assert (dataset.data_type_id, dataset.description) == ("GenericTSV", "data up to feb 2015")

    dataset = ws.datasets["existing dataset"]
    dataset.update_from_dataframe(
        dataframe=FRAME, name="existing dataset v2", description="data up to mar 2015"
    )
    assert ws.datasets["existing dataset v2"].name == "existing dataset v2"
    with pytest.raises(IndexError):
        print(ws.datasets["existing dataset"].name)
    renamed = ws.datasets["existing dataset v2"]
    assert renamed.family_id == family and renamed.description == "data up to mar 2015"
    pd.testing.assert_frame_equal(renamed.to_dataframe(), FRAME)

    # Raw data too, and every earlier version is still in the container, untouched.
    renamed.update_from_raw_data(b"x\n1\n", data_type_id=DataTypeIds.GenericCSV)
    assert ws.datasets["existing dataset v2"].read_as_text() == "x\n1\n"
    data_objects = [n for n in blobs(blob_container) if n.split("/")[-1].startswith("data.")]
    assert len(data_objects) == 6

    # Renaming onto another dataset's name is a conflict; a stale object is one too.
    other = ws.datasets.add_from_raw_data(b"o\n", DataTypeIds.PlainText, "other", "o")
    stored = blobs(blob_container)
    with pytest.raises(DatasetConflict, match="'other' already exists"):
        renamed.update_from_raw_data(b"y\n", name="other")
    assert blobs(blob_container) == stored
    stale = renamed  # holds the version the update through another object replaces next
    ws.datasets["existing dataset v2"].update_from_raw_data(b"z\n2\n")
    stored = blobs(blob_container)
    with pytest.raises(DatasetConflict, match="updated by someone else"):
        stale.update_from_raw_data(b"lost?\n")
    assert blobs(blob_container) == stored
    assert ws.datasets["existing dataset v2"].read_as_text() == "z\n2\n"
    assert ws.datasets["other"] == other


def test_racing_updates_one_conflict_nothing_lost(
    ws: Workspace, blob_container: ContainerClient
) -> None:
    ws.datasets.add_from_dataframe(FRAME, DataTypeIds.GenericCSV, "raced", "start")
    readers = [ws.datasets["raced"], ws.datasets["raced"]]  # both read the same version
    frames = [FRAME.assign(score=[float(i)] * 3) for i in (1, 2)]
    barrier = threading.Barrier(2)
    outcome: list[Any] = [None, None]

    def update(i: int) -> None:
        barrier.wait()
        try:
            readers[i].update_from_dataframe(frames[i], description=f"writer {i}")
            outcome[i] = "ok"
        except DatasetConflict as e:
            outcome[i] = e

    threads = [threading.Thread(target=update, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, outcome)).count("ok") == 1, outcome
    winner = outcome.index("ok")
    assert isinstance(outcome[1 - winner], DatasetConflict)
    now = ws.datasets["raced"]
    assert now.description == f"writer {winner}" and now.id == readers[winner].id
    pd.testing.assert_frame_equal(now.to_dataframe(), frames[winner])

    # A reader during updates sees one whole version or the next, never a mix.
    versions = [FRAME.assign(score=[float(10 + i)] * 3) for i in range(4)]
    seen: list[pd.DataFrame] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(ws.datasets["raced"].to_dataframe())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for frame in versions:
            ws.datasets["raced"].update_from_dataframe(frame)
    finally:
        done.set()
        reader.join()
    whole = [frames[winner], *versions]
    assert seen and all(any(got.equals(f) for f in whole) for got in seen)
    now = ws.datasets["raced"]

    # Racing changes to different datasets both land: each rebases on the other's commit.
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def add(i: int) -> None:
        barrier.wait()
        try:
            ws.datasets.add_from_raw_data(f"n\n{i}\n", "GenericCSV", f"parallel {i}", "")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = [d.name for d in ws.user_datasets]
    assert names[0] == "raced" and sorted(names[1:]) == [f"parallel {i}" for i in range(4)]
    for i in range(4):
        assert ws.datasets[f"parallel {i}"].read_as_text() == f"n\n{i}\n"
    assert ws.datasets["raced"].id == now.id


# -- streaming ------------------------------------------------------------------------------------
def test_open_reads_a_prefix_with_one_ranged_request(
    make_azurite: Callable[..., Azurite], tmp_path: Path
) -> None:
    azurite = make_azurite(debug=True)
    service = azurite.blob_service_client()
    container = service.create_container("counted-datasets")
    try:
        ws = Workspace(tmp_path / "registry")
        register(ws, azurite, container.container_name)
        rows = "".join(f"{i},{'x' * 90}\n" for i in range(60_000))  # ~5.6 MB
        raw = ("n,text\n" + rows).encode()
        ws.datasets.add_from_raw_data(raw, DataTypeIds.GenericCSV, "big", "a big table")
        ds = ws.datasets["big"]
        before = len(settled_requests(azurite))
        with ds.open() as file:
            binary_data_chunk = file.read(1000)
            assert binary_data_chunk == raw[:1000]
            assert file.tell() == 1000
            assert file.readline() == raw[1000 : raw.index(b"\n", 1000) + 1]
        new = settled_requests(azurite)[before:]
        gets = downloads(new, container.container_name)
        assert [g.blob for g in gets] == [ds.object_path, ds.object_path]
        assert (gets[0].first, gets[0].last) == (0, 999)  # just what was read
        assert gets[1].first == 1000 and gets[1].last is not None and gets[1].last < 70_000
        assert len(new) == 3  # the two GETs and the log marker: no listing, no HEAD
    finally:
        service.delete_container(container.container_name)
        service.close()
