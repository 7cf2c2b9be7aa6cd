"""What the Azure blob and file share backends share: the asyncio bridge, the one retried
network call, closing the REST client, and the redacted description.

Layers: a backend (`blob.BlobBackend`, `fileshare.FileShareBackend`) turns the storage verbs
into calls of its REST client (`blob_client.BlobRest`, `fileshare_client.ShareRest`), each one
run on the asyncio loop by `_call` under the retry policy, its failures mapped by `map_error`.

Subclasses set `location_field` ("container" or "share") and `rest` (anything with an async
`close()` and an `opened` flag), and hold `credential`, `retry`, `account`, `endpoint` and
`prefix`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from dsmount.errors import BackendError, ConfigError, DsmountError
from dsmount.shared.credentials import Credential, redact
from dsmount.storage.azure.bridge import AsyncioThread, shared_loop
from dsmount.storage.azure.common import Service, map_error, resolve_target
from dsmount.storage.base import Backend
from dsmount.storage.retry import RetryPolicy, with_retry

log = logging.getLogger(__name__)

T = TypeVar("T")


class AzureBackend(Backend):
    location_field = "container"
    rest: Any  # the REST client of the container or share (see the module docstring)
    # Count one request per attempt in `_call` (a backend whose sender counts sets False).
    count_calls = True

    credential: Credential
    retry: RetryPolicy
    account: str | None
    endpoint: str | None
    prefix: str

    def __init__(
        self,
        *,
        service: Service,
        credential: Credential,
        account: str | None,
        endpoint: str | None,
        retry: RetryPolicy | None,
        page_size: int,
        max_connections: int,
        bridge: AsyncioThread | None,
    ) -> None:
        super().__init__()
        if not 1 <= page_size <= 5000:
            raise ConfigError("page_size must be within 1..5000 (the service's maximum)")
        self.credential = credential
        self._bridge = bridge
        self._secrets = credential.secret_strings()
        self._closed = False
        self.retry = retry or RetryPolicy()
        self.page_size = page_size
        self.max_connections = max_connections
        self.target = resolve_target(credential, service=service, account=account,
                                     endpoint=endpoint)
        self.account = self.target.account
        self.endpoint = self.target.endpoint

    @property
    def bridge(self) -> AsyncioThread:
        if self._bridge is None:
            self._bridge = shared_loop()
        return self._bridge

    async def _call(self, what: str, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run one network call on the asyncio loop under the retry policy."""

        async def attempt() -> T:
            if self._closed:
                raise BackendError(f"{what}: the datastore backend is closed")
            if self.count_calls:
                self.stats.requests += 1
            try:
                return await self.bridge.run(fn)
            except DsmountError:
                raise
            except Exception as exc:
                # `from None`: the SDK exception's text and its chain may hold a signed URL.
                raise map_error(exc, what=what, secrets=self._secrets) from None

        return await with_retry(self.retry, attempt, stats=self.stats, what=what)

    async def _call_again(self, what: str, fn: Callable[[bool], Coroutine[Any, Any, T]]) -> T:
        """`_call` for a call that changes state: `fn(again)` learns whether an earlier attempt
        was sent (its answer maybe lost), so it can take "already done" for success."""
        attempts = 0

        async def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return await fn(attempts > 1)

        return await self._call(what, attempt)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.rest.opened:
            return
        try:
            await self.bridge.run(self.rest.close)
        except Exception as exc:  # closing is best effort; never fail a detach on it
            log.debug("closing %s client: %s", self.kind, redact(repr(exc), self._secrets))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "account": self.account,
            self.location_field: getattr(self, self.location_field),
            "prefix": self.prefix,
            "endpoint": self.endpoint,
            "auth": self.credential.kind,
            **({"client_id": self.credential.client_id} if self.credential.client_id else {}),
        }
