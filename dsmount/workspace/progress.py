"""Progress bars for transfers: tqdm in bytes with a files counter, only for a person watching
(both streams are terminals, or a notebook), and safe to update from worker threads."""

from __future__ import annotations

import sys
import threading
from typing import Any


class ProgressBar:
    """A thread-safe tqdm bar in bytes with a "files done/total" postfix (or nothing)."""

    def __init__(self, desc: str, total_bytes: int, total_files: int, enabled: bool) -> None:
        self.lock = threading.Lock()
        self.total_files = total_files
        self.files = 0
        self.bar: Any = None
        if enabled and total_files:
            tqdm = _tqdm_class()
            self.bar = tqdm(
                total=total_bytes,
                desc=desc,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                dynamic_ncols=True,
                smoothing=0.1,
                postfix=f"0/{total_files} files",
            )

    def add(self, n: int) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.update(n)

    def file_done(self) -> None:
        if self.bar is not None:
            with self.lock:
                self.files += 1
                self.bar.set_postfix_str(f"{self.files}/{self.total_files} files", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def _tqdm_class() -> Any:
    if _in_notebook():
        from tqdm.auto import tqdm as auto_tqdm

        return auto_tqdm
    from tqdm import tqdm

    return tqdm


def progress_enabled(quiet: bool) -> bool:
    """Bars only for a person watching: both streams are terminals (or in Jupyter)."""
    if quiet:
        return False
    if _in_notebook():
        return True
    return sys.stdout.isatty() and sys.stderr.isatty()


# -- running work in parallel -----------------------------------------------------------------
