"""THE portal from blocking code into the async storage interface: one trio event loop in a
daemon thread, shared by every blocking caller (the CLI, notebooks, the Python API, transfer
worker threads).

`portal().run(afn, *args)` runs `afn(*args)` as a new task of that loop and blocks the calling
thread until it returns (or raises). Calls from many threads run concurrently in the loop, not
one after another: transfers keep their parallelism, each worker thread waiting on its own call.

Invariants:
- Storage objects made for blocking callers (`storage.files.Files`) do all their async work
  on this loop; a trio object one of them creates lives and dies there.
- A call from a thread that is itself running a trio loop (where blocking is a bug, but a
  notebook or a test may do it) is made from a short-lived helper thread, so it cannot
  deadlock the portal; it still blocks its caller, like any blocking call.
- A blocking call from the portal's own loop thread is refused (RuntimeError), never a
  deadlock.
- The loop runs until the process exits (a daemon thread): blocking callers come and go
  (one CLI command, many notebook cells) and share it.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class Portal:
    """A trio loop in a daemon thread, called into from other threads."""

    def __init__(self, name: str = "dsmount-portal") -> None:
        self._name = name
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _start(self) -> trio.lowlevel.TrioToken:
        with self._lock:
            if self._token is not None and self._thread is not None and self._thread.is_alive():
                return self._token
            ready = threading.Event()
            box: dict[str, Any] = {}

            async def serve() -> None:
                box["token"] = trio.lowlevel.current_trio_token()
                ready.set()
                await trio.sleep_forever()

            def main() -> None:
                try:
                    trio.run(serve)
                finally:
                    ready.set()

            thread = threading.Thread(target=main, name=self._name, daemon=True)
            thread.start()
            ready.wait()
            if "token" not in box:
                raise RuntimeError("the storage portal's event loop did not start")
            self._token, self._thread = box["token"], thread
            return self._token

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`await afn(*args)` on the portal's loop; its result, or its exception."""
        token = self._start()
        if threading.current_thread() is self._thread:
            # Blocking the loop on itself would never return.
            raise RuntimeError("a blocking storage call from inside the portal's own loop")
        if not _in_trio():
            return trio.from_thread.run(afn, *args, trio_token=token)
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["result"] = trio.from_thread.run(afn, *args, trio_token=token)
            except BaseException as exc:  # handed to the caller's thread below
                box["error"] = exc

        helper = threading.Thread(target=call, name=f"{self._name}-call", daemon=True)
        helper.start()
        helper.join()
        if "error" in box:
            raise box["error"]
        return box["result"]  # type: ignore[no-any-return]


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


_shared: Portal | None = None
_shared_lock = threading.Lock()


def portal() -> Portal:
    """The process's one portal (its loop starts at the first call)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Portal()
        return _shared
