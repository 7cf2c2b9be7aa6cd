"""What the Azure stores share: retry options, progress, and - from
`dsmount.backends.azure_common`, the one place for both the stores and the backends - the SDK
error mapping and the resolution of account, endpoint and credential.

Why the sync SDK clients driven from threads (dsmount.transfer) rather than the asyncio ones:
measured on Azurite (2 cores) with 500 small files and one 256 MiB file, threads moved data
as fast or faster (Azurite is the bottleneck either way; big downloads were faster with
threads), and plain threads work unchanged inside a notebook, whose running asyncio loop
forbids `asyncio.run`.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Iterator
from typing import IO, Any

from dsmount.backends.azure_common import Service, map_error, resolve_target, sdk_credential
from dsmount.credentials import Credential
from dsmount.errors import DsmountError
from dsmount.stores.base import (
    BIG_FILE,
    CHUNK_CONCURRENCY,
    Progress,
    RemoteFile,
    Store,
    clean_path,
    join,
)


class ProgressHook:
    """Turns the SDK's cumulative `progress_hook(current, total)` into byte deltas."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seen = 0
        self.lock = threading.Lock()

    def __call__(self, current: int, total: int | None) -> None:
        with self.lock:
            delta, self.seen = current - self.seen, max(self.seen, current)
        if delta > 0:
            self.progress(delta)


def retry_options(retries: int, policy_class: Any) -> dict[str, Any]:
    """Client options; `policy_class` is the service package's own ExponentialRetry."""

    # The SDK's default backs off 15 s, 45 s, ...: far too slow to tell a user their endpoint
    # is wrong. Short, jittered backoff; transfers still ride out a dropped connection.
    return {
        "retry_policy": policy_class(
            initial_backoff=0.5, increment_base=2, retry_total=retries, random_jitter_range=1
        ),
        "connection_timeout": 10,
        "read_timeout": 120,
    }


class AzureStore(Store):
    """Where an Azure store lives (`self.target`: THE resolution of account, endpoint and
    credential, shared with the backends) and how its SDK failures are mapped."""

    client: Any  # the SDK's ContainerClient / ShareClient, made by the subclass

    def __init__(
        self,
        credential: Credential,
        *,
        service: Service,
        account: str | None,
        endpoint: str | None,
        prefix: str,
    ) -> None:
        self.credential = credential
        self._secrets = credential.secret_strings()
        self.target = resolve_target(
            credential, service=service, account=account, endpoint=endpoint
        )
        self.endpoint = self.target.endpoint
        self.account = self.target.account
        self.prefix = clean_path(prefix, what="prefix")
        self._token_credential: Any = None

    @contextlib.contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Every SDK failure as a dsmount error whose message holds no secret."""
        try:
            yield
        except DsmountError:
            raise
        except Exception as exc:
            # `from None`: the SDK's message and chain may hold a signed URL.
            raise map_error(exc, what=what, secrets=self._secrets) from None

    def _sdk_credential(self) -> Any:
        """The credential for a sync SDK client (an Azure AD one is closed by `close`)."""
        credential, self._token_credential = sdk_credential(self.target, aio=False)
        return credential

    def _name(self, path: str) -> str:
        return join(self.prefix, clean_path(path))

    def _rel(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    @abc.abstractmethod
    def _download(self, name: str, **options: Any) -> Any:
        """The SDK's download stream of the object `name` (full name, prefix included)."""

    def _pin(self, f: RemoteFile) -> dict[str, Any]:
        """Download options pinning `f`'s version, where the service can (blob: its ETag)."""
        return {}

    def download(self, f: RemoteFile, out: IO[bytes], *, progress: Progress) -> None:
        with self._mapped(f"download {f.path}"):
            stream = self._download(
                self._name(f.path),
                max_concurrency=CHUNK_CONCURRENCY if f.size >= BIG_FILE else 1,
                progress_hook=ProgressHook(progress),
                **self._pin(f),
            )
            stream.readinto(out)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        from azure.core.exceptions import HttpResponseError

        if length <= 0:
            return b""
        with self._mapped(f"read {path}"):
            try:
                stream = self._download(self._name(path), offset=offset, length=length)
                data: bytes = stream.readall()
                return data
            except HttpResponseError as e:
                if e.status_code == 416:  # at or past the end
                    return b""
                raise

    def close(self) -> None:
        self.client.close()
        if self._token_credential is not None:
            self._token_credential.close()
