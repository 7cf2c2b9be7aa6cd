"""What the Azure stores (the blocking faces, for transfers) share: THE retry policy applied to
every SDK call, progress reporting, and - from `dsmount.storage.azure.common`, shared with the
async backends - the error mapping and the resolution of account, endpoint and credential.

Why the sync SDK clients driven from threads (dsmount.workspace.transfer) rather than the
asyncio ones: measured on Azurite (2 cores) with 500 small files and one 256 MiB file, threads
moved data as fast or faster (Azurite is the bottleneck either way; big downloads were faster
with threads), and plain threads work unchanged inside a notebook, whose running asyncio loop
forbids `asyncio.run`.

Invariants: the SDK never retries (`retry_total=0`); every call runs through `_call`, i.e.
under `retry_blocking` with the datastore's `RetryPolicy`, the same policy object and the same
notion of "transient" (`map_error`) as the mount's backends.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from dsmount.errors import DsmountError
from dsmount.shared.credentials import Credential
from dsmount.storage.azure.common import Service, map_error, resolve_target, sdk_credential
from dsmount.storage.names import clean_path, join
from dsmount.storage.retry import RetryPolicy, retry_blocking
from dsmount.storage.store import BIG_FILE, CHUNK_CONCURRENCY, Progress, RemoteFile, Store

T = TypeVar("T")

# Transfers move whole files: an attempt may take minutes, so the per-attempt bound is a socket
# read timeout (no bytes for this long), and the overall deadline is generous.
TRANSFER_RETRY = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=8.0, attempt_timeout=120.0,
                             deadline=600.0)


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


def client_options(retry: RetryPolicy) -> dict[str, Any]:
    """Options for a sync SDK client: no SDK retries (ours run in `_call`), socket timeouts
    from the policy so a stalled attempt ends and is retried."""
    return {
        "retry_total": 0,
        "connection_timeout": min(10.0, retry.attempt_timeout),
        "read_timeout": retry.attempt_timeout,
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
        retry: RetryPolicy | None,
    ) -> None:
        self.credential = credential
        self.retry = retry or TRANSFER_RETRY
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

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """One SDK call, its failures mapped, retried under THE policy when transient."""

        def attempt() -> T:
            with self._mapped(what):
                return fn()

        return retry_blocking(self.retry, attempt, what=what)

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
        hook = ProgressHook(progress)  # one across attempts: a retry re-counts nothing

        def attempt() -> None:
            out.seek(0)
            out.truncate()
            stream = self._download(
                self._name(f.path),
                max_concurrency=CHUNK_CONCURRENCY if f.size >= BIG_FILE else 1,
                progress_hook=hook,
                **self._pin(f),
            )
            stream.readinto(out)

        self._call(f"download {f.path}", attempt)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        from azure.core.exceptions import HttpResponseError

        if length <= 0:
            return b""

        def attempt() -> bytes:
            try:
                stream = self._download(self._name(path), offset=offset, length=length)
                data: bytes = stream.readall()
                return data
            except HttpResponseError as e:
                if e.status_code == 416:  # at or past the end
                    return b""
                raise

        return self._call(f"read {path}", attempt)

    def close(self) -> None:
        self.client.close()
        if self._token_credential is not None:
            self._token_credential.close()
