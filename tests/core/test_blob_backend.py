"""BlobBackend against a real Azurite, plus the pure listing logic it is built on.

Azurite tests use the session `azurite` server and a fresh `blob_container` per test (see
tests/support/azurite_fixture.py); faults come from `FaultProxy` in front of Azurite or from a
tiny lying HTTP server below. Nothing talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import http.client
import logging
import socket
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
import trio
from azure.storage.blob import (
    ContainerClient,
    ContainerSasPermissions,
    ContentSettings,
    generate_container_sas,
)

from dsmount.errors import AuthFailed, Changed, NotFound, TimedOut, Transient
from dsmount.shared.credentials import Credential, Secret
from dsmount.storage.azure.blob import BlobBackend
from dsmount.storage.azure.blob_listing import (
    DirectoryPages,
    ListPage,
    RawBlob,
    parse_http_date,
    parse_list_page,
)
from dsmount.storage.base import Entry
from dsmount.storage.names import name_problem, strip_etag
from dsmount.storage.retry import RetryPolicy
from tests.support.azurite import Azurite
from tests.support.faultproxy import FaultProxy
from tests.support.listing import collect

azurite_test = pytest.mark.azurite

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, deadline=20)


# --- helpers and fixtures --------------------------------------------------------------------


def conn_cred(azurite: Azurite) -> Credential:
    return Credential("connection_string", Secret(azurite.connection_string))


def put(container: ContainerClient, name: str, data: bytes = b"", **kwargs: object) -> None:
    container.upload_blob(name, data, overwrite=True, **kwargs)


def put_many(container: ContainerClient, names: list[str], data: bytes = b"x") -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: put(container, n, data), names))


def container_sas(container: ContainerClient, **permissions: bool) -> str:
    return generate_container_sas(
        Azurite.ACCOUNT,
        container.container_name,
        account_key=Azurite.KEY,
        permission=ContainerSasPermissions(**permissions),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )


def put_raw(azurite: Azurite, container: ContainerClient, name: str, data: bytes = b"x") -> None:
    """Upload with http.client, which sends the path verbatim: the SDK's HTTP stack normalizes
    "." and ".." segments away, so names containing them can only be made this way."""
    sas = container_sas(container, read=True, write=True, create=True)
    conn = http.client.HTTPConnection(azurite.host, azurite.blob_port, timeout=10)
    try:
        path = f"/{Azurite.ACCOUNT}/{container.container_name}/{quote(name, safe='/.')}?{sas}"
        conn.request(
            "PUT",
            path,
            body=data,
            headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"},
        )
        response = conn.getresponse()
        response.read()
        assert response.status == 201, response.status
    finally:
        conn.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BackendFactory = Callable[..., BlobBackend]


@pytest.fixture
async def make_backend(azurite: Azurite) -> AsyncIterator[BackendFactory]:
    """Builds BlobBackends (connection-string auth unless told otherwise); closes them all."""
    made: list[BlobBackend] = []

    def make(container: str, **kwargs: object) -> BlobBackend:
        kwargs.setdefault("credential", conn_cred(azurite))
        kwargs.setdefault("retry", FAST_RETRY)
        backend = BlobBackend(container=container, **kwargs)  # type: ignore[arg-type]
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            await backend.aclose()


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[FaultProxy]:
    with FaultProxy(azurite.host, azurite.blob_port) as p:
        yield p


# --- basic semantics ---------------------------------------------------------------------------


@azurite_test
async def test_stat_list_read(
    blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    put(blob_container, "a.txt", data)
    put(blob_container, "dir/b.bin", b"bee")
    put(blob_container, "dir/sub/c", b"")
    props = blob_container.get_blob_client("a.txt").get_blob_properties()
    backend = make_backend(blob_container.container_name)

    assert await backend.stat("") == Entry("", True)
    a = await backend.stat("a.txt")
    assert (a.name, a.is_dir, a.size) == ("a.txt", False, len(data))
    assert a.etag == props.etag.strip('"') and '"' not in a.etag
    assert a.mtime_ns == int(props.last_modified.timestamp()) * 1_000_000_000
    assert await backend.stat("dir") == Entry("dir", True)
    assert await backend.stat("dir/sub") == Entry("sub", True)
    assert (await backend.stat("/dir/sub/c/")).size == 0

    root = await collect(backend, "")
    assert {n: e.is_dir for n, e in root.items()} == {"a.txt": False, "dir": True}
    assert root["a.txt"] == a  # listing and stat agree on every field
    listed = await collect(backend, "dir")
    assert {n: (e.is_dir, e.size) for n, e in listed.items()} == {
        "b.bin": (False, 3),
        "sub": (True, 0),
    }

    assert await backend.read("a.txt", 0, len(data)) == data
    assert await backend.read("a.txt", 100, 1000) == data[100:1100]
    assert await backend.read("a.txt", len(data) - 10, 4096) == data[-10:]  # tail past EOF
    assert await backend.read("a.txt", len(data), 10) == b""  # offset at EOF
    assert await backend.read("a.txt", len(data) + 5000, 10) == b""
    assert await backend.read("a.txt", 5, 0) == b""
    assert await backend.read("dir/sub/c", 0, 10) == b""  # empty blob


@azurite_test
async def test_read_is_one_ranged_get_and_is_counted(
    blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    data = uuid.uuid4().bytes * (3 * 1024 * 1024 // 16)  # 3 MiB
    put(blob_container, "big", data)
    backend = make_backend(blob_container.container_name)
    before = backend.stats.requests
    got = await backend.read("big", 12345, 2 * 1024 * 1024)
    assert got == data[12345 : 12345 + 2 * 1024 * 1024]
    assert backend.stats.requests - before == 1
    assert backend.stats.bytes_fetched == len(got)
    assert backend.stats.retries == 0 and backend.stats.errors == 0


@azurite_test
async def test_concurrent_reads(
    blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    put(blob_container, "f", data)
    backend = make_backend(blob_container.container_name, max_connections=8)
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        results[i] = await backend.read("f", i * 4096, 4096)

    async with trio.open_nursery() as nursery:
        for i in range(256):
            nursery.start_soon(one, i)
    assert b"".join(results[i] for i in range(256)) == data


@azurite_test
async def test_stored_bytes_are_returned_even_for_gzip_encoded_blobs(
    blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    packed = gzip.compress(b"hello " * 1000)
    put(
        blob_container,
        "page.html",
        packed,
        content_settings=ContentSettings(content_encoding="gzip"),
    )
    backend = make_backend(blob_container.container_name)
    assert (await backend.stat("page.html")).size == len(packed)
    assert await backend.read("page.html", 0, 1 << 20) == packed
    assert await backend.read("page.html", 3, 10) == packed[3:13]


@azurite_test
async def test_names_needing_url_escaping(
    blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    names = ["sp ace/h#sh?q%20+ü", "plus+and&amp=;", "日本語/ファイル.txt", "tilde~/a b"]
    for i, name in enumerate(names):
        put(blob_container, name, f"data{i}".encode())
    backend = make_backend(blob_container.container_name)
    for i, name in enumerate(names):
        entry = await backend.stat(name)
        assert entry.name == name.rsplit("/", 1)[-1]
        assert await backend.read(name, 0, 100) == f"data{i}".encode()
    assert set(await collect(backend, "sp ace")) == {"h#sh?q%20+ü"}
    assert set(await collect(backend, "")) == {"sp ace", "plus+and&amp=;", "日本語", "tilde~"}


@azurite_test
async def test_prefix_is_the_datastore_root(
    blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    put(blob_container, "data/v1/train/0.jpg", b"zero")
    put(blob_container, "data/v1/README", b"readme")
    put(blob_container, "data/v2/other", b"no")
    put(blob_container, "top", b"no")
    for prefix in ("data/v1", "/data/v1/"):
        backend = make_backend(blob_container.container_name, prefix=prefix)
        assert backend.describe()["prefix"] == "data/v1"
        assert set(await collect(backend, "")) == {"train", "README"}
        assert set(await collect(backend, "train")) == {"0.jpg"}
        assert await backend.stat("") == Entry("", True)
        assert (await backend.stat("train/0.jpg")).size == 4
        assert await backend.read("README", 0, 100) == b"readme"
        for outside in ("top", "data", "v2/other", "../v2/other"):
            with pytest.raises(NotFound):
                await backend.stat(outside)


# --- listing: paging, odd names, markers, conflicts ---------------------------------------


@azurite_test
async def test_listing_streams_page_by_page(
    blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    names = [f"many/f{i:04d}" for i in range(1200)]
    put_many(blob_container, names)
    backend = make_backend(blob_container.container_name, page_size=100)
    pages: list[list[Entry]] = []
    requests_at_page: list[int] = []
    async for page in backend.list("many"):
        pages.append(page)
        requests_at_page.append(backend.stats.requests)
    seen = [e.name for page in pages for e in page]
    assert sorted(seen) == sorted(n.split("/")[1] for n in names)  # each exactly once
    assert len(set(seen)) == 1200
    assert len(pages) == 12 and all(pages)
    # Each page was handed out as soon as it had arrived, with at most the next one requested
    # ahead: the listing streams.
    assert all(n <= page + 1 for page, n in enumerate(requests_at_page, 1)), requests_at_page
    assert backend.stats.requests == 12

    # A listing left after one page cancels the page it requested ahead.
    async def pending() -> int:
        return backend.rest.prefetched_count()  # loop-thread state: read it on the loop

    async with contextlib.aclosing(backend.list("many")) as listing:
        async for page in listing:
            assert len(page) >= 99
            assert await backend.bridge.run(pending) == 1
            break
    assert await backend.bridge.run(pending) == 0


@azurite_test
async def test_names_that_cannot_be_posix_are_skipped_and_logged_once(
    azurite: Azurite,
    blob_container: ContainerClient,
    make_backend: BackendFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    put(blob_container, "ok/fine", b"1")
    put(blob_container, "ok/" + "x" * 255, b"2")  # exactly 255 bytes: allowed
    put(blob_container, "a//b", b"3")
    put(blob_container, "long/" + "x" * 256, b"4")
    put(blob_container, "long/" + "é" * 128, b"5")  # 128 characters, 256 bytes
    put(blob_container, "long/short", b"6")
    for name in ("dots/./x", "dots/../y", "dots/.", "dots/ok"):
        put_raw(azurite, blob_container, name)
    backend = make_backend(blob_container.container_name)

    with caplog.at_level(logging.WARNING, logger="dsmount.storage.azure.blob"):
        for _ in range(2):  # the second listing logs nothing new
            assert set(await collect(backend, "ok")) == {"fine", "x" * 255}
            assert await collect(backend, "a") == {}  # exists (holds a//b) but shows nothing
            assert set(await collect(backend, "long")) == {"short"}
            assert set(await collect(backend, "dots")) == {"ok"}
    skipped = [r.getMessage() for r in caplog.records if "skipping blob" in r.getMessage()]
    # a//, long/x*256, long/é*128, dots/./, dots/../, dots/.
    assert len(skipped) == 6, skipped
    assert len(set(skipped)) == len(skipped)
    assert any("empty path segment" in m for m in skipped)
    assert any("255 bytes" in m for m in skipped)
    assert any("'..'" in m for m in skipped)
    # Paths a listing never shows name nothing (and never reach the server).
    requests = backend.stats.requests
    for path in ("a//b", "dots/../y", "dots/./x", "long/" + "x" * 256):
        with pytest.raises(NotFound):
            await backend.read(path, 0, 10)
        with pytest.raises(NotFound):
            await backend.stat(path)
    assert backend.stats.requests == requests


@azurite_test
async def test_blob_and_prefix_of_the_same_name_show_one_directory(
    blob_container: ContainerClient, make_backend: BackendFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # "x" sorts before "x-1" and "x.txt", which sort before "x/": with two results per page
    # the blob and its prefix arrive on different pages.
    for name in ("x", "x-1", "x.txt", "x/y", "z"):
        put(blob_container, name, b"data")
    backend = make_backend(blob_container.container_name, page_size=2)
    with caplog.at_level(logging.WARNING, logger="dsmount.storage.azure.blob"):
        for _ in range(2):
            root = await collect(backend, "")
            assert {n: e.is_dir for n, e in root.items()} == {
                "x": True,
                "x-1": False,
                "x.txt": False,
                "z": False,
            }
    conflicts = [r for r in caplog.records if "both a blob and a directory" in r.getMessage()]
    assert len(conflicts) == 1
    assert set(await collect(backend, "x")) == {"y"}


@azurite_test
async def test_directory_markers(
    blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    folder = {"hdi_isfolder": "true"}
    put(blob_container, "empty", b"", metadata=folder)  # an empty directory
    put(blob_container, "full", b"", metadata=folder)  # marker and real children
    put(blob_container, "full/child", b"c")
    put(blob_container, "notdir", b"", metadata={"hdi_isfolder": "false"})
    put(blob_container, "slash/", b"")  # the "dir/" placeholder convention
    put(blob_container, "file", b"f")
    backend = make_backend(blob_container.container_name)

    root = await collect(backend, "")
    assert {n: e.is_dir for n, e in root.items()} == {
        "empty": True,
        "full": True,
        "notdir": False,
        "slash": True,
        "file": False,
    }
    assert root["empty"].mtime_ns > 0  # a marker carries its own mtime
    assert (await backend.stat("empty")).is_dir
    assert (await backend.stat("full")).is_dir
    assert not (await backend.stat("notdir")).is_dir
    assert (await backend.stat("slash")).is_dir
    assert await collect(backend, "empty") == {}
    assert await collect(backend, "slash") == {}
    assert set(await collect(backend, "full")) == {"child"}
    for not_a_dir in ("file", "notdir", "missing", "full/child"):
        with pytest.raises(NotFound):
            await collect(backend, not_a_dir)


# --- conditional reads and error mapping -------------------------------------------------------


@azurite_test
async def test_read_pinned_to_an_etag_fails_with_changed_after_overwrite(
    blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    put(blob_container, "f", b"version one")
    backend = make_backend(blob_container.container_name)
    old = (await backend.stat("f")).etag
    assert old is not None
    assert await backend.read("f", 0, 7, etag=old) == b"version"
    assert await backend.read("f", 0, 7, etag=f'"{old}"') == b"version"  # quoted is the same
    put(blob_container, "f", b"version two")
    with pytest.raises(Changed):
        await backend.read("f", 0, 7, etag=old)
    assert backend.stats.retries == 0  # Changed is permanent: not retried
    new = (await backend.stat("f")).etag
    assert new != old
    assert await backend.read("f", 8, 3, etag=new) == b"two"
    assert await backend.read("f", 8, 3) == b"two"


@azurite_test
async def test_not_found(blob_container: ContainerClient, make_backend: BackendFactory) -> None:
    backend = make_backend(blob_container.container_name)
    with pytest.raises(NotFound):
        await backend.stat("missing")
    with pytest.raises(NotFound):
        await backend.read("missing", 0, 10)
    with pytest.raises(NotFound):
        await collect(backend, "missing")
    gone = make_backend(f"no-such-{uuid.uuid4().hex[:8]}")
    for call in (gone.check(), gone.stat(""), collect(gone, ""), gone.read("x", 0, 1)):
        with pytest.raises(NotFound):
            await call
    assert backend.stats.retries == 0 and gone.stats.retries == 0


# --- authentication ------------------------------------------------------------------------------


@azurite_test
async def test_account_key_auth(
    azurite: Azurite, blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    put(blob_container, "k", b"key auth")
    backend = make_backend(
        blob_container.container_name,
        credential=Credential("account_key", Secret(Azurite.KEY)),
        account=Azurite.ACCOUNT,
        endpoint=azurite.blob_endpoint,
    )
    await backend.check()
    assert await backend.read("k", 0, 100) == b"key auth"
    # The account name can also come from a path-style (emulator) endpoint.
    derived = make_backend(
        blob_container.container_name,
        credential=Credential("account_key", Secret(Azurite.KEY)),
        endpoint=azurite.blob_endpoint + "/",
    )
    assert derived.describe()["account"] == Azurite.ACCOUNT
    assert set(await collect(derived, "")) == {"k"}


@azurite_test
async def test_sas_token_auth(
    azurite: Azurite, blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    put(blob_container, "dir/s", b"sas auth")
    sas = container_sas(blob_container, read=True, list=True)
    backend = make_backend(
        blob_container.container_name,
        credential=Credential("sas_token", Secret(sas)),
        endpoint=azurite.blob_endpoint,
    )
    await backend.check()
    assert set(await collect(backend, "")) == {"dir"}
    assert (await backend.stat("dir/s")).size == 8
    assert await backend.read("dir/s", 4, 4) == b"auth"
    assert backend.describe()["account"] == Azurite.ACCOUNT


@azurite_test
async def test_connection_string_with_sas(
    azurite: Azurite, blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    put(blob_container, "dir/s", b"sas in a connection string")
    sas = container_sas(blob_container, read=True, list=True)
    cs = f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}"
    backend = make_backend(
        blob_container.container_name, credential=Credential("connection_string", Secret(cs))
    )
    await backend.check()
    assert (await backend.stat("dir/s")).size == 26
    assert await backend.read("dir/s", 0, 3) == b"sas"
    assert set(await collect(backend, "dir")) == {"s"}


@azurite_test
async def test_permission_and_key_failures_are_auth_failed_and_not_retried(
    azurite: Azurite, blob_container: ContainerClient, make_backend: BackendFactory
) -> None:
    put(blob_container, "f", b"x")
    wrong_key = make_backend(
        blob_container.container_name,
        credential=Credential("account_key", Secret("d3Jvbmcga2V5IGZvciB0ZXN0aW5nIG9ubHk=")),
        endpoint=azurite.blob_endpoint,
    )
    read_only = make_backend(  # may read, may not list
        blob_container.container_name,
        credential=Credential("sas_token", Secret(container_sas(blob_container, read=True))),
        endpoint=azurite.blob_endpoint,
    )
    for call in (wrong_key.check(), wrong_key.stat("f"), wrong_key.read("f", 0, 1)):
        with pytest.raises(AuthFailed):
            await call
    with pytest.raises(AuthFailed):
        await read_only.check()
    assert await read_only.read("f", 0, 1) == b"x"
    assert wrong_key.stats.retries == 0 and read_only.stats.retries == 0
    assert wrong_key.stats.errors == 3 and "AuthFailed" in (wrong_key.stats.last_error or "")


def _secret_forms(value: str) -> list[str]:
    return [value, quote(value, safe=""), quote(value)]


@azurite_test
async def test_no_secret_in_any_error(
    azurite: Azurite,
    blob_container: ContainerClient,
    make_backend: BackendFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    put(blob_container, "f", b"x")
    sas = container_sas(blob_container, read=True, list=True)
    sig = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    bad_sas = sas.replace(sig, quote("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk+/w==", safe=""))
    bad_sig = dict(p.split("=", 1) for p in bad_sas.split("&"))["sig"]
    wrong_key = "c2VjcmV0LWJ1dC13cm9uZy1rZXktZm9yLXRlc3RpbmctMTIzNDU2Nzg5MA=="
    dead = f"http://127.0.0.1:{closed_port()}/{Azurite.ACCOUNT}"
    quick = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01, deadline=10)
    cases = [
        (Credential("account_key", Secret(wrong_key)), azurite.blob_endpoint),
        (Credential("sas_token", Secret(bad_sas)), azurite.blob_endpoint),
        (Credential("sas_token", Secret(sas)), dead),
        (Credential("account_key", Secret(Azurite.KEY)), dead),
        (
            Credential(
                "connection_string", Secret(f"BlobEndpoint={dead};SharedAccessSignature={sas}")
            ),
            None,
        ),
    ]
    secrets = [wrong_key, Azurite.KEY, sig, bad_sig, sas, bad_sas]
    forbidden = [form for s in secrets for form in _secret_forms(s)]
    errors: list[BaseException] = []
    sdk_http_log = "azure.core.pipeline.policies.http_logging_policy"  # quieted by default
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger=sdk_http_log):
        for credential, endpoint in cases:
            backend = make_backend(
                blob_container.container_name, credential=credential, endpoint=endpoint, retry=quick
            )
            assert not any(f in repr(backend.describe()) for f in forbidden)
            for call in (backend.check(), backend.stat("f"), backend.read("f", 0, 1)):
                with pytest.raises((AuthFailed, Transient)) as info:
                    await call
                errors.append(info.value)
            assert not any(f in (backend.stats.last_error or "") for f in forbidden)
    assert len(errors) == 15
    for exc in errors:
        rendered = "".join(traceback.format_exception(exc)) + repr(exc)
        leaked = [f for f in forbidden if f in rendered]
        assert not leaked, f"secret leaked in {type(exc).__name__}: {rendered}"
    logged = caplog.text
    assert "Request URL" in logged  # the SDK's request log was captured, and it is clean:
    assert not [f for f in forbidden if f in logged]


# --- transient failures, retries, deadlines -----------------------------------------------------


@azurite_test
async def test_connection_refused_is_transient_and_retried(make_backend: BackendFactory) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, deadline=20)
    backend = make_backend(
        "any",
        credential=Credential("account_key", Secret(Azurite.KEY)),
        endpoint=f"http://127.0.0.1:{closed_port()}/{Azurite.ACCOUNT}",
        retry=policy,
    )
    with pytest.raises(Transient):
        await backend.read("f", 0, 10)
    assert backend.stats.requests == 3
    assert backend.stats.retries == 2
    assert backend.stats.errors == 3
    assert backend.stats.degraded


@azurite_test
async def test_overall_deadline_is_honoured(make_backend: BackendFactory) -> None:
    policy = RetryPolicy(max_attempts=1000, base_delay=0.02, max_delay=0.05, deadline=0.6)
    backend = make_backend(
        "any",
        credential=Credential("anonymous"),
        endpoint=f"http://127.0.0.1:{closed_port()}/{Azurite.ACCOUNT}",
        retry=policy,
    )
    start = trio.current_time()
    with pytest.raises(TimedOut):
        await backend.stat("f")
    elapsed = trio.current_time() - start
    assert elapsed < 0.6 + 1.0
    assert backend.stats.requests > 2  # it did retry until the deadline


@azurite_test
async def test_hung_server_attempts_time_out_within_the_deadline(
    blob_container: ContainerClient,
    make_backend: BackendFactory,
    azurite: Azurite,
    proxy: FaultProxy,
) -> None:
    put(blob_container, "f", b"data")
    policy = RetryPolicy(max_attempts=10, base_delay=0.01, attempt_timeout=0.3, deadline=1.5)
    backend = make_backend(
        blob_container.container_name,
        credential=Credential(
            "connection_string", Secret(proxy.connection_string_for(azurite.connection_string))
        ),
        retry=policy,
    )
    assert await backend.read("f", 0, 4) == b"data"
    proxy.blackhole()
    start = trio.current_time()
    with pytest.raises(TimedOut):
        await backend.read("f", 0, 4)
    assert trio.current_time() - start < 1.5 + 1.0
    assert backend.stats.retries >= 2
    proxy.up()
    assert await backend.read("f", 0, 4) == b"data"  # and it recovers


@azurite_test
async def test_throttling_and_dropped_connections_are_retried(
    blob_container: ContainerClient,
    make_backend: BackendFactory,
    azurite: Azurite,
    proxy: FaultProxy,
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    put(blob_container, "f", data)
    put(blob_container, "d/x", b"x")
    backend = make_backend(
        blob_container.container_name,
        credential=Credential(
            "connection_string", Secret(proxy.connection_string_for(azurite.connection_string))
        ),
    )
    proxy.respond_503(2)
    assert await backend.read("f", 0, len(data)) == data
    assert backend.stats.retries == 2
    proxy.respond_503(1)
    assert set(await collect(backend, "")) == {"f", "d"}
    proxy.respond_503(1)
    assert (await backend.stat("d/x")).size == 1
    assert backend.stats.retries == 4

    # Cut the connection carrying the 1.5 millionth byte from now on: the second 1 MiB read
    # is cut mid-body; the short read must be retried, never returned.
    proxy.drop_every(1_500_000)
    assert await backend.read("f", 0, len(data)) == data
    assert backend.stats.retries == 4
    assert await backend.read("f", 0, len(data)) == data
    assert backend.stats.retries == 5
    assert proxy.stats["drops"] == 1
    assert not backend.stats.degraded  # the last attempt succeeded


class _LyingHandler(BaseHTTPRequestHandler):
    """Answers every GET with 206 and a Content-Range promising more than the body holds."""

    protocol_version = "HTTP/1.1"
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).hits += 1
        body = b"short"
        self.send_response(206)
        self.send_header("Content-Range", "bytes 0-99/1000")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"0x1"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def lying_server() -> Iterator[tuple[str, type[_LyingHandler]]]:
    handler = type("Handler", (_LyingHandler,), {"hits": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/acct", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_body_shorter_than_content_range_is_transient(
    lying_server: tuple[str, type[_LyingHandler]],
) -> None:
    endpoint, handler = lying_server
    backend = BlobBackend(
        container="c",
        credential=Credential("anonymous"),
        endpoint=endpoint,
        retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.01),
    )
    try:
        with pytest.raises(Transient, match="short body"):
            await backend.read("f", 0, 100)
        assert handler.hits == 3 and backend.stats.retries == 2
    finally:
        await backend.aclose()


def test_describe_and_config_errors() -> None:
    from dsmount.errors import ConfigError

    sas = "sv=2024-11-04&sp=rl&sig=c2VjcmV0c2lnbmF0dXJl"
    backend = BlobBackend(
        container="c",
        account="acct",
        prefix="/p/q/",
        credential=Credential("sas_token", Secret(sas)),
    )
    assert backend.describe() == {
        "kind": "blob",
        "account": "acct",
        "container": "c",
        "prefix": "p/q",
        "endpoint": "https://acct.blob.core.windows.net",
        "auth": "sas_token",
    }
    ad = BlobBackend(
        container="c",
        endpoint="https://acct.blob.core.usgovcloudapi.net",
        credential=Credential("azure_ad", client_id="abc"),
    )
    assert ad.describe()["account"] == "acct" and ad.describe()["client_id"] == "abc"
    with pytest.raises(ConfigError):
        BlobBackend(container="c", credential=Credential("anonymous"))  # no account, no endpoint
    with pytest.raises(ConfigError):
        BlobBackend(
            container="c", endpoint="http://x/acct?" + sas, credential=Credential("anonymous")
        )
    with pytest.raises(ConfigError):
        BlobBackend(
            container="c", endpoint="http://127.0.0.1:1/a", credential=Credential("azure_ad")
        )
    with pytest.raises(ConfigError):
        BlobBackend(container="c", account="a", page_size=0, credential=Credential("anonymous"))
    cs = Credential("connection_string", Secret(f"AccountName=acct;AccountKey={Azurite.KEY}"))
    from_cs = BlobBackend(container="c", credential=cs)
    assert from_cs.describe()["endpoint"] == "https://acct.blob.core.windows.net"
    assert from_cs.describe()["account"] == "acct"
    assert Azurite.KEY not in repr(from_cs.describe())
    with pytest.raises(ConfigError):  # a connection string brings its own endpoint
        BlobBackend(container="c", credential=cs, endpoint="https://other.example")


# --- the pure listing logic ---------------------------------------------------------------------

SAMPLE = b"""<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://a.blob.core.windows.net/" ContainerName="c">
  <Prefix>d/</Prefix><Delimiter>/</Delimiter>
  <Blobs>
    <Blob><Name>d/a.txt</Name><Properties>
      <Last-Modified>Sat, 21 Nov 2026 11:13:06 GMT</Last-Modified><Etag>0x8DC1</Etag>
      <Content-Length>12</Content-Length></Properties><Metadata><hdi_isfolder>true</hdi_isfolder></Metadata></Blob>
    <Blob><Name>d/m</Name><Properties><Last-Modified>Mon, 01 Jan 2024 00:00:00 GMT</Last-Modified>
      <Etag>"0x8DC2"</Etag><Content-Length>0</Content-Length></Properties>
      <Metadata><HDI_ISFOLDER>True</HDI_ISFOLDER></Metadata></Blob>
    <BlobPrefix><Name>d/sub/</Name></BlobPrefix>
    <Blob><Name Encoded="true">d/nul%00name</Name>
      <Properties><Content-Length>1</Content-Length></Properties></Blob>
    <Blob><Name>d/amp &amp; lt &lt;</Name>
      <Properties><Content-Length>3</Content-Length></Properties></Blob>
  </Blobs>
  <NextMarker>2!88!token</NextMarker>
</EnumerationResults>"""


def test_parse_list_page() -> None:
    page = parse_list_page(SAMPLE)
    assert page.next_marker == "2!88!token"
    a, m, sub, nul, amp = page.items
    # Only an empty blob can be a directory marker, whatever its metadata says.
    assert a == RawBlob(
        "d/a.txt", 12, parse_http_date("Sat, 21 Nov 2026 11:13:06 GMT"), "0x8DC1", False
    )
    assert isinstance(m, RawBlob) and m.folder_marker and m.etag == "0x8DC2"
    assert sub == "d/sub/"
    assert isinstance(nul, RawBlob) and nul.name == "d/nul\0name"
    assert isinstance(amp, RawBlob) and amp.name == "d/amp & lt <"
    empty = parse_list_page(b"<EnumerationResults><Blobs/><NextMarker/></EnumerationResults>")
    assert empty == ListPage([], None)


def test_directory_pages_from_sample() -> None:
    reports: list[tuple[str, str, str]] = []
    pages = DirectoryPages("d/", lambda *r: reports.append(r))
    entries = pages.feed(parse_list_page(SAMPLE), last=True)
    assert [(e.name, e.is_dir) for e in entries] == [
        ("a.txt", False),
        ("m", True),
        ("sub", True),
        ("amp & lt <", False),
    ]
    assert reports == [("bad_name", "d/nul\0name", "NUL character")]
    assert pages.seen_any


def _blob(name: str, size: int = 1, marker: bool = False) -> RawBlob:
    return RawBlob(name, size, 0 if not marker else 5, None, marker)


def test_conflict_across_pages_yields_the_directory_once() -> None:
    reports: list[tuple[str, str, str]] = []
    pages = DirectoryPages("", lambda *r: reports.append(r))
    out1 = pages.feed(ListPage([_blob("x"), _blob("x-1")], "m1"), last=False)
    out2 = pages.feed(ListPage([_blob("x.txt")], "m2"), last=False)
    out3 = pages.feed(ListPage(["x/", _blob("y")], None), last=True)
    names = [(e.name, e.is_dir) for e in out1 + out2 + out3]
    assert sorted(names) == [("x", True), ("x-1", False), ("x.txt", False), ("y", False)]
    assert reports == [("conflict", "x", "is both a blob and a directory")]


def test_marker_and_prefix_across_pages_are_one_directory_keeping_the_mtime() -> None:
    pages = DirectoryPages("p/", lambda *r: pytest.fail(f"unexpected report {r}"))
    out = pages.feed(ListPage([_blob("p/m", 0, marker=True)], "next"), last=False)
    out += pages.feed(ListPage([], "again"), last=False)  # an empty page in between
    out += pages.feed(ListPage(["p/m/"], None), last=True)
    assert out == [Entry("m", True, 0, 5, None)]


def test_directory_pages_skip_the_placeholder_blob_silently() -> None:
    pages = DirectoryPages("d/", lambda *r: pytest.fail(f"unexpected report {r}"))
    assert pages.feed(ListPage([_blob("d/", 0)], None), last=True) == []
    assert pages.seen_any


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("ok", None),
        (" ", None),
        ("x" * 255, None),
        ("é" * 127, None),
        ("", "empty path segment"),
        (".", "'.' path segment"),
        ("..", "'..' path segment"),
        ("a\0b", "NUL character"),
        ("a/b", "'/' in name"),
        ("x" * 256, "segment longer than 255 bytes"),
        ("é" * 128, "segment longer than 255 bytes"),
        ("\udcff", "not valid UTF-8"),
        ("\udcff" * 70, "not valid UTF-8"),
    ],
)
def test_name_problem(name: str, problem: str | None) -> None:
    assert name_problem(name) == problem


@pytest.mark.parametrize(
    "value",
    [
        "Sat, 21 Nov 2026 11:13:06 GMT",
        "Mon, 01 Jan 2024 00:00:00 GMT",
        "Thu, 29 Feb 2024 23:59:59 GMT",
    ],
)
def test_parse_http_date_matches_the_email_parser(value: str) -> None:
    expected = int(parsedate_to_datetime(value).timestamp()) * 1_000_000_000
    assert parse_http_date(value) == expected


def test_parse_http_date_odd_inputs() -> None:
    assert parse_http_date("garbage") == 0
    assert parse_http_date("21 Nov 2026 11:13:06 +0000") == parse_http_date(
        "Sat, 21 Nov 2026 11:13:06 GMT"
    )


def test_strip_etag() -> None:
    assert strip_etag('"0x8D"') == "0x8D"
    assert strip_etag("0x8D") == "0x8D"
    assert strip_etag('W/"0x8D"') == "0x8D"
    assert strip_etag(None) is None
    assert strip_etag('""') is None
