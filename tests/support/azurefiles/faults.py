"""Fault injection for the Azure Files emulator, driven from tests through a Python API.

    emu.faults.fail_next(2)                      # next 2 requests: 503 ServerBusy
    emu.faults.fail_next(1, status=500)          # next request: 500 InternalError
    emu.faults.drop_connection_next(1, methods={"GET"})   # cut the next GET's body in half
    emu.faults.delay(0.2)                        # every request waits 0.2 s first
    emu.faults.corrupt_next(1, methods={"GET"})  # flip a byte of the next GET's body
    emu.faults.clear_faults()

Invariants: every method is thread-safe (handler threads consume faults concurrently); a
request consumes at most one failure rule and at most one drop rule, the oldest matching one
first; failures are answered before authentication, as a front end that is overloaded would.
A dropped request is still executed (its effect persists), only its response is cut off: this
is the "lost response" case clients must survive by retrying idempotent requests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import CODE_FOR_STATUS


@dataclass
class _Rule:
    remaining: int
    methods: frozenset[str] | None
    status: int = 0
    code: str = ""

    def matches(self, method: str) -> bool:
        return self.remaining > 0 and (self.methods is None or method in self.methods)


@dataclass(frozen=True)
class Decision:
    """What to do to one request."""

    delay: float = 0.0
    fail_status: int | None = None
    fail_code: str | None = None
    drop: bool = False
    corrupt: bool = False  # flip one byte of the body after it (and its MD5) was made


class Faults:
    """The emulator's fault-injection controls (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[_Rule] = []
        self._drops: list[_Rule] = []
        self._corruptions: list[_Rule] = []
        self._delay = 0.0
        self.injected_failures = 0
        self.injected_drops = 0
        self.injected_corruptions = 0

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        *,
        code: str | None = None,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Answer the next `n` (matching) requests with `status` and the service's error body.

        The code defaults to ServerBusy for 503 and InternalError otherwise.
        """
        rule = _Rule(
            n, _methods(methods), status, code or CODE_FOR_STATUS.get(status, "InternalError")
        )
        with self._lock:
            self._failures.append(rule)

    def drop_connection_next(self, n: int = 1, *, methods: Iterable[str] | None = None) -> None:
        """Close the connection mid-response for the next `n` (matching) requests.

        With a body, the headers and half the body are sent; without one, half the headers.
        """
        with self._lock:
            self._drops.append(_Rule(n, _methods(methods)))

    def corrupt_next(self, n: int = 1, *, methods: Iterable[str] | None = None) -> None:
        """Flip one byte in the middle of the body of the next `n` (matching) responses that
        have a body: corruption in transit, after the service computed any MD5 it sends."""
        with self._lock:
            self._corruptions.append(_Rule(n, _methods(methods)))

    def delay(self, seconds: float) -> None:
        """Delay every request by `seconds` before it is handled (0 turns it off)."""
        with self._lock:
            self._delay = max(0.0, seconds)

    def clear_faults(self) -> None:
        with self._lock:
            self._failures.clear()
            self._drops.clear()
            self._corruptions.clear()
            self._delay = 0.0

    def pending(self) -> int:
        """How many injected failures and drops have not been consumed yet."""
        with self._lock:
            return sum(r.remaining for r in self._failures + self._drops + self._corruptions)

    def decide(self, method: str) -> Decision:
        """Consume the faults that apply to one request (called by the HTTP adapter)."""
        with self._lock:
            fail = _take(self._failures, method)
            drop = None if fail else _take(self._drops, method)
            if fail:
                self.injected_failures += 1
            if drop:
                self.injected_drops += 1
            corrupt = None if fail or drop else _take(self._corruptions, method)
            if corrupt:
                self.injected_corruptions += 1
            return Decision(
                delay=self._delay,
                fail_status=fail.status if fail else None,
                fail_code=fail.code if fail else None,
                drop=drop is not None,
                corrupt=corrupt is not None,
            )


def _methods(methods: Iterable[str] | None) -> frozenset[str] | None:
    return None if methods is None else frozenset(m.upper() for m in methods)


def _take(rules: list[_Rule], method: str) -> _Rule | None:
    for rule in rules:
        if rule.matches(method):
            rule.remaining -= 1
            if rule.remaining == 0:
                rules.remove(rule)
            return rule
    return None
