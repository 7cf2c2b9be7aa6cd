"""The daemon's side of `dsmount doctor`: probe each attached (or failed) datastore.

The daemon holds the credentials, so it is the one that makes the calls; the command line only
shows the `Check`s this returns. Per datastore: one cheap call through a fresh backend built
from the saved spec with a single attempt (its latency and error, not the mount's retries), and
for Azure kinds one plain HTTP request to the account endpoint for the service's `Date` (clock
skew), the SAS token's expiry, and the route the proxy environment gives the endpoint - the
daemon's own environment, which is what its requests use.

Invariants:
- Bounded: every probe ends within `timeout` (plus closing), whatever the network does.
- Never raises for one datastore: a failure is an error `Check` in its report.
- No secret in the result: backend errors are redacted by the storage layer, and every text is
  passed through `redact` with the datastore's secrets once more.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import trio

from dsmount.errors import DsmountError
from dsmount.node.doctor import (
    Check,
    check_call,
    check_clock_skew,
    check_proxy,
    check_sas,
    sas_expiry,
)
from dsmount.shared.credentials import redact
from dsmount.storage.azure.common import resolve_target
from dsmount.storage.base import Backend
from dsmount.storage.retry import RetryPolicy
from dsmount.storage.spec import FIELDS, DatastoreSpec

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0
# Several datastores are probed at once, but not so many that a node with hundreds floods
# its network or the service.
PARALLEL = 8


def spec_of(saved: Mapping[str, Any]) -> DatastoreSpec:
    """The storage part of a saved attach request (its other fields are the mount's)."""
    return DatastoreSpec.from_dict({k: v for k, v in saved.items() if k in FIELDS})


async def _timed_check(spec: DatastoreSpec, factory: Callable[..., Backend], timeout: float
                       ) -> tuple[float | None, str | None]:
    """(seconds, error) of one `check()` through a fresh single-attempt backend."""
    one_shot = RetryPolicy(max_attempts=1, attempt_timeout=timeout, deadline=timeout)
    start = time.monotonic()
    try:
        backend = factory(spec, retry=one_shot)
    except DsmountError as e:
        return None, str(e)
    try:
        with trio.move_on_after(timeout) as scope:
            await backend.check()
        if scope.cancelled_caught:
            return time.monotonic() - start, f"no answer within {timeout:.0f} s"
        return time.monotonic() - start, None
    except DsmountError as e:
        return time.monotonic() - start, str(e)
    except Exception as e:  # a probe never fails the daemon
        return time.monotonic() - start, type(e).__name__
    finally:
        with trio.move_on_after(5):
            await backend.aclose()


def _date_of(endpoint: str, timeout: float) -> tuple[str | None, float, float, str | None]:
    """(Date header, time sent, time received, error) of one plain request to the endpoint.
    Any HTTP answer (most are 4xx without credentials) carries the service's Date."""
    sent = time.time()
    request = urllib.request.Request(endpoint + "/", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.headers.get("Date"), sent, time.time(), None
    except urllib.error.HTTPError as e:
        return e.headers.get("Date"), sent, time.time(), None
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        return None, sent, time.time(), str(getattr(reason, "strerror", None) or reason)


async def probe_datastore(key: str, saved: Mapping[str, Any], factory: Callable[..., Backend],
                          *, timeout: float = PROBE_TIMEOUT,
                          environ: Mapping[str, str] | None = None) -> list[Check]:
    """The checks of one datastore (see the module docstring)."""
    try:
        spec = spec_of(saved)
    except DsmountError as e:
        return [Check("reachable", key, "error", f"its saved description is unusable: {e}",
                      "detach it and attach it again")]
    secrets = spec.credential.secret_strings() if spec.credential is not None else []
    checks: list[Check] = []
    if spec.kind == "local":
        latency, error = await _timed_check(spec, factory, timeout)
        checks.append(check_call(key, latency, error))
    else:
        try:
            assert spec.credential is not None
            service = "blob" if spec.kind == "blob" else "file"
            target = resolve_target(spec.credential, service=service,  # type: ignore[arg-type]
                                    account=spec.account, endpoint=spec.endpoint)
        except DsmountError as e:
            return [Check("reachable", key, "error", redact(str(e), secrets),
                          "detach it and attach it again with a usable endpoint")]
        call: list[tuple[float | None, str | None]] = []
        date: list[tuple[str | None, float, float, str | None]] = []

        async def do_call() -> None:
            call.append(await _timed_check(spec, factory, timeout))

        async def do_date() -> None:
            date.append(await trio.to_thread.run_sync(
                _date_of, target.endpoint, timeout, abandon_on_cancel=True))

        with trio.move_on_after(timeout + 5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(do_call)
                nursery.start_soon(do_date)
        latency, error = call[0] if call else (None, "no answer")
        checks.append(check_call(key, latency, error))
        if target.auth == "sas_token" and target.secret is not None:
            checks.append(check_sas(key, sas_expiry(target.secret.reveal()), datetime.now(UTC)))
        else:
            checks.append(Check("credential", key, "ok", _credential_text(target.auth)))
        header, sent, received, date_error = date[0] if date else (None, 0.0, 0.0, "no answer")
        checks.append(check_clock_skew(key, header, sent, received, date_error))
        checks.append(check_proxy(key, target.endpoint,
                                  os.environ if environ is None else environ,
                                  call_failed=error is not None))
    return [replace(c, detail=redact(c.detail, secrets),
                    fix=None if c.fix is None else redact(c.fix, secrets)) for c in checks]


def _credential_text(auth: str) -> str:
    return {
        "account_key": "account key (does not expire)",
        "azure_ad": "Azure AD (tokens are renewed by the daemon)",
        "anonymous": "anonymous (a public container)",
    }.get(auth, auth)


async def probe_all(saved: Mapping[str, Mapping[str, Any] | None],
                    factory: Callable[..., Backend], *, timeout: float = PROBE_TIMEOUT
                    ) -> list[dict[str, Any]]:
    """`[{"datastore": key, "checks": [...]}]` for every key of `saved`, in its order."""
    results: dict[str, list[Check]] = {}
    limiter = trio.CapacityLimiter(PARALLEL)

    async def one(key: str, spec: Mapping[str, Any] | None) -> None:
        async with limiter:
            if spec is None:
                results[key] = [Check("reachable", key, "error", "no saved description",
                                      "detach it and attach it again")]
                return
            try:
                results[key] = await probe_datastore(key, spec, factory, timeout=timeout)
            except Exception as e:  # one datastore's probe never fails the whole report
                log.exception("doctor probe of %s failed", key)
                results[key] = [Check("reachable", key, "error",
                                      f"internal error: {type(e).__name__}")]

    async with trio.open_nursery() as nursery:
        for key, spec in saved.items():
            nursery.start_soon(one, key, spec)
    return [{"datastore": key, "checks": [c.as_dict() for c in results[key]]} for key in saved]
