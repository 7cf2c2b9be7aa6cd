"""The trio <-> asyncio bridge: results, exceptions, cancellation and shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import trio

from dsmount.storage.azure.bridge import AsyncioThread, BridgeClosed, shared_loop


@pytest.fixture
def bridge() -> Iterator[AsyncioThread]:
    b = AsyncioThread(name="test-asyncio")
    b.start()
    try:
        yield b
    finally:
        b.stop()


async def test_returns_result_computed_on_the_loop_thread(bridge: AsyncioThread) -> None:
    async def where() -> tuple[str, bool]:
        await asyncio.sleep(0)
        return threading.current_thread().name, asyncio.get_running_loop().is_running()

    assert await bridge.run(where) == ("test-asyncio", True)


async def test_coroutine_function_is_called_on_the_loop_thread(bridge: AsyncioThread) -> None:
    called_in: list[str] = []

    def make():  # the synchronous prelude (e.g. a client constructor) runs there too
        called_in.append(threading.current_thread().name)
        return asyncio.sleep(0, result=7)

    assert await bridge.run(make) == 7
    assert called_in == ["test-asyncio"]


async def test_exceptions_propagate_with_their_type(bridge: AsyncioThread) -> None:
    class Boom(Exception):
        pass

    async def fail() -> None:
        await asyncio.sleep(0)
        raise Boom("from asyncio")

    with pytest.raises(Boom, match="from asyncio"):
        await bridge.run(fail)
    # The bridge stays usable after a failure.
    assert await bridge.run(lambda: asyncio.sleep(0, result="ok")) == "ok"


async def test_many_concurrent_calls_run_at_once(bridge: AsyncioThread) -> None:
    n = 2000
    results: dict[int, int] = {}
    started = 0
    all_started: asyncio.Event | None = None

    async def work(i: int) -> int:
        # A barrier: no call finishes before all n are in flight on the loop at the same time,
        # so this completes only if the bridge really runs them concurrently.
        nonlocal started, all_started
        if all_started is None:
            all_started = asyncio.Event()
        started += 1  # only the loop thread touches these
        if started == n:
            all_started.set()
        await all_started.wait()
        return i * i

    async def one(i: int) -> None:
        results[i] = await bridge.run(lambda: work(i))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
    assert results == {i: i * i for i in range(n)}


async def test_trio_cancellation_cancels_and_settles_the_asyncio_task(
    bridge: AsyncioThread,
) -> None:
    events: list[str] = []

    async def slow() -> None:
        events.append("started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            events.append("cancelled")
            await asyncio.sleep(0.2)  # slow cleanup: the trio side must wait for it
            events.append("cleaned up")
            raise

    with trio.move_on_after(0.2) as scope:
        await bridge.run(slow)
    assert scope.cancelled_caught
    # By the time run() returned, the asyncio task had finished its cleanup: nothing leaked.
    assert events == ["started", "cancelled", "cleaned up"]
    assert await bridge.run(_count_other_tasks) == 0


async def _count_other_tasks() -> int:
    return len(asyncio.all_tasks()) - 1


async def test_cancellation_of_many_calls_leaves_no_task_behind(bridge: AsyncioThread) -> None:
    with trio.move_on_after(0.1):
        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(bridge.run, lambda: asyncio.sleep(60))
    assert await bridge.run(_count_other_tasks) == 0


async def test_stop_fails_pending_calls_with_bridge_closed() -> None:
    b = AsyncioThread()
    b.start()
    started = trio.Event()
    token = trio.lowlevel.current_trio_token()

    async def hang() -> None:
        token.run_sync_soon(started.set)
        await asyncio.sleep(60)

    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await b.run(hang)
        except BridgeClosed as exc:
            errors.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await started.wait()
            await trio.to_thread.run_sync(b.stop)  # stop() joins the loop thread: blocking
    assert len(errors) == 1
    assert not b.running
    with pytest.raises(BridgeClosed):
        await b.run(lambda: asyncio.sleep(0))


async def test_start_is_idempotent_and_restart_works() -> None:
    b = AsyncioThread()
    with pytest.raises(BridgeClosed):
        await b.run(lambda: asyncio.sleep(0))
    b.start()
    b.start()
    try:
        assert await b.run(lambda: asyncio.sleep(0, result=1)) == 1
        b.stop()
        b.stop()
        b.start()
        assert await b.run(lambda: asyncio.sleep(0, result=2)) == 2
    finally:
        b.stop()


async def test_shared_loop_is_one_running_instance() -> None:
    first = shared_loop()
    assert first is shared_loop()
    assert first.running
    assert await first.run(lambda: asyncio.sleep(0, result="shared")) == "shared"
