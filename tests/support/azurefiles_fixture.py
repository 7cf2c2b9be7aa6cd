"""Pytest plugin: the in-process Azure Files emulator, a fresh share per test, and ways to fill it.

Listed in tests/conftest.py `pytest_plugins`. Every emulator and share a fixture made is
stopped / deleted after the test, whatever happened.

Fixtures:
- `azurefiles`: a started emulator (plain HTTP, SharedKey and SAS) for one test.
- `file_share`: a uniquely named, empty share on `azurefiles`, as a sync `ShareClient` (with
  `allow_trailing_dot=True`, so names are stored exactly as given).
- `azurefiles_tls`: an HTTPS emulator that also accepts the bearer token `BEARER_TOKEN` (the SDK
  sends tokens over HTTPS only); its CA is `ca_cert_path`.
- `managed_identity`: a local App Service managed-identity endpoint handing out `BEARER_TOKEN`,
  announced through IDENTITY_ENDPOINT/IDENTITY_HEADER, so an unmodified `DefaultAzureCredential`
  obtains the token the TLS emulator accepts.

Helpers: `upload_tree` copies a local directory to a share through the SDK (parallel, keeping
the files' mtimes as SMB last-write times); `seed_files` writes files straight into the
emulator's in-memory store, for data sets too big to upload in a test's time (50,000 entries).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.fileshare import ContentSettings, ShareClient

from tests.support.azurefiles import AzureFilesEmulator
from tests.support.azurefiles.store import Directory, File, SmbTimes, check_item_name, fold

BEARER_TOKEN = "dsmount-test-bearer-token"


def unique_share(prefix: str = "t") -> str:
    """A valid, unique share name (3-63 lower-case letters, digits and single dashes)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def azurefiles() -> Iterator[AzureFilesEmulator]:
    """A started emulator on 127.0.0.1 (HTTP), stopped after the test."""
    with AzureFilesEmulator() as emu:
        yield emu


@pytest.fixture
def file_share(azurefiles: AzureFilesEmulator) -> Iterator[ShareClient]:
    """A new, uniquely named, empty share; deleted after the test (if the test did not)."""
    client = ShareClient.from_connection_string(
        azurefiles.connection_string, unique_share(), allow_trailing_dot=True
    )
    client.create_share()
    try:
        yield client
    finally:
        with contextlib.suppress(ResourceNotFoundError):
            client.delete_share()
        client.close()


@pytest.fixture
def azurefiles_tls() -> Iterator[AzureFilesEmulator]:
    """A started HTTPS emulator that accepts `BEARER_TOKEN` (with the backup intent)."""
    with AzureFilesEmulator(tls=True, bearer_token=BEARER_TOKEN) as emu:
        yield emu


class _TokenHandler(BaseHTTPRequestHandler):
    server: TokenServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if self.headers.get("X-IDENTITY-HEADER") != self.server.secret:
            self._reply(401, {"error": "bad identity header"})
            return
        resource = (query.get("resource") or [""])[0]
        self.server.requests.append(resource)
        expires = int(time.time()) + 3600
        self._reply(
            200,
            {
                "access_token": self.server.token,
                "expires_on": str(expires),
                "resource": resource,
                "token_type": "Bearer",
            },
        )

    def _reply(self, status: int, payload: dict[str, str]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TokenServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, token: str) -> None:
        super().__init__(("127.0.0.1", 0), _TokenHandler)
        self.token = token
        self.secret = uuid.uuid4().hex
        self.requests: list[str] = []  # the resource (scope) of every token request

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/msi/token"


@pytest.fixture
def managed_identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenServer]:
    """A local App Service managed-identity endpoint issuing `BEARER_TOKEN` (see module doc).

    Other Azure credential variables are removed, so DefaultAzureCredential takes this one.
    """
    for name in list(os.environ):
        if name.startswith(("AZURE_", "MSI_", "IDENTITY_")):
            monkeypatch.delenv(name)
    server = TokenServer(BEARER_TOKEN)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        monkeypatch.setenv("IDENTITY_ENDPOINT", server.url)
        monkeypatch.setenv("IDENTITY_HEADER", server.secret)
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def smb_time(ns: int) -> str:
    """An SMB timestamp string (100 ns precision) for nanoseconds since the epoch."""
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // 100:07d}Z"


def upload_tree(share: ShareClient, root: Path, *, workers: int = 16) -> None:
    """Copy the local tree `root` into `share` through the SDK: directories first, then files
    in parallel, each file's mtime kept as its SMB last-write time."""
    directories = sorted(
        (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()),
        key=lambda rel: rel.count("/"),
    )
    for rel in directories:
        share.get_directory_client(rel).create_directory()
    files = [p for p in root.rglob("*") if p.is_file()]

    def upload(path: Path) -> None:
        client = share.get_file_client(path.relative_to(root).as_posix())
        client.upload_file(path.read_bytes(), max_concurrency=4)
        # Put Range moves the last-write time to "now"; set the source's afterwards.
        client.set_http_headers(
            ContentSettings(), file_last_write_time=smb_time(path.stat().st_mtime_ns)
        )

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(upload, files))


def seed_files(emu: AzureFilesEmulator, share: str, files: Mapping[str, bytes]) -> None:
    """Write `files` ({path: content}) into an existing share of `emu` directly in its store,
    creating parent directories: what Create Directory / Create File / Put Range would leave,
    without 50,000 HTTP round trips. Test data setup only; reads still go through HTTP."""
    store = emu.store
    with store.lock:
        root = store.get_share(share).root
        for path, content in files.items():
            parts = path.strip("/").split("/")
            parent = root
            for name in parts[:-1]:
                node = parent.children.get(fold(name))
                if node is None:
                    node = _new_node(emu, Directory, name, parent)
                if not isinstance(node, Directory):
                    raise ValueError(f"{path}: {name} is a file")
                parent = node
            node = _new_node(emu, File, parts[-1], parent)
            assert isinstance(node, File)
            node.data = bytearray(content)


def _new_node(
    emu: AzureFilesEmulator, kind: type[Directory] | type[File], name: str, parent: Directory
) -> Directory | File:
    check_item_name(name)
    store = emu.store
    etag, ticks = store.new_version()
    node = kind(
        name=name,
        file_id=store.new_file_id(),
        parent_id=parent.file_id,
        etag=etag,
        last_modified=ticks,
        times=SmbTimes(ticks, ticks, ticks, ticks),
        attributes="Directory" if kind is Directory else "Archive",
        permission_key=parent.permission_key,  # "inherit", as Create File defaults to
    )
    parent.children[fold(name)] = node
    return node
