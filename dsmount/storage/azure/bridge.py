"""The one adapter between dsmount's trio code and the Azure SDK's asyncio (`.aio`) clients.

One asyncio event loop runs in a dedicated daemon thread, shared by every backend. Trio code
awaits `AsyncioThread.run(lambda: client.some_call(...))`: the coroutine is created and run on
the asyncio loop, and the trio task sleeps until it settles.

Why this and not the sync SDK client in `trio.to_thread` workers: measured with
`python -m scripts.bench adapters` (1 GiB, 8 MiB ranged GETs, 8 in flight, Azurite, 2 busy
cores) the two tie on throughput (~310-325 MB/s with the SDK downloader, ~400-410 MB/s with
plain ranged GETs, which is what saves client CPU: ~0.8 instead of ~1.1 s/GiB). The bridge
wins on what the numbers do not show: no thread is held per request in flight, and cancelling
a trio task really cancels its HTTP request (a worker thread cannot be interrupted mid-read;
it would run on).

Invariants:
- Objects of the asyncio world (SDK clients, aiohttp sessions) are created, used and closed
  only on the loop thread: pass a coroutine *function*, so even its synchronous prelude runs
  there.
- A call never outlives its trio caller: if the trio task is cancelled, the asyncio task is
  cancelled and the caller waits (shielded) until it has settled, so nothing leaks into the
  loop unobserved.
- `stop()` cancels whatever is still pending, lets it settle, closes the loop and joins the
  thread; pending callers then get `BridgeClosed`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")


class BridgeClosed(RuntimeError):
    """The asyncio loop stopped before (or while) a call ran."""


class AsyncioThread:
    """An asyncio event loop in a daemon thread, awaited from trio."""

    def __init__(self, name: str = "dsmount-asyncio") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._loop is not None and self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the loop thread and return once the loop is running. Idempotent."""
        with self._lock:
            if self.running:
                return
            loop = asyncio.new_event_loop()
            ready, closing = threading.Event(), threading.Event()
            thread = threading.Thread(
                target=self._main, args=(loop, ready, closing), name=self._name, daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._thread, self._closing = loop, thread, closing

    def stop(self) -> None:
        """Cancel pending calls, let them settle, close the loop and join the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule `fn(*args)` on the loop thread and return at once (fire and forget; usable
        where awaiting is not, e.g. an async generator's cleanup). Dropped if not running."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # closed meanwhile: nothing left to do
                loop.call_soon_threadsafe(fn, *args)

    @staticmethod
    def _main(
        loop: asyncio.AbstractEventLoop, ready: threading.Event, closing: threading.Event
    ) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            closing.set()
            try:
                # Repeat: a call submitted just before stop() may only now become a task
                # (it is refused at once, because `closing` is set).
                while pending := asyncio.all_tasks(loop):
                    for task in pending:
                        task.cancel()
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    async def run(self, coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `coro_fn()` on the asyncio loop and return its result (or raise its exception).

        Called from trio. Cancelling the calling trio task cancels the asyncio task and waits
        for it to finish, then re-raises trio's Cancelled.
        """
        loop, closing = self._loop, self._closing
        if loop is None:
            raise BridgeClosed("the asyncio bridge is not running")
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: dict[str, Any] = {}

        def wake() -> None:
            # Runs on the asyncio thread (or in stop()); the trio run may already be over.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        def on_done(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                box["outcome"] = outcome.Error(BridgeClosed("the asyncio call was cancelled"))
            else:
                box["outcome"] = outcome.capture(task.result)
            wake()

        async def call() -> T:
            return await coro_fn()

        def submit() -> None:
            if closing.is_set():
                box["outcome"] = outcome.Error(BridgeClosed("the asyncio bridge is stopping"))
                wake()
                return
            task = loop.create_task(call())
            box["task"] = task
            task.add_done_callback(on_done)

        def cancel() -> None:
            task = box.get("task")
            if task is not None:
                task.cancel()

        try:
            loop.call_soon_threadsafe(submit)
        except RuntimeError:  # loop closed between the check above and now
            raise BridgeClosed("the asyncio bridge is not running") from None

        try:
            await self._wait(done, loop)
        except trio.Cancelled:
            # FIFO: `cancel` runs after `submit`, so the task exists by then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(cancel)
            with trio.CancelScope(shield=True):
                await self._wait(done, loop)
            raise
        if "outcome" not in box:
            raise BridgeClosed("the asyncio loop closed before the call finished")
        return box["outcome"].unwrap()  # type: ignore[no-any-return]

    @staticmethod
    async def _wait(done: trio.Event, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for `done`; give up only if the loop closed without ever running the call
        (a submit racing with stop() - rare, so polled slowly)."""
        while not done.is_set():
            with trio.move_on_after(1.0):
                await done.wait()
            if not done.is_set() and loop.is_closed():
                return


_shared: AsyncioThread | None = None
_shared_lock = threading.Lock()


def shared_loop() -> AsyncioThread:
    """The process-wide bridge, started on first use and stopped at interpreter exit."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.running:
            bridge = AsyncioThread()
            bridge.start()
            if _shared is None:
                atexit.register(_stop_shared)
            _shared = bridge
        return _shared


def _stop_shared() -> None:
    with _shared_lock:
        bridge = _shared
    if bridge is not None:
        bridge.stop()
