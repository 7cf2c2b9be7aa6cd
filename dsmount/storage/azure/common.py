"""What the Azure backends (blob, file share) share: THE error mapping, HTTP helpers, where a
datastore lives (account, endpoint, effective credential) and how the asyncio SDK clients are
built (transport, SDK credential).

Invariants:
- `map_error` is the one mapping of SDK, transport and HTTP failures to `dsmount.errors`. Its
  messages are made of our own words, the HTTP status and the Azure error code; text quoted
  from an exception goes through `redact` first (SDK messages carry request URLs, which can
  carry a SAS signature).
- `resolve_target` turns every way to authenticate (including a connection string) into one
  shape, `AzureTarget`, without revealing a secret in any error it raises; `sdk_credential`
  and `pipeline_options` build asyncio objects and must run on the asyncio loop thread
  (`dsmount.storage.azure.bridge`).
- The SDK never retries (`retry_total=0`): callers wrap each request in `with_retry`.
"""

from __future__ import annotations

import asyncio
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from dsmount.errors import (
    AuthFailed,
    BackendError,
    Changed,
    ConfigError,
    DsmountError,
    NotFound,
    Transient,
)
from dsmount.shared.credentials import (
    Credential,
    Secret,
    azure_ad_credential,
    parse_connection_string,
    redact,
)
from dsmount.storage.azure.bridge import BridgeClosed

Service = Literal["blob", "file"]


class HttpStatus(Exception):
    """An unexpected HTTP status from one of our raw requests; `map_error` types it."""

    def __init__(self, status: int, code: str | None, retry_after: float | None) -> None:
        super().__init__(status, code)
        self.status = status
        self.code = code
        self.retry_after = retry_after


def status_error(response: Any, body: bytes) -> HttpStatus:
    """The HttpStatus of an azure-core response: the code from `x-ms-error-code`, else from the
    XML error body (HEAD responses have none)."""
    code = response.headers.get("x-ms-error-code")
    if not code and body:
        try:
            code = ET.fromstring(body).findtext("Code")
        except ET.ParseError:
            code = None
    return HttpStatus(response.status_code, code, retry_after(response.headers))


def map_error(exc: BaseException, *, what: str, secrets: Iterable[str] = ()) -> DsmountError:
    """THE mapping of SDK, transport and HTTP failures to dsmount errors (see module doc)."""
    from azure.core import exceptions as az

    if isinstance(exc, DsmountError):
        return exc
    status: int | None = None
    code: str | None = None
    retry: float | None = None
    if _certificate_problem(exc):
        # Permanent: retrying cannot make a certificate trusted.
        return BackendError(f"{what}: TLS certificate verification failed")
    if isinstance(exc, HttpStatus):
        status, code, retry = exc.status, exc.code, exc.retry_after
    elif isinstance(exc, az.IncompleteReadError):  # before HttpResponseError: a subclass
        return Transient(f"{what}: connection closed before the whole body arrived")
    elif isinstance(exc, az.ResourceModifiedError):
        return Changed(f"{what}: the object changed (ETag no longer matches)")
    elif isinstance(exc, az.HttpResponseError) and getattr(exc, "status_code", None):
        status = exc.status_code
        code = getattr(exc, "error_code", None)
        response = getattr(exc, "response", None)
        if response is not None:
            code = code or response.headers.get("x-ms-error-code")
            retry = retry_after(response.headers)
    elif isinstance(exc, az.ClientAuthenticationError):
        # From an Azure AD token credential, before any request was sent.
        return AuthFailed(f"{what}: Azure AD authentication failed ({brief(exc, secrets)})")
    elif isinstance(exc, az.ResourceNotFoundError):
        return NotFound(f"{what}: not found")
    elif isinstance(exc, (az.ServiceRequestError, az.ServiceResponseError)):
        return Transient(f"{what}: connection failed ({brief(exc, secrets)})")
    elif isinstance(exc, (OSError, asyncio.TimeoutError, ET.ParseError)) or _is_aiohttp(exc):
        return Transient(f"{what}: {brief(exc, secrets)}")
    elif isinstance(exc, BridgeClosed):
        return BackendError(f"{what}: the backend is shutting down")
    if status is None:
        return BackendError(f"{what}: unexpected {brief(exc, secrets)}")

    detail = f"{what}: HTTP {status}" + (f" {code}" if code else "")
    if status == 404:
        return NotFound(detail)
    if status in (401, 403):
        return AuthFailed(detail)
    if status == 412:
        return Changed(detail + " (the object changed: ETag no longer matches)")
    if status in (408, 429) or status >= 500:
        error = Transient(detail)
        error.retry_after = retry  # type: ignore[attr-defined] - read by with_retry
        return error
    return BackendError(detail)


def brief(exc: BaseException, secrets: Iterable[str]) -> str:
    """`Type: first line of the message` (200 chars at most), secrets scrubbed."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return redact(f"{type(exc).__name__}: {text[:200]}", secrets)


def _is_aiohttp(exc: BaseException) -> bool:
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp comes with the [aio] extras
        return False
    return isinstance(exc, aiohttp.ClientError)


def _certificate_problem(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is a failed TLS certificate verification."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        if type(current).__name__ == "ClientConnectorCertificateError":  # aiohttp's wrapper
            return True
        inner = getattr(current, "inner_exception", None)  # azure-core wraps transport errors
        todo += [current.__cause__, current.__context__]
        if isinstance(inner, BaseException):
            todo.append(inner)
    return False


def retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait (`x-ms-retry-after-ms` or `Retry-After`), if any."""
    ms = headers.get("x-ms-retry-after-ms")
    value = headers.get("Retry-After")
    try:
        if ms is not None:
            return float(ms) / 1000
        if value is not None:
            return float(value)
    except ValueError:  # an HTTP-date: rare from Azure; fall back to our own backoff
        pass
    return None


def content_range(value: str | None) -> tuple[int, int, int] | None:
    """(first, last, total) of "bytes first-last/total" (total -1 for "*"); None if invalid."""
    if not value:
        return None
    try:
        unit, _, spec = value.partition(" ")
        span, _, total = spec.partition("/")
        first, _, last = span.partition("-")
        if unit != "bytes":
            return None
        return int(first), int(last), int(total) if total != "*" else -1
    except ValueError:
        return None


def account_from_url(url: str) -> str | None:
    """The account of an account URL: the first path segment of a path-style URL (emulators on
    an IP or localhost), else the first label of the host name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in ("localhost", "127.0.0.1", "::1") or host.replace(".", "").isdigit():
        segment = parts.path.strip("/").split("/")[0]
        return segment or None
    return host.split(".")[0] or None


@dataclass(frozen=True)
class AzureTarget:
    """Where a datastore lives and how to authenticate, a connection string already resolved.

    `auth` is the effective method: "account_key", "sas_token", "azure_ad" or "anonymous"
    (a connection string becomes one of the first two, or anonymous).
    """

    service: Service
    account: str | None
    endpoint: str  # account URL, no query, no trailing slash
    auth: str
    secret: Secret | None = None
    client_id: str | None = None


def resolve_target(
    credential: Credential, *, service: Service, account: str | None, endpoint: str | None
) -> AzureTarget:
    """Resolve account, endpoint and credential of a datastore (raises ConfigError)."""
    if endpoint is not None:
        if urlsplit(endpoint).query:
            raise ConfigError(
                "the endpoint URL must not carry a query; pass a SAS token as the credential"
            )
        endpoint = endpoint.rstrip("/")
    auth: str = credential.kind
    secret = credential.secret
    if credential.kind == "connection_string":
        assert secret is not None
        parts = parse_connection_string(secret.reveal())
        account = account or parts.get("accountname")
        own = parts.get(f"{service}endpoint", "").rstrip("/") or None
        if own is None and parts.get("accountname"):
            scheme = parts.get("defaultendpointsprotocol", "https")
            suffix = parts.get("endpointsuffix", "core.windows.net")
            own = f"{scheme}://{parts['accountname']}.{service}.{suffix}"
        # Two endpoints are ambiguous: which one did the user mean? Say so rather than guess.
        if endpoint is not None and own is not None and endpoint != own:
            raise ConfigError(
                "the connection string names its own endpoint; do not give another one"
            )
        endpoint = endpoint or own
        if parts.get("accountkey"):
            auth, secret = "account_key", Secret(parts["accountkey"])
        elif parts.get("sharedaccesssignature"):
            auth, secret = "sas_token", Secret(parts["sharedaccesssignature"].lstrip("?"))
        else:
            auth, secret = "anonymous", None
    if endpoint is None:
        if not account:
            raise ConfigError(f"a {service} datastore needs an account name or an endpoint URL")
        endpoint = f"https://{account}.{service}.core.windows.net"
    if urlsplit(endpoint).scheme not in ("http", "https") or not urlsplit(endpoint).hostname:
        raise ConfigError("the endpoint must be an http(s) account URL")
    account = account or account_from_url(endpoint)
    if auth == "account_key" and not account:
        raise ConfigError("account key authentication needs the account name")
    if auth == "azure_ad" and urlsplit(endpoint).scheme != "https":
        raise ConfigError("Azure AD authentication needs an https endpoint")
    return AzureTarget(service, account, endpoint, auth, secret, credential.client_id)


def sdk_credential(target: AzureTarget) -> tuple[Any, Any]:
    """(credential for an SDK client, token credential the caller must close or None).

    Call on the asyncio loop: the Azure AD credential is an asyncio object.
    """
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential

    secret = target.secret.reveal() if target.secret is not None else ""
    if target.auth == "account_key":
        return AzureNamedKeyCredential(target.account or "", secret), None
    if target.auth == "sas_token":
        return AzureSasCredential(secret.lstrip("?")), None
    if target.auth == "azure_ad":
        token = azure_ad_credential(Credential("azure_ad", client_id=target.client_id))
        return token, token
    return None, None


async def read_body(response: Any, limit: int) -> bytes | bytearray:
    """The body of an SDK (aiohttp) response, as received, at most `limit` bytes kept.

    A 2xx body of known length is copied chunk by chunk into one buffer of that length:
    aiohttp's own `read()` keeps every chunk until it joins them, so a block's bytes were in
    memory twice at the end of each GET (measured: streaming two blobs peaked 18 MiB over
    budget + 100 MiB with 16 GETs in flight). Anything else (an error's body, no length) is
    read whole, as before. A body longer than its Content-Length is an error of the transport
    (aiohttp raises it), never silently cut; one longer than `limit` is returned in full for
    the caller's length check to refuse."""
    raw = response.internal_response
    size = raw.content_length
    if size is None or not 200 <= raw.status < 300 or size > limit:
        return await raw.read()
    buf = bytearray(size)
    view = memoryview(buf)
    pos = 0
    async for chunk in raw.content.iter_any():
        end = pos + len(chunk)
        if end > size:
            raise Transient(f"response body longer than its Content-Length ({size})")
        view[pos:end] = chunk
        pos = end
    view.release()
    if pos != size:
        return bytes(buf[:pos])  # short: the caller's length check says what is missing
    return buf


class StreamedBody:
    """A request body sent in slices of `CHUNK` bytes, each awaited until the transport drained
    it: handing aiohttp 8 MiB at once makes asyncio copy what the socket did not take into its
    own buffer (Python 3.11), memory outside every budget (measured: ~250 MiB over the budget
    with 16 writers). Never copied itself: its deep copy (the SDK's pipeline copies a request
    for its history when an attempt fails) is itself, and each send iterates afresh."""

    CHUNK = 256 * 1024

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __deepcopy__(self, memo: dict[int, object]) -> StreamedBody:
        return self

    def __aiter__(self) -> Any:
        return self._chunks()

    async def _chunks(self) -> Any:
        view = memoryview(self.data)
        for start in range(0, len(view), self.CHUNK):
            yield view[start : start + self.CHUNK]


def pipeline_options(
    *,
    max_connections: int,
    attempt_timeout: float,
    endpoint: str,
    verify: bool | str = True,
    read_bufsize: int = 2**16,
) -> dict[str, Any]:
    """Keyword arguments for an asyncio SDK client of `endpoint`: our own aiohttp session, no
    SDK retries.

    `verify`: True (system CAs), False (no verification: tests only) or a CA bundle path. The
    TLS context is built once here; azure-core would build one per request from a path.
    The proxy the environment names for `endpoint` (HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as
    aiohttp's `trust_env` reads them) is looked up once here, since every request of the client
    goes to that one host: with `trust_env` aiohttp looks it up - and reads ~/.netrc - per
    request, in two executor-thread hops (measured: ~10% of the daemon's CPU warming 5,000
    small blobs). Call on the asyncio loop (aiohttp sessions belong to the loop that made them).
    """
    import aiohttp
    from aiohttp.helpers import get_env_proxy_for_url
    from azure.core.pipeline.transport import AioHttpTransport
    from yarl import URL

    try:
        proxy, proxy_auth = get_env_proxy_for_url(URL(endpoint))
    except LookupError:  # no proxy for this host
        proxy, proxy_auth = None, None

    tls: ssl.SSLContext | bool = True
    if isinstance(verify, str):
        tls = ssl.create_default_context(cafile=verify)
    elif verify is False:
        tls = False
    # auto_decompress=False and the dummy cookie jar are what the SDK's default session uses
    # (an object stored with Content-Encoding: gzip must come back as stored bytes).
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, ssl=tls),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        proxy=proxy,
        proxy_auth=proxy_auth,
        read_bufsize=read_bufsize,
    )
    return {
        "transport": AioHttpTransport(session=session, session_owner=True),
        "retry_total": 0,  # ONE retry policy: ours (with_retry)
        "connection_timeout": min(10.0, attempt_timeout),
        "read_timeout": attempt_timeout,
    }


def lean_pipeline(client: Any) -> Any:
    """A pipeline for our own raw requests through `client`: the SDK's request headers
    (x-ms-date, which shared-key signing covers), user agent, credential policy (shared key,
    SAS or Azure AD token) and its redacting HTTP log (off unless asked for), over the client's
    transport (our aiohttp session) - and none of the rest. The client's full pipeline runs
    about ten more policies per request (retries, which are ours; redirects; request and
    response hooks; content decoding and validation, which `read_body` and `integrity` do;
    tracing): measured, ~20% of the daemon's GIL time in a cold small-file epoch went to the
    pipeline. Call on the asyncio loop, once per client."""
    from azure.core.pipeline import AsyncPipeline
    from azure.core.pipeline.policies import HttpLoggingPolicy

    config = client._config
    policies = [config.headers_policy, config.user_agent_policy]
    if client._credential_policy is not None:
        policies.append(client._credential_policy)
    # The SDK's redacting request log (silent unless its logger is set to INFO or lower).
    full = [getattr(p, "_policy", p) for p in client._pipeline._impl_policies]
    policies += [p for p in full if isinstance(p, HttpLoggingPolicy)]
    return AsyncPipeline(client._pipeline._transport, policies=policies)

