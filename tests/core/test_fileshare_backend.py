"""FileShareBackend against the Azure Files emulator, plus the pure listing logic under it.

Every test gets its own emulator (`azurefiles`, tests/support/azurefiles_fixture.py) and share;
data is written with the unmodified SDK, faults come from the emulator's fault injection. Nothing
talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import AsyncIterator, Callable

import pytest
import trio
from azure.storage.fileshare import (
    AccountSasPermissions,
    ContentSettings,
    ResourceTypes,
    ShareClient,
    ShareSasPermissions,
    generate_account_sas,
    generate_share_sas,
)

from dsmount.errors import (
    AuthFailed,
    BackendError,
    Changed,
    ConfigError,
    NotFound,
    TimedOut,
    Transient,
)
from dsmount.shared.credentials import Credential, Secret
from dsmount.storage.azure.fileshare import FileShareBackend
from dsmount.storage.azure.fileshare_listing import (
    DirectoryEntries,
    ListPage,
    RawEntry,
    entry_from_headers,
    parse_list_page,
    parse_smb_time,
)
from dsmount.storage.base import Entry
from dsmount.storage.retry import RetryPolicy
from tests.support.azurefiles import AzureFilesEmulator
from tests.support.azurefiles_fixture import TokenServer, seed_files, smb_time, unique_share
from tests.support.listing import collect

MiB = 1024 * 1024
FAST_RETRY = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05, deadline=20)
# A made-up key of the right shape: valid base64, not the emulator's.
WRONG_KEY = "d3Jvbmcta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3ODlhYmNkZWZnaGlqaw=="


def key_cred(emu: AzureFilesEmulator, key: str | None = None) -> Credential:
    return Credential("account_key", Secret(key or emu.key))


def put(share: ShareClient, path: str, data: bytes, **kwargs: object) -> None:
    parts = path.split("/")
    for depth in range(1, len(parts)):
        directory = share.get_directory_client("/".join(parts[:depth]))
        if not directory.exists():
            directory.create_directory()
    share.get_file_client(path).upload_file(data, **kwargs)


BackendFactory = Callable[..., FileShareBackend]


@pytest.fixture
async def make_backend(azurefiles: AzureFilesEmulator) -> AsyncIterator[BackendFactory]:
    """Builds FileShareBackends (account key + endpoint unless told otherwise); closes them."""
    made: list[FileShareBackend] = []

    def make(share: str, **kwargs: object) -> FileShareBackend:
        kwargs.setdefault("credential", key_cred(azurefiles))
        if kwargs["credential"].kind != "connection_string":  # type: ignore[attr-defined]
            kwargs.setdefault("endpoint", azurefiles.endpoint)
        kwargs.setdefault("retry", FAST_RETRY)
        backend = FileShareBackend(share=share, **kwargs)  # type: ignore[arg-type]
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            await backend.aclose()


# --- pure logic ---------------------------------------------------------------------------------


def test_smb_times_parse_to_the_100ns() -> None:
    base = int(dt.datetime(2026, 11, 21, 11, 13, 6, tzinfo=dt.UTC).timestamp()) * 10**9
    assert parse_smb_time("2026-11-21T11:13:06.1234567Z") == base + 123_456_700
    assert parse_smb_time("2026-11-21T11:13:06Z") == base
    assert parse_smb_time("2026-11-21T11:13:06.5Z") == base + 500_000_000
    assert smb_time(base + 123_456_700) == "2026-11-21T11:13:06.1234567Z"
    for bad in (None, "", "yesterday", "2026-11-21T11:13:06.12x4567Z", "2026-11-21 11:13:06"):
        assert parse_smb_time(bad) == 0


def test_listing_page_parse() -> None:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="x" '
        b'ShareName="s" DirectoryPath="d"><Entries>'
        b"<Directory><FileId>1</FileId><Name>sub</Name><Properties>"
        b"<LastWriteTime>2026-11-21T11:13:06.0000001Z</LastWriteTime>"
        b'<Etag>"0x1"</Etag></Properties></Directory>'
        b"<File><Name>a.txt</Name><Properties><Content-Length>42</Content-Length>"
        b"<Last-Modified>Sat, 21 Nov 2026 11:13:06 GMT</Last-Modified>"
        b'<Etag>"0x8DC"</Etag></Properties></File>'
        b'<File><Name Encoded="true">bell%07</Name><Properties><Content-Length>1'
        b"</Content-Length></Properties></File>"
        b"</Entries><NextMarker>abc</NextMarker></EnumerationResults>"
    )
    page = parse_list_page(body)
    base = int(dt.datetime(2026, 11, 21, 11, 13, 6, tzinfo=dt.UTC).timestamp()) * 10**9
    assert page.next_marker == "abc"
    assert page.entries == [
        RawEntry("sub", True, 0, base + 100, None),
        RawEntry("a.txt", False, 42, base, "0x8DC"),  # Last-Modified as the fallback mtime
        RawEntry("bell\x07", False, 1, 0, None),
    ]
    empty = parse_list_page(b"<EnumerationResults><Entries /><NextMarker /></EnumerationResults>")
    assert empty == ListPage([], None)


def test_entry_from_property_headers() -> None:
    headers = {
        "Content-Length": "7",
        "ETag": '"0x8DC1"',
        "Last-Modified": "Sat, 21 Nov 2026 11:13:06 GMT",
        "x-ms-file-last-write-time": "2020-09-13T12:26:40.2500000Z",
    }
    assert entry_from_headers("f", headers, is_dir=False) == Entry(
        "f", False, 7, 1_600_000_000_250_000_000, "0x8DC1"
    )
    assert entry_from_headers("d", headers, is_dir=True) == Entry(
        "d", True, 0, 1_600_000_000_250_000_000, None
    )


def test_directory_entries_skip_bad_names_and_duplicates() -> None:
    reports: list[tuple[str, str, str]] = []
    entries = DirectoryEntries("dir", lambda *r: reports.append(r))
    long_name = "\u65e5" * 100  # 100 characters (allowed by Azure), 300 bytes of UTF-8
    first = entries.feed(
        ListPage([RawEntry("ok", False, 1, 0, "e"), RawEntry(long_name, False, 1, 0, "e")], "m")
    )
    again = entries.feed(
        ListPage([RawEntry("ok", False, 1, 0, "e"), RawEntry("z", True, 0, 0, None)], None)
    )
    assert [e.name for e in first] == ["ok"]
    assert [e.name for e in again] == ["z"]
    assert [(d, n) for d, n, _ in reports] == [("dir", long_name)]


# --- configuration --------------------------------------------------------------------------


def test_configuration_errors_are_clear(azurefiles: AzureFilesEmulator) -> None:
    cred = key_cred(azurefiles)
    for bad_share in ("", "ab", "Upper", "a--b", "-ab", "x" * 64):
        with pytest.raises(ConfigError, match="share name"):
            FileShareBackend(share=bad_share, credential=cred, endpoint=azurefiles.endpoint)
    with pytest.raises(ConfigError, match="anonymous"):
        FileShareBackend(share="abc", credential=Credential("anonymous"), account="a")
    with pytest.raises(ConfigError, match="query"):
        FileShareBackend(share="abc", credential=cred, endpoint=azurefiles.endpoint + "?sig=x")
    with pytest.raises(ConfigError, match="account"):
        FileShareBackend(share="abc", credential=cred)
    with pytest.raises(ConfigError, match="prefix"):
        FileShareBackend(share="abc", credential=cred, account="a", prefix="a/../b")
    with pytest.raises(ConfigError, match="page_size"):
        FileShareBackend(share="abc", credential=cred, account="a", page_size=5001)
    with pytest.raises(ConfigError, match="https"):
        FileShareBackend(
            share="abc", credential=Credential("azure_ad"), endpoint=azurefiles.endpoint
        )


def test_endpoints_and_description(azurefiles: AzureFilesEmulator) -> None:
    default = FileShareBackend(share="abc", credential=key_cred(azurefiles), account="acct")
    assert default.endpoint == "https://acct.file.core.windows.net"
    from_conn = FileShareBackend(
        share="abc",
        credential=Credential("connection_string", Secret(azurefiles.connection_string)),
    )
    assert from_conn.endpoint == azurefiles.endpoint  # FileEndpoint wins
    assert from_conn.account == azurefiles.account
    suffix = FileShareBackend(
        share="abc",
        credential=Credential(
            "connection_string",
            Secret(f"AccountName=acct;AccountKey={azurefiles.key};EndpointSuffix=example.net"),
        ),
    )
    assert suffix.endpoint == "https://acct.file.example.net"
    described = from_conn.describe()
    assert described == {
        "kind": "fileshare",
        "account": azurefiles.account,
        "share": "abc",
        "prefix": "",
        "endpoint": azurefiles.endpoint,
        "auth": "connection_string",
    }
    assert azurefiles.key not in repr(described)


# --- stat, list, read -----------------------------------------------------------------------


async def test_stat_files_and_directories(
    file_share: ShareClient, make_backend: BackendFactory
) -> None:
    put(file_share, "dir/sub/file.bin", b"0123456789")
    written_ns = 1_600_000_000_250_000_000
    file_share.get_file_client("dir/sub/file.bin").set_http_headers(
        ContentSettings(), file_last_write_time=smb_time(written_ns)
    )
    props = file_share.get_file_client("dir/sub/file.bin").get_file_properties()
    backend = make_backend(file_share.share_name)

    await backend.check()
    root = await backend.stat("")
    assert root.is_dir and root.name == ""
    for path in ("dir", "dir/sub", "/dir/sub/"):
        entry = await backend.stat(path)
        assert entry.is_dir and entry.etag is None and entry.mtime_ns > 0
    entry = await backend.stat("dir/sub/file.bin")
    assert entry == Entry("file.bin", False, 10, written_ns, props.etag.strip('"'))
    for missing in ("nope", "dir/nope", "nope/deeper/file", "dir/sub/file.bin/below"):
        with pytest.raises(NotFound):
            await backend.stat(missing)


async def test_listing_matches_the_service(
    file_share: ShareClient, make_backend: BackendFactory
) -> None:
    put(file_share, "top.txt", b"top")
    put(file_share, "dir/a.bin", b"a" * 1000)
    put(file_share, "dir/empty", b"")
    file_share.get_directory_client("dir/child").create_directory()
    file_share.get_directory_client("emptydir").create_directory()
    backend = make_backend(file_share.share_name)

    root = await collect(backend, "")
    assert {(e.name, e.is_dir) for e in root.values()} == {
        ("top.txt", False),
        ("dir", True),
        ("emptydir", True),
    }
    listed = await collect(backend, "dir")
    assert set(listed) == {"a.bin", "empty", "child"}
    for name, entry in listed.items():
        # The listing alone gives what stat gives: no per-file request needed.
        assert entry == await backend.stat(f"dir/{name}")
    assert listed["a.bin"].size == 1000 and listed["a.bin"].etag

    pages = [page async for page in backend.list("emptydir")]
    assert pages == [[]]
    for not_a_dir in ("nope", "top.txt", "dir/a.bin"):
        with pytest.raises(NotFound):
            await collect(backend, not_a_dir)


async def test_listing_pages_stream_without_per_file_requests(
    azurefiles: AzureFilesEmulator, file_share: ShareClient, make_backend: BackendFactory
) -> None:
    names = [f"f{i:05d}.txt" for i in range(1200)]
    seed_files(azurefiles, file_share.share_name, {f"big/{n}": n.encode() for n in names})
    backend = make_backend(file_share.share_name, page_size=100)
    await backend.check()

    before = azurefiles.request_count
    seen: list[str] = []
    requests_at_page: list[int] = []
    async for page in backend.list("big"):
        requests_at_page.append(azurefiles.request_count - before)
        assert 0 < len(page) <= 100
        seen += [e.name for e in page]
        assert all(not e.is_dir and e.size == len(e.name) and e.etag for e in page)
    assert sorted(seen) == names and len(seen) == len(set(seen))
    # Each page was handed out as soon as it arrived: page k after exactly k requests.
    assert requests_at_page == list(range(1, 13))


async def test_prefix_is_the_root(file_share: ShareClient, make_backend: BackendFactory) -> None:
    put(file_share, "outside.txt", b"no")
    put(file_share, "a/b/inside.txt", b"yes")
    put(file_share, "a/b/c/deep.txt", b"deep")
    backend = make_backend(file_share.share_name, prefix="/a/b/")
    assert backend.prefix == "a/b"

    await backend.check()
    assert set(await collect(backend, "")) == {"inside.txt", "c"}
    assert set(await collect(backend, "c")) == {"deep.txt"}
    assert await backend.read("c/deep.txt", 0, 100) == b"deep"
    assert (await backend.stat("inside.txt")).size == 3
    with pytest.raises(NotFound):
        await backend.stat("outside.txt")

    for bad_prefix in ("a/missing", "outside.txt"):
        with pytest.raises(NotFound):
            await make_backend(file_share.share_name, prefix=bad_prefix).check()


async def test_ranged_reads_are_exact(
    file_share: ShareClient, make_backend: BackendFactory
) -> None:
    data = random.Random(7).randbytes(3 * MiB + 123)
    put(file_share, "data.bin", data, max_concurrency=4)
    put(file_share, "empty.bin", b"")
    backend = make_backend(file_share.share_name)
    etag = (await backend.stat("data.bin")).etag
    size = len(data)
    cases = [
        (0, 1),
        (0, size),
        (1, 4096),
        (MiB - 1, MiB + 2),
        (size - 10, 10),
        (size - 10, 1000),  # short only at end of file
        (size - 1, MiB),
        (size, 10),  # at the end: empty
        (size + 5000, 10),  # past the end: empty
        (123, 0),
    ]
    for offset, length in cases:
        for pin in (None, etag):
            got = await backend.read("data.bin", offset, length, pin)
            assert got == data[offset : offset + length], (offset, length, pin)
    assert await backend.read("empty.bin", 0, 100) == b""

    async def check(offset: int) -> None:
        assert (
            await backend.read("data.bin", offset, 256 * 1024, etag)
            == data[offset : offset + 256 * 1024]
        )

    async with trio.open_nursery() as nursery:  # many reads in flight at once
        for offset in range(0, size, 97 * 1024):
            nursery.start_soon(check, offset)
    assert backend.stats.bytes_fetched > size


async def test_stored_bytes_are_returned_as_stored(
    file_share: ShareClient, make_backend: BackendFactory
) -> None:
    import gzip

    packed = gzip.compress(b"x" * 10_000)
    put(file_share, "data.gz", packed, content_settings=ContentSettings(content_encoding="gzip"))
    backend = make_backend(file_share.share_name)
    assert await backend.read("data.gz", 0, len(packed) + 10) == packed


async def test_special_names_round_trip(
    file_share: ShareClient, make_backend: BackendFactory, caplog: pytest.LogCaptureFixture
) -> None:
    names = ["with space.txt", "hash#percent%plus+.txt", "trailing.", "\u00e9t\u00e9 \u2713"]
    for name in names:
        put(file_share, f"odd/{name}", name.encode())
    too_long = "\u65e5" * 100  # valid on Azure (100 chars), 300 bytes: not a POSIX name
    put(file_share, f"odd/{too_long}", b"x")
    backend = make_backend(file_share.share_name)

    with caplog.at_level(logging.WARNING, logger="dsmount.storage.azure.fileshare"):
        listed = await collect(backend, "odd")
        await collect(backend, "odd")  # a second listing does not log again
    assert set(listed) == set(names)
    for name in names:
        assert await backend.read(f"odd/{name}", 0, 100, listed[name].etag) == name.encode()
        assert (await backend.stat(f"odd/{name}")).size == len(name.encode())
    skipped = [r for r in caplog.records if too_long in r.getMessage()]
    assert len(skipped) == 1


# --- consistency ----------------------------------------------------------------------------


async def test_a_rewritten_file_fails_the_pinned_read(
    file_share: ShareClient, make_backend: BackendFactory
) -> None:
    put(file_share, "f.bin", b"A" * 4096)
    backend = make_backend(file_share.share_name)
    old = await backend.stat("f.bin")
    assert await backend.read("f.bin", 0, 10, old.etag) == b"A" * 10

    file_share.get_file_client("f.bin").upload_file(b"B" * 4096)  # same size, new content
    with pytest.raises(Changed):
        await backend.read("f.bin", 0, 10, old.etag)
    new = await backend.stat("f.bin")
    assert new.etag != old.etag
    assert await backend.read("f.bin", 0, 10, new.etag) == b"B" * 10
    assert await backend.read("f.bin", 0, 10) == b"B" * 10  # unpinned: whatever is there

    # Truncated below the offset: the 416 must not pass for the old version's end of file.
    file_share.get_file_client("f.bin").upload_file(b"C" * 100)
    with pytest.raises(Changed):
        await backend.read("f.bin", 2048, 10, new.etag)
    assert await backend.read("f.bin", 2048, 10) == b""
    file_share.get_file_client("f.bin").delete_file()
    with pytest.raises(NotFound):
        await backend.read("f.bin", 0, 10, new.etag)
    assert backend.stats.retries == 0  # none of these is worth retrying


# --- authentication -------------------------------------------------------------------------


async def test_connection_string_and_sas_auth(
    azurefiles: AzureFilesEmulator, file_share: ShareClient, make_backend: BackendFactory
) -> None:
    put(file_share, "d/f.txt", b"payload")
    share = file_share.share_name
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    share_sas = generate_share_sas(
        azurefiles.account,
        share,
        azurefiles.key,
        permission=ShareSasPermissions(read=True, list=True),
        expiry=expiry,
    )
    account_sas = generate_account_sas(
        azurefiles.account,
        azurefiles.key,
        resource_types=ResourceTypes(container=True, object=True),
        permission=AccountSasPermissions(read=True, list=True),
        expiry=expiry,
    )
    credentials = [
        Credential("connection_string", Secret(azurefiles.connection_string)),
        Credential("sas_token", Secret(share_sas)),
        Credential("sas_token", Secret("?" + account_sas)),
        Credential(
            "connection_string",
            Secret(f"FileEndpoint={azurefiles.endpoint};SharedAccessSignature={share_sas}"),
        ),
    ]
    for credential in credentials:
        backend = make_backend(share, credential=credential)
        await backend.check()  # a share SAS may not read share properties: this must not
        assert set(await collect(backend, "d")) == {"f.txt"}
        assert await backend.read("d/f.txt", 0, 100) == b"payload"

    # A SAS for another share fails its signature check: refused, not retried.
    other_sas = generate_share_sas(
        azurefiles.account,
        "other-share",
        azurefiles.key,
        permission=ShareSasPermissions(read=True, list=True),
        expiry=expiry,
    )
    backend = make_backend(share, credential=Credential("sas_token", Secret(other_sas)))
    with pytest.raises(AuthFailed):
        await backend.check()
    assert backend.stats.retries == 0


async def test_bad_key_fails_check_without_leaking_it(
    file_share: ShareClient, make_backend: BackendFactory
) -> None:
    backend = make_backend(
        file_share.share_name, credential=Credential("account_key", Secret(WRONG_KEY))
    )
    with trio.fail_after(5):
        with pytest.raises(AuthFailed) as info:
            await backend.check()
    message = str(info.value)
    assert "403" in message and "AuthenticationFailed" in message
    assert WRONG_KEY not in message and WRONG_KEY not in repr(backend.describe())
    assert backend.stats.retries == 0


async def test_azure_ad_bearer_token_over_tls(
    azurefiles_tls: AzureFilesEmulator, managed_identity: TokenServer
) -> None:
    emu = azurefiles_tls
    ca = str(emu.ca_cert_path)
    share = unique_share("tok")
    admin = ShareClient.from_connection_string(emu.connection_string, share, connection_verify=ca)
    admin.create_share()
    admin.get_directory_client("d").create_directory()
    admin.get_file_client("d/f.txt").upload_file(b"via token")
    admin.close()

    backend = FileShareBackend(
        share=share,
        credential=Credential("azure_ad"),
        endpoint=emu.endpoint,
        retry=FAST_RETRY,
        connection_verify=ca,
    )
    try:
        await backend.check()
        assert set(await collect(backend, "d")) == {"f.txt"}
        assert await backend.read("d/f.txt", 0, 100) == b"via token"
        assert backend.describe()["auth"] == "azure_ad"
    finally:
        await backend.aclose()
    # The emulator accepts only BEARER_TOKEN: the identity endpoint is where it came from.
    assert managed_identity.requests
    assert all("storage.azure.com" in scope for scope in managed_identity.requests)

    # Without the emulator's CA the certificate is refused at once: permanent, not retried.
    untrusted = FileShareBackend(
        share=share, credential=Credential("azure_ad"), endpoint=emu.endpoint, retry=FAST_RETRY
    )
    try:
        with trio.fail_after(10):
            with pytest.raises(BackendError, match="certificate"):
                await untrusted.check()
        assert untrusted.stats.retries == 0
    finally:
        await untrusted.aclose()


# --- faults ---------------------------------------------------------------------------------


async def test_server_errors_are_retried(
    azurefiles: AzureFilesEmulator, file_share: ShareClient, make_backend: BackendFactory
) -> None:
    data = random.Random(1).randbytes(MiB)
    put(file_share, "f.bin", data)
    backend = make_backend(file_share.share_name)
    etag = (await backend.stat("f.bin")).etag

    azurefiles.faults.fail_next(3)
    assert await backend.read("f.bin", 1000, 5000, etag) == data[1000:6000]
    assert backend.stats.retries == 3 and azurefiles.faults.pending() == 0

    azurefiles.faults.fail_next(2, status=500)
    assert len(await collect(backend, "")) == 1
    assert backend.stats.retries == 5

    # Persistent failure: the request gives up within its deadline, as a Transient.
    azurefiles.faults.fail_next(1000)
    impatient = make_backend(
        file_share.share_name,
        retry=RetryPolicy(max_attempts=100, base_delay=0.01, max_delay=0.05, deadline=1.0),
    )
    with trio.fail_after(10):
        with pytest.raises(Transient) as info:
            await impatient.read("f.bin", 0, 10, etag)
    assert isinstance(info.value, TimedOut) or "503" in str(info.value)
    azurefiles.faults.clear_faults()


async def test_dropped_connection_mid_body_is_retried_to_exact_bytes(
    azurefiles: AzureFilesEmulator, file_share: ShareClient, make_backend: BackendFactory
) -> None:
    data = random.Random(2).randbytes(4 * MiB)
    put(file_share, "f.bin", data, max_concurrency=2)
    backend = make_backend(file_share.share_name)
    etag = (await backend.stat("f.bin")).etag

    azurefiles.faults.drop_connection_next(2, methods={"GET"})
    assert await backend.read("f.bin", 0, 4 * MiB, etag) == data
    assert azurefiles.faults.injected_drops == 2
    assert backend.stats.retries == 2

    # A lost HEAD response (cut inside the headers). aiohttp itself resends an idempotent
    # request once when a reused keep-alive connection dies before the response, so this may
    # not reach our retry loop; either way the answer is complete and right.
    azurefiles.faults.drop_connection_next(1, methods={"HEAD"})
    assert (await backend.stat("f.bin")).size == len(data)
    assert azurefiles.faults.injected_drops == 3


async def test_a_deleted_share_gives_not_found_quickly(
    file_share: ShareClient, make_backend: BackendFactory
) -> None:
    put(file_share, "d/f.bin", b"x" * 1000)
    backend = make_backend(
        file_share.share_name,
        retry=RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=5, deadline=60),
    )
    etag = (await backend.stat("d/f.bin")).etag
    file_share.delete_share()

    with trio.fail_after(5):  # not retried for a minute: the answer is definite
        for call in (
            lambda: backend.read("d/f.bin", 0, 10, etag),
            lambda: backend.stat("d/f.bin"),
            lambda: backend.stat(""),
            lambda: collect(backend, "d"),
            backend.check,
        ):
            with pytest.raises(NotFound):
                await call()
    assert backend.stats.retries == 0


async def test_closed_backend_refuses_calls(
    file_share: ShareClient, make_backend: BackendFactory
) -> None:
    backend = make_backend(file_share.share_name)
    await backend.check()
    await backend.aclose()
    await backend.aclose()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        await backend.stat("")
