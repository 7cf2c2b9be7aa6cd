"""Uploads and downloads (dsmount.workspace.transfer) on every kind of store: a local
directory, a blob container in a real Azurite, and a file share in the Azure Files emulator.
Plus the registry's operations that talk to storage (register, versions) against Azurite. Fixtures:
`azurite`/`blob_container` and `azurefiles`/`file_share` from tests/support.

Nothing talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas
from azure.storage.fileshare import ShareClient

from dsmount.errors import AlreadyExists, AuthFailed, IntegrityError, NotFound
from dsmount.shared.credentials import Credential, Secret
from dsmount.shared.sizes import format_size
from dsmount.storage import files as files_module
from dsmount.storage.azure.blob import BlobBackend
from dsmount.storage.azure.fileshare import FileShareBackend
from dsmount.storage.base import RemoteFile
from dsmount.storage.files import TRANSFER_RETRY, Files
from dsmount.storage.local import LocalBackend
from dsmount.storage.names import join
from dsmount.storage.retry import RetryPolicy
from dsmount.workspace import registry as reg
from dsmount.workspace import transfer
from dsmount.workspace import versions as ver
from dsmount.workspace.entries import CredentialRef, DatastoreInfo
from dsmount.workspace.registry import Registry
from dsmount.workspace.transfer import Conflict, ProgressBar, TransferSummary
from tests.support.azurefiles import AzureFilesEmulator
from tests.support.azurite import Azurite
from tests.support.trees import MiB, make_tree, sha256_file

TREE = {
    "README.txt": b"a dataset\n",
    "empty.bin": b"",
    "train/cat/0001.jpg": 70_001,
    "train/dog/0001.jpg": 65_537,
    "val/labels.csv": b"id,label\n1,cat\n",
    "big/random.bin": 3 * MiB + 5,
    "unicode/h\u00e9llo w\u00f6rld.txt": b"unicode\n",
    "with spaces/a b.txt": b"spaces\n",
}


def files_of(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below root."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".dsmount-part" in p.name or p.name.endswith(".part")]


# -- stores -----------------------------------------------------------------------------------
def conn_cred(connection_string: str) -> Credential:
    return Credential("connection_string", Secret(connection_string))


@pytest.fixture(params=["local", "blob", "fileshare"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Files]:
    """An empty store of each kind (a prefix inside the container/share for the Azure ones,
    so prefix handling is always exercised)."""
    s: Files
    if request.param == "local":
        (tmp_path / "remote").mkdir()
        s = Files(LocalBackend(tmp_path / "remote"))
    elif request.param == "blob":
        azurite: Azurite = request.getfixturevalue("azurite")
        container: ContainerClient = request.getfixturevalue("blob_container")
        s = blob_store(azurite, container, prefix="root/dir")
    else:
        emulator: AzureFilesEmulator = request.getfixturevalue("azurefiles")
        share: ShareClient = request.getfixturevalue("file_share")
        s = share_store(emulator, share, prefix="root")
        s.create()
    with s:
        yield s


# -- round trips and skip-if-same -------------------------------------------------------------
def test_upload_download_round_trip_and_rerun_moves_nothing(store: Files, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", TREE)
    up = transfer.upload(store, transfer.local_tree(src), "data", quiet=True)
    assert (up.files_transferred, up.files_skipped) == (len(TREE), 0)
    assert up.bytes_transferred == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert sorted(f.path for f in store.walk("data")) == sorted(f"data/{k}" for k in TREE)

    dst = tmp_path / "dst"
    down = transfer.download(store, dst, "data", quiet=True)
    assert down.files_transferred == len(TREE) and down.invalid == []
    assert files_of(dst) == files_of(src)  # byte for byte
    assert leftovers(dst) == []

    again = transfer.upload(store, transfer.local_tree(src), "data", quiet=True)
    assert (again.files_transferred, again.bytes_transferred) == (0, 0)
    assert again.files_skipped == len(TREE)
    again_down = transfer.download(store, dst, "data", quiet=True)
    assert (again_down.files_transferred, again_down.files_skipped) == (0, len(TREE))


def test_upload_conflict_transfers_nothing_without_overwrite(store: Files, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", TREE)
    transfer.upload(store, transfer.local_tree(src), quiet=True)
    (src / "val/labels.csv").write_bytes(b"id,label\n1,dog\n")  # same size, other bytes
    (src / "new.txt").write_bytes(b"new")
    with pytest.raises(Conflict) as info:
        transfer.upload(store, transfer.local_tree(src), quiet=True)
    assert info.value.paths == ["val/labels.csv"]
    assert "val/labels.csv" in str(info.value) and "nothing was transferred" in str(info.value)
    assert store.stat("new.txt") is None  # not even the new file went up
    done = transfer.upload(store, transfer.local_tree(src), overwrite=True, quiet=True)
    assert sorted(done.transferred) == ["new.txt", "val/labels.csv"]
    assert store.read_range("val/labels.csv", 0, 100) == b"id,label\n1,dog\n"


def test_download_conflict_and_overwrite(store: Files, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", TREE)
    transfer.upload(store, transfer.local_tree(src), quiet=True)
    dst = tmp_path / "dst"
    transfer.download(store, dst, quiet=True)
    (dst / "README.txt").write_bytes(b"changed locally")
    transfer.upload(store, transfer.local_files([_write(tmp_path / "extra.txt", b"x")]), quiet=True)
    with pytest.raises(Conflict, match="README.txt"):
        transfer.download(store, dst, quiet=True)
    assert not (dst / "extra.txt").exists()
    done = transfer.download(store, dst, overwrite=True, quiet=True)
    assert sorted(done.transferred) == ["README.txt", "extra.txt"]
    assert (dst / "README.txt").read_bytes() == TREE["README.txt"]


def test_download_never_replaces_a_directory_or_writes_through_a_file(
    store: Files, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": b"a", "d/b.txt": b"b"})
    transfer.upload(store, transfer.local_tree(src), quiet=True)
    dst = tmp_path / "dst"
    (dst / "a.txt").mkdir(parents=True)  # a directory where a file goes
    (dst / "d").write_bytes(b"a file where a directory goes")
    with pytest.raises(Conflict, match="another kind"):
        transfer.download(store, dst, overwrite=True, quiet=True)
    assert (dst / "a.txt").is_dir() and (dst / "d").read_bytes().startswith(b"a file")


def test_prefix_naming_one_file_and_upload_files(store: Files, tmp_path: Path) -> None:
    a = _write(tmp_path / "in/x/a.txt", b"alpha")
    b = _write(tmp_path / "in/y/b.txt", b"beta")
    done = transfer.upload(
        store, transfer.local_files([a, b], relative_root=tmp_path / "in"), "t", quiet=True
    )
    assert sorted(done.transferred) == ["t/x/a.txt", "t/y/b.txt"]
    transfer.upload(store, transfer.local_files([a]), "flat", quiet=True)  # by basename
    assert store.stat("flat/a.txt") is not None
    out = transfer.download(store, tmp_path / "one", "t/x/a.txt", quiet=True)
    assert out.transferred == ["a.txt"]
    assert (tmp_path / "one/a.txt").read_bytes() == b"alpha"
    with pytest.raises(NotFound, match="nothing to download"):
        transfer.download(store, tmp_path / "none", "no/such/prefix", quiet=True)
    with pytest.raises(NotFound, match="does not exist"):
        transfer.local_tree(tmp_path / "missing")


def test_store_upload_without_overwrite_refuses_an_existing_object(
    store: Files, tmp_path: Path
) -> None:
    f = _write(tmp_path / "f.txt", b"one")
    md5 = hashlib.md5(b"one").digest()
    store.upload(f, "f.txt", size=3, md5=md5, overwrite=False, progress=lambda n: None)
    _write(f, b"two")
    with pytest.raises(AlreadyExists):
        store.upload(
            f,
            "f.txt",
            size=3,
            md5=hashlib.md5(b"two").digest(),
            overwrite=False,
            progress=lambda n: None,
        )
    assert store.read_range("f.txt", 0, 10) == b"one"


class FailingDownloads(Files):
    """The files of a real backend, but the download of `fail_path` dies half way."""

    def __init__(self, inner: Files, fail_path: str) -> None:
        super().__init__(inner.backend)
        self.fail_path = fail_path

    def download(self, f: RemoteFile, out: IO[bytes], *, progress) -> None:  # type: ignore
        if f.path == self.fail_path:
            out.write(b"half of it")
            raise IntegrityError("connection lost half way")
        super().download(f, out, progress=progress)


def test_failed_download_leaves_no_partial_file(store: Files, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", TREE)
    transfer.upload(store, transfer.local_tree(src), quiet=True)
    dst = tmp_path / "dst"
    with pytest.raises(IntegrityError, match="failed after .* connection lost"):
        transfer.download(FailingDownloads(store, "big/random.bin"), dst, quiet=True)
    assert not (dst / "big/random.bin").exists()
    assert leftovers(dst) == []
    for rel, digest in files_of(dst).items():  # whatever did arrive is complete
        assert digest == sha256_file(src / rel)


class SlowDownloads(FailingDownloads):
    """Streams `path` forever in small chunks (until the transfer is cancelled)."""

    def download(self, f: RemoteFile, out: IO[bytes], *, progress) -> None:  # type: ignore
        if f.path != self.fail_path:
            super().download(f, out, progress=progress)
            return
        while True:
            out.write(b"x" * 1024)
            out.flush()
            progress(1024)  # raises Cancelled once the transfer is stopped
            time.sleep(0.005)


def test_ctrl_c_during_download_leaves_no_partial_file(tmp_path: Path) -> None:
    remote = make_tree(tmp_path / "remote", {"slow.bin": 10, "other.txt": b"o"})
    dst = tmp_path / "dst"
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread() is threading.main_thread()

    def interrupt_when_writing() -> None:
        deadline = time.monotonic() + 30
        while not leftovers(dst) and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(main, signal.SIGINT)  # what Ctrl-C does

    killer = threading.Thread(target=interrupt_when_writing)
    killer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            transfer.download(SlowDownloads(Files(LocalBackend(remote)), "slow.bin"), dst,
                              quiet=True)
    finally:
        killer.join()
    assert leftovers(dst) == [] and not (dst / "slow.bin").exists()


def test_many_small_files_in_parallel(store: Files, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src", {f"f/{i:04d}.txt": f"file {i}\n".encode() for i in range(300)}
    )
    assert transfer.upload(store, transfer.local_tree(src), quiet=True).files_transferred == 300
    dst = tmp_path / "dst"
    assert transfer.download(store, dst, quiet=True).files_transferred == 300
    assert files_of(dst) == files_of(src)


@pytest.mark.parametrize("kind", ["blob", "fileshare"])
def test_big_files_move_in_parallel_chunks(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks written out of order by parallel workers: the result is still byte-exact."""
    monkeypatch.setattr(files_module, "BIG_FILE", 1)  # every file in parallel chunks
    monkeypatch.setattr(files_module, "PART", 128 * 1024)  # upload and download parts
    store: Files
    if kind == "blob":
        azurite: Azurite = request.getfixturevalue("azurite")
        container: ContainerClient = request.getfixturevalue("blob_container")
        store = blob_store(azurite, container)
    else:
        emulator: AzureFilesEmulator = request.getfixturevalue("azurefiles")
        share: ShareClient = request.getfixturevalue("file_share")
        store = share_store(emulator, share)
    src = make_tree(tmp_path / "src", {"a.bin": 3 * MiB + 17, "b.bin": 2 * MiB - 3})
    with store:
        transfer.upload(store, transfer.local_tree(src), quiet=True)
        for attempt in range(3):  # the last chunk written varies from run to run
            dst = tmp_path / f"dst{attempt}"
            transfer.download(store, dst, quiet=True)
            assert files_of(dst) == files_of(src)


# -- blob specifics ---------------------------------------------------------------------------
def blob_store(azurite: Azurite, container: ContainerClient, **kwargs: object) -> Files:
    return Files(BlobBackend(
        container=container.container_name,
        credential=conn_cred(azurite.connection_string),
        **{"retry": TRANSFER_RETRY, **kwargs},  # type: ignore[arg-type]
    ))


def share_store(emulator: AzureFilesEmulator, share: ShareClient, **kwargs: object) -> Files:
    return Files(FileShareBackend(
        share=share.share_name,
        credential=conn_cred(emulator.connection_string),
        **{"retry": TRANSFER_RETRY, **kwargs},  # type: ignore[arg-type]
    ))


def test_every_uploaded_blob_carries_its_md5_even_as_block_list(
    azurite: Azurite, blob_container: ContainerClient, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = make_tree(tmp_path / "src", {"small": b"abc", "large": 2 * MiB + 1})
    # Force block-list uploads (Put Block + Put Block List) for anything over 256 KiB.
    monkeypatch.setattr(files_module, "PART", 256 * 1024)
    with blob_store(azurite, blob_container) as store:
        transfer.upload(store, transfer.local_tree(src), quiet=True)
    for name in ("small", "large"):
        props = blob_container.get_blob_client(name).get_blob_properties()
        expected = hashlib.md5((src / name).read_bytes()).digest()
        assert bytes(props.content_settings.content_md5) == expected


def test_blob_without_md5_is_compared_by_recorded_etag(
    azurite: Azurite, blob_container: ContainerClient, tmp_path: Path
) -> None:
    # Uploaded by "another tool" as a block list: the service stores no Content-MD5.
    data = os.urandom(300_000)
    with client_for(azurite, blob_container) as client:
        client.upload_blob("nomd5.bin", data)
    assert (
        blob_container.get_blob_client("nomd5.bin")
        .get_blob_properties()
        .content_settings.content_md5
        is None
    )
    dst = tmp_path / "dst"
    with blob_store(azurite, blob_container) as store:
        assert transfer.download(store, dst, quiet=True).files_transferred == 1
        assert os.getxattr(dst / "nomd5.bin", transfer.XATTR)  # recorded
        again = transfer.download(store, dst, quiet=True)
        assert (again.files_transferred, again.files_skipped) == (0, 1)
        with client_for(azurite, blob_container) as c:  # replaced remotely, same size
            c.upload_blob("nomd5.bin", os.urandom(300_000), overwrite=True)
        with pytest.raises(Conflict):
            transfer.download(store, dst, quiet=True)
    assert (dst / "nomd5.bin").read_bytes() == data


def client_for(azurite: Azurite, container: ContainerClient) -> ContainerClient:
    """A plain SDK client that uploads anything over 64 KiB as a block list."""
    return ContainerClient.from_connection_string(
        azurite.connection_string,
        container.container_name,
        max_single_put_size=64 * 1024,
        max_block_size=64 * 1024,
    )


def test_remote_names_that_cannot_be_local_paths_are_skipped(
    azurite: Azurite, blob_container: ContainerClient, tmp_path: Path
) -> None:
    for name in ("a", "a/b", "dir//double", "ok/y", "folder/"):
        blob_container.upload_blob(name, b"data")
    with blob_store(azurite, blob_container) as store:
        summary = transfer.download(store, tmp_path / "dst", quiet=True)
    assert sorted(summary.invalid) == ["a", "dir//double"]
    assert "not valid locally" in str(summary)
    assert files_of(tmp_path / "dst") == {"a/b": _sha(b"data"), "ok/y": _sha(b"data")}


def test_sas_credential_and_errors_without_secrets(
    azurite: Azurite, blob_container: ContainerClient, tmp_path: Path
) -> None:
    sas = generate_container_sas(
        Azurite.ACCOUNT,
        blob_container.container_name,
        account_key=Azurite.KEY,
        permission=ContainerSasPermissions(read=True, list=True, write=True, create=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    src = make_tree(tmp_path / "src", {"x.txt": b"via sas"})
    with Files(BlobBackend(
        container=blob_container.container_name,
        endpoint=azurite.blob_endpoint,
        credential=Credential("sas_token", Secret(sas)),
    )) as store:
        store.check()
        assert transfer.upload(store, transfer.local_tree(src), quiet=True).files_transferred
    bad_key = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwYWJjZGVmZ2hpams+/w=="
    with Files(BlobBackend(
        container=blob_container.container_name,
        endpoint=azurite.blob_endpoint,
        account=Azurite.ACCOUNT,
        retry=RetryPolicy(max_attempts=1),
        credential=Credential("account_key", Secret(bad_key)),
    )) as store:
        with pytest.raises(AuthFailed) as info:
            store.check()
        assert bad_key not in str(info.value)


# -- file share specifics ---------------------------------------------------------------------
def test_interrupted_file_share_upload_is_never_taken_for_complete(
    azurefiles: AzureFilesEmulator, file_share: ShareClient, tmp_path: Path
) -> None:
    src = _write(tmp_path / "src/f.bin", b"complete content")
    with share_store(azurefiles, file_share) as store:
        # What an upload cut short leaves: the file exists, its bytes are wrong, no MD5.
        file_share.get_file_client("f.bin").upload_file(b"\0" * 16)
        with pytest.raises(Conflict):
            transfer.upload(store, transfer.local_tree(src.parent), quiet=True)
        transfer.upload(store, transfer.local_tree(src.parent), overwrite=True, quiet=True)
        f = store.stat("f.bin")
        assert f is not None and f.md5 == hashlib.md5(b"complete content").digest()


# -- progress ---------------------------------------------------------------------------------
def test_progress_bar_shows_files_and_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar("upload", total_bytes=2048, total_files=2, enabled=True)
    bar.add(1024)
    bar.file_done()
    bar.add(1024)
    bar.file_done()
    bar.close()
    err = capsys.readouterr().err
    assert "upload" in err and "2/2 files" in err and "2.00k" in err
    assert transfer.progress_enabled(quiet=True) is False
    assert transfer.progress_enabled(quiet=False) is False  # pytest's stdout is no terminal


def test_summary_text() -> None:
    s = TransferSummary("upload", files_transferred=2, files_skipped=3, bytes_transferred=2048)
    assert str(s) == f"uploaded 2 file(s), {format_size(2048)}; 3 unchanged file(s) skipped"


# -- registry operations against Azurite ------------------------------------------------------
def blob_info(name: str, container: str, azurite: Azurite, **kw: object) -> DatastoreInfo:
    return DatastoreInfo(
        name,
        "blob",
        account=Azurite.ACCOUNT,
        container=container,
        endpoint=azurite.blob_endpoint,
        auth=CredentialRef("account_key", "stored"),
        **kw,
    )  # type: ignore


def test_register_validates_creates_and_versions_on_blob(azurite: Azurite, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    container = f"c-{uuid.uuid4().hex[:10]}"
    info = blob_info("cats", container, azurite, prefix="sets")
    with pytest.raises(NotFound, match="does not exist.*--create-if-not-exists"):
        reg.register(info, Azurite.KEY, registry=registry)
    assert registry.list() == []
    done = reg.register(info, Azurite.KEY, registry=registry, create_if_not_exists=True)
    assert done.created and done.is_default
    service = azurite.blob_service_client()
    try:
        for n in (1, 2):  # version 1 packed (the default), version 2 one object per file
            src = make_tree(tmp_path / f"v{n}", {"train/x.txt": f"version {n}\n".encode()})
            assert ver.create_version("cats", src, registry=registry, pack=n == 1)[0] == n
        assert ver.versions("cats", registry=registry) == [1, 2]
        c = service.get_container_client(container)
        names = sorted(b.name for b in c.list_blobs())
        assert "sets/_versions/1/.packs/pack-000001" in names
        assert "sets/_versions/2/train/x.txt" in names and "sets/_versions/1.json" in names
        assert "sets/_versions/1.manifest" in names and "sets/_versions/2.manifest" in names
        spec = ver.attach_spec_for("cats", "1", registry=registry)
        assert spec["prefix"] == "sets" and spec["immutable"] is True
        assert spec["manifest"] == "_versions/1.manifest"
        assert spec["auth"] == {"kind": "account_key", "secret": Azurite.KEY}
        for n in (1, 2):  # the blocking face reads either layout through the manifest
            store, prefix = ver.version_source("cats", str(n), registry=registry)
            with store:
                assert store.read_range(join(prefix, "train/x.txt"), 0, 100) == (
                    f"version {n}\n".encode()
                )
    finally:
        service.delete_container(container)
        service.close()


def test_register_with_wrong_key_records_nothing(
    azurite: Azurite, blob_container: ContainerClient, tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "registry")
    wrong = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwYWJjZGVmZ2hpams+/w=="
    info = blob_info("cats", blob_container.container_name, azurite)
    with pytest.raises(AuthFailed, match="'cats' not registered") as e:
        reg.register(info, wrong, registry=registry)
    assert wrong not in str(e.value)
    assert registry.list() == [] and not (registry.dir / reg.SECRETS_FILE).exists()


def test_file_share_datastore_versions(
    azurefiles: AzureFilesEmulator,
    file_share: ShareClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = Registry(tmp_path / "registry")
    monkeypatch.setenv("FILES_CONN", azurefiles.connection_string)
    info = DatastoreInfo(
        "share",
        "fileshare",
        share=file_share.share_name,
        prefix="sets",
        auth=CredentialRef("connection_string", "env", "FILES_CONN"),
    )
    with pytest.raises(NotFound, match="share or directory"):  # "sets" does not exist yet
        reg.register(info, registry=registry)
    assert reg.register(info, registry=registry, create_if_not_exists=True).created is False
    for n in (1, 2):  # version 1 packed (the default), version 2 one file per file
        src = make_tree(tmp_path / f"v{n}", {"train/x.txt": f"v{n}".encode()})
        assert ver.create_version("share", src, registry=registry, pack=n == 1)[0] == n
    assert ver.versions("share", registry=registry) == [1, 2]
    spec = ver.attach_spec_for("share", "2", registry=registry)
    assert spec["kind"] == "fileshare" and spec["prefix"] == "sets"
    assert spec["manifest"] == "_versions/2.manifest"
    assert spec["share"] == file_share.share_name
    with registry.store("share") as store:
        assert store.read_range("_versions/2/train/x.txt", 0, 10) == b"v2"
        assert store.read_range("_versions/1/.packs/pack-000001", 0, 10) == b"v1"
    store, prefix = ver.version_source("share", "1", "train/x.txt", registry=registry)
    with store:
        assert store.read_range(prefix, 0, 10) == b"v1"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
