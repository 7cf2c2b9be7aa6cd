"""What the Azure stores share: SDK error mapping, credentials, endpoints, retry options.

Why the sync SDK clients driven from threads (dsmount.transfer) rather than the asyncio ones:
measured on Azurite (2 cores) with 500 small files and one 256 MiB file, threads moved data
as fast or faster (Azurite is the bottleneck either way; big downloads were faster with
threads), and plain threads work unchanged inside a notebook, whose running asyncio loop
forbids `asyncio.run`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from dsmount.credentials import Credential, parse_connection_string
from dsmount.errors import ConfigError, DsmountError
from dsmount.stores.base import Progress, Store


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
    def __init__(self, credential: Credential) -> None:
        self.credential = credential
        self._secrets = credential.secret_strings()

    @contextlib.contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Every SDK failure as a dsmount error whose message holds no secret."""
        try:
            yield
        except DsmountError:
            raise
        except Exception as exc:
            from dsmount.backends.blob import map_error

            # `from None`: the SDK's message and chain may hold a signed URL.
            raise map_error(exc, what=what, secrets=self._secrets) from None

    def _sdk_credential(self, account: str | None) -> Any:
        cred = self.credential
        secret = cred.secret.reveal() if cred.secret is not None else ""
        if cred.kind == "account_key":
            from azure.core.credentials import AzureNamedKeyCredential

            return AzureNamedKeyCredential(account or "", secret)
        if cred.kind == "sas_token":
            from azure.core.credentials import AzureSasCredential

            return AzureSasCredential(secret)
        if cred.kind == "azure_ad":
            from azure.identity import DefaultAzureCredential

            if cred.client_id:
                return DefaultAzureCredential(managed_identity_client_id=cred.client_id)
            return DefaultAzureCredential()
        return None


def endpoint_for(
    service: str, credential: Credential, account: str | None, endpoint: str | None
) -> tuple[str, str | None]:
    """(account URL, account name) for `service` ("blob" or "file")."""
    if endpoint is not None:
        if urlsplit(endpoint).query:
            raise ConfigError("the endpoint URL must not carry a query; pass a SAS token instead")
        endpoint = endpoint.rstrip("/")
    if credential.kind == "connection_string" and credential.secret is not None:
        parts = parse_connection_string(credential.secret.reveal())
        account = account or parts.get("accountname")
        endpoint = endpoint or (parts.get(f"{service}endpoint", "").rstrip("/") or None)
        if endpoint is None and account:
            scheme = parts.get("defaultendpointsprotocol", "https")
            suffix = parts.get("endpointsuffix", "core.windows.net")
            endpoint = f"{scheme}://{account}.{service}.{suffix}"
    if endpoint is None:
        if not account:
            raise ConfigError(f"a {service} datastore needs an account name or an endpoint URL")
        endpoint = f"https://{account}.{service}.core.windows.net"
    if not account:
        parts_ = urlsplit(endpoint)
        host = parts_.hostname or ""
        if host in ("localhost", "127.0.0.1", "::1") or host.replace(".", "").isdigit():
            account = parts_.path.strip("/").split("/")[0] or None  # path-style (emulators)
        else:
            account = host.split(".")[0] or None
    if credential.kind == "account_key" and not account:
        raise ConfigError("account key authentication needs the account name")
    return endpoint, account


# -- blob -------------------------------------------------------------------------------------
