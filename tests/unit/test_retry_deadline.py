"""The retry policy's deadline: when it passes, the error says what kept failing."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dsmount.errors import TimedOut, Transient
from dsmount.storage.retry import BackendStats, RetryPolicy, with_retry


def test_deadline_passing_during_a_backoff_names_the_last_error() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise Transient("connection failed (connect call failed)")

    async def oversleep(delay: float) -> None:
        # A loaded machine wakes late: the deadline passes while sleeping.
        await trio.sleep(delay + 10.0)

    policy = RetryPolicy(deadline=3.0, max_attempts=10, base_delay=0.1, sleep=oversleep)
    stats = BackendStats()

    async def main() -> None:
        with pytest.raises(TimedOut) as info:
            await with_retry(policy, refused, stats=stats, what="check")
        message = str(info.value)
        assert message.startswith("check: no answer within 3s")
        assert "connection failed (connect call failed)" in message

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert calls == 1
    assert stats.retries == 1
