"""Release every process, mount and temp dir a benchmark starts, on any exit.

Invariants:
- Each resource registers its cleanup (`on_exit`) the moment it exists; the normal path runs
  it (the returned callable, at most once), and `run_all_cleanups` (atexit, and the CLI's
  `finally`) runs the rest, last registered first: mounts before the servers they use.
- SIGTERM and SIGHUP become SystemExit, so every `finally` unwinds in order.
- A cleanup that fails is logged and the others still run.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

_CLEANUPS: list[Callable[[], None]] = []
_LOCK = threading.Lock()


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def on_exit(fn: Callable[[], None]) -> Callable[[], None]:
    """Register `fn` to run on any exit; returns a callable that runs it now, at most once."""
    done = threading.Event()

    def run_once() -> None:
        with _LOCK:
            if done.is_set():
                return
            done.set()
            with contextlib.suppress(ValueError):
                _CLEANUPS.remove(run_once)
        try:
            fn()
        except Exception as exc:  # cleanup must go on with the other resources
            log(f"cleanup {getattr(fn, '__name__', fn)!r} failed: {exc!r}")

    with _LOCK:
        _CLEANUPS.append(run_once)
    return run_once


def run_all_cleanups() -> None:
    while True:
        with _LOCK:
            if not _CLEANUPS:
                return
            fn = _CLEANUPS[-1]  # last registered first: mounts before the server they use
        fn()


def _raise_exit(signum: int, _frame: object) -> None:
    # SystemExit unwinds through every `finally`, so mounts and processes are released in order;
    # a second signal must not cut that unwinding short, so later ones are ignored.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    atexit.register(run_all_cleanups)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate `proc` (then kill it after 10 s) and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def tail(path: Path, n: int = 6) -> str:
    """The last `n` lines of a log, on one line (for error messages)."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:])


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def check(cond: bool, msg: str) -> None:
    """A benchmark's own assertion: a wrong answer is an error, never a figure."""
    if not cond:
        raise RuntimeError(msg)
