"""The Azure Files emulator, exercised only through the unmodified azure-storage-file-share SDK
(sync and `.aio`) and the standalone entry point: if these pass, the emulator speaks the
protocol the SDK (and so dsmount) expects — URLs, headers, XML, status and error codes, auth.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.fileshare import (
    AccountSasPermissions,
    LinearRetry,
    ResourceTypes,
    ShareClient,
    ShareFileClient,
    ShareSasPermissions,
    ShareServiceClient,
    generate_account_sas,
    generate_share_sas,
)
from azure.storage.fileshare._shared.authentication import _storage_header_sort
from azure.storage.fileshare._shared.policies_async import LinearRetry as AioLinearRetry
from azure.storage.fileshare.aio import ShareServiceClient as AioShareServiceClient
from hypothesis import given
from hypothesis import strategies as st

from tests.support.azurefiles import AzureFilesEmulator
from tests.support.azurefiles.auth import header_sort_key

REPO_ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
TOKEN = "test-bearer-token"


def fast_retry(total: int = 3) -> LinearRetry:
    """The SDK's retry policy without back-off sleeps, so fault tests stay fast."""
    return LinearRetry(backoff=0, random_jitter_range=0, retry_total=total)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def in_future(**delta: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(**delta)


class StaticToken:
    """A TokenCredential handing out a fixed token (what dsmount gets from azure-identity)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture
def emulator() -> Iterator[AzureFilesEmulator]:
    with AzureFilesEmulator() as emu:
        yield emu


@pytest.fixture
def service(emulator: AzureFilesEmulator) -> Iterator[ShareServiceClient]:
    with ShareServiceClient.from_connection_string(
        emulator.connection_string, retry_policy=fast_retry()
    ) as svc:
        yield svc


@pytest.fixture
def share(service: ShareServiceClient) -> ShareClient:
    return service.create_share(unique("share"))


# -- shares ------------------------------------------------------------------------------------


def test_share_lifecycle_and_listing(service: ShareServiceClient) -> None:
    names = sorted(unique("s") for _ in range(3))
    for name in names:
        service.create_share(name, metadata={"owner": "tests"}, quota=7)
    props = service.get_share_client(names[0]).get_share_properties()
    assert props.name == names[0]
    assert props.quota == 7
    assert props.metadata == {"owner": "tests"}
    assert props.etag.startswith('"0x')
    assert abs(props.last_modified - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)

    listed = list(service.list_shares(include_metadata=True, results_per_page=2))
    assert [s.name for s in listed] == names
    assert all(s.metadata == {"owner": "tests"} for s in listed)
    assert [s.name for s in service.list_shares(name_starts_with=names[1])] == [names[1]]

    with pytest.raises(ResourceExistsError) as exists:
        service.create_share(names[0])
    assert exists.value.error_code == "ShareAlreadyExists"

    service.delete_share(names[0])
    with pytest.raises(ResourceNotFoundError) as missing:
        service.get_share_client(names[0]).get_share_properties()
    assert missing.value.error_code == "ShareNotFound"
    assert missing.value.response.headers["x-ms-error-code"] == "ShareNotFound"


def test_every_response_has_service_headers(share: ShareClient) -> None:
    seen: list[Any] = []
    share.get_share_properties(raw_response_hook=lambda resp: seen.append(resp.http_response))
    headers = seen[0].headers
    assert headers["x-ms-request-id"] and headers["Date"] and headers["ETag"]
    assert headers["x-ms-version"] == share.api_version
    assert headers["Server"].startswith("Windows-Azure-File/1.0")


# -- files: upload, properties, ranged reads ---------------------------------------------------


def test_upload_small_and_multi_range_files(share: ShareClient) -> None:
    directory = share.create_directory("data")
    small = directory.get_file_client("small.txt")
    small.upload_file(b"hello emulator")
    assert small.download_file().readall() == b"hello emulator"

    big_data = os.urandom(10 * MiB + 12345)
    range_puts: list[str] = []
    big = directory.get_file_client("big.bin")
    result = big.upload_file(
        big_data,
        raw_request_hook=lambda req: (
            range_puts.append(req.http_request.url)
            if "comp=range" in req.http_request.url
            else None
        ),
    )
    assert len(range_puts) == 3  # 4 MiB ranges: the upload took several Put Range calls

    props = big.get_file_properties()
    assert props.size == len(big_data)
    assert props.etag == result["etag"]
    assert props.last_modified == result["last_modified"]
    assert props.content_settings.content_type == "application/octet-stream"
    assert big.download_file(max_concurrency=3).readall() == big_data


def test_ranged_downloads_return_exact_bytes(share: ShareClient) -> None:
    data = os.urandom(5 * MiB + 7)
    file = share.get_file_client("ranged.bin")
    file.upload_file(data)
    cases = [(0, 1), (1, 4096), (MiB - 3, 10), (4 * MiB, MiB + 7), (len(data) - 5, 100)]
    for offset, length in cases:
        got = file.download_file(offset=offset, length=length).readall()
        assert got == data[offset : offset + length]
    # x-ms-range-get-content-md5: the SDK checks the service's per-range MD5.
    got = file.download_file(offset=123, length=MiB, validate_content=True).readall()
    assert got == data[123 : 123 + MiB]

    with pytest.raises(HttpResponseError) as invalid:
        file.download_file(offset=len(data), length=10)
    assert invalid.value.status_code == 416
    assert invalid.value.error_code == "InvalidRange"


def test_empty_file_downloads_as_empty(share: ShareClient) -> None:
    file = share.get_file_client("empty")
    file.create_file(0)
    assert file.download_file().readall() == b""
    assert file.get_file_properties().size == 0


def test_etag_changes_on_every_write_and_pinned_download_notices(
    emulator: AzureFilesEmulator, share: ShareClient
) -> None:
    file = share.get_file_client("changing.bin")
    file.upload_file(bytes(2 * MiB))
    etags = {file.get_file_properties().etag}
    file.upload_range(b"x" * 512, offset=0, length=512)
    etags.add(file.get_file_properties().etag)
    file.clear_range(offset=512, length=512)
    etags.add(file.get_file_properties().etag)
    file.resize_file(3 * MiB)
    etags.add(file.get_file_properties().etag)
    file.set_file_metadata({"k": "v"})
    etags.add(file.get_file_properties().etag)
    assert len(etags) == 5
    assert file.get_file_properties().size == 3 * MiB
    assert file.download_file(offset=0, length=1024).readall() == b"x" * 512 + bytes(512)

    # The SDK pins multi-request downloads to the first response's ETag (the Files service has
    # no If-Match): a write between chunks must surface as ResourceModifiedError.
    pinned = ShareFileClient.from_connection_string(
        emulator.connection_string,
        share.share_name,
        "changing.bin",
        max_single_get_size=MiB,
        max_chunk_get_size=MiB,
    )
    with pinned:
        stream = pinned.download_file()
        file.upload_range(b"y" * 512, offset=2 * MiB, length=512)
        with pytest.raises(ResourceModifiedError):
            stream.readall()


def test_names_are_case_insensitive_and_case_preserving(share: ShareClient) -> None:
    share.get_file_client("ReadMe.TXT").upload_file(b"first")
    assert share.get_file_client("README.txt").download_file().readall() == b"first"
    share.get_file_client("readme.txt").upload_file(b"second")  # replaces the same file
    assert [item.name for item in share.list_directories_and_files()] == ["readme.txt"]
    share.create_directory("Sub")
    with pytest.raises(ResourceExistsError):
        share.create_directory("SUB")


def test_special_characters_in_paths_sign_and_round_trip(share: ShareClient) -> None:
    directory = share.create_directory("dir with space+plus")
    name = "ünï cödé & 100%+x.txt"
    directory.get_file_client(name).upload_file(b"special")
    assert directory.get_file_client(name).download_file().readall() == b"special"
    listed = list(directory.list_directories_and_files(name_starts_with="ünï cödé &"))
    assert [item.name for item in listed] == [name]


# -- directories and listing -------------------------------------------------------------------


def test_listing_pages_through_a_thousand_entries(share: ShareClient) -> None:
    directory = share.create_directory("many")
    files = {f"file-{i:04d}.dat": i * 3 for i in range(900)}
    dirs = {f"dir-{i:03d}" for i in range(100)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(
            pool.map(lambda kv: directory.get_file_client(kv[0]).create_file(kv[1]), files.items())
        )
        list(pool.map(directory.create_subdirectory, dirs))

    pages = list(directory.list_directories_and_files(results_per_page=100).by_page())
    page_lists = [list(page) for page in pages]
    assert len(page_lists) == 10
    assert all(len(page) == 100 for page in page_lists)
    items = [item for page in page_lists for item in page]
    assert {i.name: i.size for i in items if not i.is_directory} == files
    assert {i.name for i in items if i.is_directory} == dirs
    assert len(items) == len({i.name for i in items}) == 1000

    # Resuming from a continuation token continues exactly where the previous page stopped.
    first = directory.list_directories_and_files(results_per_page=100).by_page()
    next(first)
    token = first.continuation_token
    assert token
    resumed = directory.list_directories_and_files(results_per_page=100).by_page(token)
    assert [i.name for i in next(resumed)] == [i.name for i in page_lists[1]]

    prefixed = list(directory.list_directories_and_files(name_starts_with="file-08"))
    assert sorted(i.name for i in prefixed) == [f"file-08{i:02d}.dat" for i in range(100)]


def test_listing_with_include_returns_extended_properties(share: ShareClient) -> None:
    directory = share.create_directory("props")
    file = directory.get_file_client("f.bin")
    file.upload_file(b"abc")
    directory.create_subdirectory("sub")
    file_props = file.get_file_properties()
    items = {
        i.name: i
        for i in directory.list_directories_and_files(
            include=["timestamps", "Etag", "Attributes", "PermissionKey"],
            include_extended_info=True,
        )
    }
    listed = items["f.bin"]
    assert listed.size == 3
    assert listed.etag == file_props.etag
    assert listed.last_modified == file_props.last_modified
    assert listed.file_id == file_props.file_id
    # The SDK hands listed SMB times over as the service's 7-digit strings.
    assert listed.creation_time.startswith(
        file_props.creation_time.strftime("%Y-%m-%dT%H:%M:%S.%f")
    )
    assert "Archive" in str(listed.file_attributes)
    assert listed.permission_key
    assert items["sub"].is_directory
    assert "Directory" in str(items["sub"].file_attributes)

    plain = {i.name: i for i in directory.list_directories_and_files()}
    assert plain["f.bin"].size == 3
    assert plain["f.bin"].file_id is None  # only with extended info, like the service


def test_directory_properties_and_deletion_rules(share: ShareClient) -> None:
    parent = share.create_directory("parent")
    child = parent.create_subdirectory("child")
    child.upload_file("f.txt", b"x")
    props = child.get_directory_properties()
    assert props.etag.startswith('"0x')
    assert props.file_id and props.parent_id == parent.get_directory_properties().file_id

    with pytest.raises(ResourceExistsError) as not_empty:
        child.delete_directory()
    assert not_empty.value.error_code == "DirectoryNotEmpty"
    child.delete_file("f.txt")
    child.delete_directory()
    with pytest.raises(ResourceNotFoundError):
        child.get_directory_properties()
    with pytest.raises(ResourceExistsError) as exists:
        share.create_directory("parent")
    assert exists.value.error_code == "ResourceAlreadyExists"


def test_not_found_errors_carry_the_service_codes(
    service: ShareServiceClient, share: ShareClient
) -> None:
    share.create_directory("exists")
    cases = [
        (
            lambda: share.get_file_client("exists/missing.txt").get_file_properties(),
            "ResourceNotFound",
        ),
        (lambda: share.get_file_client("exists/missing.txt").download_file(), "ResourceNotFound"),
        (lambda: share.get_file_client("exists/missing.txt").delete_file(), "ResourceNotFound"),
        (lambda: share.get_file_client("nodir/sub/x.txt").get_file_properties(), "ParentNotFound"),
        (lambda: share.get_file_client("nodir/x.txt").create_file(10), "ParentNotFound"),
        (
            lambda: share.get_directory_client("nodir").get_directory_properties(),
            "ResourceNotFound",
        ),
        (
            lambda: list(share.get_directory_client("nodir").list_directories_and_files()),
            "ResourceNotFound",
        ),
        (
            lambda: service.get_share_client("noshare").get_file_client("x").download_file(),
            "ShareNotFound",
        ),
    ]
    for call, code in cases:
        with pytest.raises(ResourceNotFoundError) as err:
            call()
        assert err.value.error_code == code
        assert err.value.status_code == 404


# -- authentication ----------------------------------------------------------------------------


def test_wrong_account_key_is_refused(emulator: AzureFilesEmulator, share: ShareClient) -> None:
    wrong_key = "A" * 86 + "=="
    client = ShareServiceClient(
        emulator.endpoint, credential={"account_name": emulator.account, "account_key": wrong_key}
    )
    with client, pytest.raises(ClientAuthenticationError) as err:
        client.get_share_client(share.share_name).get_share_properties()
    assert err.value.status_code == 403
    assert err.value.error_code == "AuthenticationFailed"


def test_request_without_credentials_is_refused(emulator: AzureFilesEmulator) -> None:
    # The SDK cannot even build a credential-less client, so ask with plain HTTP.
    request = urllib.request.Request(
        f"{emulator.endpoint}/?comp=list", headers={"x-ms-version": "2025-11-05"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    with err.value:
        assert err.value.code == 401
        assert err.value.headers["x-ms-error-code"] == "NoAuthenticationInformation"
        assert err.value.headers["WWW-Authenticate"].startswith("Bearer ")
        assert b"<Code>NoAuthenticationInformation</Code>" in err.value.read()


def test_account_sas(emulator: AzureFilesEmulator, share: ShareClient) -> None:
    share.get_file_client("f.txt").upload_file(b"sas data")
    all_types = ResourceTypes(service=True, container=True, object=True)
    read_list = AccountSasPermissions(read=True, list=True)
    sas = generate_account_sas(
        emulator.account, emulator.key, all_types, read_list, in_future(hours=1)
    )
    with ShareServiceClient(emulator.endpoint, credential=sas) as client:
        assert share.share_name in [s.name for s in client.list_shares()]
        reader = client.get_share_client(share.share_name)
        assert reader.get_file_client("f.txt").download_file().readall() == b"sas data"
        assert [i.name for i in reader.list_directories_and_files()] == ["f.txt"]
        with pytest.raises(HttpResponseError) as no_write:
            reader.get_file_client("g.txt").upload_file(b"nope")
        assert no_write.value.status_code == 403
        assert no_write.value.error_code == "AuthorizationPermissionMismatch"

    objects_only = generate_account_sas(
        emulator.account, emulator.key, ResourceTypes(object=True), read_list, in_future(hours=1)
    )
    with ShareServiceClient(emulator.endpoint, credential=objects_only) as client:
        with pytest.raises(HttpResponseError) as wrong_type:
            list(client.list_shares())
        assert wrong_type.value.error_code == "AuthorizationResourceTypeMismatch"

    expired = generate_account_sas(
        emulator.account, emulator.key, all_types, read_list, in_future(minutes=-1)
    )
    tampered = sas.replace("sp=rl", "sp=rwl")
    assert tampered != sas
    for bad in (expired, tampered):
        with ShareServiceClient(emulator.endpoint, credential=bad) as client:
            with pytest.raises(ClientAuthenticationError) as err:
                client.get_share_client(share.share_name).get_file_client("f.txt").download_file()
            assert err.value.status_code == 403
            assert err.value.error_code == "AuthenticationFailed"


def test_share_sas(emulator: AzureFilesEmulator, service: ShareServiceClient) -> None:
    share = service.create_share(unique("sas"))
    other = service.create_share(unique("other"))
    share.get_file_client("f.txt").upload_file(b"share sas")
    other.get_file_client("f.txt").upload_file(b"other")
    perms = ShareSasPermissions(read=True, write=True, create=True, list=True)
    sas = generate_share_sas(
        emulator.account,
        share.share_name,
        emulator.key,
        permission=perms,
        expiry=in_future(hours=1),
    )
    with ShareClient(emulator.endpoint, share.share_name, credential=sas) as scoped:
        assert scoped.get_file_client("f.txt").download_file().readall() == b"share sas"
        scoped.get_file_client("new.txt").upload_file(b"written with sas")
        assert sorted(i.name for i in scoped.list_directories_and_files()) == ["f.txt", "new.txt"]
        with pytest.raises(HttpResponseError) as share_level:
            scoped.get_share_properties()
        assert share_level.value.error_code == "AuthorizationFailure"
    # The signature covers the share: using it on another share fails authentication.
    with ShareClient(emulator.endpoint, other.share_name, credential=sas) as wrong_share:
        with pytest.raises(ClientAuthenticationError) as err:
            wrong_share.get_file_client("f.txt").download_file()
        assert err.value.error_code == "AuthenticationFailed"


@pytest.fixture
def tls_emulator() -> Iterator[AzureFilesEmulator]:
    # The SDK sends bearer tokens over HTTPS only, so token tests need the TLS mode.
    with AzureFilesEmulator(tls=True, bearer_token=TOKEN) as emu:
        yield emu


def test_bearer_token_needs_backup_intent(tls_emulator: AzureFilesEmulator) -> None:
    ca = str(tls_emulator.ca_cert_path)
    with ShareServiceClient.from_connection_string(
        tls_emulator.connection_string, connection_verify=ca
    ) as admin:
        share_name = admin.create_share(unique("tok")).share_name

    def token_client(token: str, **kwargs: Any) -> ShareClient:
        return ShareClient(
            tls_emulator.endpoint,
            share_name,
            credential=StaticToken(token),
            connection_verify=ca,
            retry_policy=fast_retry(),
            **kwargs,
        )

    with token_client(TOKEN, token_intent="backup") as client:
        client.create_directory("d")
        client.get_file_client("d/f.txt").upload_file(b"via token")
        assert client.get_file_client("d/f.txt").download_file().readall() == b"via token"

    with pytest.raises(ValueError, match="token_intent"):
        token_client(TOKEN)  # the SDK itself insists on an intent

    strip_intent = lambda req: req.http_request.headers.pop("x-ms-file-request-intent", None)  # noqa: E731
    with token_client(TOKEN, token_intent="backup", raw_request_hook=strip_intent) as client:
        with pytest.raises(HttpResponseError) as no_intent:
            client.get_file_client("d/f.txt").download_file()
        assert no_intent.value.status_code == 400
        assert no_intent.value.error_code == "MissingRequiredHeader"

    with token_client("forged", token_intent="backup") as client:
        with pytest.raises(ClientAuthenticationError) as forged:
            client.get_file_client("d/f.txt").download_file()
        assert forged.value.status_code == 401
        assert forged.value.error_code == "InvalidAuthenticationInfo"


@given(st.lists(st.from_regex(r"x-ms-[a-z0-9-]{1,8}", fullmatch=True), min_size=2, unique=True))
def test_canonical_header_order_matches_the_sdk(names: list[str]) -> None:
    sdk_order = [name for name, _ in _storage_header_sort([(n, "v") for n in names])]
    assert sorted(names, key=header_sort_key) == sdk_order


# -- fault injection ---------------------------------------------------------------------------


def test_injected_server_errors_are_retried_transparently(
    emulator: AzureFilesEmulator, share: ShareClient
) -> None:
    file = share.get_file_client("f.txt")
    file.upload_file(b"payload")
    emulator.faults.fail_next(2)
    emulator.faults.fail_next(1, status=500)
    assert file.download_file().readall() == b"payload"
    assert emulator.faults.injected_failures == 3
    assert emulator.faults.pending() == 0


def test_persistent_server_errors_surface_with_the_service_code(
    emulator: AzureFilesEmulator, share: ShareClient
) -> None:
    file = share.get_file_client("f.txt")
    file.upload_file(b"payload")
    emulator.faults.fail_next(10, methods={"HEAD"})
    with pytest.raises(HttpResponseError) as err:
        file.get_file_properties()
    assert err.value.status_code == 503
    assert err.value.error_code == "ServerBusy"
    assert file.download_file().readall() == b"payload"  # GETs were not targeted
    emulator.faults.clear_faults()
    assert file.get_file_properties().size == 7


def test_dropped_connections(emulator: AzureFilesEmulator, share: ShareClient) -> None:
    file = share.get_file_client("f.bin")
    data = os.urandom(MiB)
    # A lost response to an idempotent Put Range is retried by the SDK.
    emulator.faults.drop_connection_next(1, methods={"PUT"})
    file.upload_file(data)
    assert emulator.faults.injected_drops == 1
    # A body cut off mid-way is an error (or a retry) — never silently short data.
    emulator.faults.drop_connection_next(1, methods={"GET"})
    try:
        got = file.download_file().readall()
    except AzureError:
        pass
    else:
        assert got == data
    assert emulator.faults.injected_drops == 2
    assert file.download_file().readall() == data  # the client recovers on a new connection


def test_injected_delay_slows_every_request(
    emulator: AzureFilesEmulator, share: ShareClient
) -> None:
    emulator.faults.delay(0.2)
    started = time.monotonic()
    share.get_share_properties()
    share.get_share_properties()
    assert time.monotonic() - started >= 0.4
    emulator.faults.clear_faults()
    started = time.monotonic()
    for _ in range(5):
        share.get_share_properties()
    assert time.monotonic() - started < 1.0  # 5 x 0.2 s had the delay survived clear_faults()


# -- asyncio client and standalone mode --------------------------------------------------------


def test_aio_client(emulator: AzureFilesEmulator) -> None:
    data = os.urandom(9 * MiB)

    async def scenario() -> None:
        async with AioShareServiceClient.from_connection_string(
            emulator.connection_string,
            retry_policy=AioLinearRetry(backoff=0, random_jitter_range=0, retry_total=3),
        ) as svc:
            share = await svc.create_share(unique("aio"))
            directory = await share.create_directory("d")
            file = directory.get_file_client("big.bin")
            await file.upload_file(data)
            stream = await file.download_file(offset=MiB, length=5 * MiB)
            assert await stream.readall() == data[MiB : 6 * MiB]
            assert (await file.get_file_properties()).size == len(data)
            names = [item.name async for item in directory.list_directories_and_files()]
            assert names == ["big.bin"]
            with pytest.raises(ResourceNotFoundError) as err:
                await directory.get_file_client("missing").get_file_properties()
            assert err.value.error_code == "ResourceNotFound"

    asyncio.run(scenario())


@pytest.fixture
def standalone() -> Iterator[str]:
    """`python -m tests.support.azurefiles` in a subprocess; yields its connection string."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.azurefiles", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout=20)
        assert ready, "emulator did not print its connection string"
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_standalone_entry_point(standalone: str) -> None:
    assert "FileEndpoint=http://127.0.0.1:" in standalone
    with ShareServiceClient.from_connection_string(standalone) as svc:
        share = svc.create_share("standalone")
        share.get_file_client("f.txt").upload_file(b"out of process")
        assert share.get_file_client("f.txt").download_file().readall() == b"out of process"
