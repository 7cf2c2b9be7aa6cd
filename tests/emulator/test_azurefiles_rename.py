"""Rename File and Rename Directory of the Azure Files emulator, driven only through the
unmodified SDK (`ShareFileClient.rename_file`, `ShareDirectoryClient.rename_directory`), with
the error codes the REST API documents."""

from __future__ import annotations

import datetime as dt

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.fileshare import ShareClient, ShareSasPermissions, generate_share_sas

from tests.support.azurefiles import AzureFilesEmulator


def _file(share: ShareClient, path: str, body: bytes) -> None:
    share.get_file_client(path).upload_file(body)


def test_rename_file_moves_content_and_keeps_the_file_id(file_share: ShareClient) -> None:
    file_share.get_directory_client("a").create_directory()
    file_share.get_directory_client("b").create_directory()
    _file(file_share, "a/one.txt", b"one")
    before = file_share.get_file_client("a/one.txt").get_file_properties()
    moved = file_share.get_file_client("a/one.txt").rename_file("b/two.txt")
    props = moved.get_file_properties()
    assert moved.download_file().readall() == b"one"
    assert props.file_id == before.file_id and props.etag != before.etag
    assert not file_share.get_file_client("a/one.txt").exists()


def test_rename_file_replaces_only_when_asked(file_share: ShareClient) -> None:
    _file(file_share, "src", b"new")
    _file(file_share, "dst", b"old")
    with pytest.raises(ResourceExistsError):
        file_share.get_file_client("src").rename_file("dst")
    file_share.get_file_client("src").rename_file("dst", overwrite=True)
    assert file_share.get_file_client("dst").download_file().readall() == b"new"
    assert not file_share.get_file_client("src").exists()


def test_rename_errors(file_share: ShareClient) -> None:
    file_share.get_directory_client("d").create_directory()
    _file(file_share, "f", b"x")
    with pytest.raises(ResourceNotFoundError):
        file_share.get_file_client("missing").rename_file("other")
    with pytest.raises(ResourceNotFoundError):  # ParentNotFound
        file_share.get_file_client("f").rename_file("nodir/f")
    with pytest.raises(ResourceExistsError):  # a directory is never replaced by a file
        file_share.get_file_client("f").rename_file("d", overwrite=True)


def test_rename_directory_moves_the_subtree(file_share: ShareClient) -> None:
    file_share.get_directory_client("top").create_directory()
    file_share.get_directory_client("top/sub").create_directory()
    _file(file_share, "top/sub/leaf", b"leaf")
    file_share.get_directory_client("top").rename_directory("moved")
    assert file_share.get_file_client("moved/sub/leaf").download_file().readall() == b"leaf"
    assert not file_share.get_directory_client("top").exists()
    file_share.get_directory_client("other").create_directory()
    with pytest.raises(ResourceExistsError):
        file_share.get_directory_client("moved").rename_directory("other")


def test_rename_with_a_share_sas(file_share: ShareClient, azurefiles: AzureFilesEmulator) -> None:
    sas = generate_share_sas(
        azurefiles.account, file_share.share_name, account_key=azurefiles.key,
        permission=ShareSasPermissions(read=True, write=True, create=True, delete=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    client = ShareClient(azurefiles.endpoint, file_share.share_name, credential=sas)
    client.get_file_client("a").upload_file(b"sas")
    client.get_file_client("a").rename_file("b")
    assert file_share.get_file_client("b").download_file().readall() == b"sas"
