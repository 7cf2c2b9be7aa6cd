"""THE retry policy: every storage call, the mount's and the transfers' alike, runs under it.

Exponential backoff with full jitter on `Transient` failures (5xx, 408/429 honouring
Retry-After, dropped connections, timeouts); any other error is raised at once. `with_retry`
drives every call: the mount's, and those of blocking callers (transfers, the registry, the
Python API), which reach the same async backends through `storage.portal`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from dsmount.errors import DsmountError, Transient
from dsmount.shared.histogram import Histogram

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class BackendStats:
    """Counters a backend keeps for `dsmount status` (and the metrics endpoint).

    `calls` counts every attempt by operation ("read", "stat", "list", ...) and outcome ("ok",
    or the error's code: "not_found", "transient", "timed_out", ...); `latency` holds each
    operation's attempt durations."""

    requests: int = 0
    errors: int = 0
    retries: int = 0
    bytes_fetched: int = 0
    bytes_uploaded: int = 0  # parts of uploads (Put Block, Put Range) that succeeded
    last_error: str | None = None
    last_error_time: float | None = None
    degraded: bool = False
    calls: dict[tuple[str, str], int] = field(default_factory=dict)
    latency: dict[str, Histogram] = field(default_factory=dict)

    def record(self, op: str, outcome: str, seconds: float) -> None:
        key = (op, outcome)
        self.calls[key] = self.calls.get(key, 0) + 1
        histogram = self.latency.get(op)
        if histogram is None:
            histogram = self.latency[op] = Histogram()
        histogram.observe(seconds)

    def as_dict(self) -> dict[str, Any]:
        by_op: dict[str, dict[str, int]] = {}
        for (op, outcome), n in sorted(self.calls.items()):
            by_op.setdefault(op, {})[outcome] = n
        return {
            "requests": self.requests,
            "errors": self.errors,
            "retries": self.retries,
            "bytes_fetched": self.bytes_fetched,
            "bytes_uploaded": self.bytes_uploaded,
            "last_error": self.last_error,
            "degraded": self.degraded,
            "calls": by_op,
            "latency_seconds": {op: h.as_dict() for op, h in sorted(self.latency.items())},
        }


def outcome_of(exc: BaseException | None) -> str:
    """"ok", or the stable code of a dsmount error ("error" for anything else)."""
    if exc is None:
        return "ok"
    return str(getattr(exc, "code", "error")) if isinstance(exc, DsmountError) else "error"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient failures; permanent ones fail fast.

    `deadline` bounds one logical operation (all attempts together), so a FUSE request is
    always answered; `attempt_timeout` bounds a single try so a stalled connection is abandoned.
    """

    max_attempts: int = 6
    base_delay: float = 0.1  # first backoff; small, because most blips are one dropped connection
    max_delay: float = 5.0  # cap per sleep, so a long outage is probed every few seconds
    attempt_timeout: float = 30.0  # a single GET of a 8 MiB block takes well under a second
    deadline: float = 60.0  # default FUSE request deadline: after it the reader gets EIO
    sleep: Callable[[float], Awaitable[None]] = field(default=trio.sleep, repr=False)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return random.uniform(0, min(self.max_delay, self.base_delay * (2**attempt)))


def retry_after_of(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if value is not None else None


def _forget_frames(exc: BaseException) -> None:
    """Drop what ties `exc` to the frames it passed through (its message stays)."""
    exc.__traceback__ = None
    exc.__context__ = None
    exc.__cause__ = None


async def with_retry(
    policy: RetryPolicy,
    operation: Callable[[], Awaitable[T]],
    *,
    stats: BackendStats | None = None,
    what: str = "request",
    op: str | None = None,
) -> T:
    """Run `operation` under `policy`: retry Transient errors, raise others at once.

    Each attempt is recorded in `stats` under `op` (default: the first word of `what`).
    Raises TimedOut (a Transient) when the overall deadline passes.
    """
    from dsmount.errors import TimedOut

    op = op or what.split(" ", 1)[0]
    deadline = trio.current_time() + policy.deadline
    attempt = 0
    last: Exception | None = None  # named when the deadline passes: it is the cause
    while True:
        started = trio.current_time()
        remaining = deadline - started
        if remaining <= 0:
            cause = f" (last error: {last})" if last is not None else ""
            raise TimedOut(f"{what}: no answer within {policy.deadline:.0f}s{cause}")
        try:
            with trio.fail_after(min(policy.attempt_timeout, remaining)):
                result = await operation()
        except trio.TooSlowError:
            exc: Exception = TimedOut(f"{what}: attempt timed out")
        except Transient as e:
            exc = e
        except Exception as e:
            if stats is not None:
                stats.record(op, outcome_of(e), trio.current_time() - started)
                stats.errors += 1
                stats.last_error = f"{type(e).__name__}: {e}"
                stats.last_error_time = trio.current_time()
            raise
        else:
            if stats is not None:
                stats.record(op, "ok", trio.current_time() - started)
                stats.degraded = False
            return result
        if stats is not None:
            stats.record(op, outcome_of(exc), trio.current_time() - started)
        attempt += 1
        # A failed attempt's traceback and chained exceptions reach the frames of the HTTP
        # stack, which hold the partly read body (up to a block); and a traceback makes a
        # reference cycle that only the cyclic GC frees, which large bytes never trigger.
        # Measured: ~150 MiB kept beyond the cache budget under dropped connections.
        _forget_frames(exc)
        last = exc
        if stats is not None:
            stats.errors += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
            stats.last_error_time = trio.current_time()
            stats.degraded = True
        if attempt >= policy.max_attempts:
            raise exc
        delay = policy.backoff(attempt, retry_after_of(exc))
        if trio.current_time() + delay >= deadline:
            raise TimedOut(f"{what}: gave up before the deadline ({exc})") from exc
        if stats is not None:
            stats.retries += 1
        log.debug("%s failed (%s); retry %d in %.2fs", what, exc, attempt, delay)
        await policy.sleep(delay)
