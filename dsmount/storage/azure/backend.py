"""What the Azure blob and file share backends share: the asyncio bridge, the one retried
network call, closing the SDK client, and the redacted description.

Subclasses set `location_field` ("container" or "share"), create `_client` and
`_token_credential` lazily on the asyncio loop, and hold `credential`, `retry`, `account`,
`endpoint` and `prefix`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from dsmount.errors import BackendError, DsmountError
from dsmount.shared.credentials import Credential, redact
from dsmount.storage.azure.bridge import AsyncioThread, shared_loop
from dsmount.storage.azure.common import map_error
from dsmount.storage.base import Backend
from dsmount.storage.retry import RetryPolicy, with_retry

log = logging.getLogger(__name__)

T = TypeVar("T")


class AzureBackend(Backend):
    location_field = "container"
    # Count one request per attempt in `_call` (a backend whose sender counts sets False).
    count_calls = True

    credential: Credential
    retry: RetryPolicy
    account: str | None
    endpoint: str | None
    prefix: str

    def _init_azure(self, credential: Credential, bridge: AsyncioThread | None) -> None:
        self.credential = credential
        self._bridge = bridge
        self._secrets = credential.secret_strings()
        self._client: Any = None  # the SDK client, made on the asyncio loop
        self._lean: Any = None  # its lean pipeline for our raw requests (common.lean_pipeline)
        self._token_credential: Any = None
        self._closed = False

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

    def _before_close(self) -> None:
        """Runs on the asyncio loop just before the client is closed."""

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._client is None and self._token_credential is None:
            return

        async def close() -> None:
            self._before_close()
            if self._client is not None:
                await self._client.close()
            if self._token_credential is not None:
                await self._token_credential.close()

        try:
            await self.bridge.run(close)
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
